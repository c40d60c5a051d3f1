package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return exitCode(err, &errb), out.String(), errb.String()
}

func TestCheckExampleConfig(t *testing.T) {
	code, out, errs := runCmd(t, "check", "-c", "../../packaging/scanagent.example.yaml")
	if code != 0 || !strings.Contains(out, ": ok") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
}

func TestCheckReportsEveryError(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(`agent:
  id: "hub 01"
  site: MSK
mqtt:
  brokers: ["ftp://x:1"]
stations:
  - id: a
    scanner: {port: /dev/ttyS0, baud: 0, parity: weird}
  - id: a
    scanner: {port: /dev/ttyS1}
bogus: 1
`), 0o644)
	code, _, errs := runCmd(t, "check", "-c", bad)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr %s", code, errs)
	}
	// One line per problem, each file:line:col.
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `:\d+:\d+: `)
	for _, l := range lines {
		if !re.MatchString(l) {
			t.Errorf("line %q is not file:line:col: message", l)
		}
	}
	for _, want := range []string{":2:", ":5:", ":8:", ":9:", ":11:"} {
		if !strings.Contains(errs, bad+want) {
			t.Errorf("no error on line %s in:\n%s", want, errs)
		}
	}
	if len(lines) < 6 {
		t.Errorf("want all errors at once, got %d:\n%s", len(lines), errs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"check"}, {"run", "-x"}, {"check", "-c", "/nonexistent.yaml"}} {
		if code, _, errs := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, "version")
	if code != 0 || !strings.HasPrefix(out, "scanagent ") {
		t.Fatalf("exit %d: %q", code, out)
	}
}

// TestDaemonDoesNotImportTesting guards production code: the scanagent
// binary must not link the testing package.
func TestDaemonDoesNotImportTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "testing" || strings.Contains(dep, "/testmqtt") {
			t.Fatalf("cmd/scanagent depends on %s", dep)
		}
	}
}

// TestCheckReportsUplinkFileProblems: a missing TLS file does not stop
// "run" (scans must be buffered) but "check" reports it and fails.
func TestCheckReportsUplinkFileProblems(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("agent: {id: a, site: b}\nmqtt: {brokers: [\"ssl://127.0.0.1:8883\"], tls: {ca_file: /nonexistent/ca.pem}}\nstations: [{id: s, scanner: {port: /dev/ttyS0}}]\n"), 0o644)
	code, _, errs := runCmd(t, "check", "-c", cfg)
	if code != 2 || !strings.Contains(errs, cfg+":2:") || !strings.Contains(errs, "mqtt.tls.ca_file") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}
