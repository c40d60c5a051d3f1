//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestStatusCommand runs the agent in-process and asks it with
// "scanagent status": healthy, then a scanner unplugged (exit 3), then
// the agent stopped (exit 1).
func TestStatusCommand(t *testing.T) {
	broker := testmqtt.Start(t)
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	dir := t.TempDir()
	link := filepath.Join(dir, "scanner")
	sc.Link(link)
	addr := freePort(t)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("tok\n"), 0o600)
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`agent: {id: hub-1, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 200ms, connect_spread: 0s}
http: {listen: %q, token_file: %q}
stations:
  - id: induct-1
    workflow: open_receptacles
    operator_pattern: "^OP[0-9]{4}$"
    scanner: {port: %q}
`, filepath.Join(dir, "data"), broker.URL(), addr, token, link)), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "-c", cfg}, io.Discard, io.Discard) }()
	defer func() {
		cancel()
		<-done
	}()

	var out string
	code := -1
	statusIs := func(want int) func() bool {
		return func() bool {
			code, out, _ = runCmd(t, "status", "-c", cfg)
			return code == want
		}
	}
	if !poll(15*time.Second, statusIs(0)) {
		t.Fatalf("status never healthy: exit %d\n%s", code, out)
	}
	for _, want := range []string{"agent hub-1  site LAB", "healthy", "broker   connected", "station  induct-1", "scanner connected " + link,
		"open_receptacles: nobody signed in; nothing open"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	// An operator signs in and opens a receptacle: the status shows both.
	sc.Send("", "OP0007")
	sc.Send("", "BEBRUABOLPBBAEN60073003000227")
	shows := func() bool {
		code, out, _ = runCmd(t, "status", "-c", cfg)
		// The dispatch tracker counts the receptacle a moment after the
		// station opened it: wait for both.
		return strings.Contains(out, "open_receptacles: OP0007; BEBRUABOLPBBAEN60073003000227 open since ") &&
			strings.Contains(out, "dispatches 1 tracked")
	}
	if !poll(15*time.Second, shows) {
		t.Fatalf("status without the operator and receptacle:\n%s", out)
	}
	if !strings.Contains(out, ", 0 items") || !strings.Contains(out, "dispatches 1 tracked: 0 complete, 0 incomplete") {
		t.Errorf("workflow status:\n%s", out)
	}
	if code, _, errs := runCmd(t, "status", "--addr", addr); code != 1 || !strings.Contains(errs, "wants a bearer token") {
		t.Errorf("without token: exit %d, %s", code, errs)
	}

	sc.Unplug()
	if !poll(15*time.Second, statusIs(exitUnhealthy)) {
		t.Fatalf("status never unhealthy: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "NEEDS ATTENTION") || !strings.Contains(out, "attention: station induct-1: scanner disconnected") {
		t.Errorf("unhealthy output:\n%s", out)
	}
	if code, out, _ := runCmd(t, "status", "-c", cfg, "--json"); code != exitUnhealthy || !strings.HasPrefix(out, "{") {
		t.Errorf("--json: exit %d %s", code, out)
	}

	cancel()
	<-done
	done <- nil
	if code, _, errs := runCmd(t, "status", "-c", cfg, "--timeout", "1s"); code != 1 || !strings.Contains(errs, "agent not reachable at "+addr) {
		t.Errorf("stopped agent: exit %d, %s", code, errs)
	}
}
