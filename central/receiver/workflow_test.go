package receiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/scanagent/scanagent/agent/record"
)

// contractSchema compiles docs/schemas/<name> with the files it refers to.
func contractSchema(t testing.TB, name string) *jsonschema.Schema {
	t.Helper()
	const base = "https://github.com/scanagent/scanagent/raw/main/docs/schemas/"
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.AssertFormat()
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "schemas", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("schemas: %v", err)
	}
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := comp.AddResource(base+filepath.Base(f), doc); err != nil {
			t.Fatal(err)
		}
	}
	s, err := comp.Compile(base + name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mustValidate holds a payload the test publishes as an agent's to its
// schema, so that the receiver is tested with what the contract allows.
func mustValidate(t testing.TB, s *jsonschema.Schema, payload []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err == nil {
		err = s.Validate(v)
	}
	if err != nil {
		t.Fatalf("%s: %v", payload, err)
	}
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWorkflowEvents: the station workflows' messages. Item scans with
// their station context, a cancel on the scans topic and a receptacle
// event are stored one row per id (sent twice, stored once) and
// receipted with the scans, in the agent's one seq sequence; malformed
// ones are rejected with their kind as the reason and still receipted;
// the retained dispatch state is kept up to date, its clearing marks it
// expired, and neither is receipted.
func TestWorkflowEvents(t *testing.T) {
	b := startBroker(t)
	url := pg.NewDB(t)
	a := newAgent(t, b, "hub-1")
	scanSch, cancelSch, receptacleSch, dispatchSch := contractSchema(t, "scan.json"), contractSchema(t, "cancel.json"),
		contractSchema(t, "receptacle.json"), contractSchema(t, "dispatch.json")
	now := time.Now().UTC()
	ts := func(d time.Duration) string { return record.Timestamp(now.Add(d)) }
	const (
		label    = "BEBRUABOLPBBAEN60073003000227"
		dispatch = "BEBRUABOLPBBAEN60073"
	)

	// A dispatch state retained before the receiver starts.
	dispatchDoc := func(received, missing []int, highest any, complete bool, updated time.Duration) []byte {
		p := marshal(t, map[string]any{"schema": "scanagent.dispatch/v1", "agent": "hub-1", "site": "MSK", "dispatch": dispatch,
			"received": received, "missing": missing, "duplicates": []int{2}, "highest": highest, "complete": complete,
			"first_seen": ts(-time.Hour), "last_seen": ts(updated - time.Millisecond), "updated_at": ts(updated), "clock": "synced"})
		mustValidate(t, dispatchSch, p)
		return p
	}
	dispatchTopic := a.prefix + "/dispatches/" + dispatch
	a.publishRaw(dispatchTopic, true, dispatchDoc([]int{1, 2, 3, 5}, []int{4}, nil, false, -time.Minute))

	r := startReceiver(t, receiverConfig(t, b, url, "central-1", ""))
	db := pool(t, url)
	waitFor(t, 20*time.Second, "the retained dispatch", func() bool { return count(t, db, "SELECT count(*) FROM dispatches") == 1 })

	// Item scans at an open_receptacles station (seq 1, 2) and a
	// fill_receptacles one (3).
	bag := uuid.Must(uuid.NewV7()).String()
	scans := make([]record.Event, 3)
	for i := range scans {
		scans[i] = record.Event{Schema: record.Schema, ID: uuid.Must(uuid.NewV7()).String(), Seq: uint64(i + 1), Agent: "hub-1",
			Site: "MSK", Station: "open-1", ScannedAt: ts(time.Duration(i) * time.Second), Barcode: fmt.Sprintf("RR%09dGB", i+1),
			Kind: "s10", Valid: true, Clock: "synced", Receptacle: label, Operator: "OP0042"}
	}
	scans[2].Station, scans[2].Receptacle, scans[2].BagSession, scans[2].Operator = "bag-1", "", bag, ""
	for _, ev := range scans {
		p := marshal(t, ev)
		mustValidate(t, scanSch, p)
		a.publishRaw(a.prefix+"/scans/"+ev.Station, false, p)
	}
	// The operator cancels seq 2 (seq 4), and the receptacle closes (5).
	cancel := marshal(t, record.Cancel{Schema: record.SchemaCancel, ID: uuid.Must(uuid.NewV7()).String(), Seq: 4, Agent: "hub-1",
		Site: "MSK", Station: "open-1", Cancels: scans[1].ID, Barcode: scans[1].Barcode, Operator: "OP0042", CancelledAt: ts(3 * time.Second), Clock: "synced"})
	mustValidate(t, cancelSch, cancel)
	declared, measured, mismatch := int64(22700), int64(22815), false
	highest, registered := false, false
	receptacle := marshal(t, record.Receptacle{Schema: record.SchemaReceptacle, ID: uuid.Must(uuid.NewV7()).String(), Seq: 5,
		Agent: "hub-1", Site: "MSK", Station: "open-1", Workflow: "open_receptacles", Receptacle: label,
		S9: &record.S9{Origin: "BEBRUA", Destination: "BOLPBB", Category: "A", Class: "E", Subclass: "N", Year: 6, Dispatch: dispatch,
			Serial: 3, Highest: &highest, Registered: &registered, DeclaredGrams: declared},
		Items: 1, Cancelled: 1, FirstItemSeq: 1, LastItemSeq: 2, DeclaredGrams: &declared, MeasuredGrams: &measured, WeightMismatch: &mismatch,
		Operator: "OP0042", OpenedAt: ts(-time.Second), ClosedAt: ts(4 * time.Second), ClosedBy: "control", Clock: "synced"})
	mustValidate(t, receptacleSch, receptacle)
	for range 2 { // at least once: sent again after a lost receipt
		a.publishRaw(a.prefix+"/scans/open-1", false, cancel)
		a.publishRaw(a.prefix+"/receptacles/open-1", false, receptacle)
	}
	// Malformed: a receptacle without closed_at (seq 6), a cancel naming
	// no scan (seq 7), both readable, so receipted; a receptacle whose seq
	// cannot be read; a dispatch on another dispatch's topic.
	badReceptacle := strings.Replace(strings.Replace(string(receptacle), `"seq":5,`, `"seq":6,`, 1), `"closed_at"`, `"closed"`, 1)
	badCancel := strings.Replace(strings.Replace(string(cancel), `"seq":4,`, `"seq":7,`, 1), scans[1].ID, "RR000000002GB", 1)
	noSeq := strings.Replace(string(receptacle), `"seq":5,`, `"seq":"5",`, 1)
	otherTopic := a.prefix + "/dispatches/INBOMAJPKWSAAUY60597"
	bad := []struct{ topic, payload, reason string }{
		{a.prefix + "/receptacles/open-1", badReceptacle, "receptacle: opened_at and closed_at: missing"},
		{a.prefix + "/scans/open-1", badCancel, "cancel: cancels: missing or not a UUID"},
		{a.prefix + "/receptacles/open-1", noSeq, `receptacle: seq: must be an integer from 1 to 9223372036854775807, got "5"`},
		{otherTopic, string(dispatchDoc([]int{1}, []int{}, nil, false, 0)), `dispatch: dispatch: "BEBRUABOLPBBAEN60073", but the topic is that of "INBOMAJPKWSAAUY60597"`},
	}
	for _, m := range bad {
		a.publishRaw(m.topic, false, []byte(m.payload))
	}

	waitFor(t, 20*time.Second, "seqs 1 to 7 receipted", func() bool { return len(a.unreceipted(7)) == 0 })
	waitFor(t, 10*time.Second, "the rejected rows", func() bool { return count(t, db, "SELECT count(*) FROM rejected") == len(bad) })
	for _, m := range bad {
		if n := count(t, db, "SELECT count(*) FROM rejected WHERE topic = $1 AND payload = $2 AND starts_with(reason, $3)", m.topic, []byte(m.payload), m.reason); n != 1 {
			var reasons []string
			rows, _ := db.Query(context.Background(), "SELECT reason FROM rejected")
			for rows.Next() {
				var s string
				rows.Scan(&s)
				reasons = append(reasons, s)
			}
			t.Errorf("no rejected row %q for %s; have %q", m.reason, m.topic, reasons)
		}
	}
	if n := count(t, db, "SELECT count(*) FROM rejected WHERE agent = 'hub-1' AND seq IN (6, 7)"); n != 2 {
		t.Errorf("%d rejected rows with their agent and seq, want 2", n)
	}

	// The rows.
	type row struct{ query, want string }
	for _, c := range []row{
		{`SELECT string_agg(seq || ' ' || station || ' ' || coalesce(receptacle, '-') || ' ' || coalesce(bag_session::text, '-') || ' ' || coalesce(operator, '-'), ', ' ORDER BY seq) FROM scans`,
			fmt.Sprintf("1 open-1 %s - OP0042, 2 open-1 %s - OP0042, 3 bag-1 - %s -", label, label, bag)},
		{`SELECT string_agg(seq || ' ' || cancels || ' ' || barcode || ' ' || operator || ' ' || clock, ', ') FROM cancels`,
			fmt.Sprintf("4 %s %s OP0042 synced", scans[1].ID, scans[1].Barcode)},
		{`SELECT string_agg(seq || ' cancelled=' || cancelled || ' ' || coalesce(cancelled_by, '-'), ', ' ORDER BY seq) FROM scans_with_cancel`,
			"1 cancelled=false -, 2 cancelled=true OP0042, 3 cancelled=false -"},
		{`SELECT string_agg(concat_ws(' ', seq, station, workflow, receptacle, dispatch, serial, items, cancelled, first_item_seq, last_item_seq,
			items_grams, declared_grams, measured_grams, weight_mismatch, operator, closed_by, clock, closed_at - opened_at,
			payload->>'id' = id::text), ', ') FROM receptacles`,
			fmt.Sprintf("5 open-1 open_receptacles %s %s 3 1 1 1 2 0 22700 22815 f OP0042 control synced 00:00:05 t", label, dispatch)},
	} {
		var got string
		if err := db.QueryRow(context.Background(), c.query).Scan(&got); err != nil {
			t.Fatalf("%s: %v", c.query, err)
		}
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.query, got, c.want)
		}
	}

	// The dispatch: brought up to date, complete, then expired; none of
	// it receipted.
	dispatchRow := func() string {
		var s string
		if err := db.QueryRow(context.Background(), `SELECT concat_ws(' ', prefix, agent, site, received, missing, duplicates, coalesce(highest::text, 'null'), complete,
			expired_at IS NOT NULL, doc->>'schema') FROM dispatches WHERE dispatch = $1`, dispatch).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, want := dispatchRow(), a.prefix+" hub-1 MSK {1,2,3,5} {4} {2} null f f scanagent.dispatch/v1"; got != want {
		t.Errorf("dispatch %s, want %s", got, want)
	}
	a.publishRaw(dispatchTopic, true, dispatchDoc([]int{1, 2, 3, 4, 5}, []int{}, 5, true, 0))
	waitFor(t, 10*time.Second, "the dispatch complete", func() bool { return strings.Contains(dispatchRow(), "{1,2,3,4,5} {} {2} 5 t f") })
	a.publishRaw(dispatchTopic, true, nil)
	waitFor(t, 10*time.Second, "the dispatch expired", func() bool { return strings.Contains(dispatchRow(), "{1,2,3,4,5} {} {2} 5 t t") })
	if n := count(t, db, "SELECT count(*) FROM dispatches"); n != 1 {
		t.Errorf("%d dispatches rows, want 1 (the other was refused)", n)
	}

	// Receipts name exactly the buffered events' seqs; the dispatches
	// add none.
	a.mu.Lock()
	var got []int64
	for s := range a.got {
		got = append(got, s)
	}
	a.mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(got, seqs(1, 7)) {
		t.Errorf("receipted seqs %v, want 1 to 7", got)
	}

	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		"scanreceiver_events_stored_total 3",
		`scanreceiver_workflow_events_stored_total{kind="cancel"} 1`,
		`scanreceiver_workflow_events_stored_total{kind="receptacle"} 1`,
		`scanreceiver_workflow_events_duplicate_total{kind="cancel"} 1`,
		`scanreceiver_workflow_events_duplicate_total{kind="receptacle"} 1`,
		`scanreceiver_events_rejected_total{reason="receptacle"} 2`,
		`scanreceiver_events_rejected_total{reason="cancel"} 1`,
		`scanreceiver_events_rejected_total{reason="dispatch"} 1`,
		`scanreceiver_agent_messages_total{kind="dispatch"} 2`,
		`scanreceiver_agent_messages_total{kind="dispatch_expired"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if s := r.Stats(); s.Stored != 3 || s.Duplicates != 0 || s.Rejected != uint64(len(bad)) {
		t.Errorf("stats %+v", s)
	}
}

// TestWorkflowScanFields: a scan whose bag_session is not a UUID is
// rejected (and receipted), as a malformed scan is.
func TestWorkflowScanFields(t *testing.T) {
	b := startBroker(t)
	url := pg.NewDB(t)
	startReceiver(t, receiverConfig(t, b, url, "central-1", ""))
	a := newAgent(t, b, "hub-1")
	ev := record.Event{Schema: record.Schema, ID: uuid.Must(uuid.NewV7()).String(), Seq: 1, Agent: "hub-1", Site: "MSK", Station: "bag-1",
		ScannedAt: record.Timestamp(time.Now()), Barcode: "RR473124829GB", Kind: "s10", Valid: true, BagSession: "bag-17"}
	a.publishRaw(a.prefix+"/scans/bag-1", false, marshal(t, ev))
	db := pool(t, url)
	waitFor(t, 20*time.Second, "seq 1 receipted", func() bool { return len(a.unreceipted(1)) == 0 })
	if n := count(t, db, `SELECT count(*) FROM rejected WHERE reason = 'bag_session: not a UUID: "bag-17"' AND seq = 1`); n != 1 {
		t.Errorf("%d rejected rows for the bag session, want 1", n)
	}
}
