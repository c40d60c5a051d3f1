//go:build !unix

package main

import (
	"context"
	"errors"
	"io"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("demo needs pseudo-terminals for its simulated scanners; run it on Linux or macOS")
}
