// Package buffer owns the durable FIFO queue that every accepted scan goes
// through before it is published: a Badger database in the agent's data
// directory, keyed by a big-endian sequence number.
//
// An append returns only after its record is synced to disk (group commit:
// concurrent appends share one write and one sync). The uplink reads with a
// cursor and acknowledges records once the broker has them; only then are
// they deleted. The sequence survives restarts and never goes backwards, even
// when the queue was fully drained.
//
// Imported by agent (the pipeline and the MQTT uplink) and cmd/scanagent.
package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// ErrClosed is returned by operations on a closed queue.
var ErrClosed = errors.New("buffer closed")

const (
	prefixRecord = 'q'
	keyLen       = 9 // prefix + uint64
)

// metaSeqKey holds the highest sequence ever assigned, so the sequence keeps
// increasing after the queue was drained and compacted away.
var metaSeqKey = []byte("m/seq")

// Options tune a Queue. The zero value is valid.
type Options struct {
	// Logger receives Badger's warnings and errors and the queue's own
	// messages. Nil means discard.
	Logger *slog.Logger
	// MaxBatch caps the records grouped into one commit (default 1000).
	MaxBatch int
}

// Record is one queued entry.
type Record struct {
	Seq   uint64
	Value []byte
}

// Encoder builds a record's value once its sequence number is known. It runs
// on the commit goroutine and must not block.
type Encoder func(seq uint64) ([]byte, error)

// Stats is a snapshot of the queue's counters.
type Stats struct {
	Depth    int64  // records waiting for an acknowledgement
	Bytes    int64  // their value bytes
	LastSeq  uint64 // highest sequence assigned so far
	Appended uint64 // records appended since Open
	Acked    uint64 // records acknowledged since Open
	Commits  uint64 // synced commits since Open
}

type appendReq struct {
	enc  Encoder
	seq  uint64
	size int
	err  error
	done chan struct{}
}

// Queue is the durable FIFO. All methods are safe for concurrent use.
type Queue struct {
	db       *badger.DB
	log      *slog.Logger
	maxBatch int

	mu      sync.RWMutex // guards closed against concurrent sends on reqs
	closed  bool
	reqs    chan *appendReq
	ackKick chan struct{}
	quit    chan struct{}
	stopped chan struct{}
	notify  chan struct{}

	ackMu    sync.Mutex
	acks     []Record            // acknowledged, not yet deleted
	inDelete map[uint64]struct{} // seqs in acks, hidden from readers

	lastSeq  uint64 // owned by the commit goroutine after Open
	depth    atomic.Int64
	bytes    atomic.Int64
	seqStat  atomic.Uint64
	appended atomic.Uint64
	acked    atomic.Uint64
	commits  atomic.Uint64
}

// Open opens (or creates) the queue in dir. It takes Badger's directory lock:
// a second process opening the same directory gets an error.
func Open(dir string, opts Options) (*Queue, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	db, err := badger.Open(badgerOptions(dir, log))
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	q := &Queue{
		db:       db,
		log:      log,
		maxBatch: opts.MaxBatch,
		reqs:     make(chan *appendReq, opts.MaxBatch),
		ackKick:  make(chan struct{}, 1),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
		notify:   make(chan struct{}, 1),
		inDelete: make(map[uint64]struct{}),
	}
	if err := q.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	go q.commitLoop()
	return q, nil
}

// badgerOptions sizes Badger for an edge box (see LIBRARY-NOTES.md): small
// memtables, no caches (which requires no compression), values inline, and
// synced writes so that a commit returns only once it is on disk.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithValueLogFileSize(16 << 20).
		WithNumCompactors(2).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{log.With("component", "badger")})
}

// load restores the sequence, depth and byte count from disk.
func (q *Queue) load() error {
	return q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaSeqKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("corrupt sequence record (%d bytes)", len(v))
				}
				q.lastSeq = binary.BigEndian.Uint64(v)
				return nil
			}); err != nil {
				return err
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		var depth, size int64
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			depth++
			size += item.ValueSize()
			if s := seqOf(item.Key()); s > q.lastSeq {
				q.lastSeq = s
			}
		}
		q.depth.Store(depth)
		q.bytes.Store(size)
		q.seqStat.Store(q.lastSeq)
		return nil
	})
}

