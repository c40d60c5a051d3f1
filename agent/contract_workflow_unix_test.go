//go:build unix

package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The station workflows' messages (docs/WORKFLOWS.md): the receptacle
// event on P/receptacles/<station>, the cancel event on the scans topic,
// the retained dispatch completeness on P/dispatches/<S8> and its
// clearing, and the scan event's station context (receptacle,
// bag_session, operator).

// checkWorkflowMessage validates a message the agent published on a
// station workflow's channel, by topic, against its schema
// (docs/asyncapi.yaml), then checks what JSON Schema cannot say: the
// station or dispatch in the payload is the topic's last level; a
// receptacle's s9 and declared_grams agree with its label and its item
// seqs come before its own; a dispatch's serial arrays are sorted, the
// missing serials are exactly those below highest (or, while it is not
// known, below the largest received) not received, duplicates were
// received, complete says the truth, and its times are in order. It
// returns the message's name in the contract (scan, cancel, receptacle,
// dispatch, dispatchCleared).
//
// For the end-to-end run: call it for each message on P/scans/#,
// P/receptacles/# and P/dispatches/#.
func checkWorkflowMessage(c *contract, prefix, topic string, payload []byte) (string, error) {
	ch := c.match(prefix, topic)
	if ch == nil {
		return "", fmt.Errorf("topic %s: no channel in asyncapi.yaml", topic)
	}
	m, err := ch.validateOne(payload)
	if err != nil {
		return "", fmt.Errorf("topic %s, payload %s:\n%v", topic, payload, err)
	}
	if m.contentType != "application/json" {
		return m.name, nil // a cleared retained state: the empty payload
	}
	last := topic[strings.LastIndexByte(topic, '/')+1:]
	var ev struct {
		Station      string `json:"station"`
		Seq          uint64 `json:"seq"`
		Receptacle   string `json:"receptacle"`
		FirstItemSeq uint64 `json:"first_item_seq"`
		LastItemSeq  uint64 `json:"last_item_seq"`
		Declared     *int64 `json:"declared_grams"`
		S9           *struct {
			Dispatch string `json:"dispatch"`
			Declared int64  `json:"declared_grams"`
		} `json:"s9"`

		Dispatch   string `json:"dispatch"`
		Received   []int  `json:"received"`
		Missing    []int  `json:"missing"`
		Duplicates []int  `json:"duplicates"`
		Highest    *int   `json:"highest"`
		Complete   bool   `json:"complete"`
		FirstSeen  string `json:"first_seen"`
		LastSeen   string `json:"last_seen"`
		UpdatedAt  string `json:"updated_at"`
	}
	if err := json.Unmarshal(payload, &ev); err != nil {
		return m.name, fmt.Errorf("topic %s: %v", topic, err)
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch m.name {
	case "scan", "cancel", "receptacle":
		if ev.Station != last {
			fail("station %q on the topic of station %q", ev.Station, last)
		}
	}
	switch m.name {
	case "receptacle":
		if ev.S9 != nil && !strings.HasPrefix(ev.Receptacle, ev.S9.Dispatch) {
			fail("s9.dispatch %q is not the start of receptacle %q", ev.S9.Dispatch, ev.Receptacle)
		}
		if ev.S9 != nil && ev.Declared != nil && *ev.Declared != ev.S9.Declared {
			fail("declared_grams %d, s9.declared_grams %d", *ev.Declared, ev.S9.Declared)
		}
		if ev.FirstItemSeq > ev.LastItemSeq || ev.LastItemSeq != 0 && ev.LastItemSeq >= ev.Seq {
			fail("first_item_seq %d, last_item_seq %d, seq %d: want first <= last < seq", ev.FirstItemSeq, ev.LastItemSeq, ev.Seq)
		}
	case "dispatch":
		if ev.Dispatch != last {
			fail("dispatch %q on the topic of dispatch %q", ev.Dispatch, last)
		}
		for name, a := range map[string][]int{"received": ev.Received, "missing": ev.Missing, "duplicates": ev.Duplicates} {
			if !slices.IsSorted(a) {
				fail("%s %v is not sorted", name, a)
			}
		}
		top := 0
		if len(ev.Received) > 0 {
			top = slices.Max(ev.Received)
		}
		if ev.Highest != nil {
			if !slices.Contains(ev.Received, *ev.Highest) {
				fail("highest %d is not received", *ev.Highest)
			}
			top = *ev.Highest
		}
		var want []int
		for n := 1; n < top; n++ {
			if !slices.Contains(ev.Received, n) {
				want = append(want, n)
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(ev.Missing)), want) {
			fail("missing %v, want %v (received %v, highest %v)", ev.Missing, want, ev.Received, ev.Highest)
		}
		for _, d := range ev.Duplicates {
			if !slices.Contains(ev.Received, d) {
				fail("duplicate %d is not received", d)
			}
		}
		if complete := ev.Highest != nil && len(want) == 0; ev.Complete != complete {
			fail("complete %v, want %v", ev.Complete, complete)
		}
		first, _ := time.Parse(time.RFC3339Nano, ev.FirstSeen)
		lastSeen, _ := time.Parse(time.RFC3339Nano, ev.LastSeen)
		updated, _ := time.Parse(time.RFC3339Nano, ev.UpdatedAt)
		if lastSeen.Before(first) || updated.Before(lastSeen) {
			fail("first_seen %s, last_seen %s, updated_at %s: want them in this order", ev.FirstSeen, ev.LastSeen, ev.UpdatedAt)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return m.name, fmt.Errorf("topic %s, payload %s:\n%v", topic, payload, err)
	}
	return m.name, nil
}

// jsonEdit returns doc with fields set (a value) or removed (del).
func jsonEdit(t *testing.T, doc string, edits ...any) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("%s: %v", doc, err)
	}
	for i := 0; i < len(edits); i += 2 {
		k := edits[i].(string)
		if edits[i+1] == del {
			delete(m, k)
		} else {
			m[k] = edits[i+1]
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// del removes a field in jsonEdit.
var del = &struct{ byte }{}

const (
	wfPrefix = "scanagent/TEST-HUB/hub-test-01"
	wfS9     = `{"origin":"BEBRUA","destination":"BOLPBB","category":"A","class":"E","subclass":"N","year":6,` +
		`"dispatch":"BEBRUABOLPBBAEN60073","serial":3,"highest":false,"registered":false,"declared_grams":22700}`
	wfOpened = `{"schema":"scanagent.receptacle/v1","id":"019aa8f1-1a00-7c01-8d02-0e0f10111213","seq":1090,` +
		`"agent":"hub-test-01","site":"TEST-HUB","station":"open-1","workflow":"open_receptacles",` +
		`"receptacle":"BEBRUABOLPBBAEN60073003000227","s9":` + wfS9 + `,"items":41,"cancelled":1,` +
		`"first_item_seq":1046,"last_item_seq":1089,"items_grams":21870,"declared_grams":22700,"measured_grams":22815,` +
		`"weight_mismatch":false,"operator":"OP0042","opened_at":"2026-11-22T01:31:47.305Z","closed_at":"2026-11-22T01:38:02.441Z",` +
		`"closed_by":"label","clock":"synced"}`
	wfFilled = `{"schema":"scanagent.receptacle/v1","id":"019aa8f2-0000-7aaa-8bbb-ccccddddeeee","seq":1201,` +
		`"agent":"hub-test-01","site":"TEST-HUB","station":"bagging-2","workflow":"fill_receptacles",` +
		`"receptacle":"INBOMAJPKWSAAUY60597001100039","bag_session":"019aa8f1-f000-7123-9456-789abcdef012",` +
		`"items":3,"first_item_seq":1180,"last_item_seq":1195,"items_grams":2450,"declared_grams":3900,` +
		`"opened_at":"2026-11-22T01:40:00.000Z","closed_at":"2026-11-22T01:55:12.500Z","closed_by":"label","clock":"unsynced"}`
	wfCancel = `{"schema":"scanagent.cancel/v1","id":"019aa8f1-02b4-7e55-8c66-778899aabbcc","seq":1052,"agent":"hub-test-01",` +
		`"site":"TEST-HUB","station":"open-1","cancels":"019aa8f0-ff10-7a11-9b22-c3d4e5f60718","barcode":"RR473124829GB",` +
		`"operator":"OP0042","cancelled_at":"2026-11-22T01:32:10.118Z","clock":"synced"}`
	wfDispatch = `{"schema":"scanagent.dispatch/v1","agent":"hub-1","site":"SITE","dispatch":"BEBRUABOLPBBAEN60073",` +
		`"received":[1,2,3,5],"missing":[4],"duplicates":[2],"highest":5,"complete":false,` +
		`"first_seen":"2026-11-29T10:00:00.000Z","last_seen":"2026-11-29T10:05:00.000Z","updated_at":"2026-11-29T10:05:00.010Z","clock":"synced"}`
	wfScan = `{"schema":"scanagent.scan/v1","id":"019aa8f0-ff10-7a11-9b22-c3d4e5f60718","seq":1051,"agent":"hub-test-01",` +
		`"site":"TEST-HUB","station":"open-1","scanned_at":"2026-11-22T01:32:08.902Z","barcode":"RR473124829GB",` +
		`"kind":"s10","valid":true,"clock":"synced"}`
)

// contractCase is one hand-written document and the message it must
// validate as on its topic ("" when it must be refused).
type contractCase struct {
	topic, payload, want string
}

func runContractCases(t *testing.T, c *contract, cases []contractCase) {
	t.Helper()
	for _, tc := range cases {
		ch := c.match(wfPrefix, tc.topic)
		if ch == nil {
			t.Errorf("topic %s: no channel", tc.topic)
			continue
		}
		m, err := ch.validateOne([]byte(tc.payload))
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("on %s, passed as %s: %s", tc.topic, m.name, tc.payload)
		case tc.want != "" && err != nil:
			t.Errorf("on %s, refused: %s\n%v", tc.topic, tc.payload, err)
		case tc.want != "" && m.name != tc.want:
			t.Errorf("on %s, valid as %s, want %s: %s", tc.topic, m.name, tc.want, tc.payload)
		}
	}
}

// TestContractWorkflowChannels: the workflow channels are where the
// contract says, with their QoS and retain flags.
func TestContractWorkflowChannels(t *testing.T) {
	c := loadContract(t)
	for _, tc := range []struct {
		topic, channel string
		retain         bool
		msgs           []string
	}{
		{wfPrefix + "/scans/open-1", "scans", false, []string{"cancel", "scan"}},
		{wfPrefix + "/receptacles/open-1", "receptacles", false, []string{"receptacle"}},
		{wfPrefix + "/dispatches/BEBRUABOLPBBAEN60073", "dispatches", true, []string{"dispatch", "dispatchCleared"}},
	} {
		ch := c.match(wfPrefix, tc.topic)
		if ch == nil {
			t.Errorf("topic %s: no channel", tc.topic)
			continue
		}
		var names []string
		for _, m := range ch.msgs {
			names = append(names, m.name)
		}
		if ch.name != tc.channel || ch.action != "send" || ch.qos != 1 || ch.retain != tc.retain || !slices.Equal(names, tc.msgs) {
			t.Errorf("topic %s: channel %s, action %s, qos %d, retain %v, messages %v; want %s, send, 1, %v, %v",
				tc.topic, ch.name, ch.action, ch.qos, ch.retain, names, tc.channel, tc.retain, tc.msgs)
		}
	}
	for _, topic := range []string{wfPrefix + "/receptacles", wfPrefix + "/receptacles/a/b", wfPrefix + "/dispatches/"} {
		if ch := c.match(wfPrefix, topic); ch != nil {
			t.Errorf("topic %s: matches channel %s", topic, ch.name)
		}
	}
}

// TestContractReceptacle: the receptacle event schema, its workflows and
// its dependent fields.
func TestContractReceptacle(t *testing.T) {
	c := loadContract(t)
	topic := wfPrefix + "/receptacles/open-1"
	ok := func(p string) contractCase { return contractCase{topic, p, "receptacle"} }
	bad := func(p string) contractCase { return contractCase{topic, p, ""} }
	fillIdle := jsonEdit(t, wfFilled, "receptacle", del, "declared_grams", del, "closed_by", "idle")
	runContractCases(t, c, []contractCase{
		ok(wfOpened),
		ok(wfFilled),
		ok(fillIdle),
		ok(jsonEdit(t, fillIdle, "closed_by", "control", "items", 0, "first_item_seq", del, "last_item_seq", del, "items_grams", 0)),
		ok(jsonEdit(t, wfOpened, "closed_by", "idle", "s9", del, "declared_grams", del, "measured_grams", del, "weight_mismatch", del,
			"operator", del, "clock", del, "cancelled", del)), // a label that does not decode, not weighed, nobody signed in
		ok(jsonEdit(t, wfOpened, "closed_by", "control", "weight_mismatch", true, "measured_grams", 30000, "future_field", "ignored")),
		ok(jsonEdit(t, wfFilled, "s9", json.RawMessage(strings.ReplaceAll(strings.ReplaceAll(wfS9, "BEBRUABOLPBB", "INBOMAJPKWSA"), `"serial":3`, `"serial":1`)))),

		bad(jsonEdit(t, wfOpened, "schema", "scanagent.receptacle/v2")),
		bad(jsonEdit(t, wfOpened, "id", del)),
		bad(jsonEdit(t, wfOpened, "id", "019aa8f1-1a00-4c01-8d02-0e0f10111213")), // a UUIDv4
		bad(jsonEdit(t, wfOpened, "seq", 0)),
		bad(jsonEdit(t, wfOpened, "station", "open 1")),
		bad(jsonEdit(t, wfOpened, "workflow", "items")),
		bad(jsonEdit(t, wfOpened, "workflow", del)),
		bad(jsonEdit(t, wfOpened, "receptacle", del, "s9", del, "declared_grams", del, "measured_grams", del, "weight_mismatch", del)), // open without a label
		bad(jsonEdit(t, wfOpened, "bag_session", "019aa8f1-f000-7123-9456-789abcdef012")),                                              // open with a bag session
		bad(jsonEdit(t, wfFilled, "bag_session", del)),
		bad(jsonEdit(t, wfFilled, "closed_by", "idle")), // a label on a bag closed without one
		bad(jsonEdit(t, fillIdle, "s9", json.RawMessage(wfS9))),
		bad(jsonEdit(t, fillIdle, "closed_by", "label")),
		bad(jsonEdit(t, wfOpened, "closed_by", "timeout")),
		bad(jsonEdit(t, wfOpened, "closed_by", del)),
		bad(jsonEdit(t, wfOpened, "receptacle", "bebruabolpbbaen60073003000227")),
		bad(jsonEdit(t, wfOpened, "receptacle", "BEBRUABOLPBBAEN6007300300022")),
		bad(jsonEdit(t, wfOpened, "receptacle", "")),
		bad(jsonEdit(t, wfOpened, "s9", json.RawMessage(strings.Replace(wfS9, `"serial":3`, `"serial":0`, 1)))),
		bad(jsonEdit(t, wfOpened, "items", -1)),
		bad(jsonEdit(t, wfOpened, "items", del)),
		bad(jsonEdit(t, wfOpened, "items", 1.5)),
		bad(jsonEdit(t, wfOpened, "items_grams", del)),
		bad(jsonEdit(t, wfOpened, "cancelled", 0)),
		bad(jsonEdit(t, wfOpened, "first_item_seq", del)),
		bad(jsonEdit(t, wfOpened, "last_item_seq", del)),
		bad(jsonEdit(t, wfOpened, "declared_grams", 0)),
		bad(jsonEdit(t, wfOpened, "declared_grams", 22750)),
		bad(jsonEdit(t, wfOpened, "measured_grams", 0)),
		bad(jsonEdit(t, wfOpened, "measured_grams", del)), // weight_mismatch without a measured weight
		bad(jsonEdit(t, wfOpened, "weight_mismatch", "no")),
		bad(jsonEdit(t, wfOpened, "operator", "")),
		bad(jsonEdit(t, wfOpened, "operator", strings.Repeat("O", 65))),
		bad(jsonEdit(t, wfOpened, "opened_at", "2026-11-22T01:31:47Z")),
		bad(jsonEdit(t, wfOpened, "closed_at", "2026-11-22T04:38:02.441+03:00")),
		bad(jsonEdit(t, wfOpened, "clock", "ntp")),
		bad(wfOpened[:len(wfOpened)-1]),
	})
}

// TestContractCancel: the cancel event is the scans channel's second
// message; neither schema takes the other's documents.
func TestContractCancel(t *testing.T) {
	c := loadContract(t)
	topic := wfPrefix + "/scans/open-1"
	ok := func(p string) contractCase { return contractCase{topic, p, "cancel"} }
	bad := func(p string) contractCase { return contractCase{topic, p, ""} }
	runContractCases(t, c, []contractCase{
		ok(wfCancel),
		ok(jsonEdit(t, wfCancel, "operator", del, "clock", del)),
		ok(jsonEdit(t, wfCancel, "barcode", "(01)09501101530003\u001d10ABC")),
		{topic, wfScan, "scan"},

		bad(jsonEdit(t, wfCancel, "schema", "scanagent.scan/v1")),
		bad(jsonEdit(t, wfCancel, "schema", "scanagent.cancel/v2")),
		bad(jsonEdit(t, wfCancel, "cancels", del)),
		bad(jsonEdit(t, wfCancel, "cancels", "RR473124829GB")),
		bad(jsonEdit(t, wfCancel, "cancels", "019AA8F0-FF10-7A11-9B22-C3D4E5F60718")),
		bad(jsonEdit(t, wfCancel, "id", del)),
		bad(jsonEdit(t, wfCancel, "seq", del)),
		bad(jsonEdit(t, wfCancel, "seq", -3)),
		bad(jsonEdit(t, wfCancel, "agent", "")),
		bad(jsonEdit(t, wfCancel, "barcode", "")),
		bad(jsonEdit(t, wfCancel, "barcode", del)),
		bad(jsonEdit(t, wfCancel, "cancelled_at", del)),
		bad(jsonEdit(t, wfCancel, "cancelled_at", "yesterday")),
		bad(jsonEdit(t, wfCancel, "operator", "")),
		bad(jsonEdit(t, wfCancel, "clock", "")),
	})
}

// TestContractScanStationContext: the scan event's optional receptacle,
// bag_session and operator.
func TestContractScanStationContext(t *testing.T) {
	c := loadContract(t)
	topic := wfPrefix + "/scans/open-1"
	ok := func(p string) contractCase { return contractCase{topic, p, "scan"} }
	bad := func(p string) contractCase { return contractCase{topic, p, ""} }
	runContractCases(t, c, []contractCase{
		ok(jsonEdit(t, wfScan, "receptacle", "BEBRUABOLPBBAEN60073003000227", "operator", "OP0042")),
		ok(jsonEdit(t, wfScan, "bag_session", "019aa8f1-f000-7123-9456-789abcdef012", "operator", "Ivanova A.")),
		ok(jsonEdit(t, wfScan, "operator", strings.Repeat("7", 64))),
		ok(jsonEdit(t, wfScan, "barcode", "INBOMAJPKWSAAUY60597001100039", "kind", "s9", // the label closing a filled bag
			"receptacle", "INBOMAJPKWSAAUY60597001100039", "bag_session", "019aa8f1-f000-7123-9456-789abcdef012")),

		bad(jsonEdit(t, wfScan, "receptacle", "BEBRUABOLPBBAEN6007300300022")),   // 28 characters
		bad(jsonEdit(t, wfScan, "receptacle", "BEBRUABOLPBBAEN600730030002270")), // 30
		bad(jsonEdit(t, wfScan, "receptacle", "BEBRUABOLPBBAEN60073-03000227")),
		bad(jsonEdit(t, wfScan, "receptacle", "bebruabolpbbaen60073003000227")),
		bad(jsonEdit(t, wfScan, "receptacle", "")),
		bad(jsonEdit(t, wfScan, "bag_session", "")),
		bad(jsonEdit(t, wfScan, "bag_session", "not-a-uuid")),
		bad(jsonEdit(t, wfScan, "bag_session", "019aa8f1-f000-4123-9456-789abcdef012")), // v4
		bad(jsonEdit(t, wfScan, "operator", "")),
		bad(jsonEdit(t, wfScan, "operator", strings.Repeat("7", 65))),
		bad(jsonEdit(t, wfScan, "operator", 42)),
	})
}

// TestContractDispatch: the retained dispatch completeness and its
// clearing.
func TestContractDispatch(t *testing.T) {
	c := loadContract(t)
	topic := wfPrefix + "/dispatches/BEBRUABOLPBBAEN60073"
	ok := func(p string) contractCase { return contractCase{topic, p, "dispatch"} }
	bad := func(p string) contractCase { return contractCase{topic, p, ""} }
	complete := jsonEdit(t, wfDispatch, "received", []int{1, 2, 3, 4, 5}, "missing", []int{}, "complete", true)
	unknown := jsonEdit(t, wfDispatch, "highest", nil, "received", []int{2}, "missing", []int{1}, "duplicates", []int{})
	runContractCases(t, c, []contractCase{
		ok(wfDispatch),
		ok(complete),
		ok(unknown),
		ok(jsonEdit(t, complete, "clock", del, "received", []int{1}, "highest", 1, "duplicates", []int{1})),
		ok(jsonEdit(t, wfDispatch, "received", []int{999}, "highest", 999, "missing", []int{998}, "station", "extra fields are allowed")),
		{topic, "", "dispatchCleared"},

		bad(jsonEdit(t, wfDispatch, "schema", "scanagent.dispatch/v2")),
		bad(jsonEdit(t, wfDispatch, "dispatch", "BEBRUABOLPBBAEN6007")),   // 19 characters
		bad(jsonEdit(t, wfDispatch, "dispatch", "BEBRUABOLPBBAEN60000")),  // serial 0000
		bad(jsonEdit(t, wfDispatch, "dispatch", "BEBRUABOLPBBAEN600730")), // 21
		bad(jsonEdit(t, wfDispatch, "received", []int{0, 1})),
		bad(jsonEdit(t, wfDispatch, "received", []int{1, 1000})),
		bad(jsonEdit(t, wfDispatch, "received", []int{1, 1, 2})),
		bad(jsonEdit(t, wfDispatch, "received", []string{"001"})),
		bad(jsonEdit(t, wfDispatch, "received", del)),
		bad(jsonEdit(t, wfDispatch, "missing", del)),
		bad(jsonEdit(t, wfDispatch, "duplicates", del)),
		bad(jsonEdit(t, wfDispatch, "duplicates", []float64{2.5})),
		bad(jsonEdit(t, wfDispatch, "highest", del)), // null, not absent, until known
		bad(jsonEdit(t, wfDispatch, "highest", 0)),
		bad(jsonEdit(t, wfDispatch, "highest", 1000)),
		bad(jsonEdit(t, wfDispatch, "highest", "5")),
		bad(jsonEdit(t, wfDispatch, "complete", true)),  // something is missing
		bad(jsonEdit(t, unknown, "complete", true)),     // highest not known
		bad(jsonEdit(t, complete, "received", []int{})), // nothing received
		bad(jsonEdit(t, wfDispatch, "complete", del)),
		bad(jsonEdit(t, wfDispatch, "first_seen", del)),
		bad(jsonEdit(t, wfDispatch, "last_seen", "2026-11-29 10:05:00")),
		bad(jsonEdit(t, wfDispatch, "updated_at", del)),
		bad(jsonEdit(t, wfDispatch, "agent", del)),
		bad(jsonEdit(t, wfDispatch, "clock", "maybe")),
		bad(" "),
		bad("null"),
	})
}

// TestContractCheckWorkflowMessage: the helper for the end-to-end run
// passes the contract's examples and catches what the schemas cannot.
func TestContractCheckWorkflowMessage(t *testing.T) {
	c := loadContract(t)
	rt, dt := wfPrefix+"/receptacles/open-1", wfPrefix+"/dispatches/BEBRUABOLPBBAEN60073"
	complete := jsonEdit(t, wfDispatch, "received", []int{1, 2, 3, 4, 5}, "missing", []int{}, "complete", true)
	for _, tc := range []struct {
		topic, payload, want string
	}{
		{rt, wfOpened, "receptacle"},
		{wfPrefix + "/receptacles/bagging-2", wfFilled, "receptacle"},
		{wfPrefix + "/scans/open-1", wfCancel, "cancel"},
		{wfPrefix + "/scans/open-1", wfScan, "scan"},
		{dt, wfDispatch, "dispatch"},
		{dt, complete, "dispatch"},
		{wfPrefix + "/dispatches/INBOMAJPKWSAAUY60597", jsonEdit(t, wfDispatch, "dispatch", "INBOMAJPKWSAAUY60597", "highest", nil,
			"received", []int{2, 4}, "missing", []int{1, 3}, "duplicates", []int{}), "dispatch"},
		{dt, "", "dispatchCleared"},
	} {
		if got, err := checkWorkflowMessage(c, wfPrefix, tc.topic, []byte(tc.payload)); err != nil || got != tc.want {
			t.Errorf("%s %s: %s, %v; want %s", tc.topic, tc.payload, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ topic, payload, why string }{
		{wfPrefix + "/receptacles/open-2", wfOpened, "station"},
		{wfPrefix + "/scans/open-2", wfCancel, "station"},
		{wfPrefix + "/receptacles/bagging-2", wfOpened, "station"},
		{rt, jsonEdit(t, wfOpened, "receptacle", "INBOMAJPKWSAAUY60597001100039"), "s9.dispatch"},
		{rt, jsonEdit(t, wfOpened, "declared_grams", 22800), "declared_grams"},
		{rt, jsonEdit(t, wfOpened, "first_item_seq", 1095), "first_item_seq"},
		{rt, jsonEdit(t, wfOpened, "last_item_seq", 1090), "first_item_seq"},
		{wfPrefix + "/dispatches/INBOMAJPKWSAAUY60597", wfDispatch, "topic of dispatch"},
		{dt, jsonEdit(t, wfDispatch, "received", []int{5, 1, 2, 3}), "not sorted"},
		{dt, jsonEdit(t, wfDispatch, "missing", []int{}), "missing"},
		{dt, jsonEdit(t, wfDispatch, "missing", []int{4, 6}), "missing"},
		{dt, jsonEdit(t, wfDispatch, "highest", 7), "highest 7 is not received"},
		{dt, jsonEdit(t, wfDispatch, "duplicates", []int{4}), "duplicate 4"},
		{dt, jsonEdit(t, complete, "complete", false), "complete"},
		{dt, jsonEdit(t, wfDispatch, "highest", nil, "missing", []int{}), "missing"},
		{dt, jsonEdit(t, wfDispatch, "updated_at", "2026-11-29T10:04:00.000Z"), "in this order"},
		{dt, jsonEdit(t, wfDispatch, "first_seen", "2026-11-29T10:06:00.000Z"), "in this order"},
		{dt, "{}", "dispatch.json"},
		{wfPrefix + "/receptacles", wfOpened, "no channel"},
	} {
		_, err := checkWorkflowMessage(c, wfPrefix, tc.topic, []byte(tc.payload))
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s %s: %v, want an error about %q", tc.topic, tc.payload, err, tc.why)
		}
	}
}
