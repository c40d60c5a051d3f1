// Package backoff is the one retry delay of the agent: serial ports
// reopening (package devices), the MQTT uplink reconnecting and the buffer
// waiting to open. It imports nothing of the project.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff is capped exponential backoff with jitter: the ceiling doubles
// from Min up to Max.
type Backoff struct {
	Min, Max time.Duration
	// FullJitter draws each delay from [0, ceiling] (for many clients of one
	// server); otherwise from [Min/2, ceiling].
	FullJitter bool
	n          int
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	d := b.Min << min(b.n, 30)
	if d > b.Max || d <= 0 {
		d = b.Max
	} else {
		b.n++
	}
	lo := b.Min / 2
	if b.FullJitter {
		lo = 0
	}
	if d <= lo {
		return d
	}
	return lo + rand.N(d-lo+1)
}

// Reset starts over from Min.
func (b *Backoff) Reset() { b.n = 0 }
