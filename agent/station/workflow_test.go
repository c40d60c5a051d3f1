package station

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/dispatch"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

const (
	labelA = "BEBRUABOLPBBAEN60073003000227" // dispatch ...0073, serial 3, 22.7 kg
	labelB = "BEBRUABOLPBBAEN60073001000150" // serial 1, 15.0 kg
	labelH = "BEBRUABOLPBBAEN60073002100100" // serial 2, the highest, 10.0 kg
)

// rig runs a station's worker steps by hand on a real buffer and state
// directory, with its outcomes handled as Run does.
type rig struct {
	t         *testing.T
	s         *Station
	q         *buffer.Queue
	stateDir  string
	disp      *dispatch.Tracker
	submitted chan uint64
	drained   chan struct{}
	stopped   bool
}

type trackerSink struct{ t *dispatch.Tracker }

func (d trackerSink) Seen(l DispatchLabel)          { d.t.Seen(dispatch.Label(l)) }
func (d trackerSink) LastSeq(station string) uint64 { return d.t.LastSeq(station) }

func newRig(t *testing.T, cfg config.Station, q *buffer.Queue, stateDir string) *rig {
	t.Helper()
	if q == nil {
		q = testBuffer(t)
	}
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	if cfg.ID == "" {
		cfg.ID = "open-1"
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = config.Duration(time.Second)
	}
	disp, err := dispatch.Open(dispatch.Config{Path: filepath.Join(stateDir, "dispatches.state"), Agent: "hub", Site: "SITE", Expire: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Station: cfg, Agent: config.Agent{ID: "hub", Site: "SITE"}, StateDir: stateDir},
		Deps{Buffer: q, Log: discardLog(), Dispatches: trackerSink{disp}})
	r := &rig{t: t, s: s, q: q, stateDir: stateDir, disp: disp, submitted: make(chan uint64, 1), drained: make(chan struct{})}
	go func() { s.drainOutcomes(r.submitted); close(r.drained) }()
	s.flowStart()
	t.Cleanup(r.stop)
	return r
}

// stop ends the station as Run does: every outcome handled, the state
// closed.
func (r *rig) stop() {
	if r.stopped {
		return
	}
	r.stopped = true
	r.submitted <- r.s.subs
	<-r.drained
	r.s.flow.close()
}

func (r *rig) scan(code string, at time.Time) {
	r.t.Helper()
	r.s.process(context.Background(), devices.Frame{Data: code, AIM: "]C0", At: at})
}

// weigh puts a stable reading of grams on the station's scale.
func (r *rig) weigh(grams int64, at time.Time) {
	r.t.Helper()
	var got devices.Reading
	sr := devices.NewScaleReader(devices.LookupProtocol("mt-sics"), func(rd devices.Reading) { got = rd }, nil)
	sr.Write(fmt.Appendf(nil, "S S %10.3f kg\r\n", float64(grams)/1000), at)
	if got.Grams != grams {
		r.t.Fatalf("reading %+v, want %d g", got, grams)
	}
	r.s.weigher.setOnline(true)
	r.s.weigher.reading(got)
}

type published struct {
	topic string
	seq   uint64
	ev    map[string]any
}

// events waits for every submitted record's outcome and returns what the
// buffer holds, in order.
func (r *rig) events() []published {
	r.t.Helper()
	r.s.barrier()
	recs, err := r.q.Read(0, 10000)
	if err != nil {
		r.t.Fatal(err)
	}
	var out []published
	for _, rec := range recs {
		topic, _, payload, err := record.SplitTopic(rec.Value)
		if err != nil {
			r.t.Fatal(err)
		}
		var ev map[string]any
		if err := json.Unmarshal(payload, &ev); err != nil {
			r.t.Fatalf("seq %d: %v: %s", rec.Seq, err, payload)
		}
		out = append(out, published{topic.Name(), rec.Seq, ev})
	}
	return out
}

