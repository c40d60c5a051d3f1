package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/central/store"
)

// ScanSchema is the scan event schema this receiver stores.
const ScanSchema = "scanagent.scan/v1"

// kind is what a topic carries, below an agent's prefix.
type kind int

const (
	kindUnknown kind = iota
	kindScan         // P/scans/<station>
	kindStatus       // P/status
	kindHealth       // P/health
	kindDevice       // P/devices/<station>/<device>

	kindReceptacle // P/receptacles/<station>
	kindDispatch   // P/dispatches/<S8>
)

// topicOf splits a topic into the agent's prefix (its first levels
// levels, as many as the prefix filter has) and what follows.
func topicOf(topic string, levels int) (prefix string, k kind, rest []string) {
	parts := strings.Split(topic, "/")
	if len(parts) <= levels {
		return "", kindUnknown, nil
	}
	prefix, rest = strings.Join(parts[:levels], "/"), parts[levels:]
	switch {
	case len(rest) == 2 && rest[0] == "scans" && rest[1] != "":
		k = kindScan
	case len(rest) == 1 && rest[0] == "status":
		k = kindStatus
	case len(rest) == 1 && rest[0] == "health":
		k = kindHealth
	case len(rest) == 3 && rest[0] == "devices" && rest[1] != "" && rest[2] != "":
		k = kindDevice
	case len(rest) == 2 && rest[0] == "receptacles" && rest[1] != "":
		k = kindReceptacle
	case len(rest) == 2 && rest[0] == "dispatches" && rest[1] != "":
		k = kindDispatch
	}
	return prefix, k, rest
}

// wireScan is a scan event as decoded, pointers telling absent from empty.
type wireScan struct {
	Schema       *string         `json:"schema"`
	ID           *string         `json:"id"`
	Seq          json.RawMessage `json:"seq"`
	Agent        *string         `json:"agent"`
	Site         *string         `json:"site"`
	Station      *string         `json:"station"`
	Event        string          `json:"event"`
	ScannedAt    *string         `json:"scanned_at"`
	Barcode      *string         `json:"barcode"`
	AIM          string          `json:"aim"`
	Kind         *string         `json:"kind"`
	Valid        *bool           `json:"valid"`
	Reason       string          `json:"reason"`
	Weight       *wireWeight     `json:"weight"`
	WeightStatus string          `json:"weight_status"`
	Receptacle   string          `json:"receptacle"`
	BagSession   string          `json:"bag_session"`
	Operator     string          `json:"operator"`
}

type wireWeight struct {
	Grams *int64 `json:"grams"`
}

// rejection is why a message is not stored as what its topic says: a
// short code (the metric's label) and the detail kept in the rejected
// table.
type rejection struct {
	code, detail string
}

func (r *rejection) Error() string { return r.code + ": " + r.detail }

func reject(code, format string, args ...any) *rejection {
	return &rejection{code, fmt.Sprintf(format, args...)}
}

// parseScan checks a message on a scans topic: a scan event, or a cancel
// event (cn not nil; workflow.go), told apart by their schema. On a
// rejection, agent and seq are still returned when they could be read, so
// that the agent gets a receipt for it (it is kept, in the rejected table)
// and does not send it forever.
func parseScan(payload []byte, receivedAt time.Time) (sc store.Scan, cn *store.Cancel, agent string, seq int64, rej *rejection) {
	if !utf8.Valid(payload) {
		return sc, nil, "", 0, reject("utf8", "payload is not valid UTF-8")
	}
	var w wireScan
	err := json.Unmarshal(payload, &w)
	var typeErr *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return sc, nil, "", 0, reject("not_json", "%v", err)
	}
	if w.Schema != nil && *w.Schema == CancelSchema {
		cn, agent, seq, rej = parseCancel(payload, receivedAt)
		return sc, cn, agent, seq, rej
	}
	sc, agent, seq, rej = w.scan(payload, receivedAt, typeErr)
	return sc, nil, agent, seq, rej
}

