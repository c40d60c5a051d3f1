package buffer

import (
	"sort"
	"time"
)

// The tail: the records committed last, kept in memory.
//
// A live scan is read by the uplink a moment after it was committed and
// acknowledged a moment later. The tail keeps what the commit goroutine
// committed (decoded as Read would decode it from the store, with its
// stored value), and Read serves a cursor at or above tailFrom from it.
//
// The live path does not touch the store (Options.SpillAfter): a record
// is durable once its journal write is synced, and it is written to the
// store ("spilled") only when it is still waiting for its acknowledgement
// SpillAfter after its commit, when the tail is over its bounds, when the
// queue closes, or before drop_oldest picks what to drop. A record
// acknowledged before that never enters the store: its acknowledgement
// is journalled, as for every record. While a record is in the journal
// alone (at most SpillAfter), it has one copy on disk instead of two; a
// crash in that time is covered by the journal's replay at open, which
// writes into the store every record above the checkpoint that the store
// does not have and that was not acknowledged.
//
// Invariants, under tailMu:
//   - every record present in the store with a sequence at or above
//     tailFrom is in tail, in order;
//   - every record above spilled that is durable and not deleted
//     (acknowledged, parked, dropped) is in tail: it is in the journal
//     and in memory only. Records at or below spilled are in the store
//     or were deleted.
//
// Records enter at commit (before they become readable: durable is raised
// after), leave when deleted (acknowledged, parked, dropped, reclaimed:
// tailRemove, in the same critical section that makes them invisible to
// Read), and the oldest spilled ones are trimmed beyond the bounds
// (tailFrom moves past them). An unspilled record is never trimmed: the
// commit spills before the bounds are passed.

const (
	tailMaxRecords = 4096
	tailMaxBytes   = 2 << 20
)

type tailRec struct {
	rec    Record
	val    []byte    // the stored value (rec.Value is within it)
	at     time.Time // committed (wall clock, for SpillAfter)
	gone   bool      // deleted
	stored bool      // written to the store
}

// tailAdd appends committed records (commit goroutine, before durable is
// raised to them). When the store was written in the commit itself
// (SpillAfter 0), spilled moves past them.
func (q *Queue) tailAdd(recs []*appendReq, appended time.Time, stored bool) {
	now := time.Now()
	at := time.Unix(0, appended.UnixNano()) // as decodeValue gives it
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	for _, r := range recs {
		rec := Record{Seq: r.seq, Time: at, Value: r.val[valueHeaderLen:], stored: int64(len(r.val))}
		q.tail = append(q.tail, tailRec{rec: rec, val: r.val, at: now, stored: stored})
		q.tailBytes += len(r.val)
	}
	if stored && len(recs) > 0 {
		q.spilled.Store(recs[len(recs)-1].seq)
	}
	q.tailTrimLocked()
}

// tailTrimLocked drops deleted records from the front, and the oldest
// spilled ones beyond the bounds.
func (q *Queue) tailTrimLocked() {
	spilled := q.spilled.Load()
	i := 0
	for i < len(q.tail) && (q.tail[i].gone || (q.tail[i].rec.Seq <= spilled && (len(q.tail)-i > tailMaxRecords || q.tailBytes > tailMaxBytes))) {
		q.tailBytes -= len(q.tail[i].val)
		q.tailFrom = max(q.tailFrom, q.tail[i].rec.Seq+1)
		q.tail[i] = tailRec{}
		i++
	}
	if i == 0 {
		return
	}
	q.tail = q.tail[i:]
	if len(q.tail) == 0 {
		q.tail = q.tail[:0:0] // let the old array go
		q.tailBytes = 0
	} else if cap(q.tail) > 2*tailMaxRecords && cap(q.tail) > 2*len(q.tail) {
		q.tail = append([]tailRec(nil), q.tail...)
	}
}

// tailRemove forgets deleted records. Callers that hide records from Read
// through inDelete call it under ackMu, in the same critical section that
// removes them from inDelete.
func (q *Queue) tailRemove(seqs []uint64) {
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	for _, s := range seqs {
		if i := q.tailIndex(s); i < len(q.tail) && q.tail[i].rec.Seq == s && !q.tail[i].gone {
			q.tail[i].gone = true
			q.tailBytes -= len(q.tail[i].val)
			q.tail[i].rec.Value, q.tail[i].val = nil, nil
		}
	}
	q.tailTrimLocked()
}

// tailReset empties the tail: nothing below the next sequence is served
// from memory any more. Only for a tail with no unspilled record.
func (q *Queue) tailReset(next uint64) {
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	q.tail, q.tailBytes = nil, 0
	q.tailFrom = max(q.tailFrom, next)
}

