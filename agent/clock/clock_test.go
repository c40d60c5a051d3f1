package clock

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestQuality(t *testing.T) {
	for _, tt := range []struct {
		micros int64
		want   string
	}{
		{0, Synced},
		{1_500, Synced},
		{1_024_000, Synced}, // systemd-timesyncd's longest poll (2048 s) after its last update
		{15_999_999, Synced},
		{16_000_000, Unsynced}, // the kernel's NTP_PHASE_LIMIT: what it reports unsynchronised
		{1 << 40, Unsynced},
		{-1, Unsynced}, // no daemon sets that
	} {
		if got := quality(tt.micros); got != tt.want {
			t.Errorf("quality(%d µs) = %s, want %s", tt.micros, got, tt.want)
		}
	}
}

// TestRead: the real clock state reads as one of the three qualities.
func TestRead(t *testing.T) {
	switch q := read(); q {
	case Synced, Unsynced, Unknown:
		t.Logf("this machine's clock: %s", q)
	default:
		t.Fatalf("read() = %q", q)
	}
}

// TestWatcher: Quality never reads the kernel; Run reads it every
// Interval, keeps the answer and logs changes, losing synchronisation as
// a warning.
func TestWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		state := Unsynced
		var reads atomic.Int64
		fake := func() string {
			reads.Add(1)
			mu.Lock()
			defer mu.Unlock()
			return state
		}
		set := func(q string) {
			mu.Lock()
			state = q
			mu.Unlock()
		}
		var logs bytes.Buffer
		var logMu sync.Mutex
		log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(p)
		}), nil))
		w := newWatcher(fake, log)
		if w.Quality() != Unsynced || reads.Load() != 1 {
			t.Fatalf("after New: %s, %d reads", w.Quality(), reads.Load())
		}
		for range 1000 {
			w.Quality()
		}
		if reads.Load() != 1 {
			t.Fatalf("Quality read the kernel: %d reads", reads.Load())
		}

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		set(Synced)
		time.Sleep(Interval - time.Millisecond)
		synctest.Wait()
		if w.Quality() != Unsynced {
			t.Fatalf("read again before Interval: %s", w.Quality())
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if w.Quality() != Synced || reads.Load() != 2 {
			t.Fatalf("after Interval: %s, %d reads", w.Quality(), reads.Load())
		}
		set(Unsynced)
		time.Sleep(Interval)
		synctest.Wait()
		set(Unknown)
		time.Sleep(Interval)
		synctest.Wait()
		if w.Quality() != Unknown {
			t.Fatalf("after two more intervals: %s", w.Quality())
		}
		time.Sleep(10 * Interval) // no change: nothing logged
		synctest.Wait()
		cancel()
		<-done
		logMu.Lock()
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		logMu.Unlock()
		want := []string{
			"level=INFO msg=\"system clock not synchronised (yet)",
			"level=INFO msg=\"system clock synchronised\"",
			"level=WARN msg=\"system clock lost its synchronisation",
			"level=INFO msg=\"system clock state cannot be read",
		}
		if len(lines) != len(want) {
			t.Fatalf("logged %d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
		}
		for i, l := range lines {
			if !strings.Contains(l, want[i]) {
				t.Errorf("line %d: %s\nwant %s", i, l, want[i])
			}
		}
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
