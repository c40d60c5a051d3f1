//go:build unix

package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func appendN(t testing.TB, q *Queue, n int, prefix string) {
	t.Helper()
	for i := range n {
		if _, err := q.Append(val(fmt.Sprintf("%s%d", prefix, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestJournalReplaysLostStore is the Windows durability logic, run on
// Linux: the store loses everything (as Badger can on Windows power loss,
// where its syncs are no-ops); the journal brings the records back, in
// order, and the sequence continues.
func TestJournalReplaysLostStore(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour})
	appendN(t, q, 500, "r")
	recs := readAll(t, q)
	q.Ack(recs[:100]...) // acknowledged records may come back: at least once
	q.Close()

	if err := os.RemoveAll(filepath.Join(dir, "store")); err != nil {
		t.Fatal(err)
	}
	q = openOpts(t, dir, Options{MaintInterval: time.Hour})
	defer q.Close()
	got := readAll(t, q)
	if len(got) < 400 || got[len(got)-1].Seq != 500 {
		t.Fatalf("after losing the store: %d records, last %d", len(got), got[len(got)-1].Seq)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 || string(got[i].Value) != fmt.Sprintf("%d:r%d", got[i].Seq, got[i].Seq-1) {
			t.Fatalf("replayed record %d: seq %d value %q", i, got[i].Seq, got[i].Value)
		}
	}
	if st := q.Stats(); st.Replayed != len(got) {
		t.Fatalf("stats replayed %d, want %d", st.Replayed, len(got))
	}
	if seq, err := q.Append(val("next")); err != nil || seq != 501 {
		t.Fatalf("append after replay: seq %d err %v", seq, err)
	}
}

// TestJournalTornTail: garbage after the last good record (a torn write)
// ends the replay there; the store is intact, so nothing is lost.
func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour})
	appendN(t, q, 50, "t")
	q.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal"))
	if len(segs) == 0 {
		t.Fatal("no journal segment")
	}
	data, _ := os.ReadFile(segs[len(segs)-1])
	// Find the end of the records and write a half record after it.
	end := scanSegment(data, segNum(t, segs[len(segs)-1]), nil).end
	copy(data[end:], []byte{0, 0, 0, 40, 1, 2, 3, 4, 0, 0})
	os.WriteFile(segs[len(segs)-1], data, 0o644)
	os.RemoveAll(filepath.Join(dir, "store"))

	q = openOpts(t, dir, Options{MaintInterval: time.Hour})
	defer q.Close()
	if got := readAll(t, q); len(got) != 50 {
		t.Fatalf("%d records after torn tail, want 50", len(got))
	}
}

func segNum(t *testing.T, path string) uint64 {
	var n uint64
	if _, err := fmt.Sscanf(filepath.Base(path), "%016x.wal", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCorruptStoreQuarantined: a store Badger cannot open is moved aside
// (kept), a fresh one is used, the journal is replayed, and it is counted.
func TestCorruptStoreQuarantined(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{MaintInterval: time.Hour})
	appendN(t, q, 20, "c")
	q.Close()
	if err := os.WriteFile(filepath.Join(dir, "store", "MANIFEST"), []byte("this is not a manifest"), 0o644); err != nil {
		t.Fatal(err)
	}
	q = openOpts(t, dir, Options{MaintInterval: time.Hour})
	defer q.Close()
	st := q.Stats()
	if st.Quarantined != 1 || !strings.Contains(st.Quarantine, "store.corrupt-") {
		t.Fatalf("stats %+v", st)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "store.corrupt-*", "MANIFEST"))
	if len(aside) != 1 {
		t.Fatalf("quarantined store not kept: %v", aside)
	}
	if got := readAll(t, q); len(got) != 20 {
		t.Fatalf("%d records after quarantine, want 20 (from the journal)", len(got))
	}
}

func TestLockedStoreSaysSo(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{})
	defer q.Close()
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second open: %v", err)
	}
}