func bySchema(evs []published, schema string) []published {
	var out []published
	for _, e := range evs {
		if e.ev["schema"] == schema {
			out = append(out, e)
		}
	}
	return out
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

func openCfg() config.Station {
	return config.Station{Workflow: config.WorkflowOpen, OperatorPattern: "^OP[0-9]{4}$",
		Controls:       config.Controls{Close: "CTL-CLOSE", Cancel: "CTL-CANCEL", Logout: "CTL-LOGOUT"},
		ReceptacleIdle: config.Duration(10 * time.Minute), WeightTolerance: 5,
		Scale: &config.Scale{MaxAge: config.Duration(time.Hour), ShareReading: true}}
}

// TestOpenReceptacles: a badge signs the operator in, a label opens its
// receptacle (weighed on the scale), the items carry it, the next label
// closes it and the close code closes the last; badges and control codes
// are never scans; the dispatch learns each label.
func TestOpenReceptacles(t *testing.T) {
	r := newRig(t, openCfg(), nil, "")
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * 2 * time.Second) }
	r.scan("OP0042", at(0))
	r.weigh(22_000, at(1))
	r.scan(labelA, at(1))
	r.weigh(1_000, at(2))
	r.scan("RR473124829GB", at(2))
	r.scan("RR473124828GB", at(3)) // a bad check digit: in the receptacle, not counted
	r.scan("RR287043775IN", at(4))
	r.scan(labelB, at(5))
	r.scan("CA262246684JP", at(6))
	r.scan("CTL-CLOSE", at(7))
	r.scan("RR473124837GB", at(8)) // nothing open any more

	evs := r.events()
	scans := bySchema(evs, record.Schema)
	if len(scans) != 7 {
		t.Fatalf("%d scan events, want 7 (no badge, no control): %v", len(scans), evs)
	}
	for _, e := range scans {
		if e.ev["barcode"] == "OP0042" || e.ev["barcode"] == "CTL-CLOSE" {
			t.Fatalf("published as a scan: %v", e.ev)
		}
		if e.ev["operator"] != "OP0042" || e.topic != "scans" {
			t.Errorf("scan without the operator: %v", e.ev)
		}
	}
	wantRecept := []string{labelA, labelA, labelA, labelA, labelB, labelB, ""}
	for i, e := range scans {
		got, _ := e.ev["receptacle"].(string)
		if got != wantRecept[i] {
			t.Errorf("scan %d %v: receptacle %q, want %q", i, e.ev["barcode"], got, wantRecept[i])
		}
	}
	recs := bySchema(evs, record.SchemaReceptacle)
	if len(recs) != 2 {
		t.Fatalf("%d receptacle events, want 2: %v", len(recs), recs)
	}
	a, b := recs[0].ev, recs[1].ev
	if recs[0].topic != "receptacles" || a["receptacle"] != labelA || num(a["items"]) != 2 || a["closed_by"] != "label" ||
		num(a["measured_grams"]) != 22_000 || num(a["declared_grams"]) != 22_700 || a["weight_mismatch"] != false ||
		num(a["items_grams"]) != 2_000 || a["operator"] != "OP0042" || a["workflow"] != "open_receptacles" {
		t.Errorf("first receptacle: %v", a)
	}
	if num(a["first_item_seq"]) != int64(scans[1].seq) || num(a["last_item_seq"]) != int64(scans[3].seq) {
		t.Errorf("first receptacle's items: seqs %v..%v, want %d..%d", a["first_item_seq"], a["last_item_seq"], scans[1].seq, scans[3].seq)
	}
	if s9, _ := a["s9"].(map[string]any); s9 == nil || s9["dispatch"] != "BEBRUABOLPBBAEN60073" || num(s9["serial"]) != 3 {
		t.Errorf("first receptacle's s9: %v", a["s9"])
	}
	if recs[0].seq > scans[4].seq {
		t.Errorf("the first receptacle's event (seq %d) comes after the label that closed it (seq %d)", recs[0].seq, scans[4].seq)
	}
	// share_reading: the 1 kg still on the scale is the second label's
	// weight, against 15 kg on the label.
	if b["receptacle"] != labelB || num(b["items"]) != 1 || b["closed_by"] != "control" || num(b["measured_grams"]) != 1000 ||
		b["weight_mismatch"] != true {
		t.Errorf("second receptacle: %v", b)
	}
	m, ok := r.disp.Message("BEBRUABOLPBBAEN60073")
	if !ok || fmt.Sprint(m.Received) != "[1 3]" || fmt.Sprint(m.Missing) != "[2]" || m.Highest != nil || m.Complete {
		t.Fatalf("dispatch: %+v", m)
	}
	c, _ := r.s.counters()
	if c.Workflow["sign_in"] != 1 || c.Workflow["opened"] != 2 || c.Workflow["closed_label"] != 1 || c.Workflow["closed_control"] != 1 {
		t.Errorf("counters: %v", c.Workflow)
	}
}

