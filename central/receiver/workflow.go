package receiver

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/central/store"
)

// The station workflows' messages (docs/WORKFLOWS.md, docs/CENTRAL.md):
// receptacle events on P/receptacles/<station> and cancel events on
// P/scans/<station>, buffered by the agent, stored like scans and
// receipted by seq (the agent's one sequence); the retained dispatch
// completeness on P/dispatches/<S8>, a state, not receipted.
//
// A message of these kinds that cannot be stored is rejected with its
// kind as the reason code (receptacle, cancel, dispatch), as status,
// health and device messages are; the rejected row says which field.

// The schemas of the workflow messages this receiver stores.
const (
	ReceptacleSchema = "scanagent.receptacle/v1"
	CancelSchema     = "scanagent.cancel/v1"
	DispatchSchema   = "scanagent.dispatch/v1"
)

// wireHead is what the buffered events share: the de-duplication id and
// the agent's seq, which the receipt names.
type wireHead struct {
	Schema  *string         `json:"schema"`
	ID      *string         `json:"id"`
	Seq     json.RawMessage `json:"seq"`
	Agent   *string         `json:"agent"`
	Site    *string         `json:"site"`
	Station *string         `json:"station"`
}

// decodeEvent decodes a buffered event of schema into w (whose head is
// h) and checks the head; agent and seq are returned whenever they could
// be read, for the receipt. Rejections carry code.
func decodeEvent(code, schema string, payload []byte, w any, h *wireHead) (id [16]byte, agent string, seq int64, rej *rejection) {
	if rj := storable(payload); rj != nil {
		return id, "", 0, reject(code, "%s", rj)
	}
	err := json.Unmarshal(payload, w)
	var typeErr *json.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return id, "", 0, reject(code, "not JSON: %v", err)
	}
	if len(h.Seq) > 0 {
		if n, err := strconv.ParseUint(string(h.Seq), 10, 64); err == nil && n >= 1 && n <= math.MaxInt64 {
			seq = int64(n)
		}
	}
	if h.Agent != nil && seq != 0 {
		agent = *h.Agent
	}
	str := func(p *string) bool { return p != nil && *p != "" }
	switch {
	case typeErr != nil:
		return id, agent, seq, reject(code, "%s: expected %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case h.Schema == nil || *h.Schema != schema:
		return id, agent, seq, reject(code, "schema: not %s", schema)
	case h.ID == nil || !isUUID(*h.ID):
		return id, agent, seq, reject(code, "id: missing or not a UUID")
	case seq == 0:
		return id, agent, seq, reject(code, "seq: must be an integer from 1 to %d, got %s", int64(math.MaxInt64), h.Seq)
	case !str(h.Agent):
		return id, agent, seq, reject(code, "agent: missing or empty")
	case !str(h.Site):
		return id, agent, seq, reject(code, "site: missing or empty")
	case !str(h.Station):
		return id, agent, seq, reject(code, "station: missing or empty")
	}
	return uuid.MustParse(*h.ID), agent, seq, nil
}

// isUUID accepts a UUID in its 36-character form only.
func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

// uuidPtr is s as a UUID, nil when empty (checked by isUUID before).
func uuidPtr(s string) *[16]byte {
	if s == "" {
		return nil
	}
	u := [16]byte(uuid.MustParse(s))
	return &u
}

func parseTimeField(code, field, s string) (time.Time, *rejection) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, reject(code, "%s: not an RFC 3339 time: %q", field, s)
	}
	return t, nil
}

// parseCancel checks a cancel event (on a scans topic).
func parseCancel(payload []byte, receivedAt time.Time) (cn *store.Cancel, agent string, seq int64, rej *rejection) {
	var w struct {
		wireHead
		Cancels     *string `json:"cancels"`
		Barcode     *string `json:"barcode"`
		Operator    string  `json:"operator"`
		CancelledAt *string `json:"cancelled_at"`
		Clock       string  `json:"clock"`
	}
	id, agent, seq, rej := decodeEvent("cancel", CancelSchema, payload, &w, &w.wireHead)
	if rej != nil {
		return nil, agent, seq, rej
	}
	switch {
	case w.Cancels == nil || !isUUID(*w.Cancels):
		return nil, agent, seq, reject("cancel", "cancels: missing or not a UUID")
	case w.Barcode == nil:
		return nil, agent, seq, reject("cancel", "barcode: missing")
	case w.CancelledAt == nil:
		return nil, agent, seq, reject("cancel", "cancelled_at: missing")
	}
	at, rej := parseTimeField("cancel", "cancelled_at", *w.CancelledAt)
	if rej != nil {
		return nil, agent, seq, rej
	}
	return &store.Cancel{
		ID: id, Seq: seq, Agent: agent, Site: *w.Site, Station: *w.Station, Cancels: uuid.MustParse(*w.Cancels),
		Barcode: *w.Barcode, Operator: w.Operator, CancelledAt: at, Clock: w.Clock, ReceivedAt: receivedAt, Payload: payload,
	}, agent, seq, nil
}

