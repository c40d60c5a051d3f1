package buffer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Park reasons.
const (
	// ParkDamaged: the stored record is damaged and the journal has no
	// intact copy.
	ParkDamaged = "damaged"
	// ParkPoison: the broker ended every session in which it was
	// published alone (three in a row).
	ParkPoison = "poison"
)

// LossRecord is one finding of scans that could not be recovered: both
// copies (journal and store) of these sequences were damaged or missing.
type LossRecord struct {
	At     string `json:"at"`     // when it was found (RFC 3339)
	Ranges string `json:"ranges"` // sequence ranges, "a-b,c,..."
	Count  uint64 `json:"count"`  // scans in those ranges
	Why    string `json:"why"`
}

const lossFile = "unrecoverable.jsonl"

// loadLoss reads the loss record: every earlier finding stays reported
// (Stats.Unrecoverable) until an operator removes the file.
func (q *Queue) loadLoss() error {
	b, err := os.ReadFile(filepath.Join(q.dir, lossFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l LossRecord
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Count > 0 {
			q.loss = append(q.loss, l)
		}
	}
	return nil
}

// recordLoss logs scans that could not be recovered and appends them to
// the loss record (synced).
func (q *Queue) recordLoss(ranges []seqRange, why string) error {
	var n uint64
	parts := make([]string, len(ranges))
	for i, r := range ranges {
		n += r.hi - r.lo + 1
		parts[i] = r.String()
	}
	l := LossRecord{At: q.now().UTC().Format(time.RFC3339), Ranges: strings.Join(parts, ","), Count: n, Why: why}
	q.log.Error("buffer: scans could not be recovered: both copies are damaged or missing", "scans", n, "seq_ranges", l.Ranges, "why", why)
	q.lossMu.Lock()
	q.loss = append(q.loss, l)
	q.lossMu.Unlock()
	line, _ := json.Marshal(l)
	f, err := os.OpenFile(filepath.Join(q.dir, lossFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// lossSnapshot returns the total and the findings.
func (q *Queue) lossSnapshot() (uint64, []LossRecord) {
	q.lossMu.Lock()
	defer q.lossMu.Unlock()
	var n uint64
	for _, l := range q.loss {
		n += l.Count
	}
	return n, slices.Clone(q.loss)
}

// ParkedRecord is a record taken out of the queue (see Park).
type ParkedRecord struct {
	Seq      uint64
	Reason   string
	ParkedAt time.Time
	// Record is the parked record; Err is set (and Record holds only Seq)
	// when its stored value is damaged, Raw then holds it as stored.
	Record Record
	Err    error
	Raw    []byte
}

// ReadParked calls fn for every parked record, in sequence order.
func (q *Queue) ReadParked(fn func(ParkedRecord) error) error {
	db, release, err := q.useStore()
	if err != nil {
		return err
	}
	defer release()
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixParked}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			seq := seqOf(it.Item().Key())
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read parked record %d: %w", seq, err)
			}
			p := ParkedRecord{Seq: seq, Reason: "?"}
			if len(v) >= 1 && len(v) >= 1+int(v[0])+timeLen {
				n := int(v[0])
				p.Reason = string(v[1 : 1+n])
				p.ParkedAt = time.Unix(0, int64(binary.BigEndian.Uint64(v[1+n:])))
				v = v[1+n+timeLen:]
			}
			p.Raw = v
			p.Record, p.Err = decodeValue(seq, v)
			if p.Err != nil {
				p.Record = Record{Seq: seq}
			}
			if err := fn(p); err != nil {
				return err
			}
		}
		return nil
	})
}

