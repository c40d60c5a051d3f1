//go:build !unix

package devices

import "go.bug.st/serial"

// pollable returns p: on Windows the library's reads wait on overlapped
// I/O, not in a blocking system call (pollport_unix.go).
func pollable(p serial.Port, path string) serial.Port { return p }
