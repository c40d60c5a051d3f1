package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// The journal is where an append becomes durable: a group of records is
// written to a preallocated segment file with one write and one data sync,
// which is both faster than a synced Badger commit and real on Windows,
// where Badger's syncs are no-ops (docs/BUFFER.md, "Badger's options, and
// what Badger does not do"). Badger then receives
// the same records without syncing.
//
// The journal is one of two copies of every record until it is
// acknowledged: a segment is retired only when every record in it was
// acknowledged (see maintain). So a damaged or lost store is rebuilt from
// the journal, and a damaged or lost segment is rebuilt from the store
// (see scrub). The format is in segment.go.
//
// Acknowledgements (delivered, dropped or parked records) are journalled
// too, as records without a value written without a sync: after a crash or
// a store rebuild they tell replay which records are gone, so nothing
// acknowledged is sent again.

// DefaultSegmentSize is the preallocated size of a journal segment.
const DefaultSegmentSize = 4 << 20

type segment struct {
	num  uint64
	path string
	hdr  segHeader
	// headerProblem is why the header cannot be trusted ("" if it can).
	headerProblem string
	// maxSeq bounds the appends in the segment from above: the highest
	// written, or for a segment from before this open that was not
	// scanned yet, the next segment's base (every append in it came
	// before that segment started).
	maxSeq uint64
	// scan is what reading the whole segment found, once it was read,
	// and cover the sequences of the appends it holds.
	scan  *segScan
	cover rangeSet
}

// damaged reports whether the segment cannot be trusted as a copy.
func (s *segment) damaged() bool {
	return s.headerProblem != "" || (s.scan != nil && (len(s.scan.damage) > 0 || s.scan.unreadable != ""))
}

// journal is owned by the commit goroutine, except retire, the segment
// list and the spare segment preparation, which take mu.
type journal struct {
	dir     string
	segSize int64
	syncFn  func(*os.File) error

	mu     sync.Mutex
	segs   []*segment // closed segments, oldest first
	active *segment
	f      *os.File
	off    int64
	spare  chan spareSeg // preallocated next segment
	next   uint64        // number of the next segment
	buf    []byte
	marks  atomic.Pointer[[2]uint64] // acked and flushed marks for the next header
}

type spareSeg struct {
	path string
	err  error
}

// openJournal lists the journal's segments and reads their headers. The
// records are read by the caller (scan). The caller must call start with
// the queue's last sequence before writing.
func openJournal(dir string, segSize int64) (*journal, error) {
	if segSize <= 0 {
		segSize = DefaultSegmentSize
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	j := &journal{dir: dir, segSize: segSize, syncFn: dataSync, spare: make(chan spareSeg, 1)}
	j.marks.Store(&[2]uint64{})
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nums []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // an unfinished preallocation
			continue
		}
		var n uint64
		if _, err := fmt.Sscanf(name, "%016x.wal", &n); err == nil && len(name) == 20 {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	j.next = 1
	for _, n := range nums {
		seg := &segment{num: n, path: segPath(dir, n)}
		head, err := readHead(seg.path)
		if err != nil {
			return nil, fmt.Errorf("journal segment %s: %w", seg.path, err)
		}
		var problem string
		seg.hdr, _, problem = decodeHeader(head, n)
		seg.headerProblem = problem
		j.segs = append(j.segs, seg)
		j.next = n + 1
	}
	// Upper bounds of the appends in each segment, from the next header
	// that can be trusted (the last one's is set by start).
	var bound uint64 = math.MaxUint64
	for i := len(j.segs) - 1; i >= 0; i-- {
		j.segs[i].maxSeq = bound
		if s := j.segs[i]; s.headerProblem == "" && s.hdr.version > 0 {
			bound = s.hdr.base
		}
	}
	// Only now that the open cannot fail (and after the .tmp cleanup
	// above): a failed open leaves nothing running and no spare behind.
	j.prepareNext()
	return j, nil
}

// readHead reads the first bytes of a segment (its header).
func readHead(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, segHeaderLen)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}

// lastBase is the highest base sequence named by a trusted header: the
// queue's sequence was at least this when that segment started.
func (j *journal) lastBase() uint64 {
	var b uint64
	for _, s := range j.segs {
		if s.headerProblem == "" {
			b = max(b, s.hdr.base)
		}
	}
	return b
}

