package buffer

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func openOpts(t testing.TB, dir string, o Options) *Queue {
	t.Helper()
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func readAll(t testing.TB, q *Queue) []Record {
	t.Helper()
	recs, err := q.Read(0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// submitN appends n records through Submit (many per commit) and waits
// until all are durable.
func submitN(t testing.TB, q *Queue, n int, prefix string) {
	t.Helper()
	out := make(chan Outcome, n)
	for i := range n {
		if err := q.Submit(val(fmt.Sprintf("%s%d", prefix, i)), nil, out); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if o := <-out; o.Err != nil {
			t.Fatal(o.Err)
		}
	}
}

// storeKeys counts what the store holds under the record prefix: live
// records, and every version including deletion markers (seq 0 aside).
func storeKeys(t testing.TB, q *Queue) (live, versions int) {
	t.Helper()
	err := q.db.View(func(txn *badger.Txn) error {
		for _, all := range []bool{false, true} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}, AllVersions: all})
			for it.Rewind(); it.Valid(); it.Next() {
				if seqOf(it.Item().Key()) == 0 {
					continue // the reclaim sentinel's deletion marker, written at open
				}
				if all {
					versions++
				} else {
					live++
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return live, versions
}

// TestLivePathSkipsStore: records acknowledged before SpillAfter never
// touch the store (no record, no deletion marker); they were readable, in
// order, and the queue ends empty, with nothing to replay at the next open.
func TestLivePathSkipsStore(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{SpillAfter: time.Hour})
	submitN(t, q, 300, "live")
	if st := q.Stats(); st.JournalOnly != 300 || st.Depth != 300 || st.Spilled != 0 {
		t.Fatalf("after appends: journal only %d, depth %d, spilled %d", st.JournalOnly, st.Depth, st.Spilled)
	}
	recs := readAll(t, q)
	if len(recs) != 300 || recs[0].Seq != 1 || recs[299].Seq != 300 || string(recs[7].Value) != "8:live7" {
		t.Fatalf("read %d records: %s", len(recs), seqs(recs))
	}
	q.Ack(recs...)
	waitFor(t, func() bool { st := q.Stats(); return st.Depth == 0 && st.JournalOnly == 0 })
	if live, versions := storeKeys(t, q); live != 0 || versions != 0 {
		t.Fatalf("the store holds %d records, %d versions: the live path wrote it", live, versions)
	}
	q.Close()
	q = openOpts(t, dir, Options{})
	defer q.Close()
	if st := q.Stats(); st.Depth != 0 || st.Replayed != 0 || st.LastSeq != 300 {
		t.Fatalf("reopened: depth %d, replayed %d, last seq %d", st.Depth, st.Replayed, st.LastSeq)
	}
}

// TestSpillOnAge: a record still waiting SpillAfter after its commit is
// copied into the store, and one acknowledged afterwards is deleted from
// it.
func TestSpillOnAge(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{SpillAfter: 20 * time.Millisecond})
	defer q.Close()
	submitN(t, q, 10, "old")
	waitFor(t, func() bool { return q.Stats().Spilled == 10 })
	if st := q.Stats(); st.JournalOnly != 0 || st.Depth != 10 {
		t.Fatalf("journal only %d, depth %d", st.JournalOnly, st.Depth)
	}
	if live, _ := storeKeys(t, q); live != 10 {
		t.Fatalf("the store holds %d records, want 10", live)
	}
	recs := readAll(t, q)
	q.Ack(recs[:4]...)
	waitFor(t, func() bool { live, _ := storeKeys(t, q); return live == 6 })
	if got := readAll(t, q); len(got) != 6 || got[0].Seq != 5 {
		t.Fatalf("after acks: %s", seqs(got))
	}
}

// TestSpillBeyondTailBounds: with the broker away, the tail cannot keep
// every waiting record in memory; the oldest go into the store before it
// grows past its bounds. A cursor reads on from the store into the tail
// without a gap, acknowledgements on both sides are exact, and a close
// leaves everything in the store.
func TestSpillBeyondTailBounds(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{SpillAfter: time.Hour})
	n := tailMaxRecords + 1500
	submitN(t, q, n, "r")
	st := q.Stats()
	if st.Spilled == 0 || st.JournalOnly == 0 || int(st.Spilled)+st.JournalOnly != n {
		t.Fatalf("spilled %d, journal only %d of %d", st.Spilled, st.JournalOnly, n)
	}
	// Paged reads, as the uplink does, across the boundary.
	var got []Record
	for after := uint64(0); ; {
		recs, err := q.Read(after, 333)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		got = append(got, recs...)
		after = recs[len(recs)-1].Seq
	}
	if len(got) != n {
		t.Fatalf("read %d of %d", len(got), n)
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) || string(r.Value) != fmt.Sprintf("%d:r%d", i+1, i) {
			t.Fatalf("record %d: seq %d %q", i, r.Seq, r.Value)
		}
	}
	// Acknowledge one spilled and one unspilled stretch.
	spilled := int(st.Spilled)
	q.Ack(got[:100]...)
	q.Ack(got[spilled+10 : spilled+20]...)
	waitFor(t, func() bool { return q.Stats().Depth == int64(n-110) })
	q.Close()
	q = openOpts(t, dir, Options{SpillAfter: time.Hour})
	defer q.Close()
	rest := readAll(t, q)
	if st := q.Stats(); st.Replayed != 0 || len(rest) != n-110 || rest[0].Seq != 101 {
		t.Fatalf("reopened: replayed %d, %d records from seq %d", st.Replayed, len(rest), rest[0].Seq)
	}
	for _, r := range rest {
		if r.Seq > uint64(spilled+10) && r.Seq <= uint64(spilled+20) {
			t.Fatalf("acknowledged seq %d came back", r.Seq)
		}
	}
}

