//go:build unix

package agent_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/dispatch"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// Receptacle labels of one dispatch (S8 BEBRUABOLPBBAEN60073): serials
// 1 and 2, and 3, the highest.
const (
	wfS8     = "BEBRUABOLPBBAEN60073"
	wfLabel1 = wfS8 + "001" + "0" + "0" + "0150" // 15.0 kg
	wfLabel2 = wfS8 + "002" + "0" + "0" + "0100" // 10.0 kg
	wfLabel3 = wfS8 + "003" + "1" + "0" + "0220" // 22.0 kg, the highest
)

const wfKeys = `    operator_pattern: "^OP[0-9]{4}$"
    controls: {close: CTL-CLOSE, cancel: CTL-CANCEL, logout: CTL-LOGOUT}
    weight_tolerance: 5%
`

// workflowRig is an agent with one workflow station whose scanner and
// scale are pseudo-terminals.
type workflowRig struct {
	*rig
	scale *sim.Scale
}

func newWorkflowRig(t *testing.T, workflow string) *workflowRig {
	t.Helper()
	scale, err := sim.NewScale("mt-sics", sim.Line{Baud: 9600}, sim.Weight{Value: "0.000", Unit: "kg", Stable: true}, 30*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scale.Close() })
	r := newRigStation(t, "", fmt.Sprintf("    workflow: %s\n%s    scale: {port: %q, baud: 9600, protocol: mt-sics, wait_stable: 0s, poll_interval: 30ms, share_reading: true}\n",
		workflow, wfKeys, scale.Path()))
	return &workflowRig{rig: r, scale: scale}
}

// weigh puts grams on the scale and waits until the station has it.
func (w *workflowRig) weigh(grams int64) {
	w.t.Helper()
	w.scale.Set(sim.Weight{Value: fmt.Sprintf("%.3f", float64(grams)/1000), Unit: "kg", Stable: true})
	waitUntil(w.t, 10*time.Second, fmt.Sprintf("the scale to show %d g", grams), func() bool {
		st := w.a.Status().Stations
		return len(st) > 0 && st[0].Scale != nil && st[0].Scale.Last != nil && st[0].Scale.Last.Grams == grams
	})
}

// send scans code and waits until the station has handled it (a scan,
// a badge or a control code), so that the next one is not a double read
// and comes after it.
func (w *workflowRig) send(code string) {
	w.t.Helper()
	before := w.handled()
	if err := w.sc.Send("", code); err != nil {
		w.t.Fatal(err)
	}
	waitUntil(w.t, 10*time.Second, "the station to handle "+code, func() bool { return w.handled() > before })
}

// handled counts what the station did with the codes sent to it.
func (w *workflowRig) handled() uint64 {
	st := w.a.Status().Stations
	if len(st) == 0 {
		return 0
	}
	c := st[0].Counters
	n := c.Scans + c.NotAccepted["receptacle"]
	for _, k := range []string{"sign_in", "logout", "closed_control", "cancelled", "cancel_nothing", "close_nothing_open"} {
		n += c.Workflow[k]
	}
	return n
}

func decodeAll[T any](t *testing.T, msgs []testmqtt.Message, topicPart, schema string) []T {
	t.Helper()
	var out []T
	seen := map[string]bool{}
	for _, m := range msgs {
		if !strings.Contains(m.Topic, topicPart) || !strings.Contains(string(m.Payload), `"schema":"`+schema+`"`) {
			continue
		}
		var probe struct{ ID string }
		json.Unmarshal(m.Payload, &probe)
		if seen[probe.ID] {
			continue // delivered twice
		}
		seen[probe.ID] = true
		var v T
		if err := json.Unmarshal(m.Payload, &v); err != nil {
			t.Fatalf("%s: %v", m.Payload, err)
		}
		out = append(out, v)
	}
	return out
}

// lastDispatch is the last dispatch message of s8 the subscriber got.
func lastDispatch(msgs []testmqtt.Message, s8 string) (dispatch.Message, bool) {
	var m dispatch.Message
	found := false
	for _, msg := range msgs {
		if strings.HasSuffix(msg.Topic, "/dispatches/"+s8) && len(msg.Payload) > 0 {
			found = json.Unmarshal(msg.Payload, &m) == nil
		}
	}
	return m, found
}