// scan checks a decoded scan event.
func (w *wireScan) scan(payload []byte, receivedAt time.Time, typeErr *json.UnmarshalTypeError) (sc store.Scan, agent string, seq int64, rej *rejection) {
	if w.Agent != nil && *w.Agent != "" {
		agent = *w.Agent
	}
	if len(w.Seq) > 0 {
		if n, err := strconv.ParseUint(string(w.Seq), 10, 64); err == nil && n >= 1 && n <= math.MaxInt64 {
			seq = int64(n)
		}
	}
	if seq == 0 {
		agent = ""
	}
	str := func(p *string) bool { return p != nil && *p != "" }
	switch {
	case typeErr != nil:
		return sc, agent, seq, reject("type", "%s: expected %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case w.Schema == nil:
		return sc, agent, seq, reject("schema", "missing")
	case *w.Schema != ScanSchema:
		return sc, agent, seq, reject("schema", "%q is not %s (nor %s)", *w.Schema, ScanSchema, CancelSchema)
	case w.ID == nil:
		return sc, agent, seq, reject("id", "missing")
	}
	id, err := uuid.Parse(*w.ID)
	switch {
	case err != nil || len(*w.ID) != 36:
		return sc, agent, seq, reject("id", "not a UUID: %q", *w.ID)
	case len(w.Seq) == 0:
		return sc, agent, seq, reject("seq", "missing")
	case seq == 0:
		return sc, agent, seq, reject("seq", "must be an integer from 1 to %d, got %s", int64(math.MaxInt64), w.Seq)
	case !str(w.Agent):
		return sc, agent, seq, reject("agent", "missing or empty")
	case !str(w.Site):
		return sc, agent, seq, reject("site", "missing or empty")
	case !str(w.Station):
		return sc, agent, seq, reject("station", "missing or empty")
	case w.ScannedAt == nil:
		return sc, agent, seq, reject("scanned_at", "missing")
	case w.Barcode == nil:
		return sc, agent, seq, reject("barcode", "missing")
	case !str(w.Kind):
		return sc, agent, seq, reject("kind", "missing or empty")
	case w.Valid == nil:
		return sc, agent, seq, reject("valid", "missing")
	case w.Weight != nil && w.Weight.Grams == nil:
		return sc, agent, seq, reject("weight", "weight without grams")
	case w.BagSession != "" && !isUUID(w.BagSession):
		return sc, agent, seq, reject("bag_session", "not a UUID: %q", w.BagSession)
	case bytes.Contains(payload, []byte(`\u0000`)):
		return sc, agent, seq, reject("nul", "holds a NUL character (\\u0000), which PostgreSQL text and jsonb cannot store")
	}
	at, err := time.Parse(time.RFC3339Nano, *w.ScannedAt)
	if err != nil {
		return sc, agent, seq, reject("scanned_at", "not an RFC 3339 time: %q", *w.ScannedAt)
	}
	sc = store.Scan{
		ID: id, Seq: seq, Agent: *w.Agent, Site: *w.Site, Station: *w.Station, Event: w.Event,
		ScannedAt: at, Barcode: *w.Barcode, AIM: w.AIM, Kind: *w.Kind, Valid: *w.Valid, Reason: w.Reason,
		WeightStatus: w.WeightStatus, Receptacle: w.Receptacle, BagSession: uuidPtr(w.BagSession), Operator: w.Operator,
		ReceivedAt: receivedAt, Payload: payload,
	}
	if w.Weight != nil {
		sc.WeightGrams = w.Weight.Grams
	}
	return sc, agent, seq, nil
}

// storable checks what goes into a jsonb or text column as is.
func storable(payload []byte) *rejection {
	switch {
	case !utf8.Valid(payload):
		return reject("utf8", "payload is not valid UTF-8")
	case bytes.Contains(payload, []byte(`\u0000`)):
		return reject("nul", "holds a NUL character (\\u0000), which PostgreSQL jsonb cannot store")
	}
	return nil
}

func parseTime(what, s string) (time.Time, *rejection) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, reject(what, "since/time is not an RFC 3339 time: %q", s)
	}
	return t, nil
}

func parseStatus(prefix string, payload []byte, receivedAt time.Time) (store.Status, *rejection) {
	var w struct {
		State, Agent, Site, Version, Since string
		Session                            int64
	}
	if rej := storable(payload); rej != nil {
		return store.Status{}, reject("status", "%s", rej)
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return store.Status{}, reject("status", "%v", err)
	}
	if w.State != "online" && w.State != "offline" {
		return store.Status{}, reject("status", "state must be online or offline, got %q", w.State)
	}
	since, rej := parseTime("status", w.Since)
	if rej != nil {
		return store.Status{}, rej
	}
	if w.Session < 0 {
		return store.Status{}, reject("status", "session must not be negative, got %d", w.Session)
	}
	return store.Status{Prefix: prefix, Agent: w.Agent, Site: w.Site, State: w.State, Version: w.Version, Since: since, ReceivedAt: receivedAt, Session: w.Session}, nil
}

func parseHealth(prefix string, payload []byte, receivedAt time.Time) (store.Health, *rejection) {
	var w struct {
		Agent, Site, Time string
		Buffer            struct {
			Depth     int64   `json:"depth"`
			OldestAge float64 `json:"oldest_age"`
			LastSeq   int64   `json:"last_seq"`
		}
	}
	if rej := storable(payload); rej != nil {
		return store.Health{}, reject("health", "%s", rej)
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return store.Health{}, reject("health", "%v", err)
	}
	t, rej := parseTime("health", w.Time)
	if rej != nil {
		return store.Health{}, rej
	}
	return store.Health{Prefix: prefix, Agent: w.Agent, Site: w.Site, Time: t, BufferDepth: w.Buffer.Depth,
		BufferOldestAge: w.Buffer.OldestAge, BufferLastSeq: w.Buffer.LastSeq, Doc: payload, ReceivedAt: receivedAt}, nil
}

func parseDevice(prefix, station, device string, payload []byte, receivedAt time.Time) (store.Device, *rejection) {
	d := store.Device{Prefix: prefix, Station: station, Device: device, ReceivedAt: receivedAt}
	if len(payload) == 0 {
		d.Cleared = true // the retained state of a removed device
		return d, nil
	}
	var w struct{ Port, State, Reason, Since string }
	if rej := storable(payload); rej != nil {
		return d, reject("device", "%s", rej)
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return d, reject("device", "%v", err)
	}
	since, rej := parseTime("device", w.Since)
	if rej != nil {
		return d, rej
	}
	d.Port, d.State, d.Reason, d.Since = w.Port, w.State, w.Reason, since
	return d, nil
}
