package uplink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// sessionNumbers hands out the session number each connection attempt
// carries in its online status and its Last Will, so that a consumer can
// tell a late Will of an old session (say, from the broker the agent left
// in a failover) from the end of the current one, like Sparkplug's bdSeq.
//
// A number is max(last + 1, Unix seconds now): it grows with every
// connection attempt, across restarts through a small file in the data
// directory (written and synced before the attempt), and it still grows
// after that file is lost (a new data directory, a wiped disk) as long as
// the clock has moved on by more seconds than the agent made attempts.
// A file that cannot be written is logged once and the numbers go on from
// memory and the clock.
type sessionNumbers struct {
	file   string // "" = not kept across restarts
	last   uint64
	loaded bool
	warned bool
	log    *slog.Logger
}

// next returns the number of the next session and records it.
func (s *sessionNumbers) next(now time.Time) uint64 {
	if !s.loaded {
		s.loaded = true
		if s.file != "" {
			n, err := readSessionFile(s.file)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("session number file unreadable; numbering from the clock", "file", s.file, "err", err)
			}
			s.last = n
		}
	}
	n := max(s.last+1, uint64(max(now.Unix(), 0)))
	s.last = n
	if s.file != "" {
		if err := writeSessionFile(s.file, n); err != nil && !s.warned {
			s.warned = true
			s.log.Warn("session number not kept across restarts; numbering goes on from memory and the clock", "file", s.file, "err", err)
		}
	}
	return n
}

func readSessionFile(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("session number file %s: %w", path, err)
	}
	return n, nil
}

// writeSessionFile replaces the file with n, synced: a temporary file,
// fsync, rename, and the directory synced (where the platform can).
func writeSessionFile(path string, n uint64) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.FormatUint(n, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // a no-op on Windows; best effort elsewhere
		d.Close()
	}
	return nil
}

// retryDelay is the wait before each connection attempt after a failed
// or lost session. The ceiling doubles from connect_spread (or
// reconnect_min, when larger) up to reconnect_max. The first wait is drawn
// from [0, ceiling] (full jitter: hubs that lost the same broker spread
// out over connect_spread), each later one from [ceiling/2, ceiling]
// (equal jitter), so that a hub's second attempt never falls into the
// window of the first wave: the fleet's attempts per second stay near
// fleet / connect_spread at most (docs/FLEET.md has the figures).
type retryDelay struct {
	min, spread, max time.Duration
	n                int
}

func (r *retryDelay) next() time.Duration {
	base := max(r.min, r.spread)
	c := r.max
	if r.n < 30 && base<<r.n > 0 && base<<r.n < r.max {
		c = base << r.n
	}
	first := r.n == 0
	r.n++
	if first {
		return spread(c)
	}
	return c/2 + spread(c-c/2)
}

// reset starts over: the next wait is the spread again.
func (r *retryDelay) reset() { r.n = 0 }

// spread returns a random delay in [0, d] (0 for d <= 0).
func spread(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// sleep waits d or until ctx is done; false when ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
