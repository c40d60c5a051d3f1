// Package fleet is the fleet view: every hub's retained status, health
// and device states, taken from the central broker (hubs behind NAT
// cannot be scraped; MQTT is the only channel), kept as one row per hub,
// and shown as a table, JSON, a check for monitoring and Prometheus
// metrics labelled site and agent (docs/FLEET.md).
//
// Like the reference receiver it imports nothing of the agent but the leaf
// agent/config/yamlcfg: it reads the agent's messages by their schemas
// (docs/schemas/status.json, health.json, device.json), taking the few
// fields it shows. It is imported by cmd/scanagent (the fleet command)
// and cmd/fleetsim.
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Hub is one row of the fleet view.
type Hub struct {
	Agent  string `json:"agent"`
	Site   string `json:"site"`
	Prefix string `json:"prefix"` // its topic prefix
	// State is online or offline, from the hub's retained status; Since
	// is that status's since (the session's start, or the graceful stop).
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	Session uint64    `json:"session,omitempty"` // the status's session number
	Version string    `json:"version"`
	// Uplink is mqtt.state of the last health (connected while it is
	// online; the state it had when it last published otherwise).
	Uplink string `json:"uplink,omitempty"`
	// Backlog is the buffer depth of the last health; BacklogOldestAge its
	// oldest pending scan's age in seconds, grown by the time since that
	// health while the backlog is not empty.
	Backlog          int64   `json:"backlog"`
	BacklogOldestAge float64 `json:"backlog_oldest_age"`
	// Unreceipted is mqtt.receipts.unreceipted, for hubs with receipts on.
	Unreceipted    *int64 `json:"unreceipted,omitempty"`
	Devices        int    `json:"devices"`
	DevicesInError int    `json:"devices_in_error"`
	// Clock is the hub's clock quality (synced, unsynced, unknown) from
	// its last health; empty when it did not report one.
	Clock    string     `json:"clock,omitempty"`
	HealthAt *time.Time `json:"health_at,omitempty"` // the last health's time
	// LastSeen is the latest sign of the hub: a message received live, its
	// last health's time or its status's since.
	LastSeen time.Time `json:"last_seen"`
}

// status is P/status (docs/schemas/status.json).
type status struct {
	State, Agent, Site, Version string
	Since                       time.Time
	Session                     uint64
}

// health is what the view takes of P/health (docs/schemas/health.json).
type health struct {
	Agent, Site string
	Time        time.Time
	Clock       string
	Buffer      struct {
		Depth     int64   `json:"depth"`
		OldestAge float64 `json:"oldest_age"`
	}
	MQTT struct {
		State    string `json:"state"`
		Session  uint64 `json:"session"`
		Receipts *struct {
			Unreceipted int64 `json:"unreceipted"`
		} `json:"receipts"`
	} `json:"mqtt"`
}

type hub struct {
	prefix   string
	status   *status
	health   *health
	devices  map[string]string // "<station>/<device>" -> state
	lastSeen time.Time
	// offlineAt is when an offline status came live: the Last Will's
	// since is the start of the session it ends, not its end.
	offlineAt time.Time
}

// View holds the fleet: Handle takes each message, Snapshot reads the
// rows. Safe for concurrent use.
type View struct {
	levels int // of the prefix filter
	forget time.Duration

	mu       sync.Mutex
	hubs     map[string]*hub
	stale    uint64 // statuses ignored as older than the one held
	bad      uint64 // messages that could not be read
	received uint64
	changed  time.Time // when a row last changed
}

// NewView makes an empty view for agents under the prefix filter (e.g.
// scanagent/+/+). Hubs offline and not seen for longer than forget are
// dropped (0: never).
func NewView(prefixFilter string, forget time.Duration) (*View, error) {
	if err := CheckPrefixFilter(prefixFilter); err != nil {
		return nil, err
	}
	return &View{levels: len(strings.Split(prefixFilter, "/")), forget: forget, hubs: map[string]*hub{}}, nil
}

