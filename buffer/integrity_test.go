//go:build unix

package buffer

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Storage faults: any single damaged or missing file of the buffer loses
// no record, and nothing crashes. Each test fills a real buffer past what
// Badger keeps in its memtables (so tables exist and, before the journal
// kept every record until acknowledged, segments would have been retired),
// damages one file with the queue closed, reopens and checks every record.

const faultRecords = 30000 // ~10 MB of 300-byte records: several tables, many segments

var faultOpts = Options{SegmentSize: 512 << 10, MaintInterval: 20 * time.Millisecond, MinFreeDisk: -1}

// payload is record seq's content, checkable after any repair.
// payloadValue makes the records of fill: "<seq>:" and 290 bytes.
var payloadValue = Value{Tail: append([]byte(":"), bytes.Repeat([]byte("p"), 290)...)}

func payload(seq uint64) []byte { return payloadValue.Bytes(seq) }

// fill appends n records with many in flight, as stations do.
func fill(t *testing.T, q *Queue, n int) {
	t.Helper()
	out := make(chan Outcome, n)
	for range n {
		if err := q.Submit(payloadValue, nil, out); err != nil {
			t.Fatal(err)
		}
	}
	var errs []error
	for range n {
		if o := <-out; o.Err != nil {
			errs = append(errs, o.Err)
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%d appends failed, first: %v", len(errs), errs[0])
	}
}

// filled returns a closed buffer of faultRecords records whose store has
// flushed tables.
func filled(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	q := openOpts(t, dir, faultOpts)
	fill(t, q, faultRecords)
	waitFor(t, func() bool { return q.flushedSeq() > 0 })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if tabs, _ := filepath.Glob(filepath.Join(dir, "store", "*.sst")); len(tabs) < 2 {
		t.Fatalf("want several tables, have %v", tabs)
	}
	return dir
}

// checkAll reads the whole buffer and checks records from..to are all
// there, in order, intact.
func checkAll(t *testing.T, q *Queue, from, to uint64) {
	t.Helper()
	recs := readAll(t, q)
	if uint64(len(recs)) != to-from+1 {
		t.Fatalf("%d records, want %d (%d..%d)", len(recs), to-from+1, from, to)
	}
	for i, r := range recs {
		if want := from + uint64(i); r.Seq != want || !bytes.Equal(r.Value, payload(want)) {
			t.Fatalf("record %d: seq %d value %.20q", want, r.Seq, r.Value)
		}
	}
}

func damage(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		fi, _ := f.Stat()
		off += fi.Size()
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func largestTable(t *testing.T, dir string) string {
	t.Helper()
	tabs, _ := filepath.Glob(filepath.Join(dir, "store", "*.sst"))
	slices.SortFunc(tabs, func(a, b string) int {
		fa, _ := os.Stat(a)
		fb, _ := os.Stat(b)
		return int(fb.Size() - fa.Size())
	})
	return tabs[0]
}

// TestDamagedStoreFilesRebuiltFromJournal: a truncated table, a damaged
// table footer, two bytes changed in a table's data block, one byte of
// the MANIFEST, a missing table: the store is moved aside, rebuilt from
// the journal, and every record comes back intact.
func TestDamagedStoreFilesRebuiltFromJournal(t *testing.T) {
	for _, tc := range []struct {
		name string
		harm func(t *testing.T, dir string)
	}{
		{"table truncated", func(t *testing.T, dir string) {
			p := largestTable(t, dir)
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()/2)
		}},
		{"table footer overwritten", func(t *testing.T, dir string) {
			damage(t, largestTable(t, dir), -6, []byte{0xff, 0xff, 0x7f, 0xff})
		}},
		{"table data block damaged", func(t *testing.T, dir string) {
			damage(t, largestTable(t, dir), 5000, []byte{0x00, 0xff})
		}},
		{"MANIFEST byte changed", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "store", "MANIFEST")
			fi, _ := os.Stat(p)
			damage(t, p, fi.Size()/2, []byte{0x5a})
		}},
		{"table missing", func(t *testing.T, dir string) {
			os.Remove(largestTable(t, dir))
		}},
		{"value log header", func(t *testing.T, dir string) {
			vl, _ := filepath.Glob(filepath.Join(dir, "store", "*.vlog"))
			damage(t, vl[0], 0, []byte("garbage garbage garbage"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filled(t)
			tc.harm(t, dir)
			q := openOpts(t, dir, faultOpts)
			defer q.Close()
			st := q.Stats()
			if st.Quarantined != 1 || !strings.Contains(st.Quarantine, "store.corrupt-") {
				t.Fatalf("store not quarantined: %+v", st)
			}
			checkAll(t, q, 1, faultRecords)
			if st.Unrecoverable != 0 {
				t.Fatalf("unrecoverable %d", st.Unrecoverable)
			}
		})
	}
}

// TestDamagedMemtableLogReplayed: Badger's memtable log (.mem) damaged in
// the middle: Badger drops what follows the damage; the journal brings it
// back.
func TestDamagedMemtableLogReplayed(t *testing.T) {
	dir := t.TempDir()
	memOpts := faultOpts
	memOpts.SpillAfter = -1 // into the store at commit: the memtable holds them
	q := openOpts(t, dir, memOpts)
	fill(t, q, 3000) // stays in the memtable
	// Kill-like stop: Badger is not closed, so its memtable is not flushed.
	mems, _ := filepath.Glob(filepath.Join(dir, "store", "*.mem"))
	if len(mems) == 0 {
		t.Fatal("no memtable log")
	}
	copies := map[string][]byte{}
	for _, m := range mems {
		copies[m], _ = os.ReadFile(m)
	}
	q.Close()
	os.RemoveAll(filepath.Join(dir, "store"))
	os.MkdirAll(filepath.Join(dir, "store"), 0o750)
	// A store that holds only the memtable logs as they were, one damaged.
	for m, b := range copies {
		if len(b) > 200000 {
			copy(b[200000:], "damage damage damage")
		}
		os.WriteFile(m, b, 0o644)
	}
	q = openOpts(t, dir, faultOpts)
	defer q.Close()
	checkAll(t, q, 1, 3000)
}

// TestStoreOpenCrashMarker: when two opens in a row did not finish (the
// process died inside Badger), the store is moved aside without trying
// it again, and rebuilt from the journal.
func TestStoreOpenCrashMarker(t *testing.T) {
	dir := filled(t)
	if err := writeMarker(filepath.Join(dir, openMarker), 1); err != nil {
		t.Fatal(err)
	}
	q := openOpts(t, dir, faultOpts) // one unfinished open: tried again
	if st := q.Stats(); st.Quarantined != 0 {
		t.Fatalf("quarantined after one unfinished open: %+v", st)
	}
	q.Close()
	if _, err := os.Stat(filepath.Join(dir, openMarker)); !os.IsNotExist(err) {
		t.Fatalf("marker left after a finished open: %v", err)
	}
	writeMarker(filepath.Join(dir, openMarker), 2)
	q = openOpts(t, dir, faultOpts)
	defer q.Close()
	if st := q.Stats(); st.Quarantined != 1 || !strings.Contains(st.Quarantine, "did not finish") {
		t.Fatalf("not quarantined after two unfinished opens: %+v", st)
	}
	checkAll(t, q, 1, faultRecords)
}

// TestQuarantineNamesNeverCollide: two quarantines within the same second
// keep both stores.
func TestQuarantineNamesNeverCollide(t *testing.T) {
	dir := t.TempDir()
	now := func() time.Time { return time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC) }
	o := Options{Now: now, MaintInterval: time.Hour, MinFreeDisk: -1}
	for i := range 3 {
		q := openOpts(t, dir, o)
		appendN(t, q, 5, fmt.Sprint(i))
		q.Close()
		os.WriteFile(filepath.Join(dir, "store", "MANIFEST"), []byte("garbage"), 0o644)
	}
	q := openOpts(t, dir, o)
	defer q.Close()
	if st := q.Stats(); st.Quarantined != 3 {
		t.Fatalf("%d quarantined, want 3", st.Quarantined)
	}
	if n := len(readAll(t, q)); n != 15 {
		t.Fatalf("%d records, want 15", n)
	}
}

