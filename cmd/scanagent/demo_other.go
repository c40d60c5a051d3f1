//go:build !unix

package main

import (
	"context"
	"errors"
	"io"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", help{
		usage:   "scanagent demo",
		summary: "Run end to end with simulated devices: Linux and macOS only (pseudo-terminals).",
		example: "scanagent demo",
	}, stdout, stderr)
	if err := fs.parseArgs(args); err != nil {
		return err
	}
	return errors.New("demo needs pseudo-terminals for its simulated scanners; run it on Linux or macOS")
}
