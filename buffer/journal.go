package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// The journal is where an append becomes durable: a group of records is
// written to a preallocated segment file with one write and one data sync,
// which is both faster than a synced Badger commit and real on Windows,
// where Badger's syncs are no-ops (LIBRARY-NOTES.md). Badger then receives
// the same records without syncing. On open, journal records newer than
// what Badger holds are replayed into it.
//
// A segment is retired once every record in it is known to be durable in
// Badger by other means (flushed to a synced table on Unix) or acknowledged
// (Windows); see checkpoint in maint.go.
//
// Acknowledgements are journalled too (records without a value, written
// without a sync): after a process crash they tell replay which records
// were delivered, so nothing acknowledged is sent again.
//
// Segment layout: a 24-byte header (magic, version, segment number, and the
// queue's last sequence when the segment was started, so the sequence never
// goes backwards even if the store is lost) followed
// by records [u32 n][u32 crc][u64 seq][value], where n = 8+len(value) and crc
// is CRC-32C over the segment number, seq and value, so a record can never
// be taken from another segment. A zero n (the preallocated zeros) or a bad
// crc ends the segment: a torn write at the tail is simply not there.

const (
	journalMagic   = "SAJ1"
	journalVersion = 1
	segHeaderLen   = 24
	recHeaderLen   = 16
	// DefaultSegmentSize is the preallocated size of a journal segment.
	DefaultSegmentSize = 4 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// journalRecord is a record as kept in the journal.
type journalRecord struct {
	seq   uint64
	value []byte
	ack   bool // an acknowledgement of seq (no value), not an append
}

type segment struct {
	num     uint64
	baseSeq uint64
	path    string
	maxSeq  uint64 // highest seq written, or baseSeq
}

// journal is owned by the commit goroutine, except retire and the spare
// segment preparation, which take mu.
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
}

type spareSeg struct {
	path string
	err  error
}

// openJournal opens the journal directory, returning its records in order
// (for replay) and a journal ready to append to a fresh segment.
//
// The caller must call start with the queue's last sequence before writing.
func openJournal(dir string, segSize int64) (*journal, []journalRecord, uint64, error) {
	if segSize <= 0 {
		segSize = DefaultSegmentSize
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, 0, err
	}
	j := &journal{dir: dir, segSize: segSize, syncFn: dataSync, spare: make(chan spareSeg, 1)}
	entries, err := os.ReadDir(dir)
	defer func() { go func() { j.spare <- j.prepare() }() }() // after the .tmp cleanup below
	if err != nil {
		return nil, nil, 0, err
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
	var recs []journalRecord
	var maxSeq uint64
	j.next = 1
	for _, n := range nums {
		seg := &segment{num: n, path: segPath(dir, n)}
		base, rs, err := readSegment(seg.path, n)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("journal segment %s: %w", seg.path, err)
		}
		seg.baseSeq, seg.maxSeq = base, base
		for _, r := range rs {
			if !r.ack {
				seg.maxSeq = max(seg.maxSeq, r.seq)
			}
		}
		maxSeq = max(maxSeq, seg.maxSeq)
		recs = append(recs, rs...)
		j.segs = append(j.segs, seg)
		j.next = n + 1
	}
	return j, recs, maxSeq, nil
}

// start opens a fresh active segment; lastSeq is recorded in its header.
func (j *journal) start(lastSeq uint64) error { return j.startSegment(j.next, lastSeq) }

func segPath(dir string, n uint64) string { return filepath.Join(dir, fmt.Sprintf("%016x.wal", n)) }

// readSegment returns the intact records of a segment, stopping at the
// first zero length, bad checksum or short read.
func readSegment(path string, num uint64) (baseSeq uint64, _ []journalRecord, _ error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, nil, err
	}
	return parseSegment(data, num)
}

