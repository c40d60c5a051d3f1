package buffer

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Opening the store without a crash loop.
//
// Badger opens its tables in goroutines of its own, and a damaged table
// can make it panic there (an index read past the end of the file), where
// no recover reaches. So before Badger sees a store, every table the
// MANIFEST names is opened and its checksums verified here, in a goroutine
// that recovers panics and turns memory faults into panics. A store that
// fails this, or that Badger refuses, is moved aside and rebuilt from the
// journal, which holds every record not yet acknowledged.
//
// For what remains (a crash inside Badger that this check does not
// foresee), a marker file counts the opens that did not finish: written
// before Badger opens the store, removed once the store is open and the
// journal replayed. When two opens in a row did not finish, the store is
// moved aside without trying again. (One unfinished open may be a kill or
// a power cut during start-up; the check above catches the known crashes
// at once.)

const openMarker = "store.opening"

// quarantineAfter is how many unfinished opens in a row quarantine the
// store without trying it again.
const quarantineAfter = 2

// openStore opens Badger, quarantining a store that cannot be opened. It
// reports whether the store is new (created now, or after a quarantine):
// then the journal is its only source.
func (q *Queue) openStore() (*badger.DB, bool, error) {
	store := filepath.Join(q.dir, "store")
	_, serr := os.Stat(filepath.Join(store, "MANIFEST"))
	existed := serr == nil
	marker := filepath.Join(q.dir, openMarker)
	attempts := readMarker(marker)
	if existed && attempts >= quarantineAfter {
		if err := q.quarantineStore(store, fmt.Errorf("the last %d attempts to open it did not finish (the process crashed or was killed while opening it)", attempts)); err != nil {
			return nil, false, err
		}
		existed = false
	}
	if err := writeMarker(marker, attempts+1); err != nil {
		return nil, false, fmt.Errorf("open buffer %s: %w", q.dir, err)
	}
	if existed {
		start := time.Now() // how long the check took, for the log: the monotonic wall clock, not Options.Now
		if err := verifyStore(store); err != nil {
			if qerr := q.quarantineStore(store, err); qerr != nil {
				return nil, false, qerr
			}
			existed = false
		} else {
			q.log.Debug("buffer: store tables verified", "took", time.Since(start).Round(time.Millisecond))
		}
	}
	db, err := openBadger(store, q.log, false)
	if err == nil {
		return db, !existed, nil
	}
	if msg := err.Error(); strings.Contains(msg, "Cannot acquire directory lock") || strings.Contains(msg, "Another process is using this Badger database") {
		return nil, false, fmt.Errorf("open buffer %s: %w", q.dir, ErrLocked)
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ENOSPC) {
		// The system, not the store: nothing to quarantine.
		return nil, false, fmt.Errorf("open buffer %s: %w", store, err)
	}
	if !existed {
		return nil, false, fmt.Errorf("open buffer %s: %w", store, err)
	}
	if err := q.quarantineStore(store, err); err != nil {
		return nil, false, err
	}
	db, err = openBadger(store, q.log, false)
	if err != nil {
		return nil, false, fmt.Errorf("open fresh buffer store %s: %w", store, err)
	}
	return db, true, nil
}

// openBadger opens Badger; a panic in this goroutine becomes an error.
func openBadger(dir string, log *slog.Logger, readOnly bool) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("badger panicked while opening the store: %s", firstLine(fmt.Sprint(r)))
		}
	}()
	return badger.Open(badgerOptions(dir, log).WithReadOnly(readOnly))
}

// quarantineStore moves a store aside (never deleting it) and logs why.
func (q *Queue) quarantineStore(store string, why error) error {
	aside, err := moveAside(store, q.dir, "store", q.now())
	if err != nil {
		return fmt.Errorf("open buffer %s: %v; moving it aside failed: %w", store, why, err)
	}
	q.log.Error("buffer store cannot be used: moved aside for forensics; a fresh store is rebuilt from the journal, which holds every scan not yet delivered",
		"store", store, "moved_to", aside, "err", why)
	q.quarantine.Store(fmt.Sprintf("%s: %v", aside, why))
	return nil
}

