// Package buffer owns the durable FIFO queue that every accepted scan goes
// through before it is published.
//
// An append returns only after its record is durable: appends from all
// callers are grouped (group commit) and written to a preallocated journal
// with one data sync. A record still waiting for its acknowledgement
// SpillAfter later is copied into a Badger store keyed by a big-endian
// sequence number (tail.go); one acknowledged sooner (the live path) never
// enters the store. The uplink reads with a cursor and acknowledges
// records once the broker has them; only then are they deleted. The
// sequence survives restarts and never goes backwards, even when the
// queue was drained or the store was lost.
//
// Layout under the queue directory: store/ (Badger), journal/ (segments),
// store.corrupt-<time>/ (stores that failed to open, kept for forensics).
//
// Imported by agent (the pipeline and the MQTT uplink) and cmd/scanagent.
package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Errors returned by Append and Open.
var (
	ErrClosed   = errors.New("buffer closed")
	ErrFull     = errors.New("buffer full (buffer.max_bytes reached, when_full: reject_new)")
	ErrDiskFull = errors.New("disk full: free space below buffer.min_free_disk")
	ErrLocked   = errors.New("buffer is in use by another process (is the agent running? stop it first)")
	// ErrRefused fails an append whose value is longer than its
	// Value.Max (counted under ReasonRefused, not as an error).
	ErrRefused = errors.New("record refused: longer than its limit")
)

// WhenFull is the policy applied when MaxBytes is reached.
type WhenFull int

const (
	DropOldest WhenFull = iota // delete the oldest records to make room
	RejectNew                  // fail new appends with ErrFull
)

// Drop and reject reasons counted in Stats.
const (
	ReasonFull     = "buffer_full"
	ReasonDiskFull = "disk_full"
	ReasonRefused  = "refused"
	ReasonError    = "error"
)

const (
	prefixRecord = 'q'
	prefixParked = 'p' // records taken out of the queue: see Park
	keyLen       = 9   // prefix + uint64
	timeLen      = 8   // append time stored in each value
)

// Meta keys: the highest sequence written to the store, and the
// acknowledged watermark (every record at or below it was acknowledged or
// dropped), kept by maintenance to bound journal replay.
var (
	metaSeqKey   = []byte("m/seq")
	metaAckedKey = []byte("m/acked")
)

// metaUint reads a big-endian uint64 meta value (0 when absent).
func (q *Queue) metaUint(k []byte) (uint64, error) {
	var v uint64
	err := q.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("corrupt meta record %s (%d bytes)", k, len(b))
			}
			v = binary.BigEndian.Uint64(b)
			return nil
		})
	})
	return v, err
}

// Options tune a Queue. The zero value is valid.
type Options struct {
	// Logger receives Badger's warnings and errors and the queue's own
	// messages. Nil means discard.
	Logger *slog.Logger
	// MaxBatch caps the records grouped into one commit (default 1000).
	MaxBatch int
	// CommitWindow is how long a commit waits for more appends after the
	// first one (0: commit at once; appends arriving during a sync form
	// the next group anyway).
	CommitWindow time.Duration
	// MaxBytes caps the records' bytes (0: no cap); WhenFull says what
	// happens at the cap.
	MaxBytes int64
	WhenFull WhenFull
	// MinFreeDisk: appends fail with ErrDiskFull while the filesystem has
	// less free space than this (default 64 MiB; negative disables).
	MinFreeDisk int64
	// SegmentSize of the journal (default 4 MiB).
	SegmentSize int64
	// MaintInterval is how often journal segments are retired (default 1s).
	MaintInterval time.Duration
	// SpillAfter is how long a record may wait for its acknowledgement in
	// the journal alone before it is copied into the store (default 1s;
	// negative: every record is written to the store in its commit). See
	// tail.go.
	SpillAfter time.Duration
	// StoreIdle is how long the store stays open while it holds no record
	// and nothing uses it (default 10s; negative: it never closes). See
	// sleep.go.
	StoreIdle time.Duration
	// Now is the clock (default time.Now): the append time of records,
	// the time of parked records and loss records, the names of what is
	// moved aside, the oldest record's age, and the pacing of the
	// free-space checks and of the drop log. Timers (MaintInterval,
	// CommitWindow, the free-space check loop) and durations measured for
	// metrics and logs (sync latency) run on the wall clock.
	Now func() time.Time
	// Inspect opens the queue for looking at it (buffer stats, export):
	// the check of the journal after open, which repairs what it finds,
	// does not run.
	Inspect bool
}

// Record is one queued entry.
type Record struct {
	Seq   uint64
	Time  time.Time // when it was appended
	Value []byte
	// stored is the size of the value as stored (0: as this version
	// stores it).
	stored int64
}

// size is what a record counts against MaxBytes and Stats.Bytes.
func (r Record) size() int64 {
	if r.stored > 0 {
		return r.stored + keyLen
	}
	return int64(len(r.Value) + valueHeaderLen + keyLen)
}

