package buffer

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when a goroutine outlives the tests: a queue
// whose Close, or an Open that failed, left one of its goroutines behind,
// or a test that did not close what it opened.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// A badger.Open that fails (a damaged store, which the queue
		// then moves aside) cleans up after itself, except for these
		// two, which only DB.Close stops: its cache monitor and its
		// allocator pool's reaper (badger v4.9.6 db.go Open and
		// cleanup). There is no DB to close; they are Badger's, not the
		// queue's. A DB left open is still reported, by its other
		// goroutines.
		goleak.IgnoreTopFunction("github.com/dgraph-io/badger/v4.(*DB).monitorCache"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
	)
}