// TestFillReceptacles: items go into a bag session; the label printed
// for the bag closes it, weighed, bound to the label; the same label
// again makes no second bag, and the next item starts a new session.
func TestFillReceptacles(t *testing.T) {
	cfg := openCfg()
	cfg.ID, cfg.Workflow = "fill-1", config.WorkflowFill
	r := newRig(t, cfg, nil, "")
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * 2 * time.Second) }
	r.weigh(500, at(0))
	r.scan("RR473124829GB", at(0))
	r.scan("RR287043775IN", at(1))
	r.weigh(18_000, at(2))
	r.scan(labelA, at(2)) // 18 kg against 22.7 on the label: beyond 5 %
	r.scan(labelA, at(3)) // the label again, outside the double-read window
	r.scan("CA262246684JP", at(4))

	evs := r.events()
	scans := bySchema(evs, record.Schema)
	recs := bySchema(evs, record.SchemaReceptacle)
	if len(scans) != 5 || len(recs) != 1 {
		t.Fatalf("%d scans, %d receptacles: %v", len(scans), len(recs), evs)
	}
	session, _ := scans[0].ev["bag_session"].(string)
	if session == "" || scans[1].ev["bag_session"] != session || scans[2].ev["bag_session"] != session || scans[2].ev["receptacle"] != labelA {
		t.Fatalf("bag session: %v / %v / %v", scans[0].ev, scans[1].ev, scans[2].ev)
	}
	if next, _ := scans[4].ev["bag_session"].(string); next == "" || next == session {
		t.Errorf("the item after the label is in session %q, want a new one", next)
	}
	e := recs[0].ev
	if e["bag_session"] != session || e["receptacle"] != labelA || num(e["items"]) != 2 || num(e["items_grams"]) != 1000 ||
		num(e["measured_grams"]) != 18_000 || e["weight_mismatch"] != true || e["closed_by"] != "label" || e["workflow"] != "fill_receptacles" {
		t.Errorf("bag: %v", e)
	}
	if recs[0].seq < scans[2].seq {
		t.Errorf("the bag's event (seq %d) comes before its label (seq %d)", recs[0].seq, scans[2].seq)
	}
	if _, ok := r.disp.Message("BEBRUABOLPBBAEN60073"); ok {
		t.Error("an outbound bag's label counted in the inbound dispatches")
	}
	if c, _ := r.s.counters(); c.Workflow["weight_mismatch"] != 1 {
		t.Errorf("counters: %v", c.Workflow)
	}
}