// Append assigns the next sequence number, encodes the record with enc and
// returns once it is synced to disk. The returned error is non-nil when the
// record is not durable (encoding failed, disk error, queue closed).
func (q *Queue) Append(enc Encoder) (uint64, error) {
	r := &appendReq{enc: enc, done: make(chan struct{})}
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return 0, ErrClosed
	}
	q.reqs <- r
	q.mu.RUnlock()
	<-r.done
	return r.seq, r.err
}

// Ack marks records as delivered; they are deleted in the next commit and
// no longer returned by Read. Acknowledging is idempotent per record.
func (q *Queue) Ack(recs ...Record) {
	q.ackMu.Lock()
	for _, r := range recs {
		if _, dup := q.inDelete[r.Seq]; dup {
			continue
		}
		q.inDelete[r.Seq] = struct{}{}
		q.acks = append(q.acks, r)
	}
	q.ackMu.Unlock()
	select {
	case q.ackKick <- struct{}{}:
	default:
	}
}

// Notify returns a channel that receives a value after new records were
// committed. It is meant for one consumer (the uplink).
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// Read returns up to max records with a sequence greater than after, in
// order, skipping records that were acknowledged but not yet deleted.
func (q *Queue) Read(after uint64, max int) ([]Record, error) {
	var out []Record
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{
			Prefix:         []byte{prefixRecord},
			PrefetchValues: true,
			PrefetchSize:   min(max, 100),
		})
		defer it.Close()
		q.ackMu.Lock()
		defer q.ackMu.Unlock()
		for it.Seek(key(after + 1)); it.Valid() && len(out) < max; it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			if _, gone := q.inDelete[seq]; gone {
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("read record %d: %w", seq, err)
			}
			out = append(out, Record{Seq: seq, Value: v})
		}
		return nil
	})
	return out, err
}

// Stats returns the current counters.
func (q *Queue) Stats() Stats {
	return Stats{
		Depth:    q.depth.Load(),
		Bytes:    q.bytes.Load(),
		LastSeq:  q.seqStat.Load(),
		Appended: q.appended.Load(),
		Acked:    q.acked.Load(),
		Commits:  q.commits.Load(),
	}
}

// Close commits what is pending and closes the database. Appends after
// Close fail with ErrClosed.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	q.closed = true
	q.mu.Unlock()
	close(q.quit)
	<-q.stopped
	return q.db.Close()
}

