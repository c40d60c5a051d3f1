// Package live is the technician console's event bus: what became of
// each scan (accepted by a station, published, receipted), fanned out to
// the console's clients. A station or the uplink never waits on it: each
// client has a bounded queue, and an event that does not fit is dropped
// and counted. With no client, an event costs an atomic load.
//
// The agent makes one Bus and hands it to the stations (station.Live),
// the uplink (uplink.Delivery) and the HTTP interface, which subscribes
// a client per open event stream.
package live

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/scanagent/scanagent/agent/record"
)

// Delivery states of a scan, in order.
const (
	Accepted    = "accepted"     // durable in the buffer
	NotAccepted = "not_accepted" // refused by the buffer (Scan.Error says why)
	Published   = "published"    // PUBACK received
	Receipted   = "receipted"    // a receipt from central deleted it
)

// Scan is one scan as the console shows it.
type Scan struct {
	Seq          uint64    `json:"seq,omitempty"`
	Station      string    `json:"station"`
	At           time.Time `json:"at"`
	Barcode      string    `json:"barcode"`
	AIM          string    `json:"aim,omitempty"`
	Kind         string    `json:"kind"`
	Valid        bool      `json:"valid"`
	Reason       string    `json:"reason,omitempty"`
	Weight       string    `json:"weight,omitempty"` // value and unit as the scale sent it
	Grams        *int64    `json:"grams,omitempty"`
	WeightStatus string    `json:"weight_status,omitempty"`
	State        string    `json:"state"`           // Accepted or NotAccepted
	Error        string    `json:"error,omitempty"` // why it was not accepted
}

// event is one queued event: a scan, or a seq that changed state.
type event struct {
	scan  *Scan
	seq   uint64
	state string // Published or Receipted, with seq
}

// Bus fans events out to its clients. Safe for concurrent use.
type Bus struct {
	queue   int
	active  atomic.Int32 // clients subscribed
	dropped atomic.Uint64
	mu      sync.Mutex
	clients map[*Client]struct{}
}

// DefaultQueue is how many events a client may have waiting: about a
// second of scans at 1,000 a second with their delivery states.
const DefaultQueue = 4096

// New makes a bus whose clients each queue up to queue events
// (DefaultQueue when queue <= 0).
func New(queue int) *Bus {
	if queue <= 0 {
		queue = DefaultQueue
	}
	return &Bus{queue: queue, clients: map[*Client]struct{}{}}
}

// Client is one subscriber: it takes its events with Take.
type Client struct {
	bus     *Bus
	ch      chan event
	dropped atomic.Uint64
}

// Subscribe adds a client; Close removes it.
func (b *Bus) Subscribe() *Client {
	c := &Client{bus: b, ch: make(chan event, b.queue)}
	b.mu.Lock()
	b.clients[c] = struct{}{}
	b.active.Store(int32(len(b.clients)))
	b.mu.Unlock()
	return c
}

// Close removes the client from its bus.
func (c *Client) Close() {
	b := c.bus
	b.mu.Lock()
	delete(b.clients, c)
	b.active.Store(int32(len(b.clients)))
	b.mu.Unlock()
}

// Clients is how many clients are subscribed (0 on a nil Bus).
func (b *Bus) Clients() int {
	if b == nil {
		return 0
	}
	return int(b.active.Load())
}

// Dropped counts the events dropped because a client's queue was full (0
// on a nil Bus).
func (b *Bus) Dropped() uint64 {
	if b == nil {
		return 0
	}
	return b.dropped.Load()
}

func (b *Bus) send(e event) {
	b.mu.Lock()
	for c := range b.clients {
		select {
		case c.ch <- e:
		default:
			c.dropped.Add(1)
			b.dropped.Add(1)
		}
	}
	b.mu.Unlock()
}

// Scan tells the clients what became of a scan: accepted with its seq
// (err nil) or not accepted. It keeps nothing of sc. (station.Live)
func (b *Bus) Scan(seq uint64, sc *record.Scan, err error) {
	if b == nil || b.active.Load() == 0 {
		return
	}
	s := &Scan{Seq: seq, Station: sc.Station, At: sc.At, Barcode: sc.Barcode, AIM: sc.AIM, Kind: sc.Kind, Valid: sc.Valid,
		Reason: sc.Reason, WeightStatus: sc.WeightStatus, State: Accepted}
	if sc.HasWeight {
		g := sc.Weight.Grams
		s.Weight, s.Grams = sc.Weight.Value.String()+" "+sc.Weight.Unit, &g
	}
	if err != nil {
		s.Seq, s.State, s.Error = 0, NotAccepted, err.Error()
	}
	b.send(event{scan: s})
}

// Published tells the clients that the broker acknowledged seq.
// (uplink.Delivery)
func (b *Bus) Published(seq uint64) {
	if b == nil || b.active.Load() == 0 {
		return
	}
	b.send(event{seq: seq, state: Published})
}

// Receipted tells the clients that a receipt deleted seq.
// (uplink.Delivery)
func (b *Bus) Receipted(seq uint64) {
	if b == nil || b.active.Load() == 0 {
		return
	}
	b.send(event{seq: seq, state: Receipted})
}

// Batch is what a client takes at once: scans in the order they came,
// and the seqs that changed state, as ranges.
type Batch struct {
	Scans     []*Scan     `json:"scans,omitempty"`
	Published [][2]uint64 `json:"published,omitempty"`
	Receipted [][2]uint64 `json:"receipted,omitempty"`
	// Dropped counts this client's events dropped so far (its queue was
	// full: the connection is slower than the scans).
	Dropped uint64 `json:"dropped,omitempty"`
}

// Empty reports whether the batch holds no event.
func (b *Batch) Empty() bool {
	return len(b.Scans) == 0 && len(b.Published) == 0 && len(b.Receipted) == 0
}

// Take returns the events queued, at most max, without waiting.
func (c *Client) Take(max int) Batch {
	var b Batch
	add := func(e event) {
		switch {
		case e.scan != nil:
			b.Scans = append(b.Scans, e.scan)
		case e.state == Published:
			b.Published = appendRange(b.Published, e.seq)
		case e.state == Receipted:
			b.Receipted = appendRange(b.Receipted, e.seq)
		}
	}
	for n := 0; n < max; n++ {
		select {
		case e := <-c.ch:
			add(e)
			continue
		default:
		}
		break
	}
	b.Dropped = c.dropped.Load()
	return b
}

// appendRange adds seq to ranges, extending the last range when seq
// follows it.
func appendRange(rs [][2]uint64, seq uint64) [][2]uint64 {
	if n := len(rs); n > 0 && rs[n-1][1]+1 == seq {
		rs[n-1][1] = seq
		return rs
	}
	return append(rs, [2]uint64{seq, seq})
}
