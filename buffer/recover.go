package buffer

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// recover restores the sequence and brings the store up to date with the
// journal.
//
// The journal is read as a log from the checkpoint on: an append that is
// not acknowledged and of which the store has no trace (neither the
// record nor a deletion marker) is written into the store; an
// acknowledgement deletes its record. The checkpoint is the highest
// acknowledged and flushed marks the journal's headers recorded (records
// at or below it were in synced store tables); for a new store (a first
// start, or one rebuilt after a quarantine) it is 0: the whole journal is
// replayed. Badger replays each memtable log on its own, so after a power
// loss the store may lack records below its own sequence marker; checking
// every record above the checkpoint covers that.
//
// Damage found in the segments read here is noted: where the store has no
// copy of a record in a damaged stretch either, that scan is counted as
// unrecoverable and logged with its sequence range. The other segments
// are checked in the background (scrub).
func (q *Queue) recover(fresh bool) error {
	storeSeq, err := q.metaUint(metaSeqKey)
	if err != nil {
		return err
	}
	acked, err := q.metaUint(metaAckedKey)
	if err != nil {
		return err
	}
	j, err := openJournal(filepath.Join(q.dir, "journal"), q.opts.SegmentSize)
	if err != nil {
		return err
	}
	q.j = j
	jAcked, jFlushed := j.checkpoint()
	acked = max(acked, jAcked)
	q.ackedMark = acked
	q.lastSeq = max(storeSeq, j.lastBase()) // before replaying: the marker must not go back
	from := acked
	if fresh {
		from = jAcked
	} else {
		from = max(acked, jFlushed)
	}
	j.setMarks(acked, from)

	rp := &replayer{q: q, fresh: fresh, from: from, pending: map[uint64][]byte{}}
	if !fresh {
		txn := q.db.NewTransaction(false)
		defer txn.Discard()
		rp.it = txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}, AllVersions: true})
		defer rp.it.Close()
	}
	var damaged []seqRange // stretches of the journal whose records could not be read
	prevMax := uint64(0)
	for _, seg := range j.segs {
		if seg.maxSeq <= from && seg.headerProblem == "" {
			prevMax = seg.maxSeq
			continue // every append in it is at or below the checkpoint
		}
		data, err := os.ReadFile(seg.path)
		if err != nil {
			seg.scan = &segScan{unreadable: err.Error()}
			damaged = append(damaged, seqRange{prevMax + 1, seg.maxSeq})
			continue
		}
		var cov rangeSet
		sc := scanSegment(data, seg.num, func(r journalRecord) {
			if !r.ack {
				cov.add(r.seq)
			}
			rp.record(r)
		})
		seg.scan = &sc
		seg.cover = cov
		if err := rp.flush(); err != nil {
			return fmt.Errorf("replay journal: %w", err)
		}
		lo := prevMax + 1
		if seg.headerProblem == "" && seg.hdr.version > 0 {
			lo = seg.hdr.base + 1
		}
		q.lastSeq = max(q.lastSeq, sc.maxSeq)
		switch {
		case seg.headerProblem != "" && sc.appends == 0:
			damaged = append(damaged, seqRange{lo, seg.maxSeq})
		default:
			for _, d := range sc.damage {
				r := seqRange{max(lo, d.after+1), seg.maxSeq}
				if d.before > 0 {
					r.hi = d.before - 1
				}
				damaged = append(damaged, r)
			}
		}
		if sc.maxSeq > 0 {
			prevMax = sc.maxSeq
		} else {
			prevMax = max(prevMax, lo-1)
		}
	}
	if rp.replayed > 0 {
		q.replayed = rp.replayed
		q.log.Warn("buffer: replayed journal records the store did not have", "records", q.replayed, "new_store", fresh)
	}
	// A DropPrefix sentinel (seq 0) left by a crash during Reclaim.
	if err := q.db.Update(func(txn *badger.Txn) error { return txn.Delete(key(0)) }); err != nil {
		return err
	}
	if err := q.count(); err != nil {
		return err
	}
	if len(damaged) > 0 {
		if err := q.countUnrecoverable(damaged, rp, fresh); err != nil {
			return err
		}
	}
	if rp.replayed > 0 {
		// Replayed records have older sequences than what Badger may have
		// flushed already: make them durable in its memtable log.
		if err := q.db.Sync(); err != nil {
			return err
		}
	}
	// The new segment's header carries the checkpoint as it is now, so
	// that the next open starts from here even if this run ends before
	// maintenance records one. Not after filling holes below the tables'
	// highest key: those records are in memtables, not tables, until the
	// next flush (a new store is filled in order, so its tables hold only
	// sequences below its memtables').
	if f := q.flushedSeq(); f > from && (fresh || rp.replayed == 0) && syncDir(filepath.Join(q.dir, "store")) == nil {
		j.setMarks(acked, f)
	}
	q.seqStat.Store(q.lastSeq)
	q.durable.Store(q.lastSeq)
	q.openSeq = q.lastSeq
	q.tailFrom = q.lastSeq + 1 // what is in the store now is read from it
	q.spilled.Store(q.lastSeq)
	return q.j.start(q.lastSeq)
}

