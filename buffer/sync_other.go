//go:build !linux

package buffer

import "os"

// dataSync flushes a file to stable storage (FlushFileBuffers on Windows,
// fsync elsewhere).
func dataSync(f *os.File) error { return f.Sync() }