// segments lists the journal's segment files, oldest first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	s, _ := filepath.Glob(filepath.Join(dir, "journal", "*.wal"))
	if len(s) < 3 {
		t.Fatalf("want several segments, have %d", len(s))
	}
	return s
}

// TestDamagedJournalSegmentCopiedBack: a journal segment's header or body
// damaged, or the segment missing: the store still holds the records, the
// check after open copies them back into the journal and moves the
// damaged segment aside. Then the store is lost too: every record still
// comes back from the journal.
func TestDamagedJournalSegmentCopiedBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		harm func(t *testing.T, seg string)
	}{
		{"header byte", func(t *testing.T, seg string) { damage(t, seg, 10, []byte{0x07}) }},
		{"base sequence", func(t *testing.T, seg string) { damage(t, seg, 20, []byte{0x40}) }},
		{"body", func(t *testing.T, seg string) { damage(t, seg, 100000, bytes.Repeat([]byte{0xee}, 5000)) }},
		{"missing", func(t *testing.T, seg string) { os.Remove(seg) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filled(t)
			segs := segments(t, dir)
			tc.harm(t, segs[len(segs)/2])
			q := openOpts(t, dir, faultOpts)
			waitFor(t, func() bool { st := q.Stats(); return st.CopiedBack > 0 && st.JournalDamaged == 1 })
			checkAll(t, q, 1, faultRecords)
			q.Close()
			if m, _ := filepath.Glob(filepath.Join(dir, "journal.corrupt-*")); tc.name != "missing" && len(m) != 1 {
				t.Fatalf("damaged segment not moved aside: %v", m)
			}
			// The journal is whole again: it alone rebuilds everything.
			removeStore(t, dir)
			q = openOpts(t, dir, faultOpts)
			defer q.Close()
			checkAll(t, q, 1, faultRecords)
			if st := q.Stats(); st.Unrecoverable != 0 || st.JournalDamaged != 0 {
				t.Fatalf("after the repair: %+v", st)
			}
		})
	}
}

