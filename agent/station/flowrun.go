package station

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent/clock"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/devices"
)

// flowTick is how often the worker closes idle receptacles, signs idle
// operators out, submits receptacle events the buffer refused again and
// syncs the workflow state.
const flowTick = time.Second

// reconcileMax bounds the records read at start to count again the items
// the state does not have.
const reconcileMax = 200_000

func (s *Station) clockQuality() string {
	if s.clock == nil {
		return clock.Unknown
	}
	return s.clock.Quality()
}

// flowCode handles a control code or an operator's badge, which are not
// scans; it reports whether f was one.
func (s *Station) flowCode(f devices.Frame) bool {
	fl := s.flow
	ctl := fl.control(f.Data)
	badge := ctl == "" && fl.badge != nil && fl.badge.MatchString(f.Data) // once per scan
	if ctl != "" || badge {
		// The same badge or control again within dedup_window did its
		// work the first time: a double read (cancel has its own filter).
		if w := s.cfg.DedupWindow.D(); ctl != "cancel" && w > 0 && f.Data == fl.lastCode && f.At.Sub(fl.lastCodeAt) < w {
			fl.lastCodeAt = f.At
			s.n.suppressed.Add(1)
			return true
		}
		fl.lastCode, fl.lastCodeAt = f.Data, f.At
	}
	switch ctl {
	case "close":
		fl.mu.Lock()
		open := fl.st.Open != nil
		fl.mu.Unlock()
		if !open {
			s.n.add(s.n.workflow, "close_nothing_open")
			s.signal(false)
			return true
		}
		s.closeOpen(ClosedByControl, f.At, "")
		s.signal(true)
		return true
	case "cancel":
		s.cancelLast(f.At)
		return true
	case "logout":
		fl.mu.Lock()
		who := fl.st.Operator
		if who != "" {
			fl.st.Operator = ""
			fl.save(true, s.n)
		}
		fl.mu.Unlock()
		if who == "" {
			s.signal(false)
			return true
		}
		s.n.add(s.n.workflow, "logout")
		s.log.Info("operator signed out", "operator", who)
		s.signal(true)
		return true
	}
	if badge {
		fl.mu.Lock()
		fl.st.Operator, fl.st.OperatorAt = f.Data, f.At
		fl.save(true, s.n)
		fl.mu.Unlock()
		s.n.add(s.n.workflow, "sign_in")
		s.log.Info("operator signed in", "operator", f.Data)
		s.signal(true)
		return true
	}
	fl.lastCode = "" // a scan between: the next badge or control is meant
	return false
}

// signal tells the operator good or bad, when the station has feedback.
func (s *Station) signal(good bool) {
	if s.fb != nil {
		s.fb.signal(good)
	}
}

// place puts a scan in the station's context: the operator, and the open
// receptacle or bag session, which a receptacle label opens or closes.
func (s *Station) place(sc *record.Scan, p *pending) {
	fl := s.flow
	now := sc.At
	fl.mu.Lock()
	if fl.st.Operator != "" {
		sc.Operator = fl.st.Operator
		fl.st.OperatorAt = now
	} else if fl.requireOp {
		p.noOperator = true
	}
	label := sc.Valid && sc.S9 != nil && sc.Kind == "s9"
	grams := int64(0)
	weighed := sc.HasWeight && sc.WeightStatus == "ok"
	if weighed {
		grams = sc.Weight.Grams
	}
	switch fl.name {
	case config.WorkflowOpen:
		if !label {
			if o := fl.st.Open; o != nil {
				sc.Receptacle, o.LastScanAt = o.Receptacle, now
				p.ctx, p.item, p.grams = o, sc.Valid, grams
			}
			break
		}
		if o := fl.st.Open; o != nil && o.Receptacle == sc.Barcode {
			sc.Receptacle, o.LastScanAt = o.Receptacle, now // its label again
			if o.LabelSeq == 0 {                            // the first was not accepted: this one tells the dispatch
				p.label, p.labelCtx = dispatchLabel(s.cfg.ID, sc, now), o
			}
			break
		}
		if fl.st.Open != nil {
			fl.mu.Unlock()
			s.closeOpen(ClosedByLabel, now, "")
			fl.mu.Lock()
		}
		o := &openCtx{Receptacle: sc.Barcode, Operator: sc.Operator, OpenedAt: now, LastScanAt: now}
		if weighed {
			o.MeasuredGrams = &grams
		}
		fl.st.Open = o
		fl.save(true, s.n)
		sc.Receptacle = sc.Barcode
		p.label, p.labelCtx = dispatchLabel(s.cfg.ID, sc, now), o
		s.n.add(s.n.workflow, "opened")
	case config.WorkflowFill:
		o := fl.st.Open
		if label && o == nil && sc.Barcode == fl.st.LastClosed {
			sc.Receptacle = sc.Barcode // the last bag's label again
			break
		}
		if o == nil {
			o = &openCtx{BagSession: newUUID().String(), Operator: sc.Operator, OpenedAt: now}
			fl.st.Open = o
			fl.save(true, s.n)
			s.n.add(s.n.workflow, "opened")
		}
		o.LastScanAt = now
		sc.BagSession = o.BagSession
		if label {
			sc.Receptacle = sc.Barcode
			if weighed {
				o.MeasuredGrams = &grams
			}
			p.closeAfter = true
		} else {
			p.ctx, p.item, p.grams = o, sc.Valid, grams
		}
	}
	fl.mu.Unlock()
}

