//go:build unix

package buffer

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Regression tests, one per bug found in review.

// The head hint must never pass a committed record: maintenance used to
// snapshot the store before reading the last sequence, and a commit in
// between made later reads skip records until restart.
func TestHeadHintNeverSkipsRecords(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{MaintInterval: 100 * time.Microsecond, MinFreeDisk: -1})
	defer q.Close()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			if _, err := q.Append(val("x")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var cursor, expect uint64 = 0, 1
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		recs, err := q.Read(cursor, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Seq != expect {
				stop.Store(true)
				t.Fatalf("expected seq %d, Read returned %d (head %d)", expect, r.Seq, q.head.Load())
			}
			expect, cursor = r.Seq+1, r.Seq
		}
		q.Ack(recs...)
	}
	stop.Store(true)
	<-done
}

// Replaying large records must respect Badger's transaction size.
func TestReplayLargeRecords(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
	big := strings.Repeat("D", 1500) // a 2D code's event
	for range 1000 {
		q.Submit(val(big), nil, nil)
	}
	if _, err := q.Append(val(big)); err != nil {
		t.Fatal(err)
	}
	q.Close()
	removeStore(t, dir)
	q = openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
	defer q.Close()
	if st := q.Stats(); st.Replayed != 1001 || st.Depth != 1001 {
		t.Fatalf("replayed %d, depth %d; want 1001", st.Replayed, st.Depth)
	}
}

// Dropping more records than one transaction holds must drop them all and
// count exactly what was dropped.
func TestLargeDropCountsExactly(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
	p := strings.Repeat("p", 300)
	for range 30000 {
		q.Submit(val(p), nil, nil)
	}
	q.Append(val(p))
	q.Close()
	q = openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1, MaxBytes: 1 << 20, WhenFull: DropOldest})
	defer q.Close()
	if _, err := q.Append(val(p)); err != nil {
		t.Fatal(err)
	}
	st := q.Stats()
	if n := len(readAll(t, q)); int64(n) != st.Depth || st.Bytes > 1<<20 || uint64(n)+st.Dropped[ReasonFull] != 30002 {
		t.Fatalf("depth %d bytes %d dropped %d, readable %d", st.Depth, st.Bytes, st.Dropped[ReasonFull], n)
	}
}

// A duplicate acknowledgement must never let Reclaim drop a pending record.
func TestReclaimNeverDropsPendingRecords(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{MinFreeDisk: -1, MaintInterval: time.Hour})
	defer q.Close()
	q.Append(val("a"))
	q.Append(val("b"))
	recs := readAll(t, q)
	q.Ack(recs[0])
	waitFor(t, func() bool { return q.Stats().Acked == 1 })
	q.Ack(recs[0]) // after its delete committed: counters drift
	waitFor(t, func() bool { return q.Stats().Acked == 2 })
	if err := q.Reclaim(); err != nil {
		t.Fatal(err)
	}
	if left := readAll(t, q); len(left) != 1 || left[0].Seq != 2 {
		t.Fatalf("after Reclaim: %s", seqs(left))
	}
}

// Badger replays each memtable log on its own: after a power loss the
// store can miss records below its own sequence marker. Every record the
// journal has and the store lacks (above the acknowledged mark) comes back.
func TestReplayFillsHolesBelowTheMarker(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
	appendN(t, q, 100, "h")
	q.Close()
	// Lose records 10..29 from the store without a trace (as an unsynced
	// memtable log would), keeping its marker at 100: rebuild the store
	// from the old one without them.
	logger := slog.New(slog.DiscardHandler)
	old, err := badger.Open(badgerOptions(filepath.Join(dir, "store"), logger))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := badger.Open(badgerOptions(filepath.Join(dir, "store.new"), logger))
	if err != nil {
		t.Fatal(err)
	}
	old.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		return fresh.Update(func(w *badger.Txn) error {
			for it.Rewind(); it.Valid(); it.Next() {
				k := it.Item().KeyCopy(nil)
				if s := seqOf(k); k[0] == prefixRecord && s >= 10 && s < 30 {
					continue
				}
				v, _ := it.Item().ValueCopy(nil)
				if err := w.Set(k, v); err != nil {
					return err
				}
			}
			return nil
		})
	})
	old.Close()
	fresh.Close()
	os.RemoveAll(filepath.Join(dir, "store"))
	if err := os.Rename(filepath.Join(dir, "store.new"), filepath.Join(dir, "store")); err != nil {
		t.Fatal(err)
	}
	q = openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
	defer q.Close()
	if got := readAll(t, q); len(got) != 100 || q.Stats().Replayed != 20 {
		t.Fatalf("%d records, %d replayed; want 100 and 20", len(got), q.Stats().Replayed)
	}
}

func removeStore(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(dir, "store")); err != nil {
		t.Fatal(err)
	}
}

// Acknowledged records that compaction removed without a trace must not
// be replayed from the journal: the journal's acknowledgement records say
// they were delivered. (Without them, every restart after a compaction
// re-sent the acknowledged part of the journal.) Restarts flush Badger's
// memtables into level-0 tables; after a few, compaction drops the deleted
// keys.
func TestCompactedAcksAreNotReplayed(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
	appendN(t, q, 1, "first") // never acknowledged: holds the watermark at 0
	for round := range 10 {
		appendN(t, q, 300, fmt.Sprintf("r%d-", round))
		recs := readAll(t, q)
		q.Ack(recs[1:]...)
		waitFor(t, func() bool { return q.Stats().Depth == 1 })
		q.Close()
		q = openOpts(t, dir, Options{MaintInterval: time.Hour, MinFreeDisk: -1})
		if st := q.Stats(); st.Replayed != 0 || st.Depth != 1 {
			q.Close()
			t.Fatalf("round %d: replayed %d, depth %d; want 0 and 1", round, st.Replayed, st.Depth)
		}
	}
	q.Close()
}