// moveAside renames path to <kind>.corrupt-<UTC time>[-N] under parent,
// with a suffix that makes the name unique.
func moveAside(path, parent, kind string, now time.Time) (string, error) {
	base := filepath.Join(parent, kind+".corrupt-"+now.UTC().Format("20060102T150405Z"))
	aside := base
	for n := 2; ; n++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = base + "-" + strconv.Itoa(n)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	return aside, syncDir(parent)
}

// readMarker returns the count of unfinished opens the marker records.
func readMarker(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return 1 // a marker was written, its count was lost
	}
	return n
}

func writeMarker(path string, n int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.Itoa(n) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	return err
}

// clearMarker records that the open finished.
func clearMarker(dir string) error {
	err := os.Remove(filepath.Join(dir, openMarker))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = syncDir(dir)
	}
	return err
}

// verifyStore checks what Badger will read at open: the MANIFEST, and
// every table it names (present, its index readable, every block's
// checksum right). It runs in its own goroutine, which it waits for, so
// that a panic or a memory fault while reading a damaged file is caught
// (SetPanicOnFault is per goroutine: it ends with this one).
func verifyStore(dir string) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		done <- verifyStoreFiles(dir)
	}()
	return <-done
}

func verifyStoreFiles(dir string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the store crashed: %s", firstLine(fmt.Sprint(r)))
		}
	}()
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if err != nil {
		return err
	}
	m, _, err := badger.ReplayManifestFile(f, 0, badgerOptions(dir, slog.New(slog.DiscardHandler)))
	f.Close()
	if err != nil {
		return fmt.Errorf("MANIFEST: %w", err)
	}
	for id, tm := range m.Tables {
		if err := verifyTable(table.NewFilename(id, dir), tm.Compression); err != nil {
			return err
		}
	}
	return nil
}

// verifyTable opens one table read-only with full checksum verification.
func verifyTable(path string, compression options.CompressionType) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("table %s: %w", filepath.Base(path), err)
	}
	ok := false
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("table %s: unreadable: %s", filepath.Base(path), firstLine(fmt.Sprint(r)))
		}
		if !ok {
			mf.Close(-1)
		}
	}()
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.OnTableRead, Compression: compression, BlockSize: 4 << 10})
	if err != nil {
		return fmt.Errorf("table %s: %w", filepath.Base(path), err)
	}
	ok = true
	return t.MmapFile.Close(-1)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// badgerOptions sizes Badger for an edge box (docs/BUFFER.md, "Badger's
// options, and what Badger does not do"): small
// memtables, no caches (which requires no compression), values inline.
// Tables are 1 MiB at every level (TableSizeMultiplier 1): a compaction
// builds up to five tables at once per compactor, each in a buffer twice
// its size, which with 2 MiB tables doubling per level made the peak heap
// of a 1M backlog 195–269 MiB; with 1 MiB tables it was 115 MiB and the
// fill and drain were faster (docs/BENCHMARKS.md, "Issue 18"). Go raises
// the open-file limit to the hard limit, so the more tables of a large
// backlog (about 4,000 at 4 GiB) stay within it.
// Writes are not synced by Badger: the journal makes appends durable.
// Tables are verified before Badger opens them (verifyStore); blocks are
// not verified again on each read: a failed block check makes Badger's
// iterator end silently, while each record carries its own checksum.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithMemTableSize(4 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(12).
		WithBaseTableSize(1 << 20).
		WithBaseLevelSize(16 << 20).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithValueLogFileSize(16 << 20).
		WithValueThreshold(512 << 10). // every record (at most ~400 KB) stays inline in the tree
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{log.With("component", "badger")})
	o.TableSizeMultiplier = 1
	return o
}

// badgerLogger routes Badger's log through slog; its chatty info level goes
// to debug.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any)   { l.log.Error(trimNL(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Warningf(f string, a ...any) { l.log.Warn(trimNL(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Infof(f string, a ...any)    { l.log.Debug(trimNL(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Debugf(f string, a ...any)   { l.log.Debug(trimNL(fmt.Sprintf(f, a...))) }

func trimNL(s string) string { return strings.TrimRight(s, "\r\n") }