func dispatchLabel(station string, sc *record.Scan, at time.Time) *DispatchLabel {
	return &DispatchLabel{Station: station, At: at, Dispatch: sc.S9.Dispatch, Serial: sc.S9.Serial,
		Highest: sc.S9.Highest != nil && *sc.S9.Highest}
}

func newUUID() uuid.UUID {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.New()
	}
	return id
}

// closeOpen closes the open receptacle or bag session, once every scan
// before was accounted, and submits its event. label binds a filled bag
// to its S9 label.
func (s *Station) closeOpen(by string, at time.Time, label string) {
	s.barrier()
	fl := s.flow
	fl.mu.Lock()
	o := fl.st.Open
	if o == nil {
		fl.mu.Unlock()
		return
	}
	ev := fl.receptacle(o, s.origin, at, by, label, s.clockQuality())
	fl.st.Open = nil
	if label != "" {
		fl.st.LastClosed = label
	}
	fl.st.Closing = append(fl.st.Closing, ev)
	fl.inFlight[ev.ID] = true
	fl.save(true, s.n)
	fl.mu.Unlock()
	s.n.add(s.n.workflow, "closed_"+by)
	if ev.WeightMismatch != nil && *ev.WeightMismatch {
		s.n.add(s.n.workflow, "weight_mismatch")
		s.log.Info("receptacle weight differs from its label", "receptacle", ev.Receptacle, "declared_grams", *ev.DeclaredGrams,
			"measured_grams", *ev.MeasuredGrams, "tolerance_percent", fl.tolerance)
	}
	s.submitClosing(ev)
}

// submitClosing submits a receptacle event (marked in flight).
func (s *Station) submitClosing(ev *record.Receptacle) {
	v, err := record.JSONValue(record.TopicReceptacles, s.cfg.ID, ev)
	if err != nil { // a station id the config refuses
		s.log.Error("receptacle event cannot be recorded", "err", err)
		return
	}
	s.submit(v, &pending{closing: ev, at: time.Now()})
}

func (s *Station) closingOutcome(p *pending, seq uint64, err error) {
	fl := s.flow
	fl.mu.Lock()
	delete(fl.inFlight, p.closing.ID)
	if err == nil {
		for i, ev := range fl.st.Closing {
			if ev.ID == p.closing.ID {
				fl.st.Closing = append(fl.st.Closing[:i:i], fl.st.Closing[i+1:]...)
				break
			}
		}
		fl.save(false, s.n)
	}
	fl.mu.Unlock()
	ev := p.closing
	if err != nil {
		s.n.add(s.n.notAccepted, "receptacle")
		s.log.Error("receptacle event NOT accepted yet; it is submitted again every second", "receptacle", ev.Receptacle,
			"bag_session", ev.BagSession, "err", err)
		return
	}
	s.log.Info("receptacle closed", "seq", seq, "receptacle", ev.Receptacle, "bag_session", ev.BagSession, "items", ev.Items,
		"closed_by", ev.ClosedBy)
}

// cancelLast withdraws the station's last accepted scan with a cancel
// event; nothing is deleted.
func (s *Station) cancelLast(at time.Time) {
	s.barrier()
	fl := s.flow
	fl.mu.Lock()
	last := fl.last
	fl.last = nil
	op := fl.st.Operator
	fl.mu.Unlock()
	if last == nil {
		s.n.add(s.n.workflow, "cancel_nothing")
		s.signal(false)
		return
	}
	ev := &record.Cancel{Schema: record.SchemaCancel, ID: newUUID().String(), Agent: s.origin.Agent, Site: s.origin.Site,
		Station: s.cfg.ID, Cancels: last.id.String(), Barcode: last.barcode, Operator: op, CancelledAt: record.Timestamp(at),
		Clock: s.clockQuality()}
	v, err := record.JSONValue(record.TopicScans, s.cfg.ID, ev)
	if err != nil {
		s.log.Error("cancel event cannot be recorded", "err", err)
		return
	}
	s.submit(v, &pending{cancel: last, barcode: last.barcode, at: at})
}