// TestCancelAndOperators: without an operator a scan is still published
// but counted; the cancel code names the last scan and takes it out of
// its receptacle's count; logout signs the operator out.
func TestCancelAndOperators(t *testing.T) {
	cfg := openCfg()
	cfg.RequireOperator = true
	cfg.Scale = nil
	r := newRig(t, cfg, nil, "")
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * 2 * time.Second) }
	r.scan(labelA, at(0)) // nobody signed in: accepted, counted
	r.scan("OP0007", at(1))
	r.scan("RR473124829GB", at(2))
	r.scan("RR287043775IN", at(3))
	r.scan("CTL-CANCEL", at(4))
	r.scan("CTL-CANCEL", at(5)) // nothing left to cancel
	r.scan("CTL-LOGOUT", at(6))
	r.scan("CA262246684JP", at(7))
	r.scan("CTL-CLOSE", at(8))

	evs := r.events()
	scans := bySchema(evs, record.Schema)
	cancels := bySchema(evs, record.SchemaCancel)
	recs := bySchema(evs, record.SchemaReceptacle)
	if len(scans) != 4 || len(cancels) != 1 || len(recs) != 1 {
		t.Fatalf("%d scans, %d cancels, %d receptacles: %v", len(scans), len(cancels), len(recs), evs)
	}
	if _, signed := scans[0].ev["operator"]; signed || scans[1].ev["operator"] != "OP0007" || scans[2].ev["operator"] != "OP0007" {
		t.Errorf("operators: %v / %v / %v", scans[0].ev, scans[1].ev, scans[2].ev)
	}
	if _, signed := scans[3].ev["operator"]; signed {
		t.Errorf("scan after logout carries an operator: %v", scans[3].ev)
	}
	c := cancels[0]
	if c.topic != "scans" || c.ev["cancels"] != scans[2].ev["id"] || c.ev["barcode"] != "RR287043775IN" || c.ev["operator"] != "OP0007" {
		t.Errorf("cancel: %v, want it to name %v", c.ev, scans[2].ev["id"])
	}
	e := recs[0].ev
	if num(e["items"]) != 2 || num(e["cancelled"]) != 1 {
		t.Errorf("receptacle after a cancel: %v", e)
	}
	cn, _ := r.s.counters()
	if cn.Workflow["no_operator"] != 2 || cn.Workflow["cancelled"] != 1 || cn.Workflow["cancel_nothing"] != 1 || cn.Workflow["logout"] != 1 {
		t.Errorf("counters: %v", cn.Workflow)
	}
}

// TestIdle: an open receptacle closes itself after receptacle_idle, and
// an operator is signed out after operator_idle.
func TestIdle(t *testing.T) {
	cfg := openCfg()
	cfg.OperatorIdle = config.Duration(30 * time.Minute)
	cfg.Scale = nil
	r := newRig(t, cfg, nil, "")
	t0 := time.Now()
	r.scan("OP0001", t0)
	r.scan(labelA, t0.Add(time.Second))
	r.scan("RR473124829GB", t0.Add(2*time.Second))
	r.s.barrier()
	r.s.flowTick(t0.Add(5 * time.Minute)) // not idle yet
	if st := r.s.flow.status(); st.Receptacle == nil || st.Operator != "OP0001" || st.Receptacle.Items != 1 {
		t.Fatalf("status: %+v", st)
	}
	r.s.flowTick(t0.Add(11 * time.Minute))
	recs := bySchema(r.events(), record.SchemaReceptacle)
	if len(recs) != 1 || recs[0].ev["closed_by"] != "idle" || num(recs[0].ev["items"]) != 1 {
		t.Fatalf("idle close: %v", recs)
	}
	r.s.flowTick(t0.Add(31 * time.Minute))
	if st := r.s.flow.status(); st.Operator != "" || st.Receptacle != nil {
		t.Fatalf("after operator_idle: %+v", st)
	}
}