// Value is a record's value before its sequence number is known: the
// record is Head, the sequence number in decimal, then Tail. The queue
// assigns sequence numbers in commit order, so a producer cannot write
// them itself; it gives the bytes around, and the queue runs no producer
// code.
type Value struct {
	Head, Tail []byte
	// Max, if positive, refuses the record (ErrRefused) when it would be
	// longer than Max bytes.
	Max int
}

// Bytes returns the record v makes with seq.
func (v Value) Bytes(seq uint64) []byte { return v.appendTo(nil, seq) }

func (v Value) appendTo(b []byte, seq uint64) []byte {
	b = append(b, v.Head...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, v.Tail...)
}

// size is the length of the record v makes with seq.
func (v Value) size(seq uint64) int {
	n := 1
	for x := seq; x >= 10; x /= 10 {
		n++
	}
	return len(v.Head) + n + len(v.Tail)
}

// Outcome is what became of a submitted value: durable under Seq (Err
// nil), or not stored (Err says why). Tag is the submitter's.
type Outcome struct {
	Seq uint64
	Err error
	Tag any
}

type appendReq struct {
	v    Value
	tag  any
	out  chan<- Outcome // Submit's channel, or nil
	seq  uint64
	val  []byte // stored value (encodeValue)
	err  error
	done chan struct{} // Append waits on it; nil for Submit
}

// Queue is the durable FIFO. All methods are safe for concurrent use.
type Queue struct {
	dir  string
	lock *os.File // held while open (lockDir)
	// db is the store; nil while it sleeps (sleep.go). Guarded by dbMu.
	db        *badger.DB
	dbMu      sync.RWMutex
	storeUsed atomic.Int64  // unix ns of the last use (useStore)
	wakes     atomic.Uint64 // store opened again for a backlog
	sleeps    atomic.Uint64 // store closed while empty
	j         *journal
	log       *slog.Logger
	opts      Options
	now       func() time.Time

	mu      sync.RWMutex // guards closed against concurrent sends on reqs
	closed  bool
	reqs    chan *appendReq
	ackKick chan struct{}
	quit    chan struct{}
	stopped chan struct{}
	notify  chan struct{}
	reclaim chan chan error

	ops chan func() // run on the commit goroutine (see do)

	jAcks []uint64 // commit goroutine: acknowledgements to journal with the next write

	ackMu      sync.Mutex
	acks       []ackReq            // acknowledged or parked, not yet deleted
	inDelete   map[uint64]struct{} // seqs in acks, hidden from readers
	droppedMax uint64              // highest seq ever dropped by drop_oldest

	tailMu      sync.Mutex // after ackMu when both are held
	tail        []tailRec  // the records committed last (tail.go)
	tailFrom    uint64     // every record in the store at or above it is in tail
	tailBytes   int
	spilled     atomic.Uint64 // records above it are in the journal and the tail only (tail.go)
	spilledRecs atomic.Uint64 // records copied into the store after their commit
	nextSpill   time.Time     // commit goroutine: when the oldest unspilled record is due
	spillErrAt  time.Time     // commit goroutine: the last spill failure logged
	seqMark     uint64        // under maintMu: the sequence marker last stored

	lastSeq       uint64        // owned by the commit goroutine after Open
	openSeq       uint64        // the last sequence when the queue was opened
	dropCursor    uint64        // commit goroutine: seek start for drop_oldest
	head          atomic.Uint64 // lowest sequence possibly present
	durable       atomic.Uint64 // highest sequence durable and readable
	dropLogAt     time.Time
	guard         *diskGuard
	diskLow       atomic.Bool  // new appends refused (diskGuard.check)
	paused        atomic.Bool  // store writes paused: the disk is nearly exhausted
	deferred      []ackReq     // commit goroutine: acknowledgements waiting for the pause to end
	diskErrLogged bool         // disk goroutine
	reserveBytes  atomic.Int64 // the reserve file's size
	freeBytes     atomic.Int64 // free space on the buffer's filesystem, last seen

	depth, bytes atomic.Int64
	seqStat      atomic.Uint64
	appended     atomic.Uint64
	acked        atomic.Uint64
	commits      atomic.Uint64
	dropped      counters // by reason: records removed without delivery
	rejected     counters // by reason: appends refused
	full         atomic.Bool
	sync         latency
	quarantined  atomic.Int64
	quarantine   atomic.Value // string: the last store moved aside, and why
	replayed     int
	retired      atomic.Uint64
	parked       atomic.Int64  // records in the parked area
	restored     atomic.Uint64 // damaged store records restored from the journal
	copied       atomic.Uint64 // records copied back into the journal from the store
	journalDmg   atomic.Uint64 // damaged or missing journal segments found
	lossMu       sync.Mutex
	loss         []LossRecord // scans found unrecoverable (both copies damaged), from the loss file
	deletedSince atomic.Int64 // bytes deleted since the last reclaim
	maintMu      sync.Mutex
	ackedMark    uint64       // under maintMu: last acknowledged watermark stored
	oldestNs     atomic.Int64 // append time (unix ns) of the first pending record, by maintenance
	wg           sync.WaitGroup
}