// checkpoint returns the newest trusted acked and flushed marks: records
// at or below the flushed mark were in synced store tables (or
// acknowledged) before the last stop.
func (j *journal) checkpoint() (acked, flushed uint64) {
	for _, s := range j.segs {
		if s.headerProblem == "" && s.hdr.version >= 2 {
			acked, flushed = max(acked, s.hdr.acked), max(flushed, s.hdr.flushed)
		}
	}
	return acked, flushed
}

// setMarks records the marks the next segment header will carry.
func (j *journal) setMarks(acked, flushed uint64) { j.marks.Store(&[2]uint64{acked, flushed}) }

// start opens a fresh active segment; lastSeq is recorded in its header.
// Segments from before this open get lastSeq as their bound if they had
// none.
func (j *journal) start(lastSeq uint64) error {
	j.mu.Lock()
	for _, s := range j.segs {
		s.maxSeq = min(s.maxSeq, lastSeq)
	}
	j.mu.Unlock()
	return j.startSegment(j.next, lastSeq)
}

func segPath(dir string, n uint64) string { return filepath.Join(dir, fmt.Sprintf("%016x.wal", n)) }

// readSegment reads a whole segment and scans it (see scanSegment).
func readSegment(path string, num uint64, fn func(journalRecord)) (segScan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return segScan{}, err
	}
	return scanSegment(data, num, fn), nil
}

// closedSegments returns the closed segments (a copy of the list).
func (j *journal) closedSegments() []*segment {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.segs)
}

// find returns the journal's copy of the record seq, if an intact one
// exists: first in the segment it was appended to, then in later ones
// (records copied back from the store).
func (j *journal) find(seq uint64) ([]byte, bool) {
	j.mu.Lock()
	segs := slices.Clone(j.segs)
	if j.active != nil {
		segs = append(segs, j.active)
	}
	j.mu.Unlock()
	// The segment it was appended to is the last one whose base is below it.
	first := 0
	for i, s := range segs {
		if s.headerProblem == "" && s.hdr.version > 0 && s.hdr.base < seq {
			first = i
		}
	}
	for _, s := range segs[first:] {
		var val []byte
		readSegment(s.path, s.num, func(r journalRecord) {
			if !r.ack && r.seq == seq {
				val = bytes.Clone(r.value)
			}
		})
		if val != nil {
			return val, true
		}
	}
	return nil, false
}

// remove takes a segment out of the journal (retired or quarantined).
func (j *journal) remove(seg *segment) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.segs = slices.DeleteFunc(j.segs, func(s *segment) bool { return s == seg })
}

// startSegment makes segment n the active one. Exactly one spare is in
// preparation at any time after open: it takes that one (waiting if it is
// not ready yet) and starts preparing the next.
func (j *journal) startSegment(n, lastSeq uint64) error {
	sp := <-j.spare
	if sp.err != nil {
		sp = j.prepare() // it failed earlier (disk full?): space may be back
	}
	j.prepareNext()
	if sp.err != nil {
		return sp.err
	}
	m := j.marks.Load()
	f, err := finishSegment(sp, j.dir, segHeader{num: n, base: lastSeq, acked: m[0], flushed: m[1]})
	if err != nil {
		return err
	}
	j.mu.Lock()
	if j.active != nil {
		j.segs = append(j.segs, j.active)
	}
	j.active = &segment{num: n, path: segPath(j.dir, n), hdr: segHeader{version: journalVersion, num: n, base: lastSeq}, maxSeq: lastSeq}
	j.next = n + 1
	j.mu.Unlock()
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.off = f, segHeaderLen
	return nil
}

// prepareNext starts preparing the next spare in the background. It is
// called once by a successful openJournal and once by each startSegment,
// right after it took the previous spare: so exactly one preparation is
// pending or done but not taken, and close, which takes it, waits for its
// goroutine.
func (j *journal) prepareNext() {
	go func() { j.spare <- j.prepare() }()
}

// prepare creates a zero-filled file so that later writes overwrite
// allocated blocks (a data sync then needs no metadata update).
func (j *journal) prepare() spareSeg {
	f, err := os.CreateTemp(j.dir, "seg-*.tmp")
	if err != nil {
		return spareSeg{err: fmt.Errorf("journal: %w", err)}
	}
	err = writeZeros(f, 0, j.segSize)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return spareSeg{err: fmt.Errorf("journal: preallocate segment: %w", err)}
	}
	return spareSeg{path: f.Name()}
}