// TestJournalResyncAfterDamage: damage in the middle of a segment is not
// a torn tail: the records after it are read (here the store is gone, so
// they come from the journal alone), and only the damaged stretch is
// lost, counted and reported with its sequence range.
func TestJournalResyncAfterDamage(t *testing.T) {
	dir := filled(t)
	segs := segments(t, dir)
	seg := segs[len(segs)/2]
	data, _ := os.ReadFile(seg)
	num := segNum(t, seg)
	var seen []uint64
	scanSegment(data, num, func(r journalRecord) { seen = append(seen, r.seq) })
	// Damage exactly records 10..12 of this segment.
	var offs []int
	scanAt(data, num, func(off int) { offs = append(offs, off) })
	damage(t, seg, int64(offs[10]), bytes.Repeat([]byte{0x99}, offs[13]-offs[10]))
	lostLo, lostHi := seen[10], seen[12]
	removeStore(t, dir)
	q := openOpts(t, dir, faultOpts)
	defer q.Close()
	st := q.Stats()
	if st.Unrecoverable != 3 || len(st.Loss) != 1 || st.Loss[0].Ranges != fmt.Sprintf("%d-%d", lostLo, lostHi) {
		t.Fatalf("loss %d %+v, want seqs %d-%d", st.Unrecoverable, st.Loss, lostLo, lostHi)
	}
	recs := readAll(t, q)
	if len(recs) != faultRecords-3 {
		t.Fatalf("%d records, want %d", len(recs), faultRecords-3)
	}
	for _, r := range recs {
		if r.Seq >= lostLo && r.Seq <= lostHi || !bytes.Equal(r.Value, payload(r.Seq)) {
			t.Fatalf("record %d: %.20q", r.Seq, r.Value)
		}
	}
	// The loss stays reported after a restart.
	q.Close()
	q = openOpts(t, dir, faultOpts)
	defer q.Close()
	if st := q.Stats(); st.Unrecoverable != 3 {
		t.Fatalf("after restart: unrecoverable %d", st.Unrecoverable)
	}
}

// scanAt calls fn with the offset of every intact record of a segment.
func scanAt(data []byte, num uint64, fn func(int)) {
	_, start, _ := decodeHeader(data, num)
	for off := start; ; {
		_, n, ok := recordAt(data[off:], num)
		if !ok {
			return
		}
		fn(off)
		off += n
	}
}

// setRaw writes a stored value behind the queue's back (as damage that
// Badger's own checks do not see would leave it).
func setRaw(t *testing.T, dir string, seq uint64, v []byte) {
	t.Helper()
	db, err := badger.Open(badgerOptions(filepath.Join(dir, "store"), discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key(seq), v) }); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedRecordRestoredFromJournal: a record whose stored bytes no
// longer match its checksum is never returned as it is: Read returns the
// journal's copy and rewrites the store.
func TestDamagedRecordRestoredFromJournal(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, faultOpts)
	fill(t, q, 100)
	q.Close()
	bad := encodeValue(42, time.Now(), payload(42))
	bad[len(bad)-5] ^= 0x20 // one bit of the parcel code
	setRaw(t, dir, 42, bad)
	q = openOpts(t, dir, faultOpts)
	defer q.Close()
	checkAll(t, q, 1, 100)
	if st := q.Stats(); st.Restored != 1 || st.Parked != 0 {
		t.Fatalf("restored %d parked %d, want 1 and 0", st.Restored, st.Parked)
	}
	checkAll(t, q, 1, 100) // rewritten: no second restore
	if st := q.Stats(); st.Restored != 1 {
		t.Fatalf("restored %d after a second read", st.Restored)
	}
}

