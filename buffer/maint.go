package buffer

import (
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// maintLoop retires journal segments and moves the read head forward.
func (q *Queue) maintLoop() {
	t := time.NewTicker(q.opts.MaintInterval)
	defer t.Stop()
	for {
		select {
		case <-q.quit:
			return
		case <-t.C:
			q.maintain()
			if q.depth.Load() == 0 && q.deletedSince.Load() >= reclaimAfter {
				if err := q.Reclaim(); err != nil && !errors.Is(err, ErrClosed) {
					q.log.Warn("buffer: reclaiming disk space failed", "err", err)
				}
			}
		}
	}
}

// maintain advances the head (first live record) and retires journal
// segments whose records no longer need the journal.
func (q *Queue) maintain() {
	// Retry deletes that failed earlier even when no new ack arrives.
	q.ackMu.Lock()
	pending := len(q.acks) > 0
	q.ackMu.Unlock()
	if pending {
		select {
		case q.ackKick <- struct{}{}:
		default:
		}
	}
	first := q.firstKey()
	last := q.seqStat.Load()
	if first > 0 {
		q.head.Store(first)
	} else if last > 0 {
		q.head.Store(last + 1)
	}
	// Everything below the first present record was acknowledged or
	// dropped: its journal entries are no longer needed anywhere.
	cp := last
	if first > 0 {
		cp = first - 1
	}
	cp = max(cp, q.flushedSeq())
	if t, ok := q.oldestTime(); ok {
		q.oldestNs.Store(t.UnixNano())
	} else {
		q.oldestNs.Store(0)
	}
	if n, err := q.j.retire(cp); err != nil {
		q.log.Warn("buffer: retiring journal segments failed", "err", err)
	} else if n > 0 {
		q.retired.Add(uint64(n))
	}
}

// reclaimAfter is how many deleted bytes make an emptied queue worth
// reclaiming on its own.
const reclaimAfter = 8 << 20

// Reclaim gives disk space back after a drain. When the queue is empty it
// drops every record key at once (Badger rewrites its tables without
// them); otherwise it compacts the tree. It waits for the commit goroutine,
// which blocks appends while it runs (tens of milliseconds on an emptied
// store). Maintenance calls it by itself once a drained queue has deleted
// enough.
func (q *Queue) Reclaim() error {
	done := make(chan error, 1)
	select {
	case q.reclaim <- done:
	case <-q.quit:
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-q.stopped:
		return ErrClosed
	}
}

// reclaimNow runs on the commit goroutine.
func (q *Queue) reclaimNow() error {
	q.ackMu.Lock()
	idle := len(q.acks) == 0 && len(q.inDelete) == 0
	q.ackMu.Unlock()
	if idle && q.depth.Load() == 0 {
		// DropPrefix does nothing when no live key has the prefix, and a
		// drained queue has none: write a sentinel (seq 0, never a real
		// record) for it to find.
		if err := q.db.Update(func(txn *badger.Txn) error { return txn.Set(key(0), nil) }); err != nil {
			return err
		}
		if err := q.db.DropPrefix([]byte{prefixRecord}); err != nil {
			return err
		}
	} else if err := q.db.Flatten(1); err != nil {
		return err
	}
	for {
		err := q.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return err
		}
	}
	q.deletedSince.Store(0)
	q.maintain()
	return nil
}
