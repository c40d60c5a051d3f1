// Package ratelog lets one log line per key through every period and
// counts the ones it held back, so that a fault repeated thousands of
// times (a garbled line, a bad receipt) is logged, not flooded.
package ratelog

import "time"

// Limiter is not safe for concurrent use: its user's mutex guards it.
type Limiter struct {
	Every      time.Duration
	last       map[string]time.Time
	suppressed map[string]int
}

// Allow reports whether a line for key may be logged at now, and how many
// were held back since the last one.
func (l *Limiter) Allow(key string, now time.Time) (bool, int) {
	if l.last == nil {
		l.last, l.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < l.Every {
		l.suppressed[key]++
		return false, 0
	}
	n := l.suppressed[key]
	l.last[key], l.suppressed[key] = now, 0
	return true, n
}