func (s *Station) cancelOutcome(p *pending, seq uint64, err error) {
	fl := s.flow
	fl.mu.Lock()
	if err != nil {
		if fl.last == nil {
			fl.last = p.cancel // it can be cancelled again
		}
	} else if o := p.cancel.ctx; o != nil && o == fl.st.Open {
		o.Items--
		o.Cancelled++
		o.ItemsGrams -= p.cancel.grams
		fl.save(false, s.n)
	}
	fl.mu.Unlock()
	if err != nil {
		s.n.add(s.n.notAccepted, "cancel")
		s.log.Error("cancel NOT accepted: scan the cancel code again", "barcode", p.barcode, "err", err)
		s.signal(false)
		return
	}
	s.n.add(s.n.workflow, "cancelled")
	s.log.Info("scan cancelled", "seq", seq, "barcode", p.barcode, "cancels", p.cancel.id)
	s.signal(true)
}

// flowAccepted counts an accepted scan in its receptacle and tells the
// dispatches of a receptacle label (on the outcome goroutine).
func (s *Station) flowAccepted(p *pending, seq uint64) {
	fl := s.flow
	fl.mu.Lock()
	defer fl.mu.Unlock()
	last := &lastScan{id: p.id, barcode: p.barcode}
	changed := false
	if o := p.labelCtx; o != nil && o.LabelSeq == 0 {
		// The label that opened o, or its scan again after the first was
		// refused: the dispatch is told once, before the state notes seq
		// (a restart gives it again).
		o.LabelSeq = seq
		if s.disp != nil {
			l := *p.label
			l.Seq = seq
			s.disp.Seen(l)
		}
		changed = true
	}
	if o := p.ctx; o != nil && p.item && o == fl.st.Open {
		o.count(seq, p.grams)
		last.ctx, last.grams = o, p.grams
		fl.st.LastSeq = max(fl.st.LastSeq, seq)
		if !changed {
			fl.items = append(fl.items, [2]int64{int64(seq), p.grams}) // written with the others of its group
		}
	}
	fl.last = last
	if changed {
		fl.st.LastSeq = max(fl.st.LastSeq, seq)
		fl.save(false, s.n)
	}
}

// flowFlush writes the items accepted so far (on the outcome goroutine,
// once it has no outcome waiting).
func (s *Station) flowFlush() {
	fl := s.flow
	fl.mu.Lock()
	fl.flushItems(s.n)
	fl.mu.Unlock()
}

// flowTick closes an idle receptacle, signs an idle operator out, submits
// receptacle events again that the buffer did not accept, and syncs the
// state (on the worker).
func (s *Station) flowTick(now time.Time) {
	fl := s.flow
	fl.mu.Lock()
	idle := fl.st.Open != nil && fl.idle > 0 && now.Sub(fl.st.Open.LastScanAt) >= fl.idle
	var who string
	if fl.st.Operator != "" && fl.opIdle > 0 && now.Sub(fl.st.OperatorAt) >= fl.opIdle {
		who, fl.st.Operator = fl.st.Operator, ""
		fl.save(true, s.n)
	}
	var retry []*record.Receptacle
	for _, ev := range fl.st.Closing {
		if !fl.inFlight[ev.ID] {
			fl.inFlight[ev.ID] = true
			retry = append(retry, ev)
		}
	}
	fl.flushItems(s.n)
	file := fl.file
	fl.mu.Unlock()
	if who != "" {
		s.n.add(s.n.workflow, "operator_idle")
		s.log.Info("operator signed out after operator_idle", "operator", who, "operator_idle", fl.opIdle)
	}
	if idle {
		s.closeOpen(ClosedByIdle, now, "")
	}
	for _, ev := range retry {
		s.submitClosing(ev)
	}
	if file != nil {
		if err := file.Sync(); err != nil {
			s.n.add(s.n.workflow, "state_errors")
		}
	}
}

// flowStart loads the workflow state, counts again the items and labels
// the buffer accepted after the state's last record, and submits again
// the receptacle events not accepted before a restart.
func (s *Station) flowStart() {
	fl := s.flow
	fl.open(s.n)
	fl.mu.Lock()
	from := fl.st.LastSeq
	if s.disp != nil {
		if d := s.disp.LastSeq(s.cfg.ID); d > 0 && d < from {
			from = d
		}
	}
	closing := fl.st.Closing
	for _, ev := range closing {
		fl.inFlight[ev.ID] = true
	}
	fl.mu.Unlock()
	if from > 0 {
		s.reconcile(from)
	}
	for _, ev := range closing {
		s.submitClosing(ev)
	}
	// A receptacle (or bag) left open by another workflow, before a reload
	// changed it: closed now, as by the close code.
	fl.mu.Lock()
	o := fl.st.Open
	stale := o != nil && !((fl.name == config.WorkflowOpen && o.Receptacle != "") || (fl.name == config.WorkflowFill && o.BagSession != ""))
	fl.mu.Unlock()
	if stale {
		s.log.Warn("closing what was left open under another workflow", "workflow", fl.name, "receptacle", o.Receptacle, "bag_session", o.BagSession)
		s.closeOpen(ClosedByControl, time.Now(), "")
	}
}