// CheckPrefixFilter reports a topic filter that cannot stand for the
// agents' prefixes: '+' may stand for whole levels, '#' is not allowed
// (the view appends /status, /health and /devices/+/+).
func CheckPrefixFilter(f string) error {
	switch {
	case f == "":
		return errors.New("the prefix filter must not be empty")
	case strings.Contains(f, "#"):
		return fmt.Errorf("the prefix filter must not contain '#': /status, /health and /devices/+/+ are added to it, got %q", f)
	case strings.HasPrefix(f, "$"):
		return fmt.Errorf("the prefix filter must not start with '$', got %q", f)
	case strings.HasPrefix(f, "/") || strings.HasSuffix(f, "/") || strings.Contains(f, "//"):
		return fmt.Errorf("the prefix filter must not start or end with '/' or have an empty level, got %q", f)
	case strings.ContainsAny(f, " \t\r\n\x00"):
		return fmt.Errorf("the prefix filter must not contain whitespace or NUL, got %q", f)
	}
	for _, level := range strings.Split(f, "/") {
		if strings.Contains(level, "+") && level != "+" {
			return fmt.Errorf("'+' must stand for a whole topic level, as in scanagent/+/+, got %q", f)
		}
	}
	return nil
}

// Filters are the subscriptions the view needs under prefixFilter.
func Filters(prefixFilter string) []string {
	return []string{prefixFilter + "/status", prefixFilter + "/health", prefixFilter + "/devices/+/+"}
}

// Handle takes one message received at `at`; retained says whether the
// broker replayed it (a retained message is no sign the hub is there
// now).
func (v *View) Handle(topic string, payload []byte, retained bool, at time.Time) {
	levels := strings.Split(topic, "/")
	if len(levels) <= v.levels {
		return
	}
	prefix, rest := strings.Join(levels[:v.levels], "/"), levels[v.levels:]
	v.mu.Lock()
	defer v.mu.Unlock()
	v.received++
	h := v.hubs[prefix]
	if h == nil {
		if len(payload) == 0 {
			return // a cleared device of a hub we do not know
		}
		h = &hub{prefix: prefix, devices: map[string]string{}}
		v.hubs[prefix] = h
	}
	if !retained {
		h.lastSeen = later(h.lastSeen, at)
	}
	switch {
	case len(rest) == 1 && rest[0] == "status":
		st, err := parseStatus(payload)
		if err != nil {
			v.bad++
			return
		}
		if !newer(h.status, st) {
			v.stale++
			return
		}
		h.status = st
		h.lastSeen = later(h.lastSeen, st.Since)
		h.offlineAt = time.Time{}
		if st.State == "offline" && !retained {
			h.offlineAt = at // a Will's since is its session's start
		}
	case len(rest) == 1 && rest[0] == "health":
		var hl health
		if json.Unmarshal(payload, &hl) != nil || hl.Time.IsZero() {
			v.bad++
			return
		}
		t := hl.Time
		if h.health != nil && t.Before(h.health.Time) {
			return
		}
		h.health = &hl
		h.lastSeen = later(h.lastSeen, t)
	case len(rest) == 3 && rest[0] == "devices":
		key := rest[1] + "/" + rest[2]
		if len(payload) == 0 {
			delete(h.devices, key)
			break
		}
		var d struct{ State string }
		if json.Unmarshal(payload, &d) != nil || d.State == "" {
			v.bad++
			return
		}
		h.devices[key] = d.State
	default:
		return
	}
	v.changed = at
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func parseStatus(payload []byte) (*status, error) {
	var w struct {
		State, Agent, Site, Version, Since string
		Session                            uint64
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, err
	}
	if w.State != "online" && w.State != "offline" {
		return nil, fmt.Errorf("state %q", w.State)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Since)
	if err != nil {
		return nil, err
	}
	return &status{State: w.State, Agent: w.Agent, Site: w.Site, Version: w.Version, Since: t, Session: w.Session}, nil
}

// newer reports whether status n replaces the held status o. With session
// numbers on both (docs/schemas/status.json), the higher session wins: a
// Last Will of an old session that arrives late (the broker the hub left
// in a failover fired it) is ignored, like Sparkplug's bdSeq. Within one
// session an offline follows the online, never the reverse (an online
// replayed after that session's end is stale). Without numbers (agents
// before them) the later since wins.
func newer(o, n *status) bool {
	if o == nil {
		return true
	}
	if o.Session > 0 && n.Session > 0 {
		if n.Session != o.Session {
			return n.Session > o.Session
		}
		return !(n.State == "online" && o.State == "offline")
	}
	return !n.Since.Before(o.Since)
}

// Snapshot returns the hubs with a status, by site and agent, as of now.
// Hubs offline and not seen for longer than the forget time are dropped.
func (v *View) Snapshot(now time.Time) []Hub {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Hub, 0, len(v.hubs))
	for p, h := range v.hubs {
		if h.status == nil {
			continue
		}
		if v.forget > 0 && h.status.State == "offline" && now.Sub(h.lastSeen) > v.forget {
			delete(v.hubs, p)
			continue
		}
		out = append(out, h.row(now))
	}
	slices.SortFunc(out, func(a, b Hub) int {
		if c := strings.Compare(a.Site, b.Site); c != 0 {
			return c
		}
		if c := strings.Compare(a.Agent, b.Agent); c != 0 {
			return c
		}
		return strings.Compare(a.Prefix, b.Prefix)
	})
	return out
}

