// Package station turns one scanner's frames (and its scale's readings)
// into durable scan events: double reads are suppressed, the code is
// validated, a weight is paired, the event is encoded and submitted to the
// buffer, and the operator is told when a scan was not accepted.
//
// A station reads its devices through package devices and hands the
// buffer bytes (record.Scan.Encode); it learns what became of each scan
// from the buffer's outcomes, on its own goroutine.
package station

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent/clock"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/internal/ratelog"
	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

// Buffer is what a station needs of the durable queue: Submit for its
// scans, Read to count again, at start, the items its workflow state does
// not have yet.
type Buffer interface {
	Submit(v buffer.Value, tag any, out chan<- buffer.Outcome) error
	Read(after uint64, limit int) ([]buffer.Record, error)
}

// Config is a station's configuration.
type Config struct {
	Station config.Station
	Agent   config.Agent
	// MaxEvent caps an event's JSON bytes (mqtt.max_event_bytes; 0: none).
	MaxEvent int
	// StateDir is where the station keeps its workflow state
	// (docs/WORKFLOWS.md); "" keeps it in memory.
	StateDir string
}

// Deps are what a station takes from the agent.
type Deps struct {
	Buffer Buffer
	Log    *slog.Logger
	// Counts are the counters of this station id, kept by the agent across
	// reloads (nil: new ones).
	Counts *Counts
	// Changed, if set, gets a value (without blocking) after each device
	// state change.
	Changed chan<- struct{}
	// Clock, if set, gives the clock quality each scan event carries
	// (a *clock.Watcher); without it, every scan says unknown.
	Clock Clock
	// Dispatches, if set, is told of the receptacle labels accepted at an
	// open_receptacles station.
	Dispatches Dispatches
	// Console, if set, is told of each scan and keeps the devices' last
	// frames (console.go).
	Console Console
}

// Clock tells the system clock's quality: clock.Synced, clock.Unsynced or
// clock.Unknown. It is asked once per scan, so it must not wait.
type Clock interface{ Quality() string }

// Station is one configured station. New starts nothing; Run does the
// work. Status and Devices are safe for concurrent use.
type Station struct {
	cfg      config.Station
	agent    config.Agent
	maxEvent int
	q        Buffer
	log      *slog.Logger
	changed  chan<- struct{}
	clock    Clock                // nil: unknown
	origin   *record.Origin       // the same in every scan
	accept   map[parcel.Kind]bool // nil: every kind
	frames   chan devices.Frame
	outcomes chan buffer.Outcome
	weigher  *weigher  // nil without a scale
	fb       *feedback // nil without feedback
	n        *Counts
	flow     *flow      // nil: items, no operators, no controls
	disp     Dispatches // nil: no dispatch tracking

	// subs counts the worker's submissions; outDone the outcomes handled
	// (under bmu), which the barrier waits on.
	subs    uint64
	bmu     sync.Mutex
	bcond   *sync.Cond
	outDone uint64
	console Console

	// The double-read filter, on the worker; forget (a refused scan) runs
	// on the outcome goroutine: dedupMu guards both.
	dedupMu    sync.Mutex
	dedup      map[string]dedupEntry // by code
	dedupSweep int                   // sweep dedup when it grows past this

	mu          sync.Mutex
	scanner     status.Device
	errLog      ratelog.Limiter
	scale       status.Device
	lastReading devices.Reading
	pollNow     chan struct{}
}

// ReasonUnexpectedKind marks a code of a kind the station does not accept.
const ReasonUnexpectedKind = "unexpected_kind"

// ReasonTooLarge marks a scan whose event exceeds mqtt.max_event_bytes:
// buffered, it would end every broker session that carries it.
const ReasonTooLarge = "too_large"

