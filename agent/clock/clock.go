// Package clock says how far the agent's system clock can be trusted: the
// quality every scan event ("clock") and the status document carry, so
// that a receiver can tell a scanned_at read from a synchronised clock
// from one that may be off.
//
// A Watcher reads the kernel's clock state when it is made and then every
// Interval on its own goroutine (Run), and keeps the answer: Quality, read
// once per scan, is an atomic load, never a system call.
//
// On Linux the state comes from adjtimex(2) (read only; no privilege
// needed): the clock is synced while the kernel's maximum error is below
// 16 s, the bound past which the kernel itself declares the clock
// unsynchronised (NTP_PHASE_LIMIT). The time daemon (chrony, ntpd,
// systemd-timesyncd) sets the maximum error at each update and the kernel
// adds 500 µs to it every second, so a clock whose daemon stopped or lost
// its servers turns unsynced on its own, at the latest about 9 hours later.
// STA_UNSYNC is not read: chrony keeps it set while synchronised unless
// told to maintain the RTC (rtcsync), and timedatectl and systemd judge
// "synchronized" by the maximum error alone, as here. Elsewhere (Windows,
// macOS, the BSDs) the quality is unknown.
package clock

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Clock qualities, as written in the scan event's and the status
// document's "clock".
const (
	Synced   = "synced"   // a time daemon keeps the clock within MaxError
	Unsynced = "unsynced" // no daemon does, or its last update is too old
	Unknown  = "unknown"  // the state cannot be read (not Linux, or refused)
)

// MaxError is the kernel's maximum error at and beyond which the clock is
// unsynced: the kernel's own NTP_PHASE_LIMIT.
const MaxError = 16 * time.Second

// Interval is how often Run reads the clock state again.
const Interval = 5 * time.Second

// Watcher keeps the clock quality. Its methods are safe for concurrent
// use.
type Watcher struct {
	read func() string
	log  *slog.Logger
	q    atomic.Pointer[string]
}

// New reads the clock state once and returns a Watcher holding it. log
// (nil: none) gets a line when the quality changes.
func New(log *slog.Logger) *Watcher {
	return newWatcher(read, log)
}

func newWatcher(read func() string, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{read: read, log: log}
	q := read()
	w.q.Store(&q)
	return w
}

// Quality returns the clock quality as last read: Synced, Unsynced or
// Unknown.
func (w *Watcher) Quality() string { return *w.q.Load() }

// Run reads the clock state every Interval until ctx is done. It logs the
// quality at the start and on every change: a clock that loses its
// synchronisation as a warning, anything else (a clock not yet
// synchronised at boot among them) as information.
func (w *Watcher) Run(ctx context.Context) {
	w.logQuality("", w.Quality())
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.refresh()
		}
	}
}

// refresh reads the clock state and keeps it.
func (w *Watcher) refresh() {
	q := w.read()
	if old := *w.q.Swap(&q); old != q {
		w.logQuality(old, q)
	}
}

func (w *Watcher) logQuality(old, q string) {
	switch {
	case q == Synced:
		w.log.Info("system clock synchronised", "clock", q)
	case q == Unsynced && old == Synced:
		w.log.Warn("system clock lost its synchronisation: scan times may drift; scan events say clock unsynced", "clock", q,
			"hint", "check the time daemon: timedatectl timesync-status, chronyc tracking or ntpq -p")
	case q == Unsynced:
		w.log.Info("system clock not synchronised (yet): scan events say clock unsynced until it is", "clock", q,
			"hint", "check the time daemon: timedatectl timesync-status, chronyc tracking or ntpq -p")
	default:
		w.log.Info("system clock state cannot be read: scan events say clock unknown", "clock", q)
	}
}

// quality judges the kernel's maximum error, in microseconds.
func quality(maxErrorMicros int64) string {
	if maxErrorMicros >= 0 && maxErrorMicros < MaxError.Microseconds() {
		return Synced
	}
	return Unsynced
}