// count sets depth, bytes, the head and the last sequence from the store.
func (q *Queue) count() error {
	var depth, size, parked int64
	first := uint64(0)
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			s := seqOf(item.Key())
			if s == 0 {
				continue // the reclaim sentinel
			}
			if first == 0 {
				first = s
			}
			depth++
			size += item.ValueSize() + keyLen
			q.lastSeq = max(q.lastSeq, s)
		}
		pit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixParked}})
		defer pit.Close()
		for pit.Rewind(); pit.Valid(); pit.Next() {
			parked++
			q.lastSeq = max(q.lastSeq, seqOf(pit.Item().Key()))
		}
		return nil
	})
	q.depth.Store(depth)
	q.bytes.Store(size)
	q.parked.Store(parked)
	q.head.Store(first)
	return err
}

// replayer applies journal records to the store during recover.
type replayer struct {
	q        *Queue
	fresh    bool
	from     uint64
	it       *badger.Iterator // all versions, over the store as it was at open (nil: new store)
	pending  map[uint64][]byte
	dels     []uint64
	acked    rangeSet // acknowledgements above the checkpoint
	replayed int
}

func (rp *replayer) record(r journalRecord) {
	if r.seq <= rp.from {
		return
	}
	if r.ack {
		rp.acked.add(r.seq)
		if _, ok := rp.pending[r.seq]; ok {
			delete(rp.pending, r.seq)
		} else {
			rp.dels = append(rp.dels, r.seq)
		}
		return
	}
	if rp.acked.contains(r.seq) || !rp.missing(r.seq) {
		return
	}
	rp.pending[r.seq] = bytes.Clone(r.value)
}

// missing reports whether the store has no trace of seq.
func (rp *replayer) missing(seq uint64) bool {
	if rp.it == nil {
		return true
	}
	k := key(seq)
	rp.it.Seek(k)
	return !rp.it.Valid() || !bytes.Equal(rp.it.Item().Key(), k)
}

