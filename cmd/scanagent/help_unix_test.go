//go:build unix

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/devices/sim"
)

// TestFlagFirstRunsTheAgent: "scanagent -c FILE", without a command, runs
// the agent (the default command) until it is stopped.
func TestFlagFirstRunsTheAgent(t *testing.T) {
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, `agent: {id: default-01, site: LAB, data_dir: %q}
mqtt: {brokers: ["tcp://127.0.0.1:1"]}
http: {listen: "127.0.0.1:0"}
stations: [{id: induct-1, scanner: {port: %q}}]
`, filepath.Join(dir, "data"), sc.Path()), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &lockedBuilder{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-c", cfg}, logs, logs) }()
	waitFor(t, 15*time.Second, "the scanner port to open", func() bool { return strings.Contains(logs.String(), "scanner port open") })
	if !strings.Contains(logs.String(), "scanagent starting") {
		t.Errorf("the agent did not start:\n%s", logs.String())
	}
	cancel()
	select {
	case err := <-done:
		if code := exitCode(err, logs); code != 0 {
			t.Fatalf("exit %d\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the agent did not stop\n%s", logs.String())
	}
}