// TestRestartContinues: a station started again on the same state and
// buffer continues its receptacle and operator; items accepted after the
// state's last record (a kill between the two) are counted again from the
// buffer; a receptacle event made but not accepted is submitted again
// with the same id.
func TestRestartContinues(t *testing.T) {
	cfg := openCfg()
	cfg.Scale = nil
	q, stateDir := testBuffer(t), t.TempDir()
	t0 := time.Now()
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * 2 * time.Second) }

	r := newRig(t, cfg, q, stateDir)
	r.scan("OP0042", at(0))
	r.scan(labelA, at(1))
	r.scan("RR473124829GB", at(2))
	r.s.barrier()
	path := StatePath(stateDir, "open-1")
	early, err := os.ReadFile(path) // the state with one item
	if err != nil {
		t.Fatal(err)
	}
	r.scan("RR287043775IN", at(3))
	r.scan("CA262246684JP", at(4))
	r.stop()
	r.disp.Run(canceled())
	// The kill came after the last two items were accepted but before the
	// state noted them.
	if err := os.WriteFile(path, early, 0o640); err != nil {
		t.Fatal(err)
	}

	r2 := newRig(t, cfg, q, stateDir)
	st := r2.s.flow.status()
	if st.Operator != "OP0042" || st.Receptacle == nil || st.Receptacle.Receptacle != labelA || st.Receptacle.Items != 3 {
		t.Fatalf("after restart: %+v %+v", st, st.Receptacle)
	}
	r2.scan("LA123456785RU", at(5))
	r2.scan("CTL-CLOSE", at(6))
	evs := r2.events()
	recs := bySchema(evs, record.SchemaReceptacle)
	scans := bySchema(evs, record.Schema)
	if len(recs) != 1 || num(recs[0].ev["items"]) != 4 || recs[0].ev["operator"] != "OP0042" ||
		num(recs[0].ev["first_item_seq"]) != int64(scans[1].seq) || num(recs[0].ev["last_item_seq"]) != int64(scans[4].seq) {
		t.Fatalf("receptacle across the restart: %v (scans %v)", recs, scans)
	}
	if scans[4].ev["receptacle"] != labelA {
		t.Fatalf("item after restart: %v", scans[4].ev)
	}

	// A close whose event the buffer did not take before the kill.
	r2.stop()
	r2.disp.Run(canceled())
	id := recs[0].ev["id"].(string)
	q.Ack(bufferRecord(t, q, recs[0].seq))
	var s flowState
	s.Closing = []*record.Receptacle{{Schema: record.SchemaReceptacle, ID: id, Station: "open-1", Workflow: config.WorkflowOpen,
		Receptacle: labelA, Items: 4, ClosedBy: "control"}}
	b, _ := json.Marshal(&s)
	os.Remove(path)
	writeState(t, path, b)
	r3 := newRig(t, cfg, q, stateDir)
	again := bySchema(r3.events(), record.SchemaReceptacle)
	if len(again) != 1 || again[0].ev["id"] != id {
		t.Fatalf("the pending receptacle event again: %v", again)
	}
	if r3.s.flow.status().Receptacle != nil || len(r3.s.flow.st.Closing) != 0 {
		t.Fatalf("after the event was accepted: %+v", r3.s.flow.st)
	}
}

