// Package status is the agent's status document, as served on /status,
// published on P/health and P/devices/..., and read by /metrics: the
// parts each room of the agent reports, and nothing that computes them.
package status

import (
	"runtime/metrics"
	"time"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
)

// Status is the agent's state as served on /status.
type Status struct {
	Agent   string       `json:"agent"`
	Site    string       `json:"site"`
	Version string       `json:"version"`
	Time    string       `json:"time"`
	Uptime  string       `json:"uptime"`
	Clock   string       `json:"clock,omitempty"` // synced, unsynced or unknown, as scan events carry it (agent/clock)
	Process Process      `json:"process"`
	Buffer  buffer.Stats `json:"buffer"`
	// BufferError says why the buffer is not open yet (scans are not
	// accepted meanwhile; the agent retries).
	BufferError string    `json:"buffer_error,omitempty"`
	MQTT        Uplink    `json:"mqtt"`
	Stations    []Station `json:"stations"`
	// Dispatches is the site's dispatch completeness (docs/WORKFLOWS.md).
	Dispatches *Dispatches `json:"dispatches,omitempty"`

	// Started is when the agent started running (zero before).
	Started time.Time `json:"-"`
	// BufferOpen is true once the buffer is open.
	BufferOpen bool `json:"-"`
}

// Process is the agent process's memory.
type Process struct {
	RSSBytes     int64 `json:"rss_bytes,omitempty"`      // resident set (Linux)
	PeakRSSBytes int64 `json:"peak_rss_bytes,omitempty"` // its high-water mark (Linux)
	HeapBytes    int64 `json:"heap_bytes"`               // Go heap in use
	MemoryLimit  int64 `json:"memory_limit,omitempty"`   // Go soft limit (GOMEMLIMIT)
}

// ReadProcess reads this process's memory figures.
func ReadProcess() Process {
	var p Process
	p.RSSBytes, p.PeakRSSBytes = rss()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(samples)
	p.HeapBytes = int64(samples[0].Value.Uint64())
	if l := samples[1].Value.Uint64(); l < 1<<62 {
		p.MemoryLimit = int64(l)
	}
	return p
}

// Station is one station's part of Status.
type Station struct {
	ID       string   `json:"id"`
	Counters Counters `json:"counters"`
	Scanner  Device   `json:"scanner"`
	Scale    *Scale   `json:"scale,omitempty"`
	// Workflow is the station's sorting context (docs/WORKFLOWS.md).
	Workflow *Workflow `json:"workflow,omitempty"`
}

// Dispatches counts the dispatches tracked: Complete ones had every
// receptacle up to the highest seen, Incomplete ones had their highest
// receptacle seen and some other missing.
type Dispatches struct {
	Tracked     int `json:"tracked"`
	Complete    int `json:"complete"`
	Incomplete  int `json:"incomplete"`
	WriteErrors int `json:"write_errors,omitempty"`
}

// Workflow is a station's sorting context: its workflow, the operator
// signed in and the receptacle (or bag session) open at it.
type Workflow struct {
	Name       string      `json:"name"` // items, open_receptacles, fill_receptacles
	Operator   string      `json:"operator,omitempty"`
	Receptacle *Receptacle `json:"receptacle,omitempty"`
}

// Receptacle is what is open at a station: a receptacle being emptied
// (open_receptacles: Receptacle is its S9 label) or a bag being filled
// (fill_receptacles: BagSession, until its label closes it).
type Receptacle struct {
	Receptacle string `json:"receptacle,omitempty"`
	BagSession string `json:"bag_session,omitempty"`
	Items      int    `json:"items"`
	ItemsGrams int64  `json:"items_grams"`
	OpenedAt   string `json:"opened_at"`
	LastScanAt string `json:"last_scan_at,omitempty"`
}

