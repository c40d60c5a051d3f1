//go:build unix

package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDemo runs the demo end to end for a few seconds and checks that the
// central subscriber received every accepted scan, and that the agent
// logged no warning or error: the simulated line runs clean (a streaming
// scale's bytes sent before the agent opened its port were once read as
// garbage).
func TestDemo(t *testing.T) {
	code, out, errs := runCmd(t, "demo", "--duration", "3s", "--rate", "20", "--quiet")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	var bad []string
	for l := range strings.Lines(errs) {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			bad = append(bad, l)
		}
	}
	if len(bad) > 0 {
		t.Errorf("the demo logged %d warnings or errors:\n%s", len(bad), strings.Join(bad, ""))
	}
	m := regexp.MustCompile(`sent (\d+), accepted (\d+) \(durable\), received by central (\d+) \(invalid (\d+), duplicates \d+\), left in buffer (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary in:\n%s", out)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	sent, accepted, received, invalid, left := n(1), n(2), n(3), n(4), n(5)
	if sent < 100 || accepted != sent || received != accepted || left != 0 {
		t.Fatalf("summary: %s", m[0])
	}
	if invalid == 0 {
		t.Errorf("demo produced no invalid codes: %s", m[0])
	}
	// The receptacle station: bags closed, and dispatches completed.
	r := regexp.MustCompile(`receptacles: (\d+) closed, (\d+) dispatches complete`).FindStringSubmatch(out)
	if r == nil || r[1] == "0" || r[2] == "0" {
		t.Errorf("no receptacles closed or dispatches complete: %q", r)
	}
}