// Open opens (or creates) the queue in dir. If the store cannot be opened
// because another process holds it, the error wraps ErrLocked. A store that
// fails to open for any other reason is moved aside (never deleted), a
// fresh one is created, and the journal is replayed into it; Stats reports
// the quarantine.
func Open(dir string, opts Options) (*Queue, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.MinFreeDisk == 0 {
		opts.MinFreeDisk = 64 << 20
	}
	if opts.MaintInterval <= 0 {
		opts.MaintInterval = time.Second
	}
	if opts.SpillAfter == 0 {
		opts.SpillAfter = time.Second
	}
	if opts.StoreIdle == 0 {
		opts.StoreIdle = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	q := &Queue{
		dir:      dir,
		log:      opts.Logger,
		opts:     opts,
		now:      opts.Now,
		reqs:     make(chan *appendReq, opts.MaxBatch),
		ackKick:  make(chan struct{}, 1),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
		notify:   make(chan struct{}, 1),
		reclaim:  make(chan chan error),
		ops:      make(chan func()),
		inDelete: make(map[uint64]struct{}),
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	q.lock = lock
	if err := q.loadLoss(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	q.guard = newDiskGuard(dir, opts.MinFreeDisk)
	if released, err := q.guard.prepare(filepath.Join(dir, "store")); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	} else if released > 0 {
		q.log.Error("buffer: disk nearly full at start: released the disk reserve so the store can open and drain", "dir", dir, "reserve_bytes", released)
	}
	db, fresh, err := q.openStore()
	if err != nil {
		lock.Close()
		return nil, err
	}
	q.db = db
	q.storeUsed.Store(time.Now().UnixNano()) // StoreIdle counts from the open
	q.countQuarantined()
	if err := q.recover(fresh); err != nil {
		if q.j != nil {
			q.j.close()
		}
		db.Close()
		lock.Close()
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	if err := clearMarker(dir); err != nil {
		q.log.Warn("buffer: removing the open marker failed", "err", err)
	}
	q.checkDisk()
	// Nothing below can fail: the queue's goroutines start only now, so a
	// failed Open leaves none running (the journal's spare preparation,
	// the only one started earlier, is waited for by its close above).
	go q.commitLoop()
	q.wg.Go(q.maintLoop)
	q.wg.Go(q.diskLoop)
	if !opts.Inspect {
		q.wg.Go(q.scrub)
	}
	return q, nil
}

// do runs f on the commit goroutine (which owns the journal) and waits
// for it. It returns ErrClosed once the queue is closing.
func (q *Queue) do(f func()) error {
	done := make(chan struct{})
	select {
	case q.ops <- func() { f(); close(done) }:
	case <-q.quit:
		return ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-q.stopped:
		return ErrClosed
	}
}

func (q *Queue) countQuarantined() {
	stores, _ := filepath.Glob(filepath.Join(q.dir, "store.corrupt-*"))
	segs, _ := filepath.Glob(filepath.Join(q.dir, "journal.corrupt-*"))
	q.quarantined.Store(int64(len(stores) + len(segs)))
}

// Append assigns the next sequence number, stores the record v makes with
// it and returns once it is durable. The error is non-nil when the record
// is not durable: ErrFull, ErrDiskFull, ErrClosed, ErrRefused or a disk
// error.
func (q *Queue) Append(v Value) (uint64, error) {
	r := &appendReq{v: v, done: make(chan struct{})}
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

// Submit queues an append and returns without waiting for it (it blocks
// only while MaxBatch appends are already waiting). Once the record is
// durable, or has failed, its Outcome with tag is sent on out (nil: not
// reported); one producer's outcomes arrive in the order it submitted.
// The commit goroutine waits while out is full, holding up every
// producer's commits: out must be buffered and drained promptly. A
// producer that keeps several appends in flight gets larger groups per
// sync than one that waits for each.
func (q *Queue) Submit(v Value, tag any, out chan<- Outcome) error {
	r := &appendReq{v: v, tag: tag, out: out}
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return ErrClosed
	}
	q.reqs <- r
	return nil
}

// ackReq is an acknowledged record waiting for its delete, or a record
// being parked (park is the reason, raw the stored value to keep when it
// cannot be re-encoded).
type ackReq struct {
	Record
	park string
	raw  []byte
}

// Ack marks records as delivered; they are deleted in the next commit and
// no longer returned by Read. Acknowledging is idempotent per record.
func (q *Queue) Ack(recs ...Record) {
	q.ackMu.Lock()
	for _, r := range recs {
		q.enqueueAckLocked(ackReq{Record: r})
	}
	q.ackMu.Unlock()
	q.kickAcks()
}

// Park takes a record out of the queue without delivering it, keeping it
// apart with the reason: a record that cannot be published (the broker
// ends every session that carries it), or one whose stored copy is damaged
// and has no intact copy in the journal. Parked records are no longer
// returned by Read; ReadParked lists them (buffer export --parked).
func (q *Queue) Park(rec Record, reason string) {
	q.ackMu.Lock()
	q.enqueueAckLocked(ackReq{Record: rec, park: reason})
	q.ackMu.Unlock()
	q.kickAcks()
}

func (q *Queue) enqueueAckLocked(a ackReq) {
	if _, dup := q.inDelete[a.Seq]; dup {
		return
	}
	q.inDelete[a.Seq] = struct{}{}
	q.acks = append(q.acks, a)
}

func (q *Queue) kickAcks() {
	select {
	case q.ackKick <- struct{}{}:
	default:
	}
}

// Durable is the highest sequence that is durable and readable.
func (q *Queue) Durable() uint64 { return q.durable.Load() }

// Notify returns a channel that receives a value after new records were
// committed. It is meant for one consumer (the uplink).
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// Read returns up to limit records with a sequence greater than after, in
// order, skipping records that were acknowledged but not yet deleted. Pass
// the last sequence returned as after to continue (a cursor: the store
// never re-reads deleted records from the start).
//
// Every record's checksum is verified. A damaged record is restored from
// its journal copy (and rewritten in the store); when the journal has no
// intact copy either, the record is parked (see Park), counted as
// unrecoverable and logged with its sequence, and not returned.
func (q *Queue) Read(after uint64, limit int) ([]Record, error) {
	out, damaged, err := q.read(after, limit)
	if err != nil || len(damaged) == 0 {
		return out, err
	}
	keep := out[:0]
	for _, r := range out {
		if r.stored != 0 {
			keep = append(keep, r)
			continue
		}
		d := damaged[0]
		damaged = damaged[1:]
		if rec, ok := q.restore(d); ok {
			keep = append(keep, rec)
		}
	}
	return keep, nil
}

// Damaged is a stored record whose checksum does not match.
type Damaged struct {
	Seq uint64
	Raw []byte // the value as stored
}

// read returns records after after, in order; a damaged one is a
// placeholder (zero stored size) in out, and listed in damaged.
func (q *Queue) read(after uint64, limit int) (out []Record, damaged []Damaged, err error) {
	if after == math.MaxUint64 {
		return nil, nil, nil // nothing can come after it
	}
	if h := q.head.Load(); after+1 < h {
		after = h - 1
	}
	// Hold ackMu across the snapshot: a delete committed after the
	// snapshot was taken is still listed in inDelete, so an acknowledged
	// record is never returned again.
	q.ackMu.Lock()
	defer q.ackMu.Unlock()
	durable := q.durable.Load()
	for len(out) < limit {
		if recs, ok := q.tailRead(after, limit-len(out), durable); ok {
			if out == nil {
				return recs, damaged, nil
			}
			return append(out, recs...), damaged, nil
		}
		// Below the tail: the store. Records trimmed from the tail before
		// the snapshot below are in it, unless they were deleted.
		q.tailMu.Lock()
		from := q.tailFrom
		q.tailMu.Unlock()
		recs, dmg, err := q.readStore(after, limit-len(out), durable)
		if err != nil {
			return nil, nil, err
		}
		if out == nil {
			out = recs
		} else {
			out = append(out, recs...)
		}
		damaged = append(damaged, dmg...)
		if len(recs) > 0 {
			after = recs[len(recs)-1].Seq
		}
		if len(out) >= limit {
			break
		}
		// The store has nothing more: go on in the tail (records above
		// the last spilled are there only).
		next := after
		if from > 0 {
			next = max(after, from-1)
		}
		if next == after && len(recs) == 0 {
			break // the store had nothing, and the tail was passed by: no more now
		}
		after = next
	}
	return out, damaged, nil
}

// readStore reads up to limit records after after from the store, at most
// durable, skipping those hidden (inDelete; the caller holds ackMu).
func (q *Queue) readStore(after uint64, limit int, durable uint64) (out []Record, damaged []Damaged, err error) {
	defer func() {
		// A damaged table can make Badger's iterator panic here, in our
		// goroutine. The next start verifies the tables and rebuilds the
		// store from the journal.
		if r := recover(); r != nil {
			out, damaged = nil, nil
			err = fmt.Errorf("buffer store damaged while reading after seq %d (%s): restart the agent to rebuild the store from the journal", after, firstLine(fmt.Sprint(r)))
		}
	}()
	db, release, ok := q.peekStore()
	if !ok {
		return nil, nil, nil // asleep: it holds no queued record
	}
	defer release()
	out = make([]Record, 0, min(limit, 1024))
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{
			Prefix:         []byte{prefixRecord},
			PrefetchValues: true,
			PrefetchSize:   min(limit, 100),
		})
		defer it.Close()
		var slab []byte // one allocation for many values
		for it.Seek(key(after + 1)); it.Valid() && len(out) < limit; it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			if seq > durable {
				break
			}
			if _, gone := q.inDelete[seq]; gone {
				continue
			}
			if cap(slab)-len(slab) < int(item.ValueSize()) {
				slab = make([]byte, 0, max(64<<10, int(item.ValueSize())))
			}
			start := len(slab)
			if err := item.Value(func(v []byte) error { slab = append(slab, v...); return nil }); err != nil {
				return fmt.Errorf("read record %d: %w", seq, err)
			}
			v := slab[start:len(slab):len(slab)]
			rec, err := decodeValue(seq, v)
			if err != nil {
				damaged = append(damaged, Damaged{Seq: seq, Raw: v})
				out = append(out, Record{Seq: seq})
				continue
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, damaged, err
}

// JournalCopy returns the journal's intact copy of record seq, if any.
func (q *Queue) JournalCopy(seq uint64) (Record, bool) {
	v, ok := q.j.find(seq)
	if !ok {
		return Record{}, false
	}
	rec, err := decodeValue(seq, v)
	return rec, err == nil
}

// restore replaces a damaged stored record with its journal copy, or
// parks it when there is none.
func (q *Queue) restore(d Damaged) (Record, bool) {
	if rec, ok := q.JournalCopy(d.Seq); ok {
		v := encodeValue(d.Seq, rec.Time, rec.Value)
		var err error
		if !q.paused.Load() { // else rewritten on a later read
			var db *badger.DB
			var release func()
			if db, release, err = q.useStore(); err == nil {
				err = db.Update(func(txn *badger.Txn) error { return txn.Set(key(d.Seq), v) })
				if err == nil {
					err = db.Sync() // an older sequence than what may be flushed: make it durable now
				}
				release()
			}
		}
		q.restored.Add(1)
		q.log.Warn("buffer: a record was damaged in the store; restored from its journal copy", "seq", d.Seq, "rewrite_err", err)
		rec.stored = int64(len(v))
		return rec, true
	}
	q.log.Error("buffer: a record is damaged in the store and has no intact journal copy: parked, not published", "seq", d.Seq)
	if err := q.recordLoss([]seqRange{{d.Seq, d.Seq}}, "record damaged in the store and no intact journal copy (parked)"); err != nil {
		q.log.Error("buffer: recording the loss failed", "err", err)
	}
	q.ackMu.Lock()
	q.enqueueAckLocked(ackReq{Record: Record{Seq: d.Seq, stored: int64(len(d.Raw))}, park: ParkDamaged, raw: bytes.Clone(d.Raw)})
	q.ackMu.Unlock()
	q.kickAcks()
	return Record{}, false
}

// ReadVerified is Read without repairs, for inspection (buffer export):
// damaged records are listed apart, and nothing is written.
func (q *Queue) ReadVerified(after uint64, limit int) ([]Record, []Damaged, error) {
	out, damaged, err := q.read(after, limit)
	if len(damaged) > 0 {
		keep := out[:0]
		for _, r := range out {
			if r.stored != 0 {
				keep = append(keep, r)
			}
		}
		out = keep
	}
	return out, damaged, err
}

// Close commits what is pending, stops maintenance and closes the store.
// Appends after Close fail with ErrClosed.
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
	q.wg.Wait()
	jerr := q.j.close()
	var err error
	q.dbMu.Lock()
	if q.db != nil {
		err = q.db.Close()
	}
	q.dbMu.Unlock()
	q.lock.Close()
	if err != nil {
		return err
	}
	return jerr
}

// commitLoop is the single writer: it groups waiting appends and pending
// deletes into one journal write and one store transaction.
func (q *Queue) commitLoop() {
	defer close(q.stopped)
	batch := make([]*appendReq, 0, q.opts.MaxBatch)
	var window *time.Timer
	// The spill timer is armed while a record is in the journal alone.
	spillT := time.NewTimer(time.Hour)
	spillT.Stop()
	armed := false
	for {
		if !armed && !q.nextSpill.IsZero() {
			spillT.Reset(max(time.Until(q.nextSpill), 0))
			armed = true
		}
		batch = batch[:0]
		select {
		case r := <-q.reqs:
			batch = append(batch, r)
		case <-spillT.C:
			armed = false
			q.spillDue(false, 0)
			continue
		case <-q.ackKick:
		case done := <-q.reclaim:
			q.commit(nil, q.takeAcks())
			done <- q.reclaimNow()
			continue
		case f := <-q.ops:
			f()
			continue
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
			// What is still in the journal alone goes into the store, so
			// that the next open has nothing to replay.
			q.spillDue(true, 0)
			return
		}
		if len(batch) > 0 && q.opts.CommitWindow > 0 {
			if window == nil {
				window = time.NewTimer(q.opts.CommitWindow)
			} else {
				window.Reset(q.opts.CommitWindow)
			}
		wait:
			for len(batch) < q.opts.MaxBatch {
				select {
				case r := <-q.reqs:
					batch = append(batch, r)
				case <-window.C:
					break wait
				}
			}
			window.Stop()
		}
	gather:
		for len(batch) < q.opts.MaxBatch {
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

func (q *Queue) takeAcks() []ackReq {
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

// commit handles one group: admission (disk space, capacity), encoding,
// the journal write and sync, the store write, then the deletes.
func (q *Queue) commit(batch []*appendReq, dels []ackReq) {
	notify := false
	defer func() {
		// Acknowledgements not carried by a record write go by themselves.
		if len(q.jAcks) > 0 {
			if err := q.j.writeAcks(q.jAcks); err != nil {
				// Only costs duplicates after a crash.
				q.log.Warn("buffer: journalling acknowledgements failed", "err", err)
			}
			q.jAcks = q.jAcks[:0]
		}
		for _, r := range batch {
			if r.done != nil {
				close(r.done)
			} else if r.out != nil {
				r.out <- Outcome{Seq: r.seq, Err: r.err, Tag: r.tag}
			}
		}
		// The reader hears of new records after their producers heard
		// they were accepted.
		if notify {
			select {
			case q.notify <- struct{}{}:
			default:
			}
		}
	}()
	if q.paused.Load() {
		q.deferred = append(q.deferred, dels...) // still hidden from readers
		dels = nil
	} else if len(q.deferred) > 0 {
		dels = append(q.deferred, dels...)
		q.deferred = nil
	}
	for len(dels) > 0 {
		n := min(len(dels), maxTxnEntries)
		q.deleteAcked(dels[:n])
		dels = dels[n:]
	}
	if len(batch) == 0 {
		return
	}
	now := q.now()
	if q.guard.fast(now, q.bytes.Load()) {
		q.diskState()
		q.fail(batch, ErrDiskFull, ReasonDiskFull)
		return
	}
	var ok []*appendReq
	var incoming int64
	seq := q.lastSeq
	for _, r := range batch {
		if n := r.v.size(seq + 1); r.v.Max > 0 && n > r.v.Max {
			r.err = fmt.Errorf("%w (%d bytes, the limit is %d)", ErrRefused, n, r.v.Max)
			q.rejected.add(ReasonRefused, 1)
			continue
		}
		val := encodeNew(seq+1, now, r.v)
		size := int64(len(val) + keyLen)
		if q.opts.MaxBytes > 0 && q.opts.WhenFull == RejectNew && q.bytes.Load()+incoming+size > q.opts.MaxBytes {
			r.err = ErrFull
			q.rejected.add(ReasonFull, 1)
			q.full.Store(true)
			continue
		}
		seq++
		r.seq, r.val = seq, val
		incoming += size
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return
	}
	var drops []dropRec
	if q.opts.MaxBytes > 0 && q.opts.WhenFull == DropOldest {
		if need := q.bytes.Load() + incoming - q.opts.MaxBytes; need > 0 {
			q.spillDue(true, 0) // the oldest are picked from the store
			drops = q.oldest(need)
		}
	}
	// Unspilled records beyond the tail's bounds go into the store before
	// the tail grows; so do those due.
	stored := q.opts.SpillAfter < 0
	if !stored {
		q.spillDue(false, len(ok))
	}

	// Durable point: the journal. Its data sync runs while the same
	// records go into the store; readers see them only once both are done
	// (Read stops at the durable sequence).
	// The acknowledgements of this commit's deletes go in the same write.
	jr := make([]journalRecord, 0, len(q.jAcks)+len(ok))
	for _, s := range q.jAcks {
		jr = append(jr, journalRecord{seq: s, ack: true})
	}
	q.jAcks = q.jAcks[:0]
	for _, r := range ok {
		jr = append(jr, journalRecord{seq: r.seq, value: r.val})
	}
	q.lastSeq = seq // never reused, even on failure below
	// The sync latency is a metric, not behaviour: measured on the
	// monotonic wall clock whatever Options.Now is.
	start := time.Now()
	if err := q.j.write(jr); err != nil {
		q.j.abandon()
		q.fail(ok, err, "")
		return
	}
	var txnErr, syncErr error
	if stored {
		synced := make(chan error, 1)
		go func() { synced <- q.j.sync() }()
		txnErr = q.storeRecords(ok)
		syncErr = <-synced
	} else {
		syncErr = q.j.sync()
	}
	q.sync.observe(time.Since(start))
	if syncErr != nil {
		q.j.abandon()
		if stored && txnErr == nil {
			q.unstore(ok)
		}
		q.fail(ok, syncErr, "")
		return
	}
	q.j.advance(seq)
	q.seqStat.Store(seq)
	if txnErr != nil {
		// Durable in the journal, but not readable until the next open
		// replays it. Report the failure: the agent logs it.
		q.log.Error("buffer store write failed; records are in the journal and will be replayed at the next start", "records", len(ok), "err", txnErr)
		q.fail(ok, fmt.Errorf("buffer store: %w", txnErr), "")
		return
	}
	q.tailAdd(ok, now, stored) // before they become readable
	if !stored && q.nextSpill.IsZero() {
		q.nextSpill = time.Now().Add(q.opts.SpillAfter)
	}
	q.durable.Store(seq)
	q.commits.Add(1)
	q.appended.Add(uint64(len(ok)))
	q.depth.Add(int64(len(ok)))
	q.bytes.Add(incoming)
	if q.head.Load() == 0 {
		q.head.Store(ok[0].seq)
	}
	if len(drops) > 0 {
		q.drop(drops)
	}
	if q.opts.WhenFull == RejectNew && q.opts.MaxBytes > 0 && q.bytes.Load() < q.opts.MaxBytes {
		q.full.Store(false)
	}
	notify = true
}

func (q *Queue) fail(batch []*appendReq, err error, reason string) {
	for _, r := range batch {
		if r.err == nil {
			r.err, r.seq = err, 0
		}
	}
	if reason == "" {
		reason = ReasonError
	}
	q.rejected.add(reason, uint64(len(batch)))
}

// storeRecords writes appended records to Badger (not synced), in
// transactions within Badger's limits, with the sequence marker.
func (q *Queue) storeRecords(recs []*appendReq) error {
	if len(recs) == 0 {
		return nil
	}
	db, release, err := q.useStore()
	if err != nil {
		return err
	}
	defer release()
	for i := 0; i < len(recs); {
		txn := db.NewTransaction(true)
		n, size := 0, 0
		var err error
		for ; i < len(recs) && n < maxTxnEntries-1 && size < maxTxnBytes; i++ {
			if err = txn.Set(key(recs[i].seq), recs[i].val); err != nil {
				break
			}
			n++
			size += len(recs[i].val) + keyLen
		}
		if err == nil && recs[i-1].seq >= q.lastSeq {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], recs[i-1].seq)
			err = txn.Set(metaSeqKey, b[:])
		}
		if err != nil {
			txn.Discard()
			return err
		}
		if err := txn.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// unstore removes records whose journal sync failed (best effort): they
// were never durable, so they must not be published.
func (q *Queue) unstore(recs []*appendReq) {
	db, release, err := q.useStore()
	if err != nil {
		q.log.Error("buffer: removing records whose sync failed", "err", err)
		return
	}
	defer release()
	txn := db.NewTransaction(true)
	for _, r := range recs {
		txn.Delete(key(r.seq))
	}
	if err := txn.Commit(); err != nil {
		q.log.Error("buffer: removing records whose sync failed", "err", err)
	}
}

// dropRec is a record chosen to be dropped, with its stored size.
type dropRec struct {
	seq  uint64
	size int64
}

// oldest picks the oldest records worth at least need bytes, skipping
// those already being deleted.
func (q *Queue) oldest(need int64) []dropRec {
	if need <= 0 {
		return nil
	}
	var out []dropRec
	q.ackMu.Lock()
	defer q.ackMu.Unlock()
	db, release, ok := q.peekStore()
	if !ok {
		return nil
	}
	defer release()
	db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixRecord}})
		defer it.Close()
		start := max(q.dropCursor, q.head.Load())
		for it.Seek(key(start)); it.Valid() && need > 0; it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			if _, gone := q.inDelete[seq]; gone {
				continue
			}
			r := dropRec{seq: seq, size: item.ValueSize() + keyLen}
			need -= r.size
			out = append(out, r)
		}
		return nil
	})
	return out
}

