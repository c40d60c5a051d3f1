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
	if n, err := q.j.retire(cp); err != nil {
		q.log.Warn("buffer: retiring journal segments failed", "err", err)
	} else if n > 0 {
		q.retired.Add(uint64(n))
	}
}

// Reclaim gives disk space back after a drain: it garbage-collects the
// value log and compacts the tree so that deleted records leave the disk.
// It runs in the caller's goroutine and can take a while on a large store.
func (q *Queue) Reclaim() error {
	for {
		err := q.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrGCInMemoryMode) {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := q.db.Flatten(1); err != nil {
		return err
	}
	q.maintain()
	return nil
}