// TestFailedOpenLeavesNothingRunning: an Open that fails starts no
// goroutine, or waits for those it started, and leaves no spare journal
// segment behind: the store locked by another open queue (which fails
// before the store and the journal are opened), and a journal segment that
// cannot be read (which fails once the store is open and the journal
// listed).
func TestFailedOpenLeavesNothingRunning(t *testing.T) {
	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		q := openOpts(t, dir, Options{})
		defer q.Close()
		running := goleak.IgnoreCurrent()
		if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
			t.Fatalf("second open: %v", err)
		}
		goleak.VerifyNone(t, running)
	})
	t.Run("journal unreadable", func(t *testing.T) {
		dir := t.TempDir()
		q := openOpts(t, dir, Options{})
		appendN(t, q, 10, "x")
		q.Close()
		// A directory where a segment should be: its header cannot be read.
		if err := os.Mkdir(segPath(filepath.Join(dir, "journal"), 1<<40), 0o750); err != nil {
			t.Fatal(err)
		}
		running := goleak.IgnoreCurrent()
		if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "journal segment") {
			t.Fatalf("open with an unreadable segment: %v", err)
		}
		goleak.VerifyNone(t, running)
		tmp, _ := filepath.Glob(filepath.Join(dir, "journal", "*.tmp"))
		if len(tmp) > 0 {
			t.Fatalf("spare segments left behind: %v", tmp)
		}
		// The lock was released: the queue opens once the segment is gone.
		if err := os.Remove(segPath(filepath.Join(dir, "journal"), 1<<40)); err != nil {
			t.Fatal(err)
		}
		q = openOpts(t, dir, Options{})
		defer q.Close()
		if got := readAll(t, q); len(got) != 10 {
			t.Fatalf("%d records after the failed open, want 10", len(got))
		}
	})
}

// TestOutOfOrderAcksExact acknowledges a shuffled window, reopens, and
// checks that exactly the unacknowledged records remain, in order.
func TestOutOfOrderAcksExact(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{})
	appendN(t, q, 1000, "o")
	recs := readAll(t, q)
	perm := rand.Perm(len(recs))
	acked := map[uint64]bool{}
	for _, i := range perm[:600] {
		q.Ack(recs[i])
		acked[recs[i].Seq] = true
	}
	// Reading while acks are pending never returns an acked record.
	for _, r := range readAll(t, q) {
		if acked[r.Seq] {
			t.Fatalf("acked seq %d returned by Read", r.Seq)
		}
	}
	q.Close()
	q = openOpts(t, dir, Options{})
	defer q.Close()
	got := readAll(t, q)
	if len(got) != 400 {
		t.Fatalf("%d records after reopen, want 400", len(got))
	}
	for i, r := range got {
		if acked[r.Seq] || (i > 0 && r.Seq <= got[i-1].Seq) {
			t.Fatalf("record %d seq %d: acked=%v or out of order", i, r.Seq, acked[r.Seq])
		}
	}
	if st := q.Stats(); st.Depth != 400 {
		t.Fatalf("depth %d", st.Depth)
	}
}

func TestDropOldestWhenFull(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{MaxBytes: int64(100 * (len("1000:d99") + valueHeaderLen + keyLen)), WhenFull: DropOldest})
	defer q.Close()
	appendN(t, q, 300, "d")
	st := q.Stats()
	if st.Bytes > q.opts.MaxBytes || st.Dropped[ReasonFull] == 0 || !st.Full {
		t.Fatalf("stats %+v", st)
	}
	got := readAll(t, q)
	if got[len(got)-1].Seq != 300 || int64(len(got)) != st.Depth || uint64(len(got))+st.Dropped[ReasonFull] != 300 {
		t.Fatalf("kept %d (last %d), dropped %d", len(got), got[len(got)-1].Seq, st.Dropped[ReasonFull])
	}
	// The oldest were dropped: what is left is the newest, contiguous.
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("gap at %d", got[i].Seq)
		}
	}
	// An ack for a record that was already dropped is not counted twice.
	q.Ack(Record{Seq: 1, Value: []byte("1:d0")})
	waitFor(t, func() bool { return q.Stats().Acked == 0 && q.Stats().Depth == int64(len(got)) })
}