// drop deletes the oldest records to make room (when_full: drop_oldest),
// in transactions within Badger's limits; only what was committed counts.
func (q *Queue) drop(recs []dropRec) {
	// Journalled like acknowledgements: a store rebuilt from the journal
	// must not bring them back.
	seqs := make([]uint64, len(recs))
	for i, r := range recs {
		seqs[i] = r.seq
	}
	if err := q.j.writeAcks(seqs); err != nil {
		q.log.Warn("buffer: journalling dropped records failed", "err", err)
	}
	db, release, err := q.useStore()
	if err != nil {
		q.log.Error("buffer: dropping oldest records failed", "err", err)
		return
	}
	var dropped []dropRec
	for len(recs) > 0 {
		n := min(len(recs), maxTxnEntries)
		txn := db.NewTransaction(true)
		var err error
		for _, r := range recs[:n] {
			if err = txn.Delete(key(r.seq)); err != nil {
				break
			}
		}
		if err == nil {
			err = txn.Commit()
		} else {
			txn.Discard()
		}
		if err != nil {
			q.log.Error("buffer: dropping oldest records failed", "err", err)
			break
		}
		dropped = append(dropped, recs[:n]...)
		recs = recs[n:]
	}
	release() // before ackMu (the lock order is ackMu, then the store's)
	if len(dropped) == 0 {
		return
	}
	var size int64
	for _, r := range dropped {
		size += r.size
	}
	q.depth.Add(-int64(len(dropped)))
	q.bytes.Add(-size)
	q.dropped.add(ReasonFull, uint64(len(dropped)))
	last := dropped[len(dropped)-1].seq
	q.dropCursor = last + 1
	q.ackMu.Lock()
	q.droppedMax = max(q.droppedMax, last)
	dseqs := make([]uint64, len(dropped))
	for i, r := range dropped {
		dseqs[i] = r.seq
	}
	q.tailRemove(dseqs)
	q.ackMu.Unlock()
	q.full.Store(true)
	// Logged at most every 10s while it goes on (the counter has it all).
	if now := q.now(); now.Sub(q.dropLogAt) >= 10*time.Second {
		q.dropLogAt = now
		q.log.Warn("buffer full: oldest scans dropped (when_full: drop_oldest)", "through_seq", last, "total_dropped", q.dropped.get(ReasonFull), "max_bytes", q.opts.MaxBytes)
	}
}