// parseSegment is readSegment on the file's bytes.
func parseSegment(data []byte, num uint64) (baseSeq uint64, _ []journalRecord, _ error) {
	if len(data) < segHeaderLen || string(data[:4]) != journalMagic {
		return 0, nil, nil // never finished its header: nothing in it was acknowledged
	}
	if binary.BigEndian.Uint64(data[8:16]) != num {
		return 0, nil, fmt.Errorf("header names segment %d", binary.BigEndian.Uint64(data[8:16]))
	}
	baseSeq = binary.BigEndian.Uint64(data[16:24])
	var out []journalRecord
	p := data[segHeaderLen:]
	for len(p) >= recHeaderLen {
		n := int(binary.BigEndian.Uint32(p))
		if n < 8 || n > len(p)-8 {
			break
		}
		sum := binary.BigEndian.Uint32(p[4:])
		body := p[8 : 8+n]
		if recordCRC(num, body) != sum {
			break
		}
		r := journalRecord{seq: binary.BigEndian.Uint64(body), ack: n == 8}
		if !r.ack {
			r.value = bytes.Clone(body[8:])
		}
		out = append(out, r)
		p = p[8+n:]
	}
	return baseSeq, out, nil
}

func recordCRC(num uint64, body []byte) uint32 {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], num)
	return crc32.Update(crc32.Update(0, crcTable, b[:]), crcTable, body)
}

// startSegment makes segment n the active one. Exactly one spare is in
// preparation at any time after open: it takes that one (waiting if it is
// not ready yet) and starts preparing the next.
func (j *journal) startSegment(n, lastSeq uint64) error {
	sp := <-j.spare
	if sp.err != nil {
		sp = j.prepare() // it failed earlier (disk full?): space may be back
	}
	go func() { j.spare <- j.prepare() }()
	if sp.err != nil {
		return sp.err
	}
	f, err := finishSegment(sp, j.dir, n, lastSeq)
	if err != nil {
		return err
	}
	j.mu.Lock()
	if j.active != nil {
		j.segs = append(j.segs, j.active)
	}
	j.active = &segment{num: n, path: segPath(j.dir, n), baseSeq: lastSeq, maxSeq: lastSeq}
	j.next = n + 1
	j.mu.Unlock()
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.off = f, segHeaderLen
	return nil
}

// prepare creates a zero-filled file so that later writes overwrite
// allocated blocks (a data sync then needs no metadata update).
func (j *journal) prepare() spareSeg {
	f, err := os.CreateTemp(j.dir, "seg-*.tmp")
	if err != nil {
		return spareSeg{err: fmt.Errorf("journal: %w", err)}
	}
	zeros := make([]byte, 256<<10)
	for off := int64(0); off < j.segSize && err == nil; off += int64(len(zeros)) {
		_, err = f.Write(zeros[:min(int64(len(zeros)), j.segSize-off)])
	}
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

// finishSegment gives a spare its final name and writes its header. The
// file is renamed while closed (Windows cannot rename an open file).
func finishSegment(sp spareSeg, dir string, n, lastSeq uint64) (*os.File, error) {
	path := segPath(dir, n)
	if err := os.Rename(sp.path, path); err != nil {
		os.Remove(sp.path)
		return nil, fmt.Errorf("journal: start segment %d: %w", n, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		var h [segHeaderLen]byte
		copy(h[:], journalMagic)
		binary.BigEndian.PutUint32(h[4:], journalVersion)
		binary.BigEndian.PutUint64(h[8:], n)
		binary.BigEndian.PutUint64(h[16:], lastSeq)
		if _, err = f.WriteAt(h[:], 0); err == nil {
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
		start := len(j.buf)
		j.buf = binary.BigEndian.AppendUint32(j.buf, uint32(8+len(r.value)))
		j.buf = append(j.buf, 0, 0, 0, 0) // crc, filled below
		j.buf = binary.BigEndian.AppendUint64(j.buf, r.seq)
		j.buf = append(j.buf, r.value...)
		binary.BigEndian.PutUint32(j.buf[start+4:], recordCRC(j.active.num, j.buf[start+8:]))
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
		start := len(buf)
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = append(buf, 0, 0, 0, 0)
		buf = binary.BigEndian.AppendUint64(buf, s)
		binary.BigEndian.PutUint32(buf[start+4:], recordCRC(j.active.num, buf[start+8:]))
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
	j.active.maxSeq = maxSeq
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

func (j *journal) close() error {
	// Wait for the spare preparation to finish, then remove it.
	if sp := <-j.spare; sp.err == nil {
		os.Remove(sp.path)
	}
	return j.f.Close()
}
