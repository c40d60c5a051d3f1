// Package dispatch tracks the completeness of the dispatches whose
// receptacles arrive at the site: for each S8 dispatch identifier, which
// receptacle serials were scanned, which are missing, which came twice,
// and, once the highest-receptacle label was seen, whether the dispatch is
// complete (docs/WORKFLOWS.md). The stations tell it each receptacle
// label they accepted; the uplink publishes each dispatch retained on
// P/dispatches/<S8> (schema scanagent.dispatch/v1).
//
// Its state is durable (agent/internal/statefile) and a dispatch expires
// a set time after its last receptacle was seen: its retained message is
// then cleared.
package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/scanagent/scanagent/agent/internal/statefile"
	"github.com/scanagent/scanagent/agent/record"
)

// Schema is the dispatch message's schema.
const Schema = "scanagent.dispatch/v1"

// Message is a dispatch as published (retained) on P/dispatches/<S8>.
type Message struct {
	Schema     string `json:"schema"`
	Agent      string `json:"agent"`
	Site       string `json:"site"`
	Dispatch   string `json:"dispatch"`
	Received   []int  `json:"received"`
	Missing    []int  `json:"missing"`
	Duplicates []int  `json:"duplicates"`
	// Highest is the serial of the receptacle labelled the highest of its
	// dispatch, null until that label was seen.
	Highest   *int   `json:"highest"`
	Complete  bool   `json:"complete"`
	FirstSeen string `json:"first_seen"`
	LastSeen  string `json:"last_seen"`
	UpdatedAt string `json:"updated_at"`
	Clock     string `json:"clock,omitempty"`
}

// Label is a receptacle label accepted at a station.
type Label struct {
	Station  string
	Seq      uint64 // the label scan's sequence number
	At       time.Time
	Dispatch string // S8: the label's first 20 characters
	Serial   int
	Highest  bool // the label says it is the dispatch's highest receptacle
}