// TestSpillAtCommit: a negative SpillAfter writes every record to the
// store in its commit, as before the live path skipped it.
func TestSpillAtCommit(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{SpillAfter: -1})
	defer q.Close()
	submitN(t, q, 50, "c")
	if live, _ := storeKeys(t, q); live != 50 {
		t.Fatalf("the store holds %d records, want 50", live)
	}
	if st := q.Stats(); st.JournalOnly != 0 {
		t.Fatalf("journal only %d", st.JournalOnly)
	}
}

// TestStoreSleepsAndWakes: an empty store unused for StoreIdle is closed;
// live records come and go without opening it; a record that waits past
// SpillAfter opens it again and is delivered from it; emptied, it sleeps
// again; a reopened queue finds everything.
func TestStoreSleepsAndWakes(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{SpillAfter: 100 * time.Millisecond, StoreIdle: 50 * time.Millisecond, MaintInterval: 10 * time.Millisecond})
	waitFor(t, func() bool { return !q.Stats().StoreOpen })
	// Live: acknowledged at once, the store stays asleep.
	submitN(t, q, 50, "live")
	q.Ack(readAll(t, q)...)
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
	if st := q.Stats(); st.StoreOpen || st.StoreWakes != 0 {
		t.Fatalf("live records opened the store: open %v, wakes %d", st.StoreOpen, st.StoreWakes)
	}
	// A backlog: spilled, which wakes the store.
	submitN(t, q, 20, "wait")
	waitFor(t, func() bool { return q.Stats().Spilled == 20 })
	if st := q.Stats(); !st.StoreOpen || st.StoreWakes != 1 {
		t.Fatalf("after the spill: open %v, wakes %d", st.StoreOpen, st.StoreWakes)
	}
	recs := readAll(t, q)
	if len(recs) != 20 || recs[0].Seq != 51 || string(recs[0].Value) != "51:wait0" {
		t.Fatalf("backlog read: %s", seqs(recs))
	}
	q.Ack(recs[:15]...)
	waitFor(t, func() bool { return q.Stats().Depth == 5 })
	// Unused for longer than StoreIdle, but holding records: the sleep
	// decision keeps it open.
	q.storeUsed.Store(time.Now().Add(-time.Hour).UnixNano())
	if err := q.do(q.maybeSleep); err != nil {
		t.Fatal(err)
	}
	if !q.Stats().StoreOpen {
		t.Fatal("the store went to sleep while it held records")
	}
	q.Ack(recs[15:]...)
	waitFor(t, func() bool { return !q.Stats().StoreOpen })
	submitN(t, q, 3, "last")
	q.Close()
	q = openOpts(t, dir, Options{})
	defer q.Close()
	if got := readAll(t, q); len(got) != 3 || got[0].Seq != 71 {
		t.Fatalf("reopened: %s", seqs(got))
	}
}

// TestStoreDamagedWhileAsleep: a store damaged while it sleeps is moved
// aside when a backlog wakes it, and a new one takes the records: no
// scan is lost (the store held none when it closed), the agent goes on.
func TestStoreDamagedWhileAsleep(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{SpillAfter: 20 * time.Millisecond, StoreIdle: 20 * time.Millisecond, MaintInterval: 10 * time.Millisecond})
	defer q.Close()
	submitN(t, q, 5, "a")
	waitFor(t, func() bool { return q.Stats().Spilled == 5 })
	q.Ack(readAll(t, q)...)
	waitFor(t, func() bool { st := q.Stats(); return st.Depth == 0 && !st.StoreOpen })
	if err := os.WriteFile(filepath.Join(dir, "store", "MANIFEST"), []byte("garbage, not a manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	submitN(t, q, 7, "b")
	waitFor(t, func() bool { return q.Stats().Spilled == 12 })
	st := q.Stats()
	if !st.StoreOpen || st.Quarantined != 1 || st.Depth != 7 {
		t.Fatalf("open %v, quarantined %d, depth %d", st.StoreOpen, st.Quarantined, st.Depth)
	}
	if got := readAll(t, q); len(got) != 7 || got[0].Seq != 6 {
		t.Fatalf("read %s", seqs(got))
	}
}

// TestReadAfterLastPossible: a cursor at the largest sequence (a state
// file's odd value) reads nothing, at once, whether records are in the
// tail, in the store or nowhere.
func TestReadAfterLastPossible(t *testing.T) {
	for _, spill := range []time.Duration{time.Hour, -1} {
		q := openOpts(t, t.TempDir(), Options{SpillAfter: spill})
		if recs, err := q.Read(math.MaxUint64, 1000); err != nil || len(recs) != 0 {
			t.Fatalf("empty queue: %d records, %v", len(recs), err)
		}
		submitN(t, q, 5, "x")
		if recs, err := q.Read(math.MaxUint64, 1000); err != nil || len(recs) != 0 {
			t.Fatalf("spill_after %v: %d records, %v", spill, len(recs), err)
		}
		q.Close()
	}
}