// TestWorkflowOpenReceptacles, end to end over pseudo-terminals and a
// real mosquitto: an operator badge, receptacles opened by their labels
// and weighed, items in them, a cancel, a weight mismatch, a close code,
// and the dispatch missing a receptacle, then complete.
func TestWorkflowOpenReceptacles(t *testing.T) {
	w := newWorkflowRig(t, "open_receptacles")
	prefix := w.cfg.MQTT.TopicPrefix
	w.send("OP0042")
	w.weigh(15_000)
	w.send(wfLabel1)
	w.weigh(800)
	w.send("RR473124829GB")
	w.send("RR287043775IN")
	w.weigh(30_000) // the highest receptacle: 22.0 kg on its label
	w.send(wfLabel3)
	msgs := w.sub.WaitFor(15*time.Second, "the dispatch missing serial 2", func(m []testmqtt.Message) bool {
		d, ok := lastDispatch(m, wfS8)
		return ok && d.Highest != nil
	})
	if d, _ := lastDispatch(msgs, wfS8); fmt.Sprint(d.Received, d.Missing) != "[1 3] [2]" || d.Complete || *d.Highest != 3 {
		t.Fatalf("dispatch: %+v", d)
	}
	w.weigh(1_200)
	w.send("CA262246684JP")
	w.send("CTL-CANCEL")
	w.send("CTL-CLOSE")
	w.weigh(10_100)
	w.send(wfLabel2)
	w.send("CTL-LOGOUT") // the receptacle keeps who opened it
	w.send("LA123456785RU")
	w.send("CTL-CLOSE")

	msgs = w.sub.WaitFor(15*time.Second, "three receptacles and the complete dispatch", func(m []testmqtt.Message) bool {
		d, ok := lastDispatch(m, wfS8)
		return ok && d.Complete && len(decodeAll[record.Receptacle](t, m, "/receptacles/", record.SchemaReceptacle)) == 3
	})
	recs := decodeAll[record.Receptacle](t, msgs, prefix+"/receptacles/induct-3", record.SchemaReceptacle)
	evs := decodeAll[record.Event](t, msgs, prefix+"/scans/induct-3", record.Schema)
	cancels := decodeAll[record.Cancel](t, msgs, prefix+"/scans/induct-3", record.SchemaCancel)
	if len(evs) != 7 || len(cancels) != 1 {
		t.Fatalf("%d scans (want 7: no badge, no control code), %d cancels", len(evs), len(cancels))
	}
	for _, e := range evs {
		if strings.HasPrefix(e.Barcode, "OP") || strings.HasPrefix(e.Barcode, "CTL") {
			t.Errorf("published as a scan: %+v", e)
		}
	}
	if evs[1].Receptacle != wfLabel1 || evs[1].Operator != "OP0042" || evs[4].Receptacle != wfLabel3 || evs[6].Operator != "" ||
		evs[6].Receptacle != wfLabel2 {
		t.Errorf("items: %+v", evs)
	}
	if cancels[0].Cancels != evs[4].ID {
		t.Errorf("the cancel names %s, want the last scan %s", cancels[0].Cancels, evs[4].ID)
	}
	r1, r3, r2 := recs[0], recs[1], recs[2]
	if r1.Receptacle != wfLabel1 || r1.Items != 2 || r1.ClosedBy != "label" || *r1.MeasuredGrams != 15_000 || *r1.WeightMismatch ||
		r1.FirstItemSeq != evs[1].Seq || r1.LastItemSeq != evs[2].Seq || r1.ItemsGrams != 1_600 || r1.Operator != "OP0042" {
		t.Errorf("receptacle 1: %+v", r1)
	}
	if r3.Receptacle != wfLabel3 || r3.Items != 0 || r3.Cancelled != 1 || r3.ClosedBy != "control" || !*r3.WeightMismatch ||
		*r3.DeclaredGrams != 22_000 || r3.S9 == nil || r3.S9.Highest == nil || !*r3.S9.Highest {
		t.Errorf("receptacle 3 (mismatch, cancelled item): %+v", r3)
	}
	if r2.Receptacle != wfLabel2 || r2.Items != 1 || r2.Operator != "OP0042" || r2.ClosedBy != "control" || *r2.WeightMismatch {
		t.Errorf("receptacle 2: %+v", r2)
	}
	d, _ := lastDispatch(msgs, wfS8)
	if fmt.Sprint(d.Received, d.Missing, d.Duplicates) != "[1 2 3] [] []" || !d.Complete {
		t.Errorf("complete dispatch: %+v", d)
	}
	st := w.a.Status()
	if st.Dispatches == nil || st.Dispatches.Complete != 1 || st.Stations[0].Workflow == nil || st.Stations[0].Workflow.Receptacle != nil {
		t.Errorf("status: %+v %+v", st.Dispatches, st.Stations[0].Workflow)
	}
	// The metrics say the same.
	addr := <-w.addr
	_, text := httpGet(t, "http://"+addr+"/metrics", "")
	for series, want := range map[string]float64{
		`scanagent_workflow_events_total{event="closed_control",station="induct-3"}`:  2,
		`scanagent_workflow_events_total{event="closed_label",station="induct-3"}`:    1,
		`scanagent_workflow_events_total{event="weight_mismatch",station="induct-3"}`: 1,
		`scanagent_workflow_events_total{event="cancelled",station="induct-3"}`:       1,
		`scanagent_operator_signed_in{station="induct-3"}`:                            0,
		`scanagent_receptacle_open{station="induct-3"}`:                               0,
		`scanagent_dispatches{state="complete"}`:                                      1,
	} {
		if got, ok := metricValue(text, series); !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", series, got, ok, want)
		}
	}

	var retained []testmqtt.Message
	for _, m := range retainedMessages(t, w.broker, prefix) {
		if strings.Contains(m.Topic, "/dispatches/") {
			retained = append(retained, m)
		}
	}
	if len(retained) != 1 || !strings.Contains(string(retained[0].Payload), `"complete":true`) {
		t.Errorf("retained dispatches: %v", retained)
	}
}

