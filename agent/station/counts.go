package station

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/scanagent/scanagent/agent/status"
)

// Counts are the counters of one station id. The agent keeps them for the
// life of the process and hands them to every instance of that station: a
// reload that restarts a station, or removes it and adds it again, never
// sets them back (they are Prometheus counters).
type Counts struct {
	scans, invalid, suppressed atomic.Uint64

	mu          sync.Mutex
	rejected    map[string]uint64 // frames discarded, by reason
	notAccepted map[string]uint64 // scans not made durable, by reason
	invalidBy   map[string]uint64 // accepted invalid scans, by reason
	weights     map[string]uint64 // scans by weight status
	scaleFrames map[string]uint64 // scale frames by result
	feedback    map[string]uint64 // feedback signals by result
	workflow    map[string]uint64 // workflow events: controls, operators, receptacles (docs/WORKFLOWS.md)
}

// NewCounts returns zero counters.
func NewCounts() *Counts {
	return &Counts{rejected: map[string]uint64{}, notAccepted: map[string]uint64{}, invalidBy: map[string]uint64{},
		weights: map[string]uint64{}, scaleFrames: map[string]uint64{}, feedback: map[string]uint64{},
		workflow: map[string]uint64{}}
}

// add counts one under key in m, one of c's maps.
func (c *Counts) add(m map[string]uint64, key string) {
	c.mu.Lock()
	m[key]++
	c.mu.Unlock()
}

func (c *Counts) scaleFrameCounts() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.scaleFrames)
}

// snapshot copies the counters; weights and feedback only for a station
// that has a scale or feedback.
func (c *Counts) snapshot(weights, feedback bool) status.Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := status.Counters{
		Scans:           c.scans.Load(),
		Invalid:         c.invalid.Load(),
		InvalidByReason: maps.Clone(c.invalidBy),
		Suppressed:      c.suppressed.Load(),
		NotAccepted:     maps.Clone(c.notAccepted),
		Rejected:        maps.Clone(c.rejected),
	}
	if weights {
		out.Weights = maps.Clone(c.weights)
	}
	if feedback {
		out.Feedback = maps.Clone(c.feedback)
	}
	if len(c.workflow) > 0 {
		out.Workflow = maps.Clone(c.workflow)
	}
	return out
}
