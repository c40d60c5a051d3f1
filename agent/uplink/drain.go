package uplink

import (
	"context"

	"golang.org/x/time/rate"
)

// pacers are a session's publish limits: mqtt.max_rate over every
// publish, and mqtt.drain_rate over the backlog, the records that were
// buffered when the session started (seq up to split). Scans made during
// the session are held only to max_rate: in order seq they still wait for
// the backlog before them (that is the order's promise), in order
// live_first they go ahead of it.
type pacers struct {
	all, drain *rate.Limiter // nil: no limit
	split      uint64
}

func newPacers(maxRate, drainRate int, split uint64) *pacers {
	return &pacers{all: newLimiter(maxRate), drain: newLimiter(drainRate), split: split}
}

// wait holds one publish of seq to the limits; false when ctx is done or
// the connection was lost meanwhile. A record published again for want of
// a receipt is not held to drain_rate.
func (p *pacers) wait(ctx context.Context, seq uint64, again bool, lost <-chan struct{}) bool {
	if !again && seq <= p.split && !pace(ctx, p.drain, lost) {
		return false
	}
	return pace(ctx, p.all, lost)
}