// TestDropLogPacedByTheClock: the drop log's pace (a line per 10s while
// records are dropped) follows Options.Now, like every time the queue acts
// on.
func TestDropLogPacedByTheClock(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC).UnixNano())
	var log lockedLog
	q := openOpts(t, t.TempDir(), Options{
		Now:      func() time.Time { return time.Unix(0, clock.Load()) },
		Logger:   slog.New(slog.NewTextHandler(&log, nil)),
		MaxBytes: int64(10 * (len("10:d9") + valueHeaderLen + keyLen)), WhenFull: DropOldest,
		MinFreeDisk: -1, MaintInterval: time.Hour,
	})
	defer q.Close()
	lines := func() int { return strings.Count(log.String(), "oldest scans dropped") }
	appendN(t, q, 30, "d")
	if n := lines(); n != 1 || q.Stats().Dropped[ReasonFull] < 10 {
		t.Fatalf("%d drop lines for %d drops at one instant, want 1", n, q.Stats().Dropped[ReasonFull])
	}
	clock.Add(int64(9 * time.Second))
	appendN(t, q, 5, "e")
	if n := lines(); n != 1 {
		t.Fatalf("%d drop lines 9s later, want 1", n)
	}
	clock.Add(int64(time.Second))
	appendN(t, q, 5, "f")
	if n := lines(); n != 2 {
		t.Fatalf("%d drop lines 10s later, want 2", n)
	}
}