// New makes a station.
func New(c Config, d Deps) *Station {
	n := d.Counts
	if n == nil {
		n = NewCounts()
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := c.Station
	now := record.Timestamp(time.Now())
	s := &Station{
		cfg:        cfg,
		agent:      c.Agent,
		maxEvent:   c.MaxEvent,
		origin:     &record.Origin{Station: cfg.ID, Agent: c.Agent.ID, Site: c.Agent.Site, Event: cfg.Event},
		q:          d.Buffer,
		log:        log.With("station", cfg.ID),
		changed:    d.Changed,
		clock:      d.Clock,
		frames:     make(chan devices.Frame, 1024),
		outcomes:   make(chan buffer.Outcome, 1024),
		dedup:      map[string]dedupEntry{},
		dedupSweep: 256,
		n:          n,
		errLog:     ratelog.Limiter{Every: 10 * time.Second},
		scanner:    status.Device{Port: cfg.Scanner.Port, State: string(devices.StateDisconnected), Since: now},
		scale:      status.Device{State: string(devices.StateDisconnected), Since: now},
		pollNow:    make(chan struct{}, 1),
		console:    d.Console,
	}
	if len(cfg.Accept) > 0 {
		s.accept = map[parcel.Kind]bool{}
		for _, k := range cfg.Accept {
			s.accept[parcel.Kind(k)] = true
		}
	}
	if sc := cfg.Scale; sc != nil {
		s.scale.Port = sc.Port
		s.weigher = newWeigher(sc.MaxAge.D(), sc.WaitStable.D(), sc.ShareReading, func() {
			select {
			case s.pollNow <- struct{}{}:
			default:
			}
		})
	}
	if cfg.Feedback != nil {
		s.fb = newFeedback(*cfg.Feedback, s.log, n)
	}
	s.bcond = sync.NewCond(&s.bmu)
	s.flow = newFlow(cfg, c.StateDir, s.log)
	if s.flow != nil && cfg.Workflow == config.WorkflowOpen {
		s.disp = d.Dispatches
	}
	return s
}

// ID is the station's id.
func (s *Station) ID() string { return s.cfg.ID }

// Run reads the station's devices and processes its scans until ctx is
// done. Frames read before that are still processed, and Run returns only
// once the buffer has said what became of every scan submitted. Ports
// that fail are reopened (package devices); the error is for what cannot
// run at all (a scale without a protocol).
func (s *Station) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var scaleErr error
	if s.cfg.Scale != nil {
		wg.Go(func() { scaleErr = s.runScale(ctx) })
	}
	if s.fb != nil {
		wg.Go(func() { s.fb.run(ctx) })
	}
	submitted := make(chan uint64, 1)
	wg.Go(func() { s.drainOutcomes(submitted) })
	worker := make(chan struct{})
	go func() {
		defer close(worker)
		s.work(ctx)
		submitted <- s.subs
	}()
	sc := s.cfg.Scanner
	err := devices.RunScanner(ctx, devices.ScannerOptions{
		Port: portConfig(sc.Serial),
		Framer: devices.FramerConfig{
			Terminator:   sc.TerminatorBytes(),
			MaxLength:    sc.MaxLength,
			IdleGap:      sc.IdleGap.D(),
			StripPrefix:  []byte(sc.StripPrefix),
			StripSuffix:  []byte(sc.StripSuffix),
			CodeID:       sc.CodeID,
			StripControl: sc.ControlChars == "strip",
		},
		Log:    s.log.With("device", "scanner"),
		Tap:    s.tap("scanner"),
		Frame:  func(f devices.Frame) { s.frames <- f },
		Reject: s.reject,
		State:  s.setState,
		Opened: func(p devices.PortHandle) {
			if s.fb != nil {
				s.fb.setPort(p)
			}
		},
	})
	close(s.frames)
	<-worker
	wg.Wait()
	if s.flow != nil {
		s.flow.close() // after the last outcome was noted
	}
	if err != nil {
		err = fmt.Errorf("station %s: scanner: %w", s.cfg.ID, err)
	}
	if scaleErr != nil {
		scaleErr = fmt.Errorf("station %s: scale: %w", s.cfg.ID, scaleErr)
	}
	return errors.Join(err, scaleErr)
}