// TestDamagedState: a state file that is garbage is moved aside and the
// station starts without an operator or receptacle, counting it.
func TestDamagedState(t *testing.T) {
	cfg := openCfg()
	stateDir := t.TempDir()
	os.WriteFile(StatePath(stateDir, "open-1"), []byte("\x00\x01garbage"), 0o640)
	r := newRig(t, cfg, nil, stateDir)
	if c, _ := r.s.counters(); c.Workflow["state_damaged"] != 1 {
		t.Fatalf("counters: %v", c.Workflow)
	}
	r.scan(labelA, time.Now())
	if st := r.s.flow.status(); st.Receptacle == nil {
		t.Fatal("the station does not work after a damaged state")
	}
	if aside, _ := filepath.Glob(StatePath(stateDir, "open-1") + ".corrupt-*"); len(aside) != 1 {
		t.Fatalf("moved aside: %v", aside)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func bufferRecord(t *testing.T, q *buffer.Queue, seq uint64) buffer.Record {
	recs, err := q.Read(seq-1, 1)
	if err != nil || len(recs) != 1 || recs[0].Seq != seq {
		t.Fatalf("record %d: %v %v", seq, recs, err)
	}
	return recs[0]
}

func writeState(t *testing.T, path string, rec []byte) {
	t.Helper()
	f, _, _, err := openStateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Append(rec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestWorkflowChanged: a receptacle left open when a reload changes the
// station's workflow is closed at start, as by the close code, under the
// workflow it was opened in.
func TestWorkflowChanged(t *testing.T) {
	cfg := openCfg()
	cfg.Scale = nil
	q, stateDir := testBuffer(t), t.TempDir()
	r := newRig(t, cfg, q, stateDir)
	r.scan(labelA, time.Now())
	r.scan("RR473124829GB", time.Now().Add(2*time.Second))
	r.stop()
	r.disp.Run(canceled())

	cfg.Workflow = config.WorkflowFill
	r2 := newRig(t, cfg, q, stateDir)
	recs := bySchema(r2.events(), record.SchemaReceptacle)
	if len(recs) != 1 || recs[0].ev["workflow"] != "open_receptacles" || recs[0].ev["closed_by"] != "control" || num(recs[0].ev["items"]) != 1 {
		t.Fatalf("receptacle left open: %v", recs)
	}
	if r2.s.flow.status().Receptacle != nil {
		t.Fatal("still open")
	}
}

// TestLabelRescanAcrossRestart: the open receptacle's label scanned again
// is not a duplicate in its dispatch, live or when a restart counts the
// records again.
func TestLabelRescanAcrossRestart(t *testing.T) {
	cfg := openCfg()
	cfg.Scale = nil
	q, stateDir := testBuffer(t), t.TempDir()
	r := newRig(t, cfg, q, stateDir)
	t0 := time.Now()
	r.scan(labelA, t0)
	r.scan("RR473124829GB", t0.Add(2*time.Second))
	r.scan(labelA, t0.Add(4*time.Second)) // the same bag's label again
	r.events()
	r.stop()
	r.disp.Run(canceled())
	r2 := newRig(t, cfg, q, stateDir)
	m, _ := r2.disp.Message("BEBRUABOLPBBAEN60073")
	if fmt.Sprint(m.Received, m.Duplicates) != "[3] []" {
		t.Fatalf("dispatch after a restart: %+v", m)
	}
	if st := r2.s.flow.status(); st.Receptacle == nil || st.Receptacle.Items != 1 {
		t.Fatalf("receptacle after a restart: %+v", st.Receptacle)
	}
}

// TestRefusedLabelRescanned: a label the buffer refused leaves its
// receptacle open (the state was written first); its scan again, once
// accepted, tells the dispatch.
func TestRefusedLabelRescanned(t *testing.T) {
	cfg := openCfg()
	cfg.Scale = nil
	r := newRig(t, cfg, nil, "")
	v := r.s.value(r.s.scan(devices.Frame{Data: labelA, AIM: "]C0", At: time.Now()}))
	q, err := buffer.Open(t.TempDir(), buffer.Options{MinFreeDisk: -1, MaxBytes: int64(len(v.Bytes(1))) - 1, WhenFull: buffer.RejectNew})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	r.s.q = q
	t0 := time.Now()
	r.scan(labelA, t0)
	r.s.barrier()
	if _, ok := r.disp.Message("BEBRUABOLPBBAEN60073"); ok {
		t.Fatal("a refused label reached the dispatch")
	}
	r.s.q = r.q // room again
	r.scan(labelA, t0.Add(2*time.Second))
	r.s.barrier()
	if m, ok := r.disp.Message("BEBRUABOLPBBAEN60073"); !ok || fmt.Sprint(m.Received) != "[3]" {
		t.Fatalf("the label scanned again: %+v %v", m, ok)
	}
}

// TestOddStateRecords: a state record with a good checksum but nonsense
// in it (written by hand, damaged in memory) is sanitized, never a panic.
func TestOddStateRecords(t *testing.T) {
	for _, rec := range []string{
		`{"closing":[null]}`,
		`{"closing":[{"schema":"x"}],"open":{"items":-5}}`,
		`{"open":{"receptacle":"X","bag_session":"Y","items":3}}`,
		`{"open":null,"last_seq":18446744073709551615}`,
	} {
		stateDir := t.TempDir()
		writeState(t, StatePath(stateDir, "open-1"), []byte(rec))
		cfg := openCfg()
		cfg.Scale = nil
		r := newRig(t, cfg, nil, stateDir)
		r.scan(labelA, time.Now())
		r.scan("RR473124829GB", time.Now().Add(2*time.Second))
		r.s.flowTick(time.Now().Add(time.Hour)) // idle: closes it
		if recs := bySchema(r.events(), record.SchemaReceptacle); len(recs) != 1 || num(recs[0].ev["items"]) != 1 {
			t.Errorf("state %s: receptacles %v", rec, recs)
		}
	}
}

// TestFillLabelAcceptedBeforeKill: the bag's label was accepted but the
// close not written (a kill): the restart closes the bag as the label did.
func TestFillLabelAcceptedBeforeKill(t *testing.T) {
	cfg := openCfg()
	cfg.Workflow, cfg.Scale = config.WorkflowFill, nil
	q, stateDir := testBuffer(t), t.TempDir()
	r := newRig(t, cfg, q, stateDir)
	t0 := time.Now()
	r.scan("RR473124829GB", t0)
	r.scan("RR287043775IN", t0.Add(2*time.Second))
	r.s.barrier()
	path := StatePath(stateDir, "open-1")
	before, _ := os.ReadFile(path) // the bag with its two items, not closed
	r.scan(labelA, t0.Add(4*time.Second))
	r.events()
	r.stop()
	r.disp.Run(canceled())
	os.WriteFile(path, before, 0o640)
	// The receptacle event the first run made is not in the buffer: the
	// kill came before the close was written.
	for _, e := range bySchema(r.events(), record.SchemaReceptacle) {
		q.Ack(bufferRecord(t, q, e.seq))
	}
	waitUntil(t, "the receptacle event deleted", func() bool { return len(bySchema(r.events(), record.SchemaReceptacle)) == 0 }, func() string { return "" })

	r2 := newRig(t, cfg, q, stateDir)
	recs := bySchema(r2.events(), record.SchemaReceptacle)
	if len(recs) != 1 || recs[0].ev["receptacle"] != labelA || num(recs[0].ev["items"]) != 2 || recs[0].ev["closed_by"] != "label" {
		t.Fatalf("the bag after the restart: %v", recs)
	}
	if r2.s.flow.status().Receptacle != nil {
		t.Fatal("the bag is still open")
	}
}

// TestItemsRecords: items accepted are written as small records after the
// last snapshot, one per group of outcomes, and read back onto it.
func TestItemsRecords(t *testing.T) {
	cfg := openCfg()
	cfg.Scale = nil
	q, stateDir := testBuffer(t), t.TempDir()
	r := newRig(t, cfg, q, stateDir)
	t0 := time.Now()
	r.scan(labelA, t0)
	for i, c := range []string{"RR473124829GB", "RR287043775IN", "CA262246684JP", "LA123456785RU"} {
		r.scan(c, t0.Add(time.Duration(i+1)*2*time.Second))
	}
	r.events()
	r.stop()
	r.disp.Run(canceled())
	f, recs, _, err := openStateFile(StatePath(stateDir, "open-1"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	items := 0
	for _, rec := range recs {
		if isItems(rec) {
			var it itemsRecord
			json.Unmarshal(rec, &it)
			items += len(it.Items)
		}
	}
	if items != 4 {
		t.Fatalf("%d items in items records, want 4", items)
	}
	// Nothing to count again in the buffer: the records were delivered.
	all, _ := q.Read(0, 100)
	q.Ack(all...)
	waitUntil(t, "the buffer empty", func() bool { return q.Stats().Depth == 0 }, func() string { return "" })
	r2 := newRig(t, cfg, q, stateDir)
	if st := r2.s.flow.status(); st.Receptacle == nil || st.Receptacle.Items != 4 {
		t.Fatalf("after reading the items records: %+v", st.Receptacle)
	}
}

// testBuffer opens a real buffer in a temporary directory for the test.
func testBuffer(t *testing.T) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(t.TempDir(), buffer.Options{MinFreeDisk: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}
