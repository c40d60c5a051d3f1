//go:build !windows

package main

import (
	"context"
	"io"
)

// cmdService manages the Windows service; elsewhere it is a usage error.
func cmdService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return usagef("scanagent service is for Windows; on Linux use the systemd unit in packaging/")
}

// runAsService reports that the process is never a Windows service here.
func runAsService(run func(ctx context.Context) error) (handled bool, err error) {
	return false, nil
}