// drainOutcomes handles the buffer's outcomes until it has had one for
// every scan the worker submitted (their count arrives on submitted once
// the worker is done).
func (s *Station) drainOutcomes(submitted <-chan uint64) {
	var got uint64
	total := uint64(math.MaxUint64)
	for got < total {
		select {
		case o := <-s.outcomes:
			s.outcome(o.Tag.(*pending), o.Seq, o.Err)
			got++
			if s.flow != nil && len(s.outcomes) == 0 {
				s.flowFlush() // one write for the items of the group
			}
			s.bmu.Lock()
			s.outDone++
			s.bcond.Broadcast()
			s.bmu.Unlock()
		case total = <-submitted:
			submitted = nil
		}
	}
}

func portConfig(c config.Serial) devices.PortConfig {
	return devices.PortConfig{
		Path:     c.Port,
		Baud:     c.Baud,
		DataBits: c.DataBits,
		Parity:   c.Parity,
		StopBits: string(c.StopBits),
		DTR:      c.DTR,
		RTS:      c.RTS,
	}
}

func (s *Station) runScale(ctx context.Context) error {
	sc := s.cfg.Scale
	log := s.log.With("device", "scale")
	proto := devices.LookupProtocol(sc.Protocol)
	if proto == nil {
		err := fmt.Errorf("unknown protocol %q", sc.Protocol)
		s.setScaleState(devices.StateError, err.Error())
		return err
	}
	return devices.RunScale(ctx, devices.ScaleOptions{
		Port:         portConfig(sc.Serial),
		Protocol:     proto,
		Poll:         sc.Mode == "poll",
		PollInterval: sc.PollInterval.D(),
		PollTimeout:  sc.PollTimeout.D(),
		PollNow:      s.pollNow,
		Log:          log,
		Tap:          s.tap("scale"),
		Reading: func(r devices.Reading) {
			s.mu.Lock()
			s.lastReading = r
			s.mu.Unlock()
			s.weigher.reading(r)
		},
		Result: func(result string) {
			s.n.add(s.n.scaleFrames, result)
			s.mu.Lock()
			ok, suppressed := false, 0
			if result != devices.ResultOK && result != devices.ErrNoWeight.Reason {
				ok, suppressed = s.errLog.Allow("scale:"+result, time.Now())
			}
			s.mu.Unlock()
			if ok {
				log.Warn("scale frame gave no weight", "result", result, "similar_suppressed", suppressed, "hint", scaleHint(result))
			}
		},
		State: s.setScaleState,
	})
}

func (s *Station) setScaleState(st devices.DeviceState, reason string) {
	s.mu.Lock()
	s.scale.State, s.scale.Reason, s.scale.Since = string(st), reason, record.Timestamp(time.Now())
	s.mu.Unlock()
	s.weigher.setOnline(st == devices.StateConnected)
	s.notifyChanged()
}

func (s *Station) notifyChanged() {
	if s.changed != nil {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// work is the worker: it processes frames in read order until the
// scanner is done, and runs the workflow's clock (idle receptacles and
// operators, the state's sync).
func (s *Station) work(ctx context.Context) {
	if s.flow == nil {
		for f := range s.frames {
			s.process(ctx, f)
		}
		return
	}
	s.flowStart()
	t := time.NewTicker(flowTick)
	defer t.Stop()
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				return
			}
			s.process(ctx, f)
		case now := <-t.C:
			s.flowTick(now)
		}
	}
}

// pending is a record submitted to the buffer, waiting for its outcome:
// a scan, or a workflow event (closing, cancel).
type pending struct {
	barcode string
	at      time.Time // read
	valid   bool
	kind    string
	reason  string
	scan    *record.Scan // for the console

	// The workflow's (docs/WORKFLOWS.md).
	id         uuid.UUID          // the scan's id, for a cancel
	ctx        *openCtx           // the receptacle or bag session the scan is in
	item       bool               // counted as an item of ctx once accepted
	grams      int64              // its weight, counted in ctx
	label      *DispatchLabel     // a receptacle label to tell the dispatches
	labelCtx   *openCtx           // the receptacle that label opened
	noOperator bool               // require_operator, and nobody signed in
	closing    *record.Receptacle // a receptacle event
	cancel     *lastScan          // a cancel event, withdrawing this scan
	closeAfter bool               // fill_receptacles: the label closes the bag once submitted
}