// parseReceptacle checks a receptacle event.
func parseReceptacle(payload []byte, receivedAt time.Time) (rc store.Receptacle, agent string, seq int64, rej *rejection) {
	var w struct {
		wireHead
		Workflow   *string `json:"workflow"`
		Receptacle string  `json:"receptacle"`
		S9         *struct {
			Dispatch string `json:"dispatch"`
			Serial   *int32 `json:"serial"`
		} `json:"s9"`
		BagSession     string  `json:"bag_session"`
		Items          *int64  `json:"items"`
		Cancelled      int64   `json:"cancelled"`
		FirstItemSeq   *int64  `json:"first_item_seq"`
		LastItemSeq    *int64  `json:"last_item_seq"`
		ItemsGrams     *int64  `json:"items_grams"`
		DeclaredGrams  *int64  `json:"declared_grams"`
		MeasuredGrams  *int64  `json:"measured_grams"`
		WeightMismatch *bool   `json:"weight_mismatch"`
		Operator       string  `json:"operator"`
		OpenedAt       *string `json:"opened_at"`
		ClosedAt       *string `json:"closed_at"`
		ClosedBy       *string `json:"closed_by"`
		Clock          string  `json:"clock"`
	}
	id, agent, seq, rej := decodeEvent("receptacle", ReceptacleSchema, payload, &w, &w.wireHead)
	if rej != nil {
		return rc, agent, seq, rej
	}
	str := func(p *string) bool { return p != nil && *p != "" }
	switch {
	case !str(w.Workflow):
		return rc, agent, seq, reject("receptacle", "workflow: missing or empty")
	case w.Items == nil || *w.Items < 0 || *w.Items > math.MaxInt32:
		return rc, agent, seq, reject("receptacle", "items: missing or out of range")
	case w.Cancelled < 0 || w.Cancelled > math.MaxInt32:
		return rc, agent, seq, reject("receptacle", "cancelled: out of range")
	case w.ItemsGrams == nil:
		return rc, agent, seq, reject("receptacle", "items_grams: missing")
	case w.BagSession != "" && !isUUID(w.BagSession):
		return rc, agent, seq, reject("receptacle", "bag_session: not a UUID: %q", w.BagSession)
	case w.OpenedAt == nil || w.ClosedAt == nil:
		return rc, agent, seq, reject("receptacle", "opened_at and closed_at: missing")
	case !str(w.ClosedBy):
		return rc, agent, seq, reject("receptacle", "closed_by: missing or empty")
	}
	opened, rej := parseTimeField("receptacle", "opened_at", *w.OpenedAt)
	if rej != nil {
		return rc, agent, seq, rej
	}
	closed, rej := parseTimeField("receptacle", "closed_at", *w.ClosedAt)
	if rej != nil {
		return rc, agent, seq, rej
	}
	rc = store.Receptacle{
		ID: id, Seq: seq, Agent: agent, Site: *w.Site, Station: *w.Station, Workflow: *w.Workflow,
		Receptacle: w.Receptacle, BagSession: uuidPtr(w.BagSession), Items: *w.Items, Cancelled: w.Cancelled,
		FirstItemSeq: w.FirstItemSeq, LastItemSeq: w.LastItemSeq, ItemsGrams: *w.ItemsGrams,
		DeclaredGrams: w.DeclaredGrams, MeasuredGrams: w.MeasuredGrams, WeightMismatch: w.WeightMismatch,
		Operator: w.Operator, OpenedAt: opened, ClosedAt: closed, ClosedBy: *w.ClosedBy, Clock: w.Clock,
		ReceivedAt: receivedAt, Payload: payload,
	}
	if w.S9 != nil {
		rc.Dispatch, rc.Serial = w.S9.Dispatch, w.S9.Serial
	}
	return rc, agent, seq, nil
}

// parseDispatch checks a retained dispatch state; the empty payload is
// the agent forgetting the dispatch.
func parseDispatch(prefix, dispatch string, payload []byte, receivedAt time.Time) (store.Dispatch, *rejection) {
	d := store.Dispatch{Prefix: prefix, Dispatch: dispatch, ReceivedAt: receivedAt}
	if len(payload) == 0 {
		d.Cleared = true
		return d, nil
	}
	if rej := storable(payload); rej != nil {
		return d, reject("dispatch", "%s", rej)
	}
	var w struct {
		Schema, Agent, Site, Dispatch string
		Received, Missing, Duplicates []int32
		Highest                       *int32
		Complete                      *bool
		FirstSeen                     string `json:"first_seen"`
		LastSeen                      string `json:"last_seen"`
		UpdatedAt                     string `json:"updated_at"`
		Clock                         string
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return d, reject("dispatch", "%v", err)
	}
	serials := func(a []int32) bool {
		for _, n := range a {
			if n < 1 || n > 999 {
				return false
			}
		}
		return a != nil
	}
	switch {
	case w.Schema != DispatchSchema:
		return d, reject("dispatch", "schema: %q is not %s", w.Schema, DispatchSchema)
	case w.Dispatch != dispatch:
		return d, reject("dispatch", "dispatch: %q, but the topic is that of %q", w.Dispatch, dispatch)
	case w.Agent == "" || w.Site == "":
		return d, reject("dispatch", "agent and site: missing or empty")
	case !serials(w.Received) || !serials(w.Missing) || !serials(w.Duplicates):
		return d, reject("dispatch", "received, missing and duplicates: each an array of serials from 1 to 999")
	case w.Highest != nil && (*w.Highest < 1 || *w.Highest > 999):
		return d, reject("dispatch", "highest: %d is not a serial from 1 to 999", *w.Highest)
	case w.Complete == nil:
		return d, reject("dispatch", "complete: missing")
	}
	var times [3]time.Time
	for i, f := range []struct{ name, v string }{{"first_seen", w.FirstSeen}, {"last_seen", w.LastSeen}, {"updated_at", w.UpdatedAt}} {
		t, rej := parseTimeField("dispatch", f.name, f.v)
		if rej != nil {
			return d, rej
		}
		times[i] = t
	}
	d.Agent, d.Site, d.Received, d.Missing, d.Duplicates = w.Agent, w.Site, w.Received, w.Missing, w.Duplicates
	d.Highest, d.Complete, d.Clock, d.Doc = w.Highest, *w.Complete, w.Clock, payload
	d.FirstSeen, d.LastSeen, d.UpdatedAt = times[0], times[1], times[2]
	return d, nil
}
