package station

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/internal/statefile"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
)

// The station's workflow (docs/WORKFLOWS.md): who is signed in, which
// receptacle is open (open_receptacles) or which bag is being filled
// (fill_receptacles), and the control codes. The worker decides where
// each scan belongs; the outcome goroutine counts an item in its
// receptacle once the buffer accepted it. A receptacle is closed on the
// worker after every scan before it was accounted (the barrier), so its
// event counts exactly the accepted items.
//
// The state is durable in a state file (agent/internal/statefile), one
// whole snapshot per record: written and synced before the scan that
// changes the receptacle or the operator is submitted, and written (synced
// within the tick) after each item accepted. At start, the items accepted
// after the last snapshot are counted again from the buffer's records.

// Dispatches is the site's dispatch tracker (agent/dispatch), told of
// each receptacle label accepted at an open_receptacles station.
type Dispatches interface {
	Seen(DispatchLabel)
	LastSeq(station string) uint64
}

// DispatchLabel is a receptacle label accepted at a station.
type DispatchLabel struct {
	Station  string
	Seq      uint64
	At       time.Time
	Dispatch string
	Serial   int
	Highest  bool
}

// Closed-by reasons of a receptacle event.
const (
	ClosedByLabel   = "label"
	ClosedByControl = "control"
	ClosedByIdle    = "idle"
)

// flowState is the durable part of a workflow.
type flowState struct {
	Operator   string    `json:"operator,omitempty"`
	OperatorAt time.Time `json:"operator_at,omitzero"` // signed in, or last scan since
	Open       *openCtx  `json:"open,omitempty"`
	// Closing are receptacle events made but not yet accepted by the
	// buffer: submitted again, with the same id, after a restart.
	Closing []*record.Receptacle `json:"closing,omitempty"`
	// LastClosed is the label of the last bag filled (fill_receptacles),
	// so that scanning it again makes no second, empty bag.
	LastClosed string `json:"last_closed,omitempty"`
	// LastSeq is the last scan accounted for: an item counted or a label
	// noted. Records after it are counted again at start.
	LastSeq uint64 `json:"last_seq"`
}

// openCtx is an open receptacle or bag session.
type openCtx struct {
	Receptacle    string    `json:"receptacle,omitempty"`
	BagSession    string    `json:"bag_session,omitempty"`
	Operator      string    `json:"operator,omitempty"`
	OpenedAt      time.Time `json:"opened_at"`
	LastScanAt    time.Time `json:"last_scan_at"`
	MeasuredGrams *int64    `json:"measured_grams,omitempty"`
	// LabelSeq is the seq of the label that opened it once the buffer
	// accepted it (open_receptacles): the dispatch was told then; a label
	// scanned again is told only while it is 0.
	LabelSeq   uint64 `json:"label_seq,omitempty"`
	Items      int    `json:"items"`
	Cancelled  int    `json:"cancelled,omitempty"`
	FirstSeq   uint64 `json:"first_seq,omitempty"`
	LastSeq    uint64 `json:"last_seq,omitempty"`
	ItemsGrams int64  `json:"items_grams"`
}

// lastScan is the station's last accepted scan, which cancel withdraws.
type lastScan struct {
	id      uuid.UUID
	barcode string
	ctx     *openCtx // the receptacle it counted in, nil if none
	grams   int64
}

// flow is a station's workflow.
type flow struct {
	name      string
	badge     *regexp.Regexp // nil: no operators
	controls  config.Controls
	idle      time.Duration // receptacle_idle, 0: never
	opIdle    time.Duration // operator_idle, 0: never
	tolerance float64       // weight_tolerance, percent
	requireOp bool
	path      string // the state file; "" keeps the state in memory
	log       *slog.Logger

	mu       sync.Mutex // st, last, file writes: the worker and the outcome goroutine
	st       flowState
	last     *lastScan
	file     *statefile.File
	inFlight map[string]bool // receptacle events submitted, by id
	items    [][2]int64      // items accepted, not yet written (seq, grams)
	n        *Counts         // the station's, once open
	// The last badge or control code and when (the worker's), for their
	// double reads.
	lastCode   string
	lastCodeAt time.Time
	errLog     time.Time
}

// stateCompactAt is the state file's size that makes it one snapshot again.
const stateCompactAt = 1 << 20