// process makes one frame a scan event and submits it to the buffer,
// without waiting for the disk; the outcome says whether it was accepted.
// A control code or an operator's badge is handled, not submitted.
func (s *Station) process(ctx context.Context, f devices.Frame) {
	// Badges and control codes are not double reads (a close right after
	// a label closes what the label opened), but for cancel: a cancel
	// read twice would withdraw nothing the second time.
	if s.flow != nil {
		if s.flow.control(f.Data) == "cancel" {
			if !s.double(f) {
				s.flowCode(f)
			}
			return
		}
		if s.flowCode(f) {
			return
		}
	}
	if s.double(f) {
		return
	}
	sc := s.scan(f)
	if !sc.Valid && s.fb != nil {
		s.fb.signal(false)
	}
	if s.weigher != nil {
		sc.Weight, sc.HasWeight, sc.WeightStatus = s.weigher.pair(ctx, f.At)
		s.n.add(s.n.weights, sc.WeightStatus)
	}
	p := &pending{barcode: sc.Barcode, at: sc.At, valid: sc.Valid, kind: sc.Kind, reason: sc.Reason, id: sc.ID, scan: sc}
	if s.flow != nil {
		s.place(sc, p)
	}
	s.submit(s.value(sc), p)
	if p.closeAfter {
		s.closeOpen(ClosedByLabel, sc.At, sc.Barcode)
	}
}

// submit hands a record to the buffer; its outcome comes on s.outcomes
// (or at once, when the buffer refuses it).
func (s *Station) submit(v buffer.Value, p *pending) {
	if err := s.q.Submit(v, p, s.outcomes); err != nil {
		s.outcome(p, 0, err)
		return
	}
	s.subs++
}

// barrier waits until the outcome of every record the worker submitted
// was handled.
func (s *Station) barrier() {
	s.bmu.Lock()
	for s.outDone < s.subs {
		s.bcond.Wait()
	}
	s.bmu.Unlock()
}

// value is the buffer value of a scan: its record, refused by the buffer
// when the event is longer than mqtt.max_event_bytes.
func (s *Station) value(sc *record.Scan) buffer.Value {
	v := sc.Value()
	if s.maxEvent > 0 {
		v.Max = s.maxEvent + 1 + len(s.cfg.ID) // the event, after the station id
	}
	return v
}

// scan validates a frame into a scan (without weight).
func (s *Station) scan(f devices.Frame) *record.Scan {
	res := parcel.Classify(f.Data, f.AIM)
	var s9 *record.S9
	if res.Kind == parcel.KindS9 && res.Valid { // decoded also when the station does not accept s9
		s9 = s9Of(f.Data)
	}
	if s.accept != nil && !s.accept[res.Kind] {
		res.Valid, res.Reason = false, ReasonUnexpectedKind
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New() // only when the system's random source fails
	}
	q := clock.Unknown
	if s.clock != nil {
		q = s.clock.Quality()
	}
	return &record.Scan{Origin: s.origin,
		ID: id, At: f.At, Barcode: f.Data, AIM: f.AIM, Kind: string(res.Kind), Valid: res.Valid, Reason: res.Reason,
		S9: s9, Clock: q}
}

// s9Of decodes an S9 receptacle identifier for the scan event; nil if it
// does not parse.
func s9Of(code string) *record.S9 {
	p, err := parcel.ParseS9(code)
	if err != nil {
		return nil
	}
	e := &record.S9{Origin: p.Origin, Destination: p.Destination, Category: p.Category, Class: p.Class, Subclass: p.Subclass,
		Year: p.Year, Dispatch: p.Dispatch, Serial: p.Serial, DeclaredGrams: p.DeclaredGrams}
	if v, given := p.Highest.Bool(); given {
		e.Highest = &v
	}
	if v, given := p.Registered.Bool(); given {
		e.Registered = &v
	}
	return e
}