// scrub checks the journal segments not read at open, and restores the
// two copies wherever one is missing: every record still in the store
// whose journal copy is damaged or missing is written to the journal
// again, then damaged segments are moved aside (journal.corrupt-<time>).
// It runs once after open, in the background.
func (q *Queue) scrub() {
	start := time.Now() // how long the check took, for the log: the monotonic wall clock, not Options.Now
	segs := q.j.closedSegments()
	var cover rangeSet
	var bad []*segment
	for _, s := range segs {
		if s.scan == nil {
			select {
			case <-q.quit:
				return
			default:
			}
			var cov rangeSet
			sc, err := readSegment(s.path, s.num, func(r journalRecord) {
				if !r.ack {
					cov.add(r.seq)
				}
			})
			if errors.Is(err, fs.ErrNotExist) {
				continue // retired meanwhile: every record in it was acknowledged
			}
			if err != nil {
				sc.unreadable = err.Error()
			}
			s.scan, s.cover = &sc, cov
		}
		if s.damaged() {
			bad = append(bad, s)
			q.journalDmg.Add(1)
			q.logSegmentDamage(s)
			continue
		}
		cover.addSet(s.cover)
	}
	// Every record in the store up to the open that the journal does not
	// hold intact: copy it back.
	var missing []uint64
	if db, release, awake := q.peekStore(); awake { // asleep: it holds no record
		db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}, PrefetchValues: false})
			defer it.Close()
			for it.Seek(key(1)); it.Valid(); it.Next() {
				seq := seqOf(it.Item().Key())
				if seq > q.openSeq {
					break
				}
				if !cover.contains(seq) {
					missing = append(missing, seq)
				}
			}
			return nil
		})
		release()
	}
	copied := 0
	for len(missing) > 0 {
		n := min(len(missing), 1000)
		c, err := q.copyToJournal(missing[:n])
		copied += c
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				q.log.Error("buffer: copying records back to the journal failed; the store holds their only copy", "err", err)
			}
			return
		}
		missing = missing[n:]
	}
	if copied > 0 {
		if len(bad) == 0 {
			q.journalDmg.Add(1) // no damaged segment explains it: one is missing
		}
		q.log.Warn("buffer: records whose journal copy was damaged or missing were copied back from the store", "records", copied,
			"damaged_segments", len(bad))
	}
	for _, s := range bad {
		q.j.remove(s)
		aside, err := moveAside(s.path, q.dir, "journal", q.now())
		if errors.Is(err, fs.ErrNotExist) {
			continue // retired meanwhile: every record in it was acknowledged
		}
		if err != nil {
			q.log.Error("buffer: moving a damaged journal segment aside failed", "segment", s.path, "err", err)
			continue
		}
		q.log.Warn("buffer: damaged journal segment moved aside for forensics", "segment", filepath.Base(s.path), "moved_to", aside)
	}
	if len(bad) > 0 {
		q.countQuarantined()
	}
	q.log.Debug("buffer: journal checked", "segments", len(segs), "damaged", len(bad), "copied_back", copied, "took", time.Since(start).Round(time.Millisecond))
}

// logSegmentDamage says what is wrong with a segment.
func (q *Queue) logSegmentDamage(s *segment) {
	name := filepath.Base(s.path)
	if s.headerProblem != "" {
		q.log.Warn("buffer: journal segment header damaged", "segment", name, "problem", s.headerProblem)
	}
	if s.scan == nil {
		return
	}
	if s.scan.unreadable != "" {
		q.log.Warn("buffer: journal segment unreadable", "segment", name, "err", s.scan.unreadable)
	}
	for _, d := range s.scan.damage {
		skipped := "unknown"
		if d.after > 0 && d.before > d.after {
			skipped = fmt.Sprint(d.before - d.after - 1) // appends; acknowledgements in the stretch are not counted
		}
		q.log.Warn("buffer: journal segment damaged in the middle; reading resumed at the next intact record",
			"segment", name, "offset", d.off, "bytes_skipped", d.end-d.off, "records_skipped", skipped,
			"after_seq", d.after, "before_seq", d.before)
	}
}

// copyToJournal writes the store's records seqs into the journal again
// (synced), skipping those no longer in the store. A record damaged in
// the store too is handed to restore (which parks it).
func (q *Queue) copyToJournal(seqs []uint64) (int, error) {
	var recs []journalRecord
	var damaged []Damaged
	db, release, err := q.useStore()
	if err != nil {
		return 0, err
	}
	err = db.View(func(txn *badger.Txn) error {
		for _, s := range seqs {
			item, err := txn.Get(key(s))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if _, err := decodeValue(s, v); err != nil {
				damaged = append(damaged, Damaged{Seq: s, Raw: v})
				continue
			}
			recs = append(recs, journalRecord{seq: s, value: v})
		}
		return nil
	})
	release()
	if err != nil {
		return 0, err
	}
	for _, d := range damaged {
		q.restore(d)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	var werr error
	if err := q.do(func() {
		if werr = q.j.write(recs); werr != nil {
			q.j.abandon()
			return
		}
		if werr = q.j.sync(); werr != nil {
			q.j.abandon()
			return
		}
		q.j.advance(0)
	}); err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, werr
	}
	q.copied.Add(uint64(len(recs)))
	return len(recs), nil
}