func newFlow(c config.Station, stateDir string, log *slog.Logger) *flow {
	if c.Workflow == config.WorkflowItems && c.OperatorPattern == "" && c.Controls == (config.Controls{}) {
		return nil
	}
	f := &flow{name: c.Workflow, controls: c.Controls, idle: c.ReceptacleIdle.D(), opIdle: c.OperatorIdle.D(),
		tolerance: float64(c.WeightTolerance), requireOp: c.RequireOperator, log: log, inFlight: map[string]bool{}}
	if f.name == "" {
		f.name = config.WorkflowItems
	}
	if !c.Receptacles() {
		f.idle = 0
	}
	if c.OperatorPattern != "" {
		f.badge = regexp.MustCompile(c.OperatorPattern) // validated by config
	}
	if stateDir != "" {
		f.path = StatePath(stateDir, c.ID)
	}
	return f
}

// StatePath is where a station keeps its workflow state under dir.
func StatePath(dir, station string) string { return fmt.Sprintf("%s/station-%s.state", dir, station) }

// open loads the durable state. A damaged file is reported and the
// station goes on from what could be read (or from nothing).
func (f *flow) open(n *Counts) {
	if f.path == "" {
		return
	}
	file, recs, problem, err := openStateFile(f.path)
	if err != nil {
		n.add(n.workflow, "state_errors")
		f.log.Error("workflow state cannot be opened; the station keeps its operator and receptacle in memory only", "file", f.path, "err", err,
			"hint", "check that the agent's user can write agent.data_dir")
		return
	}
	if problem != "" {
		n.add(n.workflow, "state_damaged")
		f.log.Error("workflow state damaged", "file", f.path, "problem", problem)
	}
	// The last snapshot, then the items accepted after it.
	last := len(recs) - 1
	for last >= 0 && isItems(recs[last]) {
		last--
	}
	var st flowState
	if last >= 0 {
		if err := json.Unmarshal(recs[last], &st); err != nil {
			n.add(n.workflow, "state_damaged")
			f.log.Error("workflow state does not decode; starting without an operator or open receptacle", "file", f.path, "err", err)
			st = flowState{}
		} else if why := st.sanitize(); why != "" {
			n.add(n.workflow, "state_damaged")
			f.log.Error("workflow state holds what it cannot: dropped", "file", f.path, "problem", why)
		}
		for _, r := range recs[last+1:] {
			var it itemsRecord
			if json.Unmarshal(r, &it) != nil || st.Open == nil {
				continue
			}
			for _, x := range it.Items {
				st.Open.count(uint64(x[0]), x[1])
				st.LastSeq = max(st.LastSeq, uint64(x[0]))
			}
		}
	}
	f.mu.Lock()
	f.st, f.file, f.n = st, file, n
	f.mu.Unlock()
	if o := f.st.Open; o != nil {
		f.log.Info("workflow state restored", "receptacle", o.Receptacle, "bag_session", o.BagSession, "items", o.Items, "operator", f.st.Operator)
	}
}

// sanitize drops what a state record cannot hold (a file damaged with a
// good checksum, or written by hand): it says what it dropped.
func (st *flowState) sanitize() string {
	var why []string
	if o := st.Open; o != nil && (o.Receptacle == "") == (o.BagSession == "") {
		why = append(why, "an open receptacle that is neither a labelled receptacle nor a bag session")
		st.Open = nil
	}
	if o := st.Open; o != nil && (o.Items < 0 || o.Cancelled < 0) {
		o.Items, o.Cancelled = max(o.Items, 0), max(o.Cancelled, 0)
		why = append(why, "negative item counts")
	}
	kept := st.Closing[:0]
	for _, ev := range st.Closing {
		if ev == nil || ev.ID == "" || ev.Schema != record.SchemaReceptacle {
			why = append(why, "a receptacle event without an id")
			continue
		}
		kept = append(kept, ev)
	}
	st.Closing = kept
	if len(st.Operator) > 256 {
		st.Operator = ""
		why = append(why, "an operator longer than any badge")
	}
	return strings.Join(why, "; ")
}

// save writes the state (f.mu held); sync makes it durable before it
// returns. A failure is logged and counted: scanning goes on.
func (f *flow) save(sync bool, n *Counts) {
	f.items = f.items[:0] // the snapshot holds them
	if f.file == nil {
		return
	}
	b, _ := json.Marshal(&f.st)
	err := f.file.Append(b)
	if err == nil && sync {
		err = f.file.Sync()
	}
	if err == nil && f.file.Size() > stateCompactAt {
		err = f.file.Rewrite(b)
	}
	if err != nil {
		n.add(n.workflow, "state_errors")
		if now := time.Now(); now.Sub(f.errLog) > 10*time.Second {
			f.errLog = now
			f.log.Error("workflow state not written; kept in memory until a write succeeds", "file", f.path, "err", err)
		}
	}
}

