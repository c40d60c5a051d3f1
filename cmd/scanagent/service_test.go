//go:build !windows

package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestServiceNotOnWindows(t *testing.T) {
	for _, args := range [][]string{nil, {"install"}, {"status"}} {
		err := cmdService(context.Background(), args, io.Discard, io.Discard)
		if code := exitCode(err, io.Discard); code != 2 {
			t.Errorf("cmdService(%q) = %v, exit code %d; want exit code 2", args, err, code)
		}
	}
	for _, args := range [][]string{{"-h"}, {"help"}, {"install", "-h"}} {
		var out strings.Builder
		err := cmdService(context.Background(), args, &out, io.Discard)
		if code := exitCode(err, io.Discard); code != 0 || !strings.Contains(out.String(), "is for Windows") {
			t.Errorf("cmdService(%q) = %v, exit code %d, %q; want the note, exit code 0", args, err, code, out.String())
		}
	}
	if handled, err := runAsService(func(context.Context) error {
		t.Error("runAsService ran the function outside a Windows service")
		return nil
	}); handled || err != nil {
		t.Errorf("runAsService = %v, %v; want false, nil", handled, err)
	}
}
