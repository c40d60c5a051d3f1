package devices

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when a goroutine outlives the tests: a port
// supervisor or session that did not stop with its context.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