// itemsRecord is a state record of items accepted since the last
// snapshot: their seqs and weights, written in one go per group of
// outcomes ({"items":[[seq,grams],...]}).
type itemsRecord struct {
	Items [][2]int64 `json:"items"`
}

func isItems(rec []byte) bool { return len(rec) > 9 && string(rec[:9]) == `{"items":` }

// count adds an item accepted under seq.
func (o *openCtx) count(seq uint64, grams int64) {
	o.Items++
	if o.FirstSeq == 0 {
		o.FirstSeq = seq
	}
	o.LastSeq = seq
	o.ItemsGrams += grams
}

// flushItems writes the items accepted since the last write (f.mu held),
// without a sync; a kill before it is covered by the count again at start.
func (f *flow) flushItems(n *Counts) {
	if len(f.items) == 0 || f.file == nil {
		f.items = f.items[:0]
		return
	}
	b := append(make([]byte, 0, 16+24*len(f.items)), `{"items":[`...)
	for i, x := range f.items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, x[0], 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, x[1], 10)
		b = append(b, ']')
	}
	b = append(b, "]}"...)
	f.items = f.items[:0]
	if err := f.file.Append(b); err != nil {
		n.add(n.workflow, "state_errors")
		return
	}
	if f.file.Size() > stateCompactAt {
		f.save(false, n)
	}
}

func (f *flow) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushItems(f.n)
	if f.file != nil {
		f.file.Close()
		f.file = nil
	}
}

// control reports which control a code is ("" for none).
func (f *flow) control(code string) string {
	switch code {
	case "":
		return ""
	case f.controls.Close:
		return "close"
	case f.controls.Cancel:
		return "cancel"
	case f.controls.Logout:
		return "logout"
	}
	return ""
}

// receptacle makes the receptacle event of o, closed at at by by (f.mu
// held). label is the S9 label binding a filled bag (fill_receptacles).
func (f *flow) receptacle(o *openCtx, origin *record.Origin, at time.Time, by, label, clock string) *record.Receptacle {
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	ev := &record.Receptacle{Schema: record.SchemaReceptacle, ID: id.String(), Agent: origin.Agent, Site: origin.Site,
		Station: origin.Station, Workflow: config.WorkflowOpen, Receptacle: o.Receptacle, BagSession: o.BagSession,
		Items: o.Items, Cancelled: o.Cancelled, ItemsGrams: o.ItemsGrams,
		MeasuredGrams: o.MeasuredGrams, Operator: o.Operator, OpenedAt: record.Timestamp(o.OpenedAt),
		ClosedAt: record.Timestamp(at), ClosedBy: by, Clock: clock}
	if o.Items > 0 { // first and last of the items scanned in it (cancelled ones included)
		ev.FirstItemSeq, ev.LastItemSeq = o.FirstSeq, o.LastSeq
	}
	if o.BagSession != "" { // what was open decides, also after a reload changed the workflow
		ev.Workflow = config.WorkflowFill
	}
	if label != "" {
		ev.Receptacle = label
	}
	if f.st.Operator != "" {
		ev.Operator = f.st.Operator
	}
	if ev.Receptacle != "" {
		if s9 := s9Of(ev.Receptacle); s9 != nil {
			ev.S9 = s9
			if d := s9.DeclaredGrams; d > 0 {
				ev.DeclaredGrams = &d
				if m := o.MeasuredGrams; m != nil {
					mismatch := weightMismatch(d, *m, f.tolerance)
					ev.WeightMismatch = &mismatch
				}
			}
		}
	}
	return ev
}

// weightMismatch reports whether measured differs from declared by more
// than tolerance percent of declared. A label's 9999 (999.9 kg or more)
// only says the weight is at least that.
func weightMismatch(declared, measured int64, tolerance float64) bool {
	limit := float64(declared) * tolerance / 100
	diff := float64(measured - declared)
	if declared >= 999900 && diff > 0 {
		return false
	}
	return math.Abs(diff) > limit
}

// status is the workflow's part of the station status.
func (f *flow) status() *status.Workflow {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &status.Workflow{Name: f.name, Operator: f.st.Operator}
	if o := f.st.Open; o != nil {
		w.Receptacle = &status.Receptacle{Receptacle: o.Receptacle, BagSession: o.BagSession, Items: o.Items,
			ItemsGrams: o.ItemsGrams, OpenedAt: record.Timestamp(o.OpenedAt), LastScanAt: record.Timestamp(o.LastScanAt)}
	}
	return w
}

// openStateFile opens a station's state file (a seam for tests).
var openStateFile = statefile.Open
