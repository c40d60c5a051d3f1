//go:build linux

package buffer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A full disk never kills the process, whoever fills it: these tests run
// the real store on a small tmpfs (which, like ext4, faults a write
// through a memory map of a sparse file when no block is left).

// fillUntilRefused appends until the buffer refuses for lack of disk, and
// returns how many were accepted.
func fillUntilRefused(t *testing.T, q *Queue) int {
	t.Helper()
	accepted := 0
	for range 400 {
		done := make(chan Outcome, 500)
		for range 500 {
			if err := q.Submit(payloadValue, nil, done); err != nil {
				t.Fatal(err)
			}
		}
		full := false
		for range 500 {
			err := (<-done).Err
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, ErrDiskFull):
				full = true
			default:
				t.Fatalf("append: %v", err)
			}
		}
		if full {
			return accepted
		}
	}
	t.Fatalf("never refused: %d accepted, %+v", accepted, q.Stats())
	return 0
}

// fillDiskTo leaves about left bytes free (another program filling the
// disk).
func fillDiskTo(t *testing.T, mnt, name string, left uint64) {
	t.Helper()
	free, _ := freeBytes(mnt)
	if free > left {
		if err := os.WriteFile(filepath.Join(mnt, name), make([]byte, free-left), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// quietDisk waits until the filesystem's free space has not changed for a
// second (the store's flushes and compactions done), so that what a test
// fills is not freed again behind it.
func quietDisk(t *testing.T, mnt string) {
	t.Helper()
	last, _ := freeBytes(mnt)
	since := time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Since(since) < time.Second; {
		if time.Now().After(deadline) {
			t.Fatalf("the free space on %s kept changing for 30s", mnt)
		}
		time.Sleep(50 * time.Millisecond)
		if f, _ := freeBytes(mnt); f != last {
			last, since = f, time.Now()
		}
	}
}

// topUpDisk appends to the file name until the filesystem has only left
// bytes free (another program taking what was freed).
func topUpDisk(t *testing.T, mnt, name string, left uint64) {
	t.Helper()
	free, _ := freeBytes(mnt)
	if free <= left {
		return
	}
	f, err := os.OpenFile(filepath.Join(mnt, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, free-left)); err != nil {
		t.Fatal(err)
	}
}

// fillDisk writes a file over all the free space left (another program
// filling the disk).
func fillDisk(t *testing.T, mnt string) {
	t.Helper()
	f, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{1}, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for n := 512 << 10; n >= 512; n /= 2 {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	if free, _ := freeBytes(mnt); free > 64<<10 {
		t.Fatalf("%d bytes still free", free)
	}
}

// drain reads and acknowledges every record, checking each one.
func drain(t *testing.T, q *Queue) int {
	t.Helper()
	n := 0
	var after uint64
	for {
		recs, err := q.Read(after, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if !bytes.Equal(r.Value, payload(r.Seq)) {
				t.Fatalf("record %d damaged: %.20q", r.Seq, r.Value)
			}
		}
		q.Ack(recs...)
		n += len(recs)
		after = recs[len(recs)-1].Seq
	}
	waitFor(t, func() bool { return q.Stats().Depth == 0 })
	return n
}

// TestFullDiskFilledByAnotherProgram: the buffer fills a small disk up to
// its guard; then another program takes nearly all the space left. The
// reserve is released and the store's writes pause; the backlog drains
// (acknowledgements wait in memory, then deletions are applied), nothing
// crashes, and scanning resumes when the space returns.
func TestFullDiskFilledByAnotherProgram(t *testing.T) {
	mnt := smallFS(t, 64)
	dir := filepath.Join(mnt, "buf")
	o := Options{MinFreeDisk: 8 << 20, SegmentSize: 1 << 20}
	q := openOpts(t, dir, o)
	defer q.Close()
	accepted := fillUntilRefused(t, q)
	st := q.Stats()
	if st.Rejected[ReasonDiskFull] == 0 || !st.DiskLow || st.ReserveBytes < 8<<20 {
		t.Fatalf("at the guard: %+v", st) // part of the reserve is kept for a restart
	}
	t.Logf("accepted %d scans before the guard refused, reserve %d MiB", accepted, st.ReserveBytes>>20)
	quietDisk(t, mnt)
	fillDiskTo(t, mnt, "filler", 2<<20)
	// Released to the store: all of it, or (when the store's compactions
	// freed some space meanwhile) all but what a restart needs.
	waitFor(t, func() bool { return q.Stats().ReserveBytes < st.ReserveBytes })
	// And taken by the other program: again if what the guard still kept
	// for a restart was released meanwhile.
	for i := 0; !q.paused.Load(); i++ {
		if i == 5 {
			t.Fatalf("store writes never paused: %+v", q.Stats())
		}
		quietDisk(t, mnt)
		topUpDisk(t, mnt, "filler2", 2<<20)
		waitForWithin(t, 5*time.Second, func() bool { return q.paused.Load() || q.Stats().ReserveBytes == 0 })
	}
	half := 0
	var after uint64
	for half < accepted/2 { // acknowledged while paused
		recs, _ := q.Read(after, 500)
		q.Ack(recs...)
		half += len(recs)
		after = recs[len(recs)-1].Seq
	}
	if _, err := q.Append(val("while full")); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("append on a full disk: %v", err)
	}
	os.Remove(filepath.Join(mnt, "filler2"))
	waitFor(t, func() bool { return !q.paused.Load() })
	if got := half + drain(t, q); got != accepted {
		t.Fatalf("delivered %d, accepted %d", got, accepted)
	}
	os.Remove(filepath.Join(mnt, "filler"))
	waitFor(t, func() bool { return !q.Stats().DiskLow })
	if _, err := q.Append(val("after")); err != nil {
		t.Fatalf("append after space returned: %v", err)
	}
	waitFor(t, func() bool { return q.Stats().ReserveBytes > 0 }) // allocated again
}

// TestFullDiskStartAndDrain: the buffer itself filled the disk to its
// guard and the agent stopped; another program then took the rest. The
// next start releases the reserve before the store opens, and drains.
func TestFullDiskStartAndDrain(t *testing.T) {
	mnt := smallFS(t, 64)
	dir := filepath.Join(mnt, "buf")
	o := Options{MinFreeDisk: 8 << 20, SegmentSize: 1 << 20}
	q := openOpts(t, dir, o)
	accepted := fillUntilRefused(t, q)
	q.Close()
	fillDisk(t, mnt)
	q = openOpts(t, dir, o)
	defer q.Close()
	if n := drain(t, q); n != accepted {
		t.Fatalf("drained %d, accepted %d", n, accepted)
	}
}

// TestFullDiskOpenWaitsForRoom: with no reserve to release and no room for
// the store's open, Open fails with ErrDiskFull (the agent retries) rather
// than letting Badger fault.
func TestFullDiskOpenWaitsForRoom(t *testing.T) {
	mnt := smallFS(t, 64)
	dir := filepath.Join(mnt, "buf")
	o := Options{MinFreeDisk: 8 << 20, SegmentSize: 1 << 20}
	q := openOpts(t, dir, o)
	fillUntilRefused(t, q)
	q.Close()
	os.Remove(filepath.Join(dir, reserveFile))
	fillDisk(t, mnt)
	if _, err := Open(dir, o); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("open on a full disk without a reserve: %v", err)
	}
	os.Remove(filepath.Join(mnt, "filler"))
	q = openOpts(t, dir, o)
	q.Close()
}
