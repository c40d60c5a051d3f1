package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

// StationCounters are one station's totals since the agent started; a
// reload that restarts the station keeps them.
type StationCounters struct {
	Scans           uint64            `json:"scans"`             // accepted (durable)
	Invalid         uint64            `json:"invalid"`           // accepted with valid=false
	InvalidByReason map[string]uint64 `json:"invalid_by_reason"` // check_digit, unexpected_kind, ...
	Suppressed      uint64            `json:"suppressed"`        // double reads within dedup_window, not made events
	Weights         map[string]uint64 `json:"weights,omitempty"` // scans by weight status (stations with a scale)
	NotAccepted     map[string]uint64 `json:"not_accepted"`      // read but not made durable, by reason
	Rejected        map[string]uint64 `json:"rejected"`          // frames discarded, by reason
	Feedback        map[string]uint64 `json:"feedback,omitempty"`
}

// stationCounts are the counters of one station id. The agent keeps them
// for the life of the process and hands them to every instance of that
// station: a reload that restarts a station, or removes it and adds it
// again, never sets them back (they are Prometheus counters), and a scan
// of a stopped instance whose sync completes late is still counted.
type stationCounts struct {
	scans, invalid, suppressed atomic.Uint64

	mu          sync.Mutex
	rejected    map[string]uint64 // frames discarded, by reason
	notAccepted map[string]uint64 // scans not made durable, by reason
	invalidBy   map[string]uint64 // accepted invalid scans, by reason
	weights     map[string]uint64 // scans by weight status
	scaleFrames map[string]uint64 // scale frames by result
	feedback    map[string]uint64 // feedback signals by result
}

func newStationCounts() *stationCounts {
	return &stationCounts{rejected: map[string]uint64{}, notAccepted: map[string]uint64{}, invalidBy: map[string]uint64{},
		weights: map[string]uint64{}, scaleFrames: map[string]uint64{}, feedback: map[string]uint64{}}
}

// add counts one under key in m, one of c's maps.
func (c *stationCounts) add(m map[string]uint64, key string) {
	c.mu.Lock()
	m[key]++
	c.mu.Unlock()
}

// DeviceStatus is a device's last known state.
type DeviceStatus struct {
	Port   string `json:"port"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since"`
}

// station turns one scanner's frames into durable scan events: double
// reads are suppressed, the code is validated, a weight is paired from the
// station's scale, and the event is submitted to the buffer. Frames are
// processed in read order on one worker, so a station's events keep their
// order even while one waits for a weight.
type station struct {
	cfg    config.Station
	agent  config.Agent
	q      *buffer.Queue
	log    *slog.Logger
	now    func() time.Time
	accept map[parcel.Kind]bool // nil: every kind
	// maxEvent caps an event's JSON bytes (mqtt.max_event_bytes; 0: none).
	maxEvent int
	// changed is called after a device state change (may be nil).
	changed func()
	frames  chan devices.Frame
	weigher *weigher  // nil without a scale
	fb      *feedback // nil without feedback
	// The double-read filter. double runs on the worker, forget on the
	// buffer's commit goroutine (a refused scan): dedupMu guards both.
	dedupMu    sync.Mutex
	dedup      map[string]dedupEntry // by code
	dedupSweep int                   // sweep dedup when it grows past this
	n          *stationCounts

	mu      sync.Mutex
	scanner DeviceStatus
	errLog  rateLog

	// The scale, when the station has one.
	scale       DeviceStatus
	lastReading devices.Reading
	pollNow     chan struct{}
}

// ScaleStatus is a station scale's part of the status.
type ScaleStatus struct {
	DeviceStatus
	Frames map[string]uint64 `json:"frames"`         // by result: ok, timeout, garbage, checksum ...
	Last   *Weight           `json:"last,omitempty"` // the latest reading with a weight
}

// ReasonUnexpectedKind marks a code of a kind the station does not accept.
const ReasonUnexpectedKind = "unexpected_kind"