// state is a dispatch's durable state.
type state struct {
	Dispatch  string         `json:"dispatch"`
	Serials   map[int]uint64 `json:"serials"`    // serial -> seq of its first label
	Twice     map[int]int    `json:"duplicates"` // serial -> labels after the first
	Highest   int            `json:"highest"`    // 0: not seen
	FirstSeen time.Time      `json:"first_seen"`
	LastSeen  time.Time      `json:"last_seen"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// entry is one record of the state file: a snapshot, or one change.
type entry struct {
	Snapshot *snapshot `json:"snapshot,omitempty"`
	Seen     *Label    `json:"seen,omitempty"`
	Expired  string    `json:"expired,omitempty"` // a dispatch expired; its retained message is to be cleared
	Cleared  string    `json:"cleared,omitempty"` // the broker took the clearing
}

type snapshot struct {
	Dispatches []*state          `json:"dispatches"`
	LastSeq    map[string]uint64 `json:"last_seq"` // by station: the last label noted
	Clearing   []string          `json:"clearing"` // expired, not cleared at the broker yet
}

// Config configures a Tracker.
type Config struct {
	Path        string        // the state file
	Agent, Site string        // for the messages
	Expire      time.Duration // after the last label seen
	Log         *slog.Logger
	// Clock, if set, gives the clock quality the messages carry.
	Clock interface{ Quality() string }
}

// Tracker is the site's dispatch completeness. Its methods are safe for
// concurrent use.
type Tracker struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu       sync.Mutex
	file     *statefile.File
	d        map[string]*state
	lastSeq  map[string]uint64
	clearing map[string]bool
	version  uint64
	dirty    map[string]uint64 // topic -> version not yet taken by the broker
	errs     int
}

// compactAt is the state file's size that makes it a snapshot again.
const compactAt = 256 << 10

// Open opens (or starts) the tracker's state. A damaged state file is
// reported and cut back or moved aside (agent/internal/statefile); only
// an I/O error fails.
func Open(c Config) (*Tracker, error) {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tracker{cfg: c, log: log.With("component", "dispatches"), kick: make(chan struct{}, 1),
		d: map[string]*state{}, lastSeq: map[string]uint64{}, clearing: map[string]bool{}, dirty: map[string]uint64{}}
	f, recs, problem, err := statefile.Open(c.Path)
	if err != nil {
		return nil, fmt.Errorf("dispatch state %s: %w", c.Path, err)
	}
	if problem != "" {
		t.log.Error("dispatch state damaged", "file", c.Path, "problem", problem)
	}
	t.file = f
	bad := 0
	for i, r := range recs {
		var e entry
		if err := json.Unmarshal(r, &e); err != nil {
			t.log.Error("dispatch state: a record does not decode; skipped", "file", c.Path, "record", i, "err", err)
			bad++
			continue
		}
		bad += t.apply(&e)
	}
	if bad > 0 || problem != "" {
		// Start the file again from what was read, so that what is
		// appended next is not behind the damage.
		if err := t.file.Rewrite(t.snapshotLocked()); err != nil {
			t.log.Error("dispatch state: rewriting after damage failed", "file", c.Path, "err", err)
		}
	}
	for k := range t.d {
		t.markLocked("dispatches/" + k)
	}
	for k := range t.clearing {
		t.markLocked("dispatches/" + k)
	}
	return t, nil
}

// apply replays one record; it returns how many things in it it had to
// drop (a file damaged with a good checksum, or written by hand).
func (t *Tracker) apply(e *entry) (dropped int) {
	switch {
	case e.Snapshot != nil:
		t.d = map[string]*state{}
		for _, s := range e.Snapshot.Dispatches {
			if s == nil || !ValidS8(s.Dispatch) || s.Highest < 0 || s.Highest > 999 {
				dropped++
				continue
			}
			serials := map[int]uint64{}
			for n, seq := range s.Serials {
				if n >= 1 && n <= 999 {
					serials[n] = seq
				} else {
					dropped++
				}
			}
			twice := map[int]int{}
			for n, c := range s.Twice {
				if n >= 1 && n <= 999 && c > 0 {
					twice[n] = c
				} else {
					dropped++
				}
			}
			s.Serials, s.Twice = serials, twice
			t.d[s.Dispatch] = s
		}
		t.lastSeq = map[string]uint64{}
		for k, v := range e.Snapshot.LastSeq {
			t.lastSeq[k] = v
		}
		t.clearing = map[string]bool{}
		for _, k := range e.Snapshot.Clearing {
			if ValidS8(k) {
				t.clearing[k] = true
			} else {
				dropped++
			}
		}
	case e.Seen != nil:
		if !validLabel(*e.Seen) {
			return 1
		}
		t.seenLocked(*e.Seen)
	case e.Expired != "":
		if !ValidS8(e.Expired) {
			return 1
		}
		delete(t.d, e.Expired)
		t.clearing[e.Expired] = true
	case e.Cleared != "":
		delete(t.clearing, e.Cleared)
	}
	return dropped
}

// ValidS8 reports whether s has the shape of an S8 dispatch identifier
// (20 upper-case letters and digits): what a topic level can hold.
func ValidS8(s string) bool {
	if len(s) != 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func validLabel(l Label) bool { return ValidS8(l.Dispatch) && l.Serial >= 1 && l.Serial <= 999 }

// ClampLastSeq forgets the last label seqs beyond the buffer's last
// sequence (max): a state from another buffer, or damaged, would
// otherwise make the tracker ignore every label to come.
func (t *Tracker) ClampLastSeq(max uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range t.lastSeq {
		if v > max {
			t.log.Warn("dispatch state: a station's last label is beyond the buffer's last seq; forgotten", "station", k, "seq", v, "buffer_last_seq", max)
			delete(t.lastSeq, k)
		}
	}
}

// LastSeq is the sequence number of the last label noted from station:
// a station that restarts gives the labels after it again.
func (t *Tracker) LastSeq(station string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastSeq[station]
}

// Seen notes a receptacle label; one already noted (its seq not after the
// station's last) changes nothing. The state is synced before it returns.
func (t *Tracker) Seen(l Label) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !validLabel(l) || l.Seq != 0 && l.Seq <= t.lastSeq[l.Station] {
		return
	}
	t.seenLocked(l)
	t.write(entry{Seen: &l}, true)
	t.markLocked("dispatches/" + l.Dispatch)
}

func (t *Tracker) seenLocked(l Label) {
	if l.Seq > t.lastSeq[l.Station] {
		t.lastSeq[l.Station] = l.Seq
	}
	s := t.d[l.Dispatch]
	if s == nil {
		s = &state{Dispatch: l.Dispatch, Serials: map[int]uint64{}, Twice: map[int]int{}, FirstSeen: l.At}
		t.d[l.Dispatch] = s
		delete(t.clearing, l.Dispatch)
	}
	if first, ok := s.Serials[l.Serial]; !ok {
		s.Serials[l.Serial] = l.Seq
	} else if first != l.Seq {
		s.Twice[l.Serial]++
	}
	if l.Highest && l.Serial > s.Highest {
		s.Highest = l.Serial
	}
	if l.At.Before(s.FirstSeen) {
		s.FirstSeen = l.At
	}
	if l.At.After(s.LastSeen) {
		s.LastSeen = l.At
	}
	s.UpdatedAt = time.Now()
}

// write appends e to the state file (then syncs it when sync is set), and
// makes the file a snapshot once it has grown. Failures are logged: the
// tracker goes on in memory.
func (t *Tracker) write(e entry, sync bool) {
	b, _ := json.Marshal(e)
	err := t.file.Append(b)
	if err == nil && sync {
		err = t.file.Sync()
	}
	if err == nil && t.file.Size() > compactAt {
		err = t.file.Rewrite(t.snapshotLocked())
	}
	if err != nil {
		t.errs++
		t.log.Error("dispatch state not written; completeness is kept in memory until the next write succeeds", "file", t.cfg.Path, "err", err)
	}
}

func (t *Tracker) snapshotLocked() []byte {
	s := snapshot{LastSeq: t.lastSeq, Clearing: slices.Sorted(maps.Keys(t.clearing))}
	for _, k := range slices.Sorted(maps.Keys(t.d)) {
		s.Dispatches = append(s.Dispatches, t.d[k])
	}
	b, _ := json.Marshal(entry{Snapshot: &s})
	return b
}

func (t *Tracker) markLocked(topic string) {
	t.version++
	t.dirty[topic] = t.version
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Message returns the dispatch's message, false when it is not tracked.
func (t *Tracker) Message(dispatch string) (Message, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.d[dispatch]
	if s == nil {
		return Message{}, false
	}
	return t.messageLocked(s), true
}

func (t *Tracker) messageLocked(s *state) Message {
	m := Message{Schema: Schema, Agent: t.cfg.Agent, Site: t.cfg.Site, Dispatch: s.Dispatch,
		Received: slices.Sorted(maps.Keys(s.Serials)), Missing: []int{}, Duplicates: slices.Sorted(maps.Keys(s.Twice)),
		FirstSeen: record.Timestamp(s.FirstSeen), LastSeen: record.Timestamp(s.LastSeen), UpdatedAt: record.Timestamp(s.UpdatedAt)}
	if m.Duplicates == nil {
		m.Duplicates = []int{}
	}
	upTo := 0
	if s.Highest > 0 {
		h := s.Highest
		m.Highest = &h
		upTo = h
	} else if len(m.Received) > 0 {
		upTo = m.Received[len(m.Received)-1]
	}
	for n := 1; n <= upTo; n++ {
		if _, ok := s.Serials[n]; !ok {
			m.Missing = append(m.Missing, n)
		}
	}
	m.Complete = s.Highest > 0 && len(m.Missing) == 0
	if t.cfg.Clock != nil {
		m.Clock = t.cfg.Clock.Quality()
	}
	return m
}

// Retained is a dispatch's retained message: Topic below the agent's
// prefix, an empty Payload clearing an expired dispatch's.
type Retained struct {
	Topic   string
	Payload []byte
	Version uint64
}

// Retained returns the messages to publish: all of them (a new session),
// or those changed since the broker took them.
func (t *Tracker) Retained(all bool) []Retained {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Retained
	add := func(k string) {
		topic := "dispatches/" + k
		m := Retained{Topic: topic, Version: t.dirty[topic]}
		if s := t.d[k]; s != nil {
			m.Payload, _ = json.Marshal(t.messageLocked(s))
		} else if !t.clearing[k] {
			return
		}
		out = append(out, m)
	}
	if all {
		for _, k := range slices.Sorted(maps.Keys(t.d)) {
			add(k)
		}
		for _, k := range slices.Sorted(maps.Keys(t.clearing)) {
			add(k)
		}
		return out
	}
	for _, topic := range slices.Sorted(maps.Keys(t.dirty)) {
		add(topic[len("dispatches/"):])
	}
	return out
}

// RetainedSent says the broker took version of topic's message.
func (t *Tracker) RetainedSent(topic string, version uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.dirty[topic]; ok && v <= version {
		delete(t.dirty, topic)
	}
	k := topic[min(len(topic), len("dispatches/")):]
	if t.clearing[k] && t.d[k] == nil {
		delete(t.clearing, k)
		t.write(entry{Cleared: k}, false)
	}
}

// RetainedChanged gets a value when a message changed.
func (t *Tracker) RetainedChanged() <-chan struct{} { return t.kick }

// Stats are the tracker's figures for the status.
type Stats struct {
	Tracked  int `json:"tracked"`
	Complete int `json:"complete"`
	// Incomplete counts dispatches whose highest receptacle was seen and
	// some of whose receptacles were not.
	Incomplete  int `json:"incomplete"`
	WriteErrors int `json:"write_errors,omitempty"`
}

// Stats returns the tracker's figures.
func (t *Tracker) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := Stats{Tracked: len(t.d), WriteErrors: t.errs}
	for _, s := range t.d {
		if s.Highest == 0 {
			continue
		}
		if t.messageLocked(s).Complete {
			st.Complete++
		} else {
			st.Incomplete++
		}
	}
	return st
}

// Run expires dispatches until ctx is done, then closes the state file.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	t.expire(time.Now())
	for {
		select {
		case <-ctx.Done():
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.file.Close()
		case now := <-tick.C:
			t.expire(now)
		}
	}
}

// expire drops the dispatches whose last label is older than the expiry.
func (t *Tracker) expire(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, s := range t.d {
		if now.Sub(s.LastSeen) > t.cfg.Expire {
			delete(t.d, k)
			t.clearing[k] = true
			t.write(entry{Expired: k}, false)
			t.markLocked("dispatches/" + k)
			t.log.Info("dispatch expired", "dispatch", k, "last_seen", record.Timestamp(s.LastSeen))
		}
	}
}