// commitLoop is the single writer: it groups waiting appends and pending
// deletes into one synced transaction.
func (q *Queue) commitLoop() {
	defer close(q.stopped)
	batch := make([]*appendReq, 0, q.maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-q.reqs:
			batch = append(batch, r)
		case <-q.ackKick:
		case <-q.quit:
			// Close holds closed=true, so no new sends: drain and finish.
			for {
				select {
				case r := <-q.reqs:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			q.commit(batch, q.takeAcks())
			return
		}
	gather:
		for len(batch) < q.maxBatch {
			select {
			case r := <-q.reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		q.commit(batch, q.takeAcks())
	}
}

func (q *Queue) takeAcks() []Record {
	q.ackMu.Lock()
	defer q.ackMu.Unlock()
	a := q.acks
	q.acks = nil
	return a
}

// Transaction limits, well below Badger's (15% of the 8 MiB memtable), so a
// group never fails with ErrTxnTooBig.
const (
	maxTxnEntries = 2000
	maxTxnBytes   = 512 << 10
)

// commit writes one group: appends in order, in as few synced transactions
// as the limits allow, then the deletes. An append whose transaction fails
// gets the error and its sequence number is reused; failed deletes are
// retried with the next group.
func (q *Queue) commit(batch []*appendReq, dels []Record) {
	var (
		chunk   []*appendReq
		txn     = q.db.NewTransaction(true)
		entries int
		size    int
		seq     = q.lastSeq
	)
	added := 0
	for _, r := range batch {
		v, err := r.enc(seq + 1)
		if err != nil {
			r.err = fmt.Errorf("encode record: %w", err)
			continue
		}
		if entries > 0 && (entries+2 > maxTxnEntries || size+len(v)+keyLen > maxTxnBytes) {
			added += q.finish(txn, chunk, seq)
			chunk, entries, size = chunk[:0], 0, 0
			txn = q.db.NewTransaction(true)
			seq = q.lastSeq
			if v, err = r.enc(seq + 1); err != nil {
				r.err = fmt.Errorf("encode record: %w", err)
				continue
			}
		}
		if err := txn.Set(key(seq+1), v); err != nil {
			r.err = fmt.Errorf("buffer append: %w", err)
			continue
		}
		seq++
		r.seq, r.size = seq, len(v)
		chunk = append(chunk, r)
		entries++
		size += len(v) + keyLen
	}
	added += q.finish(txn, chunk, seq)
	for _, r := range batch {
		close(r.done)
	}
	if added > 0 {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
	for len(dels) > 0 {
		n := min(len(dels), maxTxnEntries)
		q.deleteAcked(dels[:n])
		dels = dels[n:]
	}
}

// finish commits one append transaction holding chunk (ending at seq) and
// returns how many records became durable.
func (q *Queue) finish(txn *badger.Txn, chunk []*appendReq, seq uint64) int {
	if len(chunk) == 0 {
		txn.Discard()
		return 0
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	err := txn.Set(metaSeqKey, b[:])
	if err == nil {
		err = txn.Commit()
	} else {
		txn.Discard()
	}
	if err != nil {
		q.log.Error("buffer append failed", "records", len(chunk), "err", err)
		for _, r := range chunk {
			r.err = fmt.Errorf("buffer commit: %w", err)
			r.seq = 0
		}
		return 0
	}
	var bytes int64
	for _, r := range chunk {
		bytes += int64(r.size)
	}
	q.lastSeq = seq
	q.seqStat.Store(seq)
	q.commits.Add(1)
	q.appended.Add(uint64(len(chunk)))
	q.depth.Add(int64(len(chunk)))
	q.bytes.Add(bytes)
	return len(chunk)
}

// deleteAcked deletes acknowledged records in one transaction. On failure
// they go back to the pending list; they stay hidden from readers.
func (q *Queue) deleteAcked(dels []Record) {
	txn := q.db.NewTransaction(true)
	var err error
	for _, d := range dels {
		if err = txn.Delete(key(d.Seq)); err != nil {
			break
		}
	}
	if err == nil {
		err = txn.Commit()
	} else {
		txn.Discard()
	}
	q.ackMu.Lock()
	defer q.ackMu.Unlock()
	if err != nil {
		q.log.Error("buffer delete failed; will retry", "records", len(dels), "err", err)
		q.acks = append(q.acks, dels...)
		return
	}
	var bytes int64
	for _, d := range dels {
		delete(q.inDelete, d.Seq)
		bytes += int64(len(d.Value))
	}
	q.depth.Add(-int64(len(dels)))
	q.bytes.Add(-bytes)
	q.acked.Add(uint64(len(dels)))
	q.commits.Add(1)
}

func key(seq uint64) []byte {
	k := make([]byte, keyLen)
	k[0] = prefixRecord
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func seqOf(k []byte) uint64 {
	if len(k) != keyLen {
		return 0
	}
	return binary.BigEndian.Uint64(k[1:])
}

// badgerLogger routes Badger's log through slog; its chatty info level goes
// to debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.log.Error(trimNL(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Warningf(f string, a ...any) { l.log.Warn(trimNL(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Infof(f string, a ...any)    { l.log.Debug(trimNL(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.log.Debug(trimNL(fmt.Sprintf(f, a...))) }

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
