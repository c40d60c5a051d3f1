package devices

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/scanagent/scanagent/devices/backoff"
	"go.bug.st/serial"
)

// PortOptions configure RunPort.
type PortOptions struct {
	Port PortConfig
	// Kind names the device in log lines ("scanner", "scale").
	Kind string
	// ReadTimeout bounds each read, so the session can judge idle time
	// (a read timeout returns 0 bytes and no error).
	ReadTimeout time.Duration
	// Backoff between reopen attempts (defaults 250ms .. 2s, with jitter).
	BackoffMin, BackoffMax time.Duration
	Log                    *slog.Logger
	// State is called on every state change (may be nil).
	State func(s DeviceState, reason string)
	// Session uses the open port until it fails (an error) or ctx is done
	// (nil).
	Session func(ctx context.Context, port serial.Port) error
	// Opened, when not nil, is given the port once open, and nil once
	// closed, so others can write to it (operator feedback).
	Opened func(PortHandle)
}

// PortHandle is what others may do with an open port while its supervisor
// reads it: write (feedback commands) and drive the modem lines.
type PortHandle interface {
	Write(p []byte) (int, error)
	SetDTR(bool) error
	SetRTS(bool) error
}

// RunPort owns one serial port until ctx is done: it opens the port with
// its settings, runs the session, and after any error closes the port and
// reopens it by its configured path with capped, jittered backoff. It never
// gives up; it returns nil when ctx is cancelled.
func RunPort(ctx context.Context, o PortOptions) error {
	if o.BackoffMin <= 0 {
		o.BackoffMin = 250 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		// A local device path costs nothing to probe, and a replugged
		// device should be read again within a couple of seconds.
		o.BackoffMax = 2 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 100 * time.Millisecond
	}
	if o.Kind == "" {
		o.Kind = "device"
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("port", o.Port.Path)
	state := func(s DeviceState, reason string) {
		if o.State != nil {
			o.State(s, reason)
		}
	}
	bo := backoff.Backoff{Min: o.BackoffMin, Max: o.BackoffMax}
	// A flapping port (a loose cable) logs its first losses, then one line
	// per period with the count of those held back.
	flap := logLimiter{every: 30 * time.Second, burst: 3}
	var lastErr string
	for ctx.Err() == nil {
		port, err := OpenPort(o.Port, o.ReadTimeout)
		if err != nil {
			st, reason := Classify(err)
			if msg := err.Error(); msg != lastErr {
				log.Warn(o.Kind+" port unavailable; retrying", "err", msg)
				state(st, reason)
				lastErr = msg
			}
			if !sleep(ctx, bo.Next()) {
				break
			}
			continue
		}
		setModemLines(port, o.Port, log)
		if ok, held := flap.allow(time.Now()); ok {
			log.Info(o.Kind+" port open", "settings", o.Port.String(), "similar_suppressed", held)
		}
		state(StateConnected, "")
		lastErr = ""
		bo.Reset()
		if o.Opened != nil {
			o.Opened(port)
		}
		err = o.Session(ctx, port)
		if o.Opened != nil {
			o.Opened(nil)
		}
		port.Close()
		if err == nil || ctx.Err() != nil {
			break
		}
		_, reason := Classify(err)
		if ok, held := flap.allow(time.Now()); ok {
			log.Warn(o.Kind+" port lost; reopening", "err", reason, "similar_suppressed", held)
		}
		state(StateDisconnected, reason)
		if !sleep(ctx, bo.Next()) {
			break
		}
	}
	state(StateDisconnected, "stopped")
	return nil
}

// setModemLines sets DTR and RTS when configured. USB adapters without the
// lines and pseudo-terminals fail these calls; that is logged, not fatal.
func setModemLines(p serial.Port, c PortConfig, log *slog.Logger) {
	if c.DTR != nil {
		if err := p.SetDTR(*c.DTR); err != nil {
			log.Warn("cannot set DTR (the adapter may lack it); going on without", "err", err)
		}
	}
	if c.RTS != nil {
		if err := p.SetRTS(*c.RTS); err != nil {
			log.Warn("cannot set RTS (the adapter may lack it); going on without", "err", err)
		}
	}
}

// logLimiter lets burst lines through, then one per period, counting the
// ones it held back.
type logLimiter struct {
	every time.Duration
	burst int
	n     int
	start time.Time
	held  int
}

func (l *logLimiter) allow(now time.Time) (bool, int) {
	if now.Sub(l.start) >= l.every {
		l.start, l.n = now, 0
	}
	if l.n < l.burst {
		l.n++
		held := l.held
		l.held = 0
		return true, held
	}
	l.held++
	return false, 0
}

// ScannerOptions configure RunScanner.
type ScannerOptions struct {
	Port   PortConfig
	Framer FramerConfig
	// Backoff between reopen attempts (defaults 250ms .. 2s).
	BackoffMin, BackoffMax time.Duration
	Log                    *slog.Logger
	// Frame receives each decoded frame; it runs on the port goroutine.
	Frame func(Frame)
	// Reject is called with the reason of each discarded frame (may be nil).
	Reject func(reason string)
	// State is called on every state change (may be nil).
	State func(s DeviceState, reason string)
	// Raw, when not nil, sees every piece read from the port (monitor).
	Raw func(p []byte, at time.Time)
	// Opened, when not nil, is given the port once open and nil once
	// closed (operator feedback writes to it).
	Opened func(PortHandle)
	// Tap, when not nil, keeps the last frames, raw and decoded.
	Tap *Tap
}

// RunScanner owns one scanner port until ctx is done (see RunPort).
func RunScanner(ctx context.Context, o ScannerOptions) error {
	framer := NewFramer(o.Framer, o.Frame, o.Reject)
	framer.tap = o.Tap
	short := min(framer.cfg.IdleGap, 100*time.Millisecond)
	return RunPort(ctx, PortOptions{
		Port:        o.Port,
		Kind:        "scanner",
		ReadTimeout: short,
		BackoffMin:  o.BackoffMin,
		BackoffMax:  o.BackoffMax,
		Log:         o.Log,
		State:       o.State,
		Opened:      o.Opened,
		Session: func(ctx context.Context, port serial.Port) error {
			framer.Reset()
			var r io.Reader = &idleTimeout{p: port, pending: framer.Pending, short: short, cur: short}
			if o.Raw != nil {
				r = rawReader{r, o.Raw}
			}
			r = &coalescingReader{r: r, d: scannerCoalesce}
			// On cancel, ReadFrames drains what has already arrived.
			return ReadFrames(r, framer, ctx.Done(), time.Now)
		},
	})
}

// Scale result labels counted beside the ParseError reasons.
const (
	ResultOK      = "ok"      // a frame gave a reading
	ResultTimeout = "timeout" // a poll got no answer within the poll timeout
)

// ScaleOptions configure RunScale.
type ScaleOptions struct {
	Port     PortConfig
	Protocol *Protocol
	// Poll asks for each reading (the protocol's Poll request) every
	// PollInterval; otherwise the scale's stream is read (after sending
	// the protocol's Continuous request, if it has one).
	Poll         bool
	PollInterval time.Duration // default 200ms
	PollTimeout  time.Duration // default 1s
	// PollNow, when not nil, asks for a reading at once (a scan is
	// waiting for a weight).
	PollNow                <-chan struct{}
	BackoffMin, BackoffMax time.Duration
	Log                    *slog.Logger
	// Reading receives each reading; it runs on the port goroutine.
	Reading func(Reading)
	// Result is called with ResultOK or the reason of each frame that gave
	// no reading, and ResultTimeout for an unanswered poll (may be nil).
	Result func(result string)
	State  func(s DeviceState, reason string)
	// Raw, when not nil, sees every piece read from the port (monitor).
	Raw func(p []byte, at time.Time)
	// Tap, when not nil, keeps the last frames, raw and decoded.
	Tap *Tap
	now func() time.Time
}

// scannerCoalesce is how long a scanner streaming without pause lets
// bytes gather between reads.
const scannerCoalesce = 10 * time.Millisecond

// scaleCoalesce is how long a scale session lets bytes gather after a read.
const scaleCoalesce = 25 * time.Millisecond

// RunScale owns one scale port until ctx is done (see RunPort).
func RunScale(ctx context.Context, o ScaleOptions) error {
	if o.Protocol == nil {
		return errors.New("scale: no protocol")
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = time.Second
	}
	if o.now == nil {
		o.now = time.Now
	}
	result := func(r string) {
		if o.Result != nil {
			o.Result(r)
		}
	}
	answered := false
	reader := NewScaleReader(o.Protocol, func(r Reading) {
		answered = true
		result(ResultOK)
		if o.Reading != nil {
			o.Reading(r)
		}
	}, func(reason string) {
		answered = true
		result(reason)
	})
	reader.tap = o.Tap
	return RunPort(ctx, PortOptions{
		Port:        o.Port,
		Kind:        "scale",
		ReadTimeout: 20 * time.Millisecond,
		BackoffMin:  o.BackoffMin,
		BackoffMax:  o.BackoffMax,
		Log:         o.Log,
		State:       o.State,
		Session: func(ctx context.Context, port serial.Port) error {
			defer reader.End()
			return scaleSession(ctx, port, o, reader, &answered, result)
		},
	})
}

func scaleSession(ctx context.Context, port serial.Port, o ScaleOptions, reader *ScaleReader, answered *bool, result func(string)) error {
	p := o.Protocol
	if !o.Poll && p.Continuous != nil {
		if _, err := port.Write(p.Continuous); err != nil {
			return err
		}
	}
	buf := make([]byte, 256)
	var nextPoll, deadline time.Time // deadline is zero when no poll is pending
	timeout := time.Duration(-1)
	for {
		now := o.now()
		if ctx.Err() != nil {
			return nil
		}
		if o.Poll {
			pollNow := false
			select {
			case <-o.PollNow:
				pollNow = true
			default:
			}
			if !deadline.IsZero() && *answered {
				deadline = time.Time{}
			}
			if !deadline.IsZero() && now.After(deadline) {
				result(ResultTimeout)
				deadline = time.Time{}
			}
			if deadline.IsZero() && (pollNow || !now.Before(nextPoll)) {
				if _, err := port.Write(p.Poll); err != nil {
					return err
				}
				*answered = false
				deadline = now.Add(o.PollTimeout)
				nextPoll = now.Add(o.PollInterval)
			}
		}
		// Wake up for the next poll, the pending one's deadline, or a
		// poll asked for by a waiting scan (within 50ms); a streaming
		// scale wakes the reader itself.
		wait := idleReadTimeout
		if o.Poll {
			next := nextPoll
			if !deadline.IsZero() {
				next = deadline
			}
			wait = min(50*time.Millisecond, max(next.Sub(now), 5*time.Millisecond))
		}
		if wait != timeout {
			if err := port.SetReadTimeout(wait); err != nil {
				return err
			}
			timeout = wait
		}
		n, err := port.Read(buf)
		if n > 0 {
			at := o.now()
			if o.Raw != nil {
				o.Raw(buf[:n], at)
			}
			reader.Write(buf[:n], at)
		}
		if err != nil {
			return err
		}
		if n > 0 && n < len(buf) && deadline.IsZero() {
			// A scale streams small frames many times a second; reading
			// each as it lands costs a wake-up per frame. Let a few
			// arrive: a weight read 25ms later is as good.
			if !sleep(ctx, scaleCoalesce) {
				return nil
			}
		}
	}
}

// idleReadTimeout is how long a read waits while no partial frame is
// pending: each expiry is a wake-up of an otherwise idle agent, and only
// shutdown waits for it.
const idleReadTimeout = 500 * time.Millisecond

// idleTimeout reads with a short timeout while a frame is pending (the
// idle gap and stale checks need it) and a long one otherwise.
type idleTimeout struct {
	p          serial.Port
	pending    func() bool
	short, cur time.Duration
}

func (t *idleTimeout) Read(b []byte) (int, error) {
	want := idleReadTimeout
	if t.pending() {
		want = t.short
	}
	if want != t.cur {
		if err := t.p.SetReadTimeout(want); err != nil {
			return 0, err
		}
		t.cur = want
	}
	return t.p.Read(b)
}

// coalescingReader reads at once while data comes in isolated bursts (a
// scan), and once reads keep returning data (a device streaming), lets
// bytes gather before each next read: a wake-up per few bytes costs far
// more CPU than the bytes. The gather is sized to the source: it lasts as
// long as the source, at the rate the last read showed, takes to deliver
// gatherBytes, at most d, counting the time since that read. A fast source
// (a pseudo-terminal fed without pause, whose 4 KiB line buffer a fixed d
// would cap at 4 KiB per d) is read again at once or after a short gather;
// a device trickling a few bytes at a time waits the whole d. A human scan
// arrives after a read timeout, so it is never delayed.
type coalescingReader struct {
	r      io.Reader
	d      time.Duration
	streak int           // reads in a row that returned data
	n      int           // bytes the last read returned
	el     time.Duration // how long they took: since the read before returned
	last   time.Time     // when the last read returned
	// For tests: the clock and the wait (nil: time.Now, time.Sleep).
	now   func() time.Time
	sleep func(time.Duration)
}

// gatherBytes is what the gather lets come before a read once the port
// streams: a few dozen codes.
const gatherBytes = 512

func (c *coalescingReader) Read(p []byte) (int, error) {
	now := c.now
	if now == nil {
		now = time.Now
	}
	if w := c.gather(now()); w > 0 {
		if c.sleep != nil {
			c.sleep(w)
		} else {
			time.Sleep(w)
		}
	}
	n, err := c.r.Read(p)
	t := now()
	c.n, c.el, c.last = n, t.Sub(c.last), t
	if n > 0 {
		c.streak++
	} else {
		c.streak = 0
	}
	return n, err
}

// gather is how long to let bytes gather before the next read.
func (c *coalescingReader) gather(now time.Time) time.Duration {
	if c.streak < 2 {
		return 0
	}
	// The last read brought c.n bytes, which came in c.el at most: at that
	// rate, gatherBytes take this long.
	w := min(c.d, time.Duration(int64(c.el)*gatherBytes/int64(c.n)))
	return w - now.Sub(c.last)
}

// rawReader shows each piece read to a monitor.
type rawReader struct {
	r   io.Reader
	raw func([]byte, time.Time)
}

func (r rawReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.raw(p[:n], time.Now())
	}
	return n, err
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