// Counters are one station's totals since the agent started; a reload
// that restarts the station keeps them.
type Counters struct {
	Scans           uint64            `json:"scans"`             // accepted (durable)
	Invalid         uint64            `json:"invalid"`           // accepted with valid=false
	InvalidByReason map[string]uint64 `json:"invalid_by_reason"` // check_digit, unexpected_kind, ...
	Suppressed      uint64            `json:"suppressed"`        // double reads within dedup_window, not made events
	Weights         map[string]uint64 `json:"weights,omitempty"` // scans by weight status (stations with a scale)
	NotAccepted     map[string]uint64 `json:"not_accepted"`      // read but not made durable, by reason
	Rejected        map[string]uint64 `json:"rejected"`          // frames discarded, by reason
	Feedback        map[string]uint64 `json:"feedback,omitempty"`
	// Workflow counts the workflow's events (docs/WORKFLOWS.md):
	// sign_in, logout, operator_idle, no_operator, opened, closed_label,
	// closed_control, closed_idle, weight_mismatch, cancelled,
	// cancel_nothing, close_nothing_open, state_errors, state_damaged.
	Workflow map[string]uint64 `json:"workflow,omitempty"`
}

// Device is a device's last known state.
type Device struct {
	Port   string `json:"port"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since"`
}

// Scale is a station scale's part of the status.
type Scale struct {
	Device
	Frames map[string]uint64 `json:"frames"`         // by result: ok, timeout, garbage, checksum ...
	Last   *record.Weight    `json:"last,omitempty"` // the latest reading with a weight
}

// DeviceReport is one device's state for P/devices/<station>/<kind>.
type DeviceReport struct {
	Station string
	Kind    string // scanner | scale
	Device
}

// Uplink states, as reported in /status and P/health.
const (
	UplinkStarting    = "starting"
	UplinkConnected   = "connected"
	UplinkUnreachable = "unreachable"  // network: refused, timeout, DNS, lost
	UplinkTLSError    = "tls_error"    // certificates, CA, handshake
	UplinkAuthRefused = "auth_refused" // bad user name or password, not authorised
	UplinkRefused     = "refused"      // other CONNACK refusals
	UplinkStalled     = "stalled"      // connected, but PUBACKs stopped coming
	UplinkNoReceipts  = "no_receipts"  // connected, PUBACKs come, receipts do not
	UplinkStopped     = "stopped"
)

// UplinkStates lists every uplink state, for metrics.
var UplinkStates = []string{UplinkStarting, UplinkConnected, UplinkUnreachable, UplinkTLSError, UplinkAuthRefused,
	UplinkRefused, UplinkStalled, UplinkNoReceipts, UplinkStopped}

// Uplink is the uplink's state and counters.
type Uplink struct {
	State     string `json:"state"`
	Since     string `json:"since"`
	Connected bool   `json:"connected"`
	Broker    string `json:"broker,omitempty"`
	LastError string `json:"last_error,omitempty"`
	Hint      string `json:"hint,omitempty"`
	Published uint64 `json:"published"`
	Acked     uint64 `json:"acked"`
	Sessions  uint64 `json:"sessions"`
	// Session is the number of the current or last session, as its
	// online status and Last Will carry it (0 before the first).
	Session   uint64 `json:"session,omitempty"`
	Malformed uint64 `json:"malformed"`
	// Parked counts scans parked because the broker ended every session
	// that carried them (buffer export --parked lists them).
	Parked     uint64 `json:"parked"`
	LastParked string `json:"last_parked,omitempty"`
	// Receipts, when mqtt.receipts is enabled.
	Receipts *Receipts `json:"receipts,omitempty"`
}

// Receipts are the uplink's receipts: scans published and not yet
// receipted (in flight or waiting), and what came of the receipts.
type Receipts struct {
	Unreceipted int     `json:"unreceipted"`
	OldestAge   float64 `json:"oldest_unreceipted_age"` // seconds since the oldest one was published
	Receipted   uint64  `json:"receipted"`              // scans deleted on a receipt
	Republished uint64  `json:"republished"`            // publishes again, for want of a receipt
	// Bad counts receipts ignored, by reason: malformed, schema,
	// other_agent, bad_range, beyond_last_seq, unknown_seq, overflow.
	Bad map[string]uint64 `json:"bad"`
}
