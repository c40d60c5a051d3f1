package station

import (
	"context"
	"sync"
	"time"

	"github.com/scanagent/scanagent/devices"
)

// Weight statuses: why a scan carries the weight it does, or none.
const (
	WeightOK           = "ok"            // a stable reading was attached
	WeightNone         = "none"          // the scale sent no reading
	WeightMotion       = "motion"        // the scale was in motion until the wait ended
	WeightOverload     = "overload"      // over capacity
	WeightUnderload    = "underload"     // under the zero range
	WeightStale        = "stale"         // the last stable reading is older than scale.max_age
	WeightEmpty        = "empty"         // the scale showed zero or less: no parcel on it
	WeightAlreadyUsed  = "already_used"  // this stay on the scale was attached to an earlier scan
	WeightScaleOffline = "scale_offline" // the scale's port is not connected
)

// WeightStatuses lists every weight status, for counters.
var WeightStatuses = []string{WeightOK, WeightNone, WeightMotion, WeightOverload, WeightUnderload,
	WeightStale, WeightEmpty, WeightAlreadyUsed, WeightScaleOffline}

// weigher pairs a station's scans with its scale's readings. Readings and
// the scale's state arrive on the scale's port goroutine; scans are paired
// on the station's worker. Safe for concurrent use.
//
// A stable reading qualifies for a scan when it is the scale's current
// state (no motion, overload or underload reported since), no older than
// max_age, more than 0 g, and — unless share is set — its stay on the scale
// (a plateau: stable readings of the same grams without motion between
// them) has not been attached to an earlier scan. A parcel lifted off and
// the next one put on always pass through motion, so a reading is never
// carried over to the next parcel; two labels of one parcel scanned during
// one stay get the weight once, or both with share.
type weigher struct {
	maxAge, wait time.Duration
	share        bool
	poll         func() // asks a poll scale for a reading now; never blocks

	mu          sync.Mutex
	online      bool
	last        devices.Reading // latest reading of any kind
	hasLast     bool
	stable      devices.Reading // latest stable reading with a weight
	current     bool            // stable is the scale's current state
	plateau     uint64          // counts stays on the scale
	usedPlateau uint64          // the stay attached to the last paired scan
	changed     chan struct{}   // closed at each reading or state change
}

func newWeigher(maxAge, wait time.Duration, share bool, poll func()) *weigher {
	if poll == nil {
		poll = func() {}
	}
	return &weigher{maxAge: maxAge, wait: wait, share: share, poll: poll, changed: make(chan struct{})}
}

func (w *weigher) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// reading records one reading from the scale.
func (w *weigher) reading(r devices.Reading) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last, w.hasLast = r, true
	if r.Valid() && r.Stable {
		if !w.current || r.Grams != w.stable.Grams {
			w.plateau++
		}
		w.stable, w.current = r, true
	} else {
		w.current = false
	}
	w.notify()
}

// setOnline records the scale port's state.
func (w *weigher) setOnline(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.online = on
	if !on {
		w.current = false
	}
	w.notify()
}

// pair returns the reading to attach to a scan read at scannedAt (ok
// false for none) and the weight status. It
// waits for a qualifying reading until scannedAt + wait (asking a poll
// scale at once), never longer, and not at all while the scale is
// offline or ctx is done.
func (w *weigher) pair(ctx context.Context, scannedAt time.Time) (devices.Reading, bool, string) {
	deadline := scannedAt.Add(w.wait)
	polled := false
	for {
		w.mu.Lock()
		now := time.Now()
		if w.qualifies(now) {
			w.usedPlateau = w.plateau
			r := w.stable
			w.mu.Unlock()
			return r, true, WeightOK
		}
		if !w.online {
			w.mu.Unlock()
			return devices.Reading{}, false, WeightScaleOffline
		}
		left := deadline.Sub(now)
		if left <= 0 || ctx.Err() != nil {
			status := w.status(now)
			w.mu.Unlock()
			return devices.Reading{}, false, status
		}
		changed := w.changed
		w.mu.Unlock()
		if !polled {
			w.poll()
			polled = true
		}
		t := time.NewTimer(left)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

func (w *weigher) qualifies(now time.Time) bool {
	return w.current && w.online && now.Sub(w.stable.At) <= w.maxAge && w.stable.Grams > 0 &&
		(w.share || w.usedPlateau != w.plateau)
}

// status explains why no reading qualified.
func (w *weigher) status(now time.Time) string {
	switch {
	case !w.hasLast:
		return WeightNone
	case w.last.Overload:
		return WeightOverload
	case w.last.Underload:
		return WeightUnderload
	case !w.current:
		return WeightMotion
	case now.Sub(w.stable.At) > w.maxAge:
		return WeightStale
	case w.stable.Grams <= 0:
		return WeightEmpty
	case !w.share && w.usedPlateau == w.plateau:
		return WeightAlreadyUsed
	}
	return WeightNone
}