// flush writes what one segment replayed: its records, then the deletions
// of acknowledged ones.
func (rp *replayer) flush() error {
	if len(rp.pending) > 0 {
		seqs := make([]uint64, 0, len(rp.pending))
		for s := range rp.pending {
			seqs = append(seqs, s)
		}
		slices.Sort(seqs)
		reqs := make([]*appendReq, len(seqs))
		for i, s := range seqs {
			reqs[i] = &appendReq{seq: s, val: rp.pending[s]}
		}
		if err := rp.q.storeRecords(reqs); err != nil {
			return err
		}
		rp.replayed += len(seqs)
		clear(rp.pending)
	}
	for len(rp.dels) > 0 {
		n := min(len(rp.dels), maxTxnEntries)
		if err := rp.q.db.Update(func(txn *badger.Txn) error {
			for _, s := range rp.dels[:n] {
				if err := txn.Delete(key(s)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		rp.dels = rp.dels[n:]
	}
	return nil
}

// countUnrecoverable finds the records of damaged journal stretches that
// the store has no copy of either, and that were not acknowledged: those
// scans are lost. They are counted, logged with their sequence ranges and
// kept in the buffer's loss record (Stats.Unrecoverable). For an old store
// a record with a trace (a deletion marker) was acknowledged, and records
// at or below the checkpoint were in its tables.
func (q *Queue) countUnrecoverable(damaged []seqRange, rp *replayer, fresh bool) error {
	var lost []seqRange
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}, AllVersions: !fresh, PrefetchValues: false})
		defer it.Close()
		pit := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixParked}, PrefetchValues: false})
		defer pit.Close()
		for _, d := range damaged {
			lo, hi := max(d.lo, rp.from+1), min(d.hi, q.lastSeq)
			if lo > hi {
				continue
			}
			present := func(s uint64) bool {
				for _, x := range []*badger.Iterator{it, pit} {
					k := key(s)
					if x == pit {
						k[0] = prefixParked
					}
					x.Seek(k)
					if x.Valid() && bytes.Equal(x.Item().Key(), k) {
						return true
					}
				}
				return false
			}
			for s := lo; s <= hi; s++ {
				if rp.acked.contains(s) || present(s) {
					continue
				}
				if n := len(lost); n > 0 && lost[n-1].hi == s-1 {
					lost[n-1].hi = s
				} else {
					lost = append(lost, seqRange{s, s})
				}
			}
		}
		return nil
	})
	if err != nil || len(lost) == 0 {
		return err
	}
	if err := q.recordLoss(lost, "journal damaged and the store has no copy"); err != nil {
		// Logged and counted already; a full disk must not stop the open.
		q.log.Error("buffer: writing the loss record failed; the loss is reported until the next start only", "err", err)
	}
	return nil
}

// seqRange is an inclusive range of sequences.
type seqRange struct{ lo, hi uint64 }

func (r seqRange) String() string {
	if r.lo == r.hi {
		return fmt.Sprint(r.lo)
	}
	return fmt.Sprintf("%d-%d", r.lo, r.hi)
}

// rangeSet is a set of sequences kept as sorted, disjoint ranges: cheap
// for the mostly consecutive sequences of a journal.
type rangeSet struct{ r []seqRange }

func (s *rangeSet) add(seq uint64) {
	n := len(s.r)
	if n > 0 && s.r[n-1].hi+1 == seq { // the common case: the next one
		s.r[n-1].hi = seq
		return
	}
	if n == 0 || s.r[n-1].hi < seq {
		s.r = append(s.r, seqRange{seq, seq})
		return
	}
	i, _ := slices.BinarySearchFunc(s.r, seq, cmpRange)
	if i < n && s.r[i].lo <= seq && seq <= s.r[i].hi {
		return
	}
	// Insert, merging with the neighbours it touches.
	s.r = slices.Insert(s.r, i, seqRange{seq, seq})
	if i+1 < len(s.r) && s.r[i+1].lo == seq+1 {
		s.r[i].hi = s.r[i+1].hi
		s.r = slices.Delete(s.r, i+1, i+2)
	}
	if i > 0 && s.r[i-1].hi+1 == seq {
		s.r[i-1].hi = s.r[i].hi
		s.r = slices.Delete(s.r, i, i+1)
	}
}

// addSet adds every range of o.
func (s *rangeSet) addSet(o rangeSet) {
	if len(o.r) == 0 {
		return
	}
	s.r = append(s.r, o.r...)
	slices.SortFunc(s.r, func(a, b seqRange) int { return cmp.Compare(a.lo, b.lo) })
	out := s.r[:1]
	for _, r := range s.r[1:] {
		last := &out[len(out)-1]
		if r.lo <= last.hi || r.lo == last.hi+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	s.r = out
}

func (s *rangeSet) contains(seq uint64) bool {
	_, ok := slices.BinarySearchFunc(s.r, seq, cmpRange)
	return ok
}

// cmpRange orders a range against a sequence (0: it holds it).
func cmpRange(r seqRange, v uint64) int {
	switch {
	case r.hi < v:
		return -1
	case r.lo > v:
		return 1
	}
	return 0
}
