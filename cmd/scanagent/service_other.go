//go:build !windows

package main

import (
	"context"
	"fmt"
	"io"
	"slices"
)

const serviceNotHere = "scanagent service is for Windows; on Linux use the systemd unit in packaging/"

// cmdService manages the Windows service; elsewhere it is a usage error,
// and its help says so.
func cmdService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "help" || isHelpFlag(args[0]) || slices.ContainsFunc(args[1:], isHelpFlag)) {
		fmt.Fprintln(stdout, serviceNotHere)
		return nil
	}
	return usagef("%s", serviceNotHere)
}

// runAsService reports that the process is never a Windows service here.
func runAsService(run func(ctx context.Context) error) (handled bool, err error) {
	return false, nil
}