func (h *hub) row(now time.Time) Hub {
	s := h.status
	r := Hub{Agent: s.Agent, Site: s.Site, Prefix: h.prefix, State: s.State, Since: s.Since, Session: s.Session,
		Version: s.Version, LastSeen: h.lastSeen, Devices: len(h.devices)}
	if s.State == "offline" {
		// Offline since: when it came, or else the last sign of life.
		r.Since = later(r.Since, h.offlineAt)
		if h.health != nil {
			r.Since = later(r.Since, h.health.Time)
		}
	}
	for _, st := range h.devices {
		if st == "error" {
			r.DevicesInError++
		}
	}
	if hl := h.health; hl != nil {
		t := hl.Time
		r.HealthAt = &t
		r.Uplink = hl.MQTT.State
		r.Backlog = hl.Buffer.Depth
		r.BacklogOldestAge = hl.Buffer.OldestAge
		if r.Backlog > 0 {
			r.BacklogOldestAge += max(0, now.Sub(hl.Time).Seconds())
		}
		if hl.MQTT.Receipts != nil {
			n := hl.MQTT.Receipts.Unreceipted
			r.Unreceipted = &n
		}
		r.Clock = hl.Clock
	}
	return r
}

// Counts are the view's own counters.
type Counts struct {
	Received, Stale, Bad uint64
	Changed              time.Time
}

// Counts returns the messages taken, statuses ignored as stale and
// messages that could not be read.
func (v *View) Counts() Counts {
	v.mu.Lock()
	defer v.mu.Unlock()
	return Counts{Received: v.received, Stale: v.stale, Bad: v.bad, Changed: v.changed}
}

// Problem is a hub that fails a check.
type Problem struct {
	Hub    Hub
	Reason string
}

// Check returns the hubs offline for longer than maxOffline or with a
// backlog older than maxBacklogAge (0 disables that check).
func Check(hubs []Hub, now time.Time, maxOffline, maxBacklogAge time.Duration) []Problem {
	var out []Problem
	for _, h := range hubs {
		if d := now.Sub(h.Since); maxOffline > 0 && h.State == "offline" && d > maxOffline {
			out = append(out, Problem{h, fmt.Sprintf("offline for %s (more than %s)", d.Round(time.Second), maxOffline)})
		}
		if age := time.Duration(h.BacklogOldestAge * float64(time.Second)); maxBacklogAge > 0 && h.Backlog > 0 && age > maxBacklogAge {
			out = append(out, Problem{h, fmt.Sprintf("backlog of %d, the oldest %s old (more than %s)", h.Backlog, age.Round(time.Second), maxBacklogAge)})
		}
	}
	return out
}