// writeZeros writes zeros into f from from to to.
func writeZeros(f *os.File, from, to int64) error {
	zeros := make([]byte, min(to-from, 1<<20))
	for off := from; off < to; {
		n, err := f.WriteAt(zeros[:min(int64(len(zeros)), to-off)], off)
		if err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// finishSegment gives a spare its final name and writes its header. The
// file is renamed while closed (Windows cannot rename an open file).
func finishSegment(sp spareSeg, dir string, h segHeader) (*os.File, error) {
	n := h.num
	path := segPath(dir, n)
	if err := os.Rename(sp.path, path); err != nil {
		os.Remove(sp.path)
		return nil, fmt.Errorf("journal: start segment %d: %w", n, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		if _, err = f.WriteAt(encodeHeader(h), 0); err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = syncDir(dir)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("journal: start segment %d: %w", n, err)
	}
	return f, nil
}

// write appends records without syncing; sync makes them durable. A
// group that does not fit switches segments; a group larger than a
// segment gets a segment of its own size. On failure the caller calls
// abandon.
func (j *journal) write(recs []journalRecord) error {
	size := 0
	for _, r := range recs {
		size += recHeaderLen + len(r.value)
	}
	if j.off+int64(size) > j.segSize && j.off > segHeaderLen {
		if err := j.startSegment(j.next, j.active.maxSeq); err != nil {
			return err
		}
	}
	j.buf = j.buf[:0]
	for _, r := range recs {
		j.buf = appendRecord(j.buf, j.active.num, r)
	}
	if _, err := j.f.WriteAt(j.buf, j.off); err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	return nil
}

// writeAcks appends acknowledgement records without syncing them (they
// only avoid re-sending; losing some to a power cut means duplicates).
func (j *journal) writeAcks(seqs []uint64) error {
	size := int64(len(seqs) * recHeaderLen)
	if j.off+size > j.segSize && j.off > segHeaderLen {
		if err := j.startSegment(j.next, j.active.maxSeq); err != nil {
			return err
		}
	}
	buf := make([]byte, 0, size)
	for _, s := range seqs {
		buf = appendRecord(buf, j.active.num, journalRecord{seq: s, ack: true})
	}
	if _, err := j.f.WriteAt(buf, j.off); err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	j.off += size
	return nil
}

// sync makes the last write durable. It only reads j.f, so it can run
// while the commit goroutine writes the same records to the store.
func (j *journal) sync() error {
	if err := j.syncFn(j.f); err != nil {
		return fmt.Errorf("journal sync: %w", err)
	}
	return nil
}

// advance accepts the last write (after a successful sync).
func (j *journal) advance(maxSeq uint64) {
	j.off += int64(len(j.buf))
	j.mu.Lock()
	j.active.maxSeq = max(j.active.maxSeq, maxSeq)
	j.mu.Unlock()
}

// abandon overwrites a failed write with zeros (best effort), so that
// records the caller was told failed are not replayed later.
func (j *journal) abandon() {
	if len(j.buf) > 0 {
		j.f.WriteAt(make([]byte, len(j.buf)), j.off)
	}
}

// retire deletes closed segments whose records are all at or below seq.
func (j *journal) retire(seq uint64) (int, error) {
	j.mu.Lock()
	var keep, drop []*segment
	for _, s := range j.segs {
		if s.maxSeq <= seq {
			drop = append(drop, s)
		} else {
			keep = append(keep, s)
		}
	}
	j.segs = keep
	j.mu.Unlock()
	for _, s := range drop {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	if len(drop) > 0 {
		return len(drop), syncDir(j.dir)
	}
	return 0, nil
}

// segments reports how many segment files exist (closed + active).
func (j *journal) segments() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.segs) + 1
}

// close waits for the spare's preparation to finish and removes the
// spare, then closes the active segment (if start opened one: a queue
// whose open failed after openJournal closes a journal never started).
func (j *journal) close() error {
	if sp := <-j.spare; sp.err == nil {
		os.Remove(sp.path)
	}
	if j.f == nil {
		return nil
	}
	return j.f.Close()
}