// TestDamagedRecordWithoutCopyParked: both copies of a record are gone
// (the stored value is damaged and its journal segment was lost): it is
// parked, never published, counted and reported with its sequence; the
// queue flows on.
func TestDamagedRecordWithoutCopyParked(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, faultOpts)
	fill(t, q, 100)
	q.Close()
	bad := encodeValue(42, time.Now(), payload(42))
	bad[20] ^= 0x01
	setRaw(t, dir, 42, bad)
	os.RemoveAll(filepath.Join(dir, "journal"))
	q = openOpts(t, dir, faultOpts)
	defer q.Close()
	waitFor(t, func() bool { return q.Stats().Parked == 1 })
	recs := readAll(t, q)
	if len(recs) != 99 || slices.ContainsFunc(recs, func(r Record) bool { return r.Seq == 42 }) {
		t.Fatalf("%d records; the damaged one must not be returned", len(recs))
	}
	st := q.Stats()
	if st.Unrecoverable != 1 || st.Loss[0].Ranges != "42" || st.Depth != 99 {
		t.Fatalf("stats %+v", st)
	}
	var parked []ParkedRecord
	q.ReadParked(func(p ParkedRecord) error { parked = append(parked, p); return nil })
	if len(parked) != 1 || parked[0].Seq != 42 || parked[0].Reason != ParkDamaged || parked[0].Err == nil || !bytes.Equal(parked[0].Raw, bad) {
		t.Fatalf("parked %+v", parked)
	}
}

// TestParkedRecordsKeptApart: a parked record leaves the queue (Read,
// depth) but is kept, with its reason, across a restart and a store
// rebuild from the journal never brings it back into the queue.
func TestParkedRecordsKeptApart(t *testing.T) {
	dir := t.TempDir()
	q := openOpts(t, dir, faultOpts)
	fill(t, q, 10)
	recs := readAll(t, q)
	q.Park(recs[0], ParkPoison)
	waitFor(t, func() bool { return q.Stats().Parked == 1 })
	if got := readAll(t, q); len(got) != 9 || got[0].Seq != 2 {
		t.Fatalf("after parking: %s", seqs(got))
	}
	q.Close()
	q = openOpts(t, dir, faultOpts)
	st := q.Stats()
	if st.Parked != 1 || st.Depth != 9 {
		t.Fatalf("after reopen: %+v", st)
	}
	var p []ParkedRecord
	q.ReadParked(func(r ParkedRecord) error { p = append(p, r); return nil })
	if len(p) != 1 || p[0].Reason != ParkPoison || !bytes.Equal(p[0].Record.Value, payload(1)) || p[0].Err != nil {
		t.Fatalf("parked %+v", p)
	}
	q.Close()
	removeStore(t, dir)
	q = openOpts(t, dir, faultOpts)
	defer q.Close()
	checkAll(t, q, 2, 10)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSalvageQuarantinedStore: the records of a store Badger refused (its
// MANIFEST damaged; then also a table truncated) are read from its files
// directly, for buffer export --store.
func TestSalvageQuarantinedStore(t *testing.T) {
	dir := filled(t)
	p := filepath.Join(dir, "store", "MANIFEST")
	fi, _ := os.Stat(p)
	damage(t, p, fi.Size()/2, []byte{0x5a})
	q := openOpts(t, dir, faultOpts)
	q.Close()
	aside, _ := filepath.Glob(filepath.Join(dir, "store.corrupt-*"))
	if len(aside) != 1 || !IsQuarantined(aside[0]) {
		t.Fatalf("quarantined: %v", aside)
	}
	salvaged := func() (n int, problems []string) {
		var last uint64
		problems, err := Salvage(aside[0], func(r Record, err error) error {
			if err != nil || r.Seq <= last || !bytes.Equal(r.Value, payload(r.Seq)) {
				t.Fatalf("record %d: %v %.20q", r.Seq, err, r.Value)
			}
			last = r.Seq
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n, problems
	}
	if n, problems := salvaged(); n != faultRecords || len(problems) != 0 {
		t.Fatalf("salvaged %d of %d, problems %v", n, faultRecords, problems)
	}
	// The largest table: a small early one may hold only records that a
	// compaction also wrote into another.
	tabs, _ := filepath.Glob(filepath.Join(aside[0], "*.sst"))
	big, bigSize := "", int64(0)
	for _, tb := range tabs {
		if fi, err := os.Stat(tb); err == nil && fi.Size() > bigSize {
			big, bigSize = tb, fi.Size()
		}
	}
	os.Truncate(big, bigSize/2)
	n, problems := salvaged()
	if len(problems) != 1 || n == 0 || n >= faultRecords {
		t.Fatalf("after truncating a table: salvaged %d, problems %v", n, problems)
	}
	t.Logf("a truncated table: %d of %d salvaged; %v", n, faultRecords, problems)
}