// TestWorkflowFillReceptacles, end to end: items go into a bag session,
// the bag's label closes it, weighed; the agent restarted in the middle
// of the next bag continues it.
func TestWorkflowFillReceptacles(t *testing.T) {
	w := newWorkflowRig(t, "fill_receptacles")
	prefix := w.cfg.MQTT.TopicPrefix
	w.send("OP0001")
	w.weigh(700)
	w.send("RR473124829GB")
	w.send("RR287043775IN")
	w.weigh(1_500)
	w.send(wfLabel1) // 1.5 kg against 15.0 on the label
	w.send("CA262246684JP")
	w.sub.WaitFor(15*time.Second, "the first bag", func(m []testmqtt.Message) bool {
		return len(decodeAll[record.Receptacle](t, m, "/receptacles/", record.SchemaReceptacle)) == 1 &&
			len(decodeAll[record.Event](t, m, "/scans/", record.Schema)) == 4
	})

	// Restart the agent on the same data directory mid-bag.
	w.restart()
	w.send("LA123456785RU")
	w.send("CTL-CLOSE")
	msgs := w.sub.WaitFor(15*time.Second, "the second bag", func(m []testmqtt.Message) bool {
		return len(decodeAll[record.Receptacle](t, m, "/receptacles/", record.SchemaReceptacle)) == 2
	})
	recs := decodeAll[record.Receptacle](t, msgs, prefix+"/receptacles/induct-3", record.SchemaReceptacle)
	evs := decodeAll[record.Event](t, msgs, prefix+"/scans/induct-3", record.Schema)
	if len(evs) != 5 {
		t.Fatalf("%d scans: %+v", len(evs), evs)
	}
	b1, b2 := recs[0], recs[1]
	if b1.BagSession == "" || b1.BagSession != evs[0].BagSession || b1.Receptacle != wfLabel1 || b1.Items != 2 ||
		b1.ItemsGrams != 1_400 || *b1.MeasuredGrams != 1_500 || !*b1.WeightMismatch || b1.ClosedBy != "label" {
		t.Errorf("first bag: %+v", b1)
	}
	if b2.BagSession == b1.BagSession || b2.BagSession != evs[3].BagSession || evs[4].BagSession != b2.BagSession ||
		b2.Items != 2 || b2.Receptacle != "" || b2.ClosedBy != "control" || b2.Operator != "OP0001" {
		t.Errorf("second bag, across the restart: %+v (items %+v %+v)", b2, evs[3], evs[4])
	}
	if slices.ContainsFunc(msgs, func(m testmqtt.Message) bool { return strings.Contains(m.Topic, "/dispatches/") }) {
		t.Error("an outbound bag counted in the inbound dispatches")
	}
}