// lockedLog is a log destination safe for the queue's goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestRejectNewWhenFull(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{MaxBytes: 10 * int64(len("10:n9")+valueHeaderLen+keyLen), WhenFull: RejectNew})
	defer q.Close()
	var rejected int
	for i := range 20 {
		if _, err := q.Append(val(fmt.Sprintf("n%d", i))); errors.Is(err, ErrFull) {
			rejected++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	st := q.Stats()
	if rejected == 0 || st.Rejected[ReasonFull] != uint64(rejected) || !st.Full || st.Depth+int64(rejected) != 20 {
		t.Fatalf("rejected %d, stats %+v", rejected, st)
	}
	// Draining makes room again.
	q.Ack(readAll(t, q)...)
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
	if _, err := q.Append(val("again")); err != nil {
		t.Fatalf("append after drain: %v", err)
	}
	if q.Stats().Full {
		t.Fatal("still flagged full after drain")
	}
}

// TestJournalKeptUntilAcknowledged: the journal is the second copy of
// every record until it is acknowledged. Records flushed by Badger to its
// tables keep their journal segments; once acknowledged, the segments are
// retired.
func TestJournalKeptUntilAcknowledged(t *testing.T) {
	q := openOpts(t, t.TempDir(), Options{SegmentSize: 256 << 10, MaintInterval: 20 * time.Millisecond})
	defer q.Close()
	payload := make([]byte, 300)
	for range 40000 { // ~13 MB: more than the memtables hold
		if err := q.Submit(Value{Head: payload}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return q.Stats().Appended == 40000 })
	waitFor(t, func() bool { return q.flushedSeq() > 0 }) // Badger flushed tables
	// A maintenance round (its goroutine runs them every 20ms meanwhile).
	q.maintain()
	st := q.Stats()
	if st.SegmentsRetired != 0 || st.JournalSegments < 40 {
		t.Fatalf("flushed but not acknowledged: %d segments retired, %d kept; want 0 retired", st.SegmentsRetired, st.JournalSegments)
	}
	q.Ack(readAll(t, q)...)
	// Deleting 40000 records takes about 4s under the race detector.
	waitForWithin(t, 30*time.Second, func() bool { st := q.Stats(); return st.Depth == 0 && st.JournalSegments <= 2 })
}

// TestReclaimAfterDrain: after a drain and Reclaim, the store's disk use
// returns close to what an empty store takes.
func TestReclaimAfterDrain(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, Options{})
	empty := duBytes(t, dir)
	payload := make([]byte, 300)
	const n = 100000 // ~33 MB of records
	for range n {
		q.Submit(Value{Head: payload}, nil, nil)
	}
	waitFor(t, func() bool { return q.Stats().Appended == n })
	full := duBytes(t, dir)
	var cursor uint64
	for {
		recs, err := q.Read(cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		q.Ack(recs...)
		cursor = recs[len(recs)-1].Seq
	}
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
	if err := q.Reclaim(); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openOpts(t, dir, Options{})
	defer q.Close()
	after := duBytes(t, dir)
	t.Logf("disk: empty %d KiB, %d records %d KiB, drained+reclaimed %d KiB", empty>>10, n, full>>10, after>>10)
	if after > empty+8<<20 {
		t.Fatalf("disk after drain %d KiB, empty store %d KiB: not reclaimed", after>>10, empty>>10)
	}
	if seq, _ := q.Append(val("x")); seq != n+1 {
		t.Fatalf("seq after reclaim %d", seq)
	}
}

// duBytes is the disk space allocated under dir (sparse files count for
// what they use), without the disk reserve (reserve.go).
func duBytes(t testing.TB, dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == reserveFile {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

// TestDiskFullRefusesAndRecovers runs on a small tmpfs (needs root to
// mount): with free space below MinFreeDisk, appends fail with ErrDiskFull
// and nothing crashes; when space returns, appends succeed again.
func TestDiskFullRefusesAndRecovers(t *testing.T) {
	mnt := smallFS(t, 160)
	q := openOpts(t, filepath.Join(mnt, "buf"), Options{MinFreeDisk: 48 << 20})
	defer q.Close()
	appendN(t, q, 100, "before")
	free, _ := freeBytes(mnt)
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, free-(40<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return q.Stats().DiskLow }) // the next free-space check saw it
	_, err := q.Append(val("while-full"))
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("append with the disk nearly full: %v", err)
	}
	if st := q.Stats(); st.Rejected[ReasonDiskFull] == 0 {
		t.Fatalf("not counted: %+v", st.Rejected)
	}
	os.Remove(filler)
	waitFor(t, func() bool { return !q.Stats().DiskLow })
	if _, err := q.Append(val("after")); err != nil {
		t.Fatalf("append after space returned: %v", err)
	}
	if got := readAll(t, q); len(got) != 101 {
		t.Fatalf("%d records, want 101", len(got))
	}
}

// TestJournalENOSPC: the journal itself on a full filesystem returns an
// error (no crash), and works again when space returns.
func TestJournalENOSPC(t *testing.T) {
	mnt := smallFS(t, 2)
	j, err := openJournal(filepath.Join(mnt, "journal"), 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.start(0); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	f.Write(make([]byte, 4<<20)) // fills the 2 MiB filesystem
	f.Close()
	rec := []journalRecord{{value: make([]byte, 1000)}}
	var werr error
	for i := range 10000 {
		rec[0].seq = uint64(i + 1)
		if werr = j.write(rec); werr == nil {
			werr = j.sync()
		}
		if werr != nil {
			break
		}
		j.advance(rec[0].seq)
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("want ENOSPC, got %v", werr)
	}
	os.Remove(filler)
	if err := j.write(rec); err != nil {
		t.Fatalf("write after space returned: %v", err)
	}
	if err := j.sync(); err != nil {
		t.Fatal(err)
	}
	j.close()
}

// smallFS mounts a tmpfs of sizeMB and unmounts it at cleanup. Mounting
// needs root; elsewhere the test is skipped with the reason.
func smallFS(t *testing.T, sizeMB int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the disk-full test")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", sizeMB), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s); disk-full behaviour not tested", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}
