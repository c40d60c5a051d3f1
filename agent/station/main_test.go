package station

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitUntil checks cond every millisecond until it holds, or fails the
// test after 10 s with what and detail() (the state it saw last).
func waitUntil(t *testing.T, what string, cond func() bool, detail func() string) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s: %s", what, detail())
		}
	}
}
