package buffer

import "sort"

// The tail: the records committed last, kept in memory for Read.
//
// A live scan is read by the uplink a moment after it was committed. Read
// from the store, each such read opened a Badger transaction and an
// iterator over every memtable and table level, for one or a few records:
// at 1,000 scans/s over 16 stations that was 8 % of the agent's CPU
// (docs/BENCHMARKS.md). The commit goroutine keeps a copy of what it
// commits (decoded as Read would decode it from the store), and Read
// serves a cursor at or above tailFrom from it. The store is still
// written, deleted and read as before: the tail is a copy, never the only
// one, and a cursor below it (a backlog, a new session, a record trimmed
// from it) reads the store.
//
// Invariant, under tailMu: every record present in the store with a
// sequence at or above tailFrom is in tail, in order. Records enter at
// commit (before they become readable: durable is raised after), leave
// when deleted (acknowledged, parked, dropped, reclaimed: tailRemove, in
// the same critical section that makes them invisible to Read), and the
// oldest are trimmed beyond tailMax (tailFrom moves past them).

const (
	tailMaxRecords = 4096
	tailMaxBytes   = 2 << 20
)

type tailRec struct {
	rec  Record
	gone bool // deleted from the store
}

// tailAdd appends committed records (commit goroutine, before durable is
// raised to them).
func (q *Queue) tailAdd(recs []*appendReq) {
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	for _, r := range recs {
		rec, err := decodeValue(r.seq, r.val)
		if err != nil {
			// Cannot happen (just encoded); never serve a gap from memory.
			q.tail, q.tailBytes = nil, 0
			q.tailFrom = r.seq + 1
			continue
		}
		q.tail = append(q.tail, tailRec{rec: rec})
		q.tailBytes += len(r.val)
	}
	q.tailTrimLocked()
}

// tailTrimLocked drops deleted records from the front, and the oldest
// beyond the bounds.
func (q *Queue) tailTrimLocked() {
	i := 0
	for i < len(q.tail) && (q.tail[i].gone || len(q.tail)-i > tailMaxRecords || q.tailBytes > tailMaxBytes) {
		q.tailBytes -= int(q.tail[i].rec.stored)
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
	} else if cap(q.tail) > 2*tailMaxRecords {
		q.tail = append([]tailRec(nil), q.tail...)
	}
}

// tailRemove forgets records deleted from the store. Callers that hide
// records from Read through inDelete call it under ackMu, in the same
// critical section that removes them from inDelete.
func (q *Queue) tailRemove(seqs []uint64) {
	q.tailMu.Lock()
	defer q.tailMu.Unlock()
	for _, s := range seqs {
		if i := q.tailIndex(s); i < len(q.tail) && q.tail[i].rec.Seq == s && !q.tail[i].gone {
			q.tail[i].gone = true
			q.tail[i].rec.Value = nil
		}
	}
	q.tailTrimLocked()
}

// tailReset empties the tail: nothing below the next sequence is served
// from memory any more.
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