// outcome counts a scan once it is durable (err nil) or has failed, and
// tells the operator.
func (s *Station) outcome(p *pending, seq uint64, err error) {
	switch {
	case p.closing != nil:
		s.closingOutcome(p, seq, err)
		return
	case p.cancel != nil:
		s.cancelOutcome(p, seq, err)
		return
	}
	s.tell(p.scan, seq, err)
	if err != nil {
		reason := "error"
		switch {
		case errors.Is(err, buffer.ErrFull):
			reason = buffer.ReasonFull
		case errors.Is(err, buffer.ErrDiskFull):
			reason = buffer.ReasonDiskFull
		case errors.Is(err, buffer.ErrClosed):
			reason = "stopping"
		case errors.Is(err, buffer.ErrRefused):
			reason = ReasonTooLarge
			err = fmt.Errorf("the scan event is larger than mqtt.max_event_bytes (%d): %w", s.maxEvent, err)
		}
		s.forget(p.barcode, p.at)
		s.n.add(s.n.notAccepted, reason)
		s.mu.Lock()
		ok, suppressed := s.errLog.Allow(reason, time.Now())
		s.mu.Unlock()
		if ok {
			s.log.Error("scan NOT accepted", "barcode", p.barcode, "reason", reason, "err", err, "similar_suppressed", suppressed)
		}
		if s.fb != nil && p.valid {
			s.fb.signal(false) // not accepted: the operator must scan again
		}
		return
	}
	s.n.scans.Add(1)
	if s.flow != nil {
		s.flowAccepted(p, seq)
	}
	switch {
	case !p.valid:
		s.n.invalid.Add(1)
		s.n.add(s.n.invalidBy, p.reason)
	case p.noOperator:
		s.n.add(s.n.workflow, "no_operator")
		if s.fb != nil {
			s.fb.signal(false) // accepted, but nobody is signed in
		}
	case s.fb != nil:
		s.fb.signal(true)
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("scan accepted", "seq", seq, "barcode", p.barcode, "kind", p.kind, "valid", p.valid, "reason", p.reason)
	}
}

func (s *Station) reject(reason string) {
	s.n.add(s.n.rejected, reason)
	s.mu.Lock()
	ok, suppressed := s.errLog.Allow("reject:"+reason, time.Now())
	s.mu.Unlock()
	if ok {
		s.log.Warn("scanner frame rejected", "reason", reason, "similar_suppressed", suppressed, "hint", rejectHint(reason))
	}
}

func (s *Station) setState(st devices.DeviceState, reason string) {
	s.mu.Lock()
	s.scanner.State, s.scanner.Reason, s.scanner.Since = string(st), reason, record.Timestamp(time.Now())
	s.mu.Unlock()
	s.notifyChanged()
}

// Status is the station's part of the status document.
func (s *Station) Status() status.Station {
	c, scanner := s.counters()
	st := status.Station{ID: s.cfg.ID, Counters: c, Scanner: scanner, Scale: s.scaleStatus()}
	if s.flow != nil {
		st.Workflow = s.flow.status()
	}
	return st
}

// Devices lists the station's devices and their current states.
func (s *Station) Devices() []status.DeviceReport {
	_, d := s.counters()
	out := []status.DeviceReport{{Station: s.cfg.ID, Kind: "scanner", Device: d}}
	if sc := s.scaleStatus(); sc != nil {
		out = append(out, status.DeviceReport{Station: s.cfg.ID, Kind: "scale", Device: sc.Device})
	}
	return out
}

// scaleStatus returns the scale's part of the status, nil without a scale.
func (s *Station) scaleStatus() *status.Scale {
	if s.cfg.Scale == nil {
		return nil
	}
	frames := s.n.scaleFrameCounts()
	s.mu.Lock()
	defer s.mu.Unlock()
	return &status.Scale{Device: s.scale, Frames: frames, Last: record.WeightOf(s.lastReading)}
}

func (s *Station) counters() (status.Counters, status.Device) {
	c := s.n.snapshot(s.weigher != nil, s.fb != nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	return c, s.scanner
}