// newStation makes a station counting into n (new counters when nil);
// maxEvent caps an event's JSON bytes (0: no cap).
func newStation(cfg config.Station, agent config.Agent, maxEvent int, q *buffer.Queue, log *slog.Logger, n *stationCounts) *station {
	if n == nil {
		n = newStationCounts()
	}
	s := &station{
		cfg:        cfg,
		agent:      agent,
		maxEvent:   maxEvent,
		q:          q,
		log:        log.With("station", cfg.ID),
		now:        time.Now,
		frames:     make(chan devices.Frame, 1024),
		dedup:      map[string]dedupEntry{},
		dedupSweep: 256,
		n:          n,
		errLog:     rateLog{every: 10 * time.Second},
		scanner:    DeviceStatus{Port: cfg.Scanner.Port, State: string(devices.StateDisconnected), Since: Timestamp(time.Now())},
		scale:      DeviceStatus{State: string(devices.StateDisconnected), Since: Timestamp(time.Now())},
		pollNow:    make(chan struct{}, 1),
	}
	if len(cfg.Accept) > 0 {
		s.accept = map[parcel.Kind]bool{}
		for _, k := range cfg.Accept {
			s.accept[parcel.Kind(k)] = true
		}
	}
	if sc := cfg.Scale; sc != nil {
		s.weigher = newWeigher(sc.MaxAge.D(), sc.WaitStable.D(), sc.ShareReading, realClock{}, func() {
			select {
			case s.pollNow <- struct{}{}:
			default:
			}
		})
	}
	if cfg.Feedback != nil {
		s.fb = newFeedback(*cfg.Feedback, s.log, n)
	}
	return s
}

// run reads the station's devices and processes its scans until ctx is
// done; frames read before that are still processed.
func (s *station) run(ctx context.Context) error {
	var wg sync.WaitGroup
	if s.cfg.Scale != nil {
		wg.Go(func() { s.runScale(ctx) })
	}
	if s.fb != nil {
		wg.Go(func() { s.fb.run(ctx) })
	}
	worker := make(chan struct{})
	go func() {
		defer close(worker)
		for f := range s.frames {
			s.process(ctx, f)
		}
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
	return err
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

func (s *station) runScale(ctx context.Context) error {
	sc := s.cfg.Scale
	s.mu.Lock()
	s.scale.Port = sc.Port
	s.mu.Unlock()
	log := s.log.With("device", "scale")
	return devices.RunScale(ctx, devices.ScaleOptions{
		Port:         portConfig(sc.Serial),
		Protocol:     devices.LookupProtocol(sc.Protocol),
		Poll:         sc.Mode == "poll",
		PollInterval: sc.PollInterval.D(),
		PollTimeout:  sc.PollTimeout.D(),
		PollNow:      s.pollNow,
		Log:          log,
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
				ok, suppressed = s.errLog.allow("scale:"+result, s.now())
			}
			s.mu.Unlock()
			if ok {
				log.Warn("scale frame gave no weight", "result", result, "similar_suppressed", suppressed, "hint", scaleHint(result))
			}
		},
		State: func(st devices.DeviceState, reason string) {
			s.mu.Lock()
			s.scale.State, s.scale.Reason, s.scale.Since = string(st), reason, Timestamp(s.now())
			s.mu.Unlock()
			s.weigher.setOnline(st == devices.StateConnected)
			if s.changed != nil {
				s.changed()
			}
		},
	})
}

func scaleHint(result string) string {
	switch result {
	case devices.ErrGarbage.Reason:
		return "bytes that are not this protocol: check baud rate, data bits, parity and scale.protocol"
	case devices.ErrChecksum.Reason:
		return "checksum mismatch: line noise, or wrong parity or data bits"
	case devices.ResultTimeout:
		return "the scale did not answer a poll: check the cable, the scale's interface setting and scale.protocol"
	case devices.ErrDevice.Reason:
		return "the scale reported an error, or did not understand the request: check scale.protocol and the scale's display"
	case devices.ErrUnit.Reason:
		return "a unit the agent cannot convert to grams: set the scale to g, kg, lb or oz"
	}
	return ""
}

// weightOf converts a reading for the event and status.
func weightOf(r devices.Reading) *Weight {
	if !r.Valid() {
		return nil
	}
	return &Weight{Grams: r.Grams, Value: r.Value.String(), Unit: r.Unit, Stable: r.Stable, MeasuredAt: Timestamp(r.At)}
}

