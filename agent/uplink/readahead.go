package uplink

import "github.com/scanagent/scanagent/buffer"

// The read-ahead: in order seq, while the pump publishes a full page of
// the backlog, the next page is read from the buffer on another
// goroutine.
//
// Without it the pump alternated: read a page (a Badger iterator, a Seek
// over every table, 256 values copied and verified), then publish it, and
// paho's writer had nothing to write while the page was read
// (docs/BENCHMARKS.md, issue 18, "Drain").
//
// What a page read ahead may hold that a page read in its turn would not:
// a record deleted from the buffer between the two moments. Within a
// session, in order seq, a record after the pump's cursor is deleted only
// by
//   - a receipt (mqtt.receipts): the pump checks receipts when it takes
//     each record (receipts.skip, then receipts.published refuses a seq a
//     receipt deleted, remembered for the last goneKeep seqs, far more
//     than the two pages a read-ahead spans), exactly as it already did
//     for the records later in a page read in its turn;
//   - the buffer dropping the oldest records for disk space, or parking
//     a damaged record another reader found: as for the rest of a page
//     read in its turn, such a record may still be published once (at
//     least once holds; nothing is acknowledged that was not PUBACKed).
// The session's own acknowledgements are of records at or before the
// cursor, which no page read ahead contains. A page read ahead is used
// only when the pump asks for exactly the cursor it was read after; any
// other cursor (the pump put a page aside: receipts overdue or the cap of
// unreceipted scans) reads anew. Nothing read ahead outlives its session:
// the next session reads the buffer from its start, as before.
//
// Only a full page starts a read-ahead: a short page means the pump has
// reached the end of the buffer, where live scans are read a few at a
// time and a read ahead would mostly find nothing. Order live_first reads
// its two cursors in its turn, as before.

// pager reads pages of the buffer after a cursor, the next one ahead.
type pager struct {
	q     Queue
	limit int
	ahead chan page // the read ahead in progress; nil: none
	after uint64    // the cursor ahead is read after
}

type page struct {
	recs []buffer.Record
	err  error
}

func newPager(q Queue, limit int) *pager { return &pager{q: q, limit: limit} }

// read returns up to limit records after the cursor (as Queue.Read), and
// when that is a full page, starts reading the next.
func (p *pager) read(after uint64) ([]buffer.Record, error) {
	var pg page
	if p.ahead != nil {
		pg = <-p.ahead
		p.ahead = nil
		if p.after != after {
			pg = page{}
			pg.recs, pg.err = p.q.Read(after, p.limit)
		}
	} else {
		pg.recs, pg.err = p.q.Read(after, p.limit)
	}
	if pg.err == nil && len(pg.recs) == p.limit {
		p.start(pg.recs[len(pg.recs)-1].Seq)
	}
	return pg.recs, pg.err
}

func (p *pager) start(after uint64) {
	ch := make(chan page, 1)
	p.ahead, p.after = ch, after
	go func() {
		recs, err := p.q.Read(after, p.limit)
		ch <- page{recs: recs, err: err}
	}()
}

// close waits for a read ahead in progress and drops it.
func (p *pager) close() {
	if p.ahead != nil {
		<-p.ahead
		p.ahead = nil
	}
}