// deleteAcked deletes acknowledged records in one transaction, and moves
// parked ones to the parked area (one transaction each: a parked value
// may be large). Both are journalled as acknowledgements. On failure they
// go back to the pending list; they stay hidden from readers.
func (q *Queue) deleteAcked(dels []ackReq) {
	q.ackMu.Lock()
	droppedMax := q.droppedMax
	q.ackMu.Unlock()
	// Journalled with the commit's records, or by themselves at its end
	// (commit): losing them to a crash only costs duplicates.
	for _, d := range dels {
		q.jAcks = append(q.jAcks, d.Seq)
	}
	// Records never written to the store (above spilled, or passed over
	// by the spill because acknowledged already): their journalled
	// acknowledgement is all there is to do (the store stays untouched,
	// asleep or not).
	seqs := make([]uint64, len(dels))
	for i, d := range dels {
		seqs[i] = d.Seq
	}
	stored := q.inStore(seqs)
	var parks []ackReq
	gone := map[uint64]bool{} // dropped before their ack arrived: not counted twice
	var err error
	var txn *badger.Txn
	var release func()
	for k, d := range dels {
		if !stored[k] && d.park == "" {
			continue
		}
		if txn == nil {
			var db *badger.DB
			if db, release, err = q.useStore(); err != nil {
				break
			}
			txn = db.NewTransaction(true)
		}
		if d.Seq <= droppedMax {
			if _, gerr := txn.Get(key(d.Seq)); errors.Is(gerr, badger.ErrKeyNotFound) {
				gone[d.Seq] = true
				continue
			}
		}
		if d.park != "" {
			parks = append(parks, d)
			continue
		}
		if err = txn.Delete(key(d.Seq)); err != nil {
			break
		}
	}
	if txn != nil {
		if err == nil {
			err = txn.Commit()
		} else {
			txn.Discard()
		}
		release()
	}
	var failed []ackReq
	failedSeq := map[uint64]bool{}
	if err != nil {
		q.log.Error("buffer delete failed; will retry", "records", len(dels), "err", err)
		failed = dels
		parks = nil
	}
	for _, p := range parks {
		if perr := q.parkNow(p); perr != nil {
			q.log.Error("buffer: parking a record failed; will retry", "seq", p.Seq, "err", perr)
			failed = append(failed, p)
			failedSeq[p.Seq] = true
		}
	}
	q.ackMu.Lock()
	defer q.ackMu.Unlock()
	if len(failed) > 0 {
		q.acks = append(q.acks, failed...)
	}
	if err != nil {
		return
	}
	var size int64
	var n, parked int64
	removed := make([]uint64, 0, len(dels))
	defer func() { q.tailRemove(removed) }() // before ackMu is released (deferred above)
	for _, d := range dels {
		if failedSeq[d.Seq] {
			continue
		}
		delete(q.inDelete, d.Seq)
		removed = append(removed, d.Seq)
		if gone[d.Seq] {
			continue
		}
		size += d.size()
		if d.park != "" {
			parked++
		} else {
			n++
		}
	}
	q.depth.Add(-(n + parked))
	q.bytes.Add(-size)
	q.acked.Add(uint64(n))
	q.parked.Add(parked)
	q.deletedSince.Add(size)
	if q.opts.WhenFull == DropOldest && q.opts.MaxBytes > 0 && q.bytes.Load() < q.opts.MaxBytes*9/10 {
		q.full.Store(false)
	}
}

// parkNow moves one record to the parked area.
func (q *Queue) parkNow(p ackReq) error {
	raw := p.raw
	if raw == nil {
		raw = encodeValue(p.Seq, p.Time, p.Value)
	}
	pv := make([]byte, 0, 1+len(p.park)+timeLen+len(raw))
	pv = append(pv, byte(min(len(p.park), 255)))
	pv = append(pv, p.park[:min(len(p.park), 255)]...)
	pv = binary.BigEndian.AppendUint64(pv, uint64(q.now().UnixNano()))
	pv = append(pv, raw...)
	pk := key(p.Seq)
	pk[0] = prefixParked
	db, release, err := q.useStore()
	if err != nil {
		return err
	}
	defer release()
	return db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(pk, pv); err != nil {
			return err
		}
		return txn.Delete(key(p.Seq))
	})
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
