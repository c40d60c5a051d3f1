package buffer

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The store sleeps while it holds no record.
//
// With the live path in the journal (tail.go), the store is needed only
// for a backlog: records that waited longer than SpillAfter. An open
// Badger costs CPU even when nothing is written: its two compactors wake
// 20 times a second each, most of an idle agent's wake-ups. So once the
// store has held no record and nothing has used it for Options.StoreIdle (10s), it is
// closed ("sleeps"); the first spill, park or parked-record read opens it
// again ("wakes"), through openStore, with its checks and its quarantine
// of a store that cannot be opened.
//
// While it sleeps:
//   - the store holds no queued record (parked records may be there; they
//     are read only by ReadParked, which wakes it);
//   - the acknowledged and sequence marks are not written to it: the
//     journal's segment headers carry the checkpoint, and the journal the
//     sequence (recover takes the larger of both);
//   - reads below the tail find nothing in it without waking it.
//
// q.db is guarded by dbMu: users hold it for reading (useStore,
// peekStore), sleeping and waking hold it for writing. Lock order: ackMu,
// then dbMu.

// useStore returns the store, waking it if it sleeps, and the function
// that ends the use.
func (q *Queue) useStore() (*badger.DB, func(), error) {
	for {
		q.dbMu.RLock()
		if db := q.db; db != nil {
			q.storeUsed.Store(time.Now().UnixNano())
			return db, q.dbMu.RUnlock, nil
		}
		q.dbMu.RUnlock()
		if err := q.wakeStore(); err != nil {
			return nil, nil, err
		}
	}
}

// peekStore returns the store only when it is awake (ok false: it sleeps,
// and holds no queued record). It does not count as a use.
func (q *Queue) peekStore() (db *badger.DB, release func(), ok bool) {
	q.dbMu.RLock()
	if q.db == nil {
		q.dbMu.RUnlock()
		return nil, nil, false
	}
	return q.db, q.dbMu.RUnlock, true
}

// wakeStore opens the sleeping store. A store that cannot be opened is
// moved aside and a new one created (openStore): it held no queued record
// when it went to sleep, so no scan is lost with it; parked records stay
// in the copy moved aside.
func (q *Queue) wakeStore() error {
	q.dbMu.Lock()
	defer q.dbMu.Unlock()
	if q.db != nil {
		return nil
	}
	select {
	case <-q.quit:
		return ErrClosed
	default:
	}
	start := time.Now()
	db, fresh, err := q.openStore()
	if err != nil {
		return fmt.Errorf("waking the buffer store: %w", err)
	}
	if err := clearMarker(q.dir); err != nil {
		q.log.Warn("buffer: removing the open marker failed", "err", err)
	}
	if fresh {
		q.countQuarantined()
		q.parked.Store(0)
	}
	q.db = db
	q.storeUsed.Store(time.Now().UnixNano())
	q.wakes.Add(1)
	q.log.Debug("buffer: store opened for a backlog", "took", time.Since(start).Round(time.Millisecond), "new", fresh)
	return nil
}

// maybeSleep closes the store when it holds no queued record, no deletion
// is pending, and nothing used it for StoreIdle. It runs on the commit
// goroutine (through do), which owns spills, deletes and the deferred
// deletes.
func (q *Queue) maybeSleep() {
	if q.opts.Inspect || q.opts.StoreIdle < 0 || len(q.deferred) > 0 || q.paused.Load() {
		return
	}
	if time.Since(time.Unix(0, q.storeUsed.Load())) < q.opts.StoreIdle {
		return
	}
	q.ackMu.Lock()
	defer q.ackMu.Unlock()
	if len(q.acks) > 0 {
		return
	}
	spilled := q.spilled.Load()
	for s := range q.inDelete {
		if s <= spilled {
			return // its delete goes to the store
		}
	}
	q.dbMu.Lock()
	defer q.dbMu.Unlock()
	if q.db == nil || time.Since(time.Unix(0, q.storeUsed.Load())) < q.opts.StoreIdle || q.firstKeyIn(q.db) != 0 {
		return
	}
	start := time.Now()
	if err := q.db.Close(); err != nil {
		q.log.Warn("buffer: closing the empty store", "err", err)
	}
	q.db = nil
	q.sleeps.Add(1)
	q.log.Debug("buffer: store closed while it holds no backlog", "took", time.Since(start).Round(time.Millisecond))
}

// firstKeyIn returns the lowest sequence present in db from the head on
// (pending deletion or not), or 0 when there is none.
func (q *Queue) firstKeyIn(db *badger.DB) uint64 {
	var first uint64
	db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		for it.Seek(key(max(q.head.Load(), 1))); it.Valid(); it.Next() {
			if s := seqOf(it.Item().Key()); s != 0 {
				first = s
				break
			}
		}
		return nil
	})
	return first
}
