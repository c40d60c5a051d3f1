//go:build !linux

package main

// newSDNotifier: systemd exists only on Linux.
func newSDNotifier(string) notifier { return nil }
