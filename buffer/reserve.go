package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// A full disk must never kill the agent. Badger writes its tables and
// memtable logs through memory maps of sparse files: when the filesystem
// has no block left for a page, the write faults (SIGBUS) and the process
// dies, at the next start too. Badger's flushes and compactions write new
// tables before removing old ones, and they go on while new scans are
// refused: draining a backlog writes deletions, and deletions are
// compacted too.
//
// So the buffer keeps a reserve file (<dir>/reserve) of real blocks
// (fallocate), as large as what Badger may need at the store's current
// size (reserveFor), allocated while there is room above
// buffer.min_free_disk (the floor). When the free space falls below the
// floor, new scans are refused and the reserve is cut down to what a
// restart needs (openNeed): Badger gets the rest as room to go on
// flushing, compacting and draining. New scans stay refused until the
// whole reserve fits again above the floor. Should the free space fall to
// half the floor anyway (another program filling the disk), the rest of
// the reserve is released and the store's writes pause (acknowledgements
// wait in memory, deletions are deferred) until it is back above the
// floor: Badger only writes when it is written to, or to compact what it
// was given. The free space is checked every 20 ms near these thresholds
// (every 100 or 500 ms with more room: see interval), and on the commit
// path before appends are admitted.
//
// At open, the reserve is released first when the disk is below the
// floor; a store is not opened without the room its open may need
// (openNeed): Open fails with ErrDiskFull and the caller retries, rather
// than crash-looping.
//
// What this cannot prevent: a program that takes the very last block
// while Badger is building a table. The write faults and the process
// dies once; the next start then opens with the reserve released, or
// waits for room.

const reserveFile = "reserve"

// transient is the free space Badger may need beyond its current files
// while it is written to, for a store whose tables take tableBytes: a
// memtable flush and a new memtable log (4 MiB each), and compactions,
// which write their output before removing their input. An input is at
// most the whole store, and at most the 12 level-0 tables that stall
// writes plus the base level and a deeper compaction running beside it
// (96 MiB). Measured peaks while filling and draining: +4 MiB over a 9 MiB
// store, +30 MiB over 32 MiB, +37 MiB over 96 MiB (docs/BUFFER.md).
func transient(tableBytes int64) int64 {
	return 8<<20 + min(tableBytes, 96<<20)
}

// openNeed is the free space opening a store and starting to drain it
// needs: its memtable logs flushed (memBytes, after a crash), a new one,
// and a compaction of part of the tree.
func openNeed(tableBytes, memBytes int64) int64 {
	return 8<<20 + memBytes + min(tableBytes/4, 256<<20)
}

// reserveFor is the reserve kept for a store of tableBytes: room for
// Badger's work when the disk reaches the floor, and room for a restart.
func reserveFor(tableBytes int64) int64 {
	return transient(tableBytes) + openNeed(tableBytes, 4<<20)
}

// reserveStep is the most allocated per check, so that a large reserve is
// built without holding the disk busy.
const reserveStep = 16 << 20

// diskGuard owns the reserve file and the free-space state. The commit
// goroutine (fast), the disk goroutine (check) and Open (prepare) use it.
type diskGuard struct {
	path  string
	dir   string
	floor int64 // buffer.min_free_disk; <0 disables the guard and the reserve

	mu      sync.Mutex
	size    int64     // bytes allocated to the reserve file
	need    int64     // reserve wanted at the current store size
	keep    int64     // what is kept below the floor, for a restart
	free    int64     // last free space seen
	checked time.Time // when
	low     bool      // new appends refused
	paused  bool      // store writes paused: set below floor/2, cleared at the floor
	event   string    // what the last release did, for the log
}

func newDiskGuard(dir string, floor int64) *diskGuard {
	g := &diskGuard{path: filepath.Join(dir, reserveFile), dir: dir, floor: floor, need: reserveFor(0)}
	if fi, err := os.Stat(g.path); err == nil {
		g.size = fi.Size()
	}
	return g
}

// prepare runs before the store opens: it releases the reserve when the
// disk is already below the floor, and refuses to open a store without the
// room its open may need.
func (g *diskGuard) prepare(storeDir string) (released int64, err error) {
	if g.floor < 0 {
		return 0, nil
	}
	free, err := freeBytes(g.dir)
	if err != nil {
		return 0, nil // cannot tell: open anyway
	}
	tables, mems := storeBytes(storeDir)
	g.sizeFor(tables)
	if int64(free) < g.floor && g.size > 0 {
		released = g.size
		if err := g.drop(); err != nil {
			return 0, err
		}
		if f, err := freeBytes(g.dir); err == nil {
			free = f
		}
	}
	if need := openNeed(tables, mems); tables+mems > 0 && int64(free) < need {
		return released, fmt.Errorf("%w: %d MiB free on the buffer's filesystem; opening a store of %d MiB safely needs %d MiB (free some space; the agent retries)",
			ErrDiskFull, free>>20, tables>>20, need>>20)
	}
	return released, nil
}

// fast is the commit path's check (at most every 10 ms near the
// thresholds, up to 250 ms with room): appends are
// refused below the floor, or while the reserve the store's size calls
// for is not allocated (stored: the bytes in the store, which grow with
// it); the reserve is released there.
func (g *diskGuard) fast(now time.Time, stored int64) bool {
	if g.floor < 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.checked) >= g.interval()/2 {
		g.checked = now
		g.sizeFor(stored)
		if f, err := freeBytes(g.dir); err == nil {
			g.update(int64(f))
		}
	}
	return g.low
}

