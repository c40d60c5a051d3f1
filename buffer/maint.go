package buffer

import (
	"encoding/binary"
	"errors"
	"path/filepath"
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
			if _, release, awake := q.peekStore(); awake {
				release()
				if err := q.do(q.maybeSleep); err != nil {
					return
				}
			}
			if q.depth.Load() == 0 && q.deletedSince.Load() >= reclaimAfter && !q.paused.Load() {
				if err := q.Reclaim(); err != nil && !errors.Is(err, ErrClosed) {
					q.log.Warn("buffer: reclaiming disk space failed", "err", err)
				}
			}
		}
	}
}

// maintain advances the head (first live record), records the
// acknowledged watermark and retires journal segments whose records were
// all acknowledged.
func (q *Queue) maintain() {
	q.maintMu.Lock() // the maintenance goroutine and Reclaim both call it
	defer q.maintMu.Unlock()
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
	// Read the durable sequence before the store snapshot: a record
	// committed in between has a higher sequence, so an empty snapshot
	// never moves the head past it. The records in the journal alone are
	// looked at before the store: one spilled in between is seen in one
	// or the other.
	last := q.durable.Load()
	first, _ := q.unspilled()
	if f := q.firstKey(); f > 0 && (first == 0 || f < first) {
		first = f
	}
	switch {
	case first > 0:
		q.head.Store(first)
	case last > 0:
		q.head.Store(last + 1)
	}
	// Everything below the first present record was acknowledged or
	// dropped: its journal entries are no longer needed anywhere.
	acked := last
	if first > 0 {
		acked = min(first-1, last)
	}
	// The sequence marker goes with it: records acknowledged before they
	// were spilled never wrote it (the journal has the sequence too; the
	// marker covers a journal lost with the store kept).
	// While the store sleeps, the marks are kept in memory and in the
	// journal's segment headers only (sleep.go).
	if (acked > q.ackedMark || last > q.seqMark) && !q.paused.Load() {
		var a, b [8]byte
		binary.BigEndian.PutUint64(a[:], max(acked, q.ackedMark))
		binary.BigEndian.PutUint64(b[:], last)
		err := error(nil)
		if db, release, awake := q.peekStore(); awake {
			err = db.Update(func(txn *badger.Txn) error {
				if err := txn.Set(metaAckedKey, a[:]); err != nil {
					return err
				}
				return txn.Set(metaSeqKey, b[:])
			})
			release()
		}
		if err == nil {
			q.ackedMark, q.seqMark = max(q.ackedMark, acked), max(q.seqMark, last)
		}
	}
	// The next segment header records the checkpoint replay starts from:
	// records above the acknowledged mark and at or below the flushed one
	// are in synced store tables. Badger syncs its table files but the
	// directory only at close: make the new tables' names durable before
	// relying on them.
	flushed := acked
	if f := q.flushedSeq(); f > flushed {
		if err := syncDir(filepath.Join(q.dir, "store")); err == nil {
			flushed = f
		}
	}
	q.j.setMarks(q.ackedMark, flushed)
	if t, ok := q.oldestTime(); ok {
		q.oldestNs.Store(t.UnixNano())
	} else {
		q.oldestNs.Store(0)
	}
	// A segment is retired only once every record in it was acknowledged:
	// until then the journal is the second copy of the store.
	if n, err := q.j.retire(q.ackedMark); err != nil {
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

// reclaimNow runs on the commit goroutine. It drops the record keys only
// when the store really holds no record (checked by a scan from the start,
// not by the counters); otherwise it only collects the value log.
func (q *Queue) reclaimNow() error {
	q.ackMu.Lock()
	idle := len(q.acks) == 0 && len(q.inDelete) == 0
	q.ackMu.Unlock()
	if _, n := q.unspilled(); n > 0 {
		idle = false // the tail holds records the store does not have
	}
	if db, release, awake := q.peekStore(); awake { // asleep: it holds no record
		emptied, err := reclaimIn(db, idle)
		release()
		if err != nil {
			return err
		}
		if emptied {
			q.tailReset(q.lastSeq + 1)
			q.depth.Store(0) // verified empty: heal any drift in the counters
			q.bytes.Store(0)
		}
	}
	q.deletedSince.Store(0)
	q.maintain()
	return nil
}

// reclaimIn drops every record key of an empty store (idle: nothing
// pending; emptied says it did) and collects its value log.
func reclaimIn(db *badger.DB, idle bool) (emptied bool, err error) {
	if idle && storeEmpty(db) {
		// DropPrefix does nothing when no live key has the prefix, and a
		// drained queue has none: write a sentinel (seq 0, never a real
		// record) for it to find.
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key(0), nil) }); err != nil {
			return false, err
		}
		if err := db.DropPrefix([]byte{prefixRecord}); err != nil {
			return false, err
		}
		emptied = true
	}
	for {
		err := db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return emptied, nil
		}
		if err != nil {
			return emptied, err
		}
	}
}

// storeEmpty reports whether db holds no record at all.
func storeEmpty(db *badger.DB) bool {
	empty := true
	db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		for it.Seek(key(1)); it.Valid(); it.Next() {
			if seqOf(it.Item().Key()) != 0 {
				empty = false
				break
			}
		}
		return nil
	})
	return empty
}
