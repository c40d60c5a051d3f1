//go:build unix

package agent_test

import (
	"testing"
	"time"
)

// waitUntil checks cond every few milliseconds until it holds, or fails
// the test after timeout with what and, if given, detail() (the state it
// saw last).
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			msg := what
			for _, d := range detail {
				msg += ": " + d()
			}
			t.Fatalf("timed out after %v waiting for %s", timeout, msg)
		}
	}
}