// process makes one frame a scan event and submits it to the buffer. It
// returns once the event is submitted; it counts as accepted when synced.
func (s *station) process(ctx context.Context, f devices.Frame) {
	if s.double(f) {
		return
	}
	sc := s.scan(f)
	if !sc.valid && s.fb != nil {
		s.fb.signal(false)
	}
	if s.weigher != nil {
		sc.weight, sc.hasWeight, sc.weightStatus = s.weigher.pair(ctx, f.At)
		s.n.add(s.n.weights, sc.weightStatus)
	}
	// Submit does not wait for the disk: the worker goes on while the
	// scan is synced; it counts as accepted in the callback.
	if err := s.q.Submit(sc.encode, sc.done); err != nil {
		s.accepted(sc, 0, err)
	}
}

// ReasonTooLarge marks a scan whose event exceeds mqtt.max_event_bytes.
const ReasonTooLarge = "too_large"

// errTooLarge refuses an event over mqtt.max_event_bytes: buffered, it
// would end every broker session that carries it.
var errTooLarge = fmt.Errorf("%w: the scan event is larger than mqtt.max_event_bytes", buffer.ErrRefused)

func (sc *scan) encode(seq uint64) ([]byte, error) {
	rec := sc.record(seq)
	if max := sc.st.maxEvent; max > 0 && len(rec)-1-len(sc.st.cfg.ID) > max {
		return nil, fmt.Errorf("%w (%d bytes, the limit is %d)", errTooLarge, len(rec)-1-len(sc.st.cfg.ID), max)
	}
	return rec, nil
}
func (sc *scan) done(seq uint64, err error) { sc.st.accepted(sc, seq, err) }

// dedupEntry is a code in the double-read filter.
type dedupEntry struct {
	last  time.Time // its last read
	owner time.Time // the read that was made a scan (not suppressed)
}

// double reports whether f repeats the station's previous read of the same
// code within dedup_window (counted), and records the read. The window
// slides: a code read again and again (a parcel left under a scanner in
// presentation mode) stays suppressed until it has not been read for the
// whole window. A scan the buffer refuses takes its code out again
// (forget), so that the operator's rescan is not suppressed.
func (s *station) double(f devices.Frame) bool {
	window := s.cfg.DedupWindow.D()
	if window <= 0 {
		return false
	}
	s.dedupMu.Lock()
	defer s.dedupMu.Unlock()
	e, seen := s.dedup[f.Data]
	prev := e.last
	suppress := seen && f.At.Sub(prev) < window && !f.At.Before(prev)
	if suppress {
		e.last = f.At
	} else {
		e = dedupEntry{last: f.At, owner: f.At}
	}
	s.dedup[f.Data] = e
	// Forget codes outside the window once the map has doubled since the
	// last sweep: a sweep per scan would cost O(codes in the window).
	if len(s.dedup) > s.dedupSweep {
		for code, e := range s.dedup {
			if f.At.Sub(e.last) >= window {
				delete(s.dedup, code)
			}
		}
		s.dedupSweep = max(256, 2*len(s.dedup))
	}
	if suppress {
		s.n.suppressed.Add(1)
		s.log.Debug("double read suppressed", "barcode", f.Data, "after", f.At.Sub(prev))
	}
	return suppress
}

// forget takes the code of a scan the buffer refused out of the double-read
// filter: the operator is told to scan again (bad-read signal, "scan NOT
// accepted"), and that rescan must become a scan, not a suppressed double
// read. A newer scan of the same code keeps its entry.
func (s *station) forget(code string, read time.Time) {
	s.dedupMu.Lock()
	if e, ok := s.dedup[code]; ok && e.owner.Equal(read) {
		delete(s.dedup, code)
	}
	s.dedupMu.Unlock()
}

// scan validates a frame into a scan (without weight).
func (s *station) scan(f devices.Frame) *scan {
	res := parcel.Classify(f.Data, f.AIM)
	if s.accept != nil && !s.accept[res.Kind] {
		res.Valid, res.Reason = false, ReasonUnexpectedKind
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New() // only when the system's random source fails
	}
	return &scan{st: s, id: id, at: f.At, barcode: f.Data, aim: f.AIM, kind: string(res.Kind), valid: res.Valid, reason: res.Reason}
}