// tailIndex is the index of the first record with a sequence >= s.
func (q *Queue) tailIndex(s uint64) int {
	return sort.Search(len(q.tail), func(i int) bool { return q.tail[i].rec.Seq >= s })
}

// tailRead serves Read from the tail when the cursor is within it: up to
// limit records after after, at most durable, not hidden (inDelete; the
// caller holds ackMu). ok is false when the store must be read.
func (q *Queue) tailRead(after uint64, limit int, durable uint64) (out []Record, ok bool) {
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	if after+1 < q.tailFrom {
		return nil, false
	}
	for i := q.tailIndex(after + 1); i < len(q.tail) && len(out) < limit; i++ {
		t := &q.tail[i]
		if t.rec.Seq > durable {
			break
		}
		if t.gone {
			continue
		}
		if _, hidden := q.inDelete[t.rec.Seq]; hidden {
			continue
		}
		if out == nil {
			out = make([]Record, 0, min(limit, len(q.tail)-i))
		}
		out = append(out, t.rec)
	}
	return out, true
}

// unspilled reports the first record in the journal alone (not deleted;
// an acknowledged one not yet deleted counts), and how many there are.
func (q *Queue) unspilled() (first uint64, n int) {
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	for i := q.tailIndex(q.spilled.Load() + 1); i < len(q.tail); i++ {
		if !q.tail[i].gone {
			if first == 0 {
				first = q.tail[i].rec.Seq
			}
			n++
		}
	}
	return first, n
}

// spill writes to the store, oldest first, the unspilled records that are
// due: committed at least SpillAfter ago, beyond the tail's bounds (with
// room for incoming more), or all of them when all is set. It runs on the
// commit goroutine, which also runs the deletes: a record acknowledged
// after it was picked is deleted from the store by the next deleteAcked.
// It returns when the oldest unspilled record left is due (zero: none).
func (q *Queue) spill(now time.Time, all bool, incoming int) (next time.Time, err error) {
	if q.paused.Load() {
		return now.Add(time.Second), nil // store writes wait for space; the journal has them
	}
	q.ackMu.Lock()
	q.tailMu.Lock()
	spilled := q.spilled.Load()
	start := q.tailIndex(spilled + 1)
	// The tail's size once incoming records are added.
	over := len(q.tail) + incoming - tailMaxRecords
	overBytes := q.tailBytes - tailMaxBytes
	var reqs []*appendReq
	end := start
	last := spilled
	for i := start; i < len(q.tail); i++ {
		t := &q.tail[i]
		due := all || now.Sub(t.at) >= q.opts.SpillAfter || i < over || overBytes > 0
		if !due {
			next = t.at.Add(q.opts.SpillAfter)
			break
		}
		end = i + 1
		last = t.rec.Seq
		overBytes -= len(t.val)
		if t.gone {
			continue
		}
		if _, acked := q.inDelete[t.rec.Seq]; acked {
			continue
		}
		reqs = append(reqs, &appendReq{seq: t.rec.Seq, val: t.val})
	}
	q.tailMu.Unlock()
	q.ackMu.Unlock()
	if end == start {
		return next, nil
	}
	if err := q.storeRecords(reqs); err != nil {
		return time.Now().Add(time.Second), err // tried again in a second; the journal has them
	}
	q.spilledRecs.Add(uint64(len(reqs)))
	q.tailMu.Lock()
	for _, r := range reqs {
		if i := q.tailIndex(r.seq); i < len(q.tail) && q.tail[i].rec.Seq == r.seq {
			q.tail[i].stored = true
		}
	}
	q.spilled.Store(last)
	q.tailTrimLocked()
	q.tailMu.Unlock()
	return next, nil
}

// spillDue runs spill on the commit goroutine and keeps the time the next
// record is due. A failed store write is logged (at most every 10s) and
// tried again a second later: the records are durable in the journal, and
// stay readable from the tail meanwhile.
func (q *Queue) spillDue(all bool, incoming int) {
	next, err := q.spill(time.Now(), all, incoming)
	q.nextSpill = next
	if err != nil {
		if now := time.Now(); now.Sub(q.spillErrAt) >= 10*time.Second {
			q.spillErrAt = now
			q.log.Error("buffer: copying waiting records into the store failed; they are durable in the journal and will be copied again", "err", err)
		}
	}
}

// inStore reports, for each of seqs, whether the record may be in the
// store: at or below spilled, and not a record the spill passed over
// because it was acknowledged already (still in the tail, never written).
func (q *Queue) inStore(seqs []uint64) []bool {
	out := make([]bool, len(seqs))
	spilled := q.spilled.Load()
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	for k, s := range seqs {
		if s > spilled {
			continue
		}
		i := q.tailIndex(s)
		out[k] = i >= len(q.tail) || q.tail[i].rec.Seq != s || q.tail[i].stored
	}
	return out
}