// sizeFor sets what the reserve should be for stored bytes in the store.
func (g *diskGuard) sizeFor(stored int64) {
	g.need = reserveFor(stored)
	g.keep = openNeed(stored, 0) + 4<<20 // beyond what a restart checks for: a memtable log
}

// check is the disk goroutine's: the fast check, then the reserve follows
// the store: allocated (in steps) when the missing part fits above the
// floor, shrunk after a drain.
func (g *diskGuard) check(stored int64, now time.Time) error {
	if g.floor < 0 {
		return nil
	}
	f, err := freeBytes(g.dir)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.checked = now
	g.sizeFor(stored)
	g.update(int64(f))
	switch {
	case g.size < g.need && g.free-(g.need-g.size) >= g.floor:
		err = g.grow(min(g.need, g.size+reserveStep))
	case g.size > g.need+reserveStep:
		err = g.shrink(g.need)
	default:
		return nil
	}
	if f, ferr := freeBytes(g.dir); ferr == nil {
		g.update(int64(f))
	}
	return err
}

// update sets the state for free bytes free; g.mu is held.
func (g *diskGuard) update(free int64) {
	g.free = free
	released := int64(0)
	switch {
	case free < g.floor/2 && g.size > 0:
		released = g.size
		if g.drop() != nil {
			released = 0
		}
	case free < g.floor && g.size > g.keep:
		released = g.size - g.keep
		if g.shrink(g.keep) != nil {
			released = 0
		}
	}
	if released > 0 {
		g.event = fmt.Sprintf("released %d MiB of the disk reserve (%d MiB kept) so that the store can keep flushing, compacting and draining", released>>20, g.size>>20)
		if f, err := freeBytes(g.dir); err == nil {
			g.free = int64(f)
		}
	}
	switch {
	case g.free < g.floor/2:
		g.paused = true
	case g.free >= g.floor:
		g.paused = false
	}
	g.low = g.free < g.floor+max(0, g.need-g.size)
}

// interval is how often the free space is worth checking: the closer it
// is to what the guard acts on, the more often (a disk filling at 2-6 GB/s
// cannot cross the room left in between). g.mu is held.
func (g *diskGuard) interval() time.Duration {
	switch room := g.free - (g.floor + max(0, g.need-g.size)); {
	case room > 2<<30:
		return 500 * time.Millisecond
	case room > 256<<20:
		return 100 * time.Millisecond
	}
	return 20 * time.Millisecond
}

// state returns the last state, and the release event once.
func (g *diskGuard) state() (low, paused bool, free, size, need int64, event string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	event, g.event = g.event, ""
	return g.low, g.paused, g.free, g.size, g.need, event
}

func (g *diskGuard) grow(size int64) error {
	f, err := os.OpenFile(g.path, os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	err = allocate(f, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Truncate(g.path, g.size) // give back a partial allocation
		return fmt.Errorf("allocate the buffer's disk reserve: %w", err)
	}
	g.size = size
	return nil
}

func (g *diskGuard) shrink(size int64) error {
	if err := os.Truncate(g.path, size); err != nil {
		return err
	}
	g.size = size
	return nil
}

func (g *diskGuard) drop() error {
	if err := os.Remove(g.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	g.size = 0
	return nil
}

// storeBytes is the size of a store's table files and the space its
// memtable logs hold (allocated: they are sparse).
func storeBytes(dir string) (tables, mems int64) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".sst":
			tables += fi.Size()
		case ".mem":
			mems += allocated(fi)
		}
	}
	return tables, mems
}

// diskLoop checks the free space and sizes the reserve every 20 ms when
// the disk is near the guard's thresholds (a statfs: often enough to
// release the reserve before a filling disk reaches Badger), every 100 or
// 500 ms when there is more room (interval).
func (q *Queue) diskLoop() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-q.quit:
			return
		case <-t.C:
		}
		q.checkDisk()
		q.guard.mu.Lock()
		d := q.guard.interval()
		q.guard.mu.Unlock()
		t.Reset(d)
	}
}

func (q *Queue) checkDisk() {
	if err := q.guard.check(q.bytes.Load(), q.now()); err != nil && !q.diskErrLogged {
		q.log.Warn("buffer: disk reserve", "err", err)
		q.diskErrLogged = true
	}
	q.diskState()
}

// diskState takes the guard's state for appends, the store's writes, the
// stats and the log.
func (q *Queue) diskState() {
	low, paused, free, size, need, event := q.guard.state()
	if event != "" {
		q.log.Error("buffer: disk nearly full: "+event, "dir", q.dir, "free_bytes", free)
	}
	if paused != q.paused.Load() {
		if paused {
			q.log.Error("buffer: disk nearly exhausted: store writes paused (acknowledgements kept in memory) until free space is back above buffer.min_free_disk", "dir", q.dir, "free_bytes", free)
		} else {
			q.log.Info("buffer: store writes resumed", "dir", q.dir, "free_bytes", free)
		}
		q.paused.Store(paused)
	}
	if low != q.diskLow.Load() {
		if low {
			q.log.Error("buffer: disk nearly full, refusing new scans until space is freed; the backlog keeps draining",
				"dir", q.dir, "free_bytes", free, "min_free_disk", q.opts.MinFreeDisk, "reserve_bytes", size, "reserve_wanted", need)
		} else {
			q.log.Info("buffer: disk space available again, accepting scans", "dir", q.dir, "free_bytes", free)
		}
		q.diskLow.Store(low)
	}
	q.reserveBytes.Store(size)
	q.freeBytes.Store(free)
}