// accepted runs once a scan is durable (err nil) or has failed.
func (s *station) accepted(ev *scan, seq uint64, err error) {
	if err != nil {
		reason := "error"
		switch {
		case errors.Is(err, buffer.ErrFull):
			reason = buffer.ReasonFull
		case errors.Is(err, buffer.ErrDiskFull):
			reason = buffer.ReasonDiskFull
		case errors.Is(err, buffer.ErrClosed):
			reason = "stopping"
		case errors.Is(err, errTooLarge):
			reason = ReasonTooLarge
		}
		s.forget(ev.barcode, ev.at)
		s.n.add(s.n.notAccepted, reason)
		s.mu.Lock()
		ok, suppressed := s.errLog.allow(reason, s.now())
		s.mu.Unlock()
		if ok {
			s.log.Error("scan NOT accepted", "barcode", ev.barcode, "reason", reason, "err", err, "similar_suppressed", suppressed)
		}
		if s.fb != nil && ev.valid {
			s.fb.signal(false) // not accepted: the operator must scan again
		}
		return
	}
	s.n.scans.Add(1)
	if !ev.valid {
		s.n.invalid.Add(1)
		s.n.add(s.n.invalidBy, ev.reason)
	} else if s.fb != nil {
		s.fb.signal(true)
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("scan accepted", "seq", seq, "barcode", ev.barcode, "kind", ev.kind, "valid", ev.valid, "reason", ev.reason)
	}
}

func (s *station) reject(reason string) {
	s.n.add(s.n.rejected, reason)
	s.mu.Lock()
	ok, suppressed := s.errLog.allow("reject:"+reason, s.now())
	s.mu.Unlock()
	if ok {
		s.log.Warn("scanner frame rejected", "reason", reason, "similar_suppressed", suppressed, "hint", rejectHint(reason))
	}
}

func rejectHint(reason string) string {
	switch reason {
	case devices.RejectControl:
		return "control characters in the data: check baud rate, data bits and parity against the scanner, or set scanner.control_chars: strip"
	case devices.RejectUTF8:
		return "invalid UTF-8: check baud rate, data bits and parity against the scanner"
	case devices.RejectOverlong:
		return "no terminator seen within max_length: check scanner.terminator against the scanner's suffix"
	case devices.RejectStale:
		return "a partial read was never terminated: check scanner.terminator, and the baud rate (a wrong one garbles the terminator too)"
	}
	return ""
}

func (s *station) setState(st devices.DeviceState, reason string) {
	s.mu.Lock()
	s.scanner.State, s.scanner.Reason, s.scanner.Since = string(st), reason, Timestamp(s.now())
	s.mu.Unlock()
	if s.changed != nil {
		s.changed()
	}
}

// scaleStatus returns the scale's part of the status, nil without a scale.
func (s *station) scaleStatus() *ScaleStatus {
	if s.cfg.Scale == nil {
		return nil
	}
	s.n.mu.Lock()
	frames := maps.Clone(s.n.scaleFrames)
	s.n.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return &ScaleStatus{DeviceStatus: s.scale, Frames: frames, Last: weightOf(s.lastReading)}
}

func (s *station) counters() (StationCounters, DeviceStatus) {
	n := s.n
	n.mu.Lock()
	c := StationCounters{
		Scans:           n.scans.Load(),
		Invalid:         n.invalid.Load(),
		InvalidByReason: maps.Clone(n.invalidBy),
		Suppressed:      n.suppressed.Load(),
		NotAccepted:     maps.Clone(n.notAccepted),
		Rejected:        maps.Clone(n.rejected),
	}
	if s.weigher != nil {
		c.Weights = maps.Clone(n.weights)
	}
	if s.fb != nil {
		c.Feedback = maps.Clone(n.feedback)
	}
	n.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return c, s.scanner
}

// rateLog lets one log line per key through every period and counts the
// ones it held back. Not safe for concurrent use (the station's mutex
// guards it).
type rateLog struct {
	every      time.Duration
	last       map[string]time.Time
	suppressed map[string]int
}

func (r *rateLog) allow(key string, now time.Time) (bool, int) {
	if r.last == nil {
		r.last, r.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < r.every {
		r.suppressed[key]++
		return false, 0
	}
	n := r.suppressed[key]
	r.last[key], r.suppressed[key] = now, 0
	return true, n
}