// scanLite is what reconcile reads of a scan event.
type scanLite struct {
	Schema     string `json:"schema"`
	ID         string `json:"id"`
	Seq        uint64 `json:"seq"`
	ScannedAt  string `json:"scanned_at"`
	Barcode    string `json:"barcode"`
	Kind       string `json:"kind"`
	Valid      bool   `json:"valid"`
	Receptacle string `json:"receptacle"`
	BagSession string `json:"bag_session"`
	Weight     *struct {
		Grams int64 `json:"grams"`
	} `json:"weight"`
	WeightStatus string     `json:"weight_status"`
	S9           *record.S9 `json:"s9"`
}

// reconcile counts the station's records after seq still in the buffer:
// items accepted after the state's last record (a kill between the two),
// and receptacle labels the dispatches did not note.
func (s *Station) reconcile(after uint64) {
	fl := s.flow
	read, counted, labels := 0, 0, 0
	var fillLabel string
	var fillAt time.Time
	for read < reconcileMax {
		recs, err := s.q.Read(after, 1000)
		if err != nil {
			s.log.Error("workflow state: the buffer cannot be read to count the last items again", "err", err)
			return
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			after = r.Seq
			read++
			topic, station, payload, err := record.SplitTopic(r.Value)
			if err != nil || topic != record.TopicScans || station != s.cfg.ID {
				continue
			}
			var ev scanLite
			if json.Unmarshal(payload, &ev) != nil || ev.Schema != record.Schema {
				continue
			}
			at, _ := time.Parse(time.RFC3339Nano, ev.ScannedAt)
			label := ev.Valid && ev.Kind == "s9" && ev.S9 != nil
			fl.mu.Lock()
			o := fl.st.Open
			if label && fl.name == config.WorkflowOpen {
				// A label the dispatch may not have: one that opened a
				// receptacle, not the open one's scanned again.
				opening := o == nil || ev.Barcode != o.Receptacle || o.LabelSeq == 0
				if opening && o != nil && ev.Barcode == o.Receptacle {
					o.LabelSeq = r.Seq
				}
				if opening && s.disp != nil {
					s.disp.Seen(DispatchLabel{Station: s.cfg.ID, Seq: r.Seq, At: at, Dispatch: ev.S9.Dispatch, Serial: ev.S9.Serial,
						Highest: ev.S9.Highest != nil && *ev.S9.Highest})
					labels++
				}
			}
			if label && fl.name == config.WorkflowFill && o != nil && o.BagSession != "" && ev.BagSession == o.BagSession {
				// The bag's label was accepted, its close not written: close
				// it as the label did.
				fillLabel, fillAt = ev.Barcode, at
				if ev.Weight != nil && ev.WeightStatus == "ok" {
					g := ev.Weight.Grams
					o.MeasuredGrams = &g
				}
			}
			if o != nil && ev.Valid && !label && r.Seq > fl.st.LastSeq &&
				((o.Receptacle != "" && ev.Receptacle == o.Receptacle) || (o.BagSession != "" && ev.BagSession == o.BagSession)) {
				o.Items++
				if o.FirstSeq == 0 {
					o.FirstSeq = r.Seq
				}
				o.LastSeq = r.Seq
				if ev.Weight != nil && ev.WeightStatus == "ok" {
					o.ItemsGrams += ev.Weight.Grams
				}
				fl.st.LastSeq = r.Seq
				counted++
			}
			fl.mu.Unlock()
		}
	}
	if counted > 0 || labels > 0 {
		fl.mu.Lock()
		fl.save(true, s.n)
		fl.mu.Unlock()
		s.log.Info("workflow state: counted again from the buffer", "items", counted, "labels", labels, "records_read", read)
	}
	if read >= reconcileMax {
		s.log.Warn("workflow state: stopped counting again after reading many records", "records_read", read)
	}
	if fillLabel != "" {
		s.log.Info("workflow state: the bag's label was accepted before the stop; closing the bag", "receptacle", fillLabel)
		s.closeOpen(ClosedByLabel, fillAt, fillLabel)
	}
}
