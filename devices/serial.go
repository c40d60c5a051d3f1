// Package devices owns everything that touches a serial port: opening and
// supervising ports (reopen with backoff after unplug or failure), cutting a
// scanner's byte stream into barcode frames, and the simulators used by the
// demo and tests. Parsers here are pure; port I/O stays in the supervisor.
//
// Imported by agent (stations) and cmd/scanagent.
package devices

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"time"

	"go.bug.st/serial"
)

// PortConfig is a serial port path and its line settings.
type PortConfig struct {
	Path     string
	Baud     int    // default 9600
	DataBits int    // 5..8, default 8
	Parity   string // none|odd|even|mark|space
	StopBits string // "1" | "1.5" | "2"
}

// Mode converts the settings to the serial library's mode.
func (c PortConfig) Mode() (*serial.Mode, error) {
	m := &serial.Mode{BaudRate: c.Baud, DataBits: c.DataBits}
	if m.BaudRate == 0 {
		m.BaudRate = 9600
	}
	if m.DataBits == 0 {
		m.DataBits = 8
	}
	switch c.Parity {
	case "", "none":
		m.Parity = serial.NoParity
	case "odd":
		m.Parity = serial.OddParity
	case "even":
		m.Parity = serial.EvenParity
	case "mark":
		m.Parity = serial.MarkParity
	case "space":
		m.Parity = serial.SpaceParity
	default:
		return nil, fmt.Errorf("unknown parity %q", c.Parity)
	}
	switch c.StopBits {
	case "", "1":
		m.StopBits = serial.OneStopBit
	case "1.5":
		m.StopBits = serial.OnePointFiveStopBits
	case "2":
		m.StopBits = serial.TwoStopBits
	default:
		return nil, fmt.Errorf("unknown stop bits %q", c.StopBits)
	}
	return m, nil
}

// DeviceState is a port's state as published on P/devices/...
type DeviceState string

const (
	StateConnected    DeviceState = "connected"
	StateDisconnected DeviceState = "disconnected"
	StateError        DeviceState = "error"
)

// OpenPort opens the port with its settings and a read timeout. Modem
// control lines are left alone: adapters and pseudo-terminals that lack them
// must not fail here.
func OpenPort(c PortConfig, readTimeout time.Duration) (serial.Port, error) {
	mode, err := c.Mode()
	if err != nil {
		return nil, fmt.Errorf("serial port %s: %w", c.Path, err)
	}
	p, err := serial.Open(c.Path, mode)
	if err != nil {
		return nil, fmt.Errorf("serial port %s: %s", c.Path, Explain(err))
	}
	if err := p.SetReadTimeout(readTimeout); err != nil {
		p.Close()
		return nil, fmt.Errorf("serial port %s: set read timeout: %w", c.Path, err)
	}
	return p, nil
}

// Explain turns a port error into a message a technician can act on.
func Explain(err error) string {
	var pe *serial.PortError
	if errors.As(err, &pe) {
		switch pe.Code() {
		case serial.PortBusy:
			return "port busy: another program has it open (stop it, or check for a second agent)"
		case serial.PermissionDenied:
			return "permission denied: add the agent's user to the dialout group (usermod -aG dialout USER)"
		case serial.PortNotFound:
			return "port not found: check the cable and the name (ls /dev/serial/by-id)"
		case serial.InvalidSerialPort:
			return "not a serial port: " + pe.Error()
		case serial.PortClosed:
			return "port closed (device unplugged?)"
		}
		return pe.Error()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "port not found: check the cable and the name (ls /dev/serial/by-id)"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied: add the agent's user to the dialout group (usermod -aG dialout USER)"
	case errors.Is(err, syscall.EIO):
		return "I/O error (device unplugged?)"
	}
	return err.Error()
}

// Backoff is capped exponential backoff with jitter: the ceiling doubles
// from Min up to Max.
type Backoff struct {
	Min, Max time.Duration
	// FullJitter draws each delay from [0, ceiling] (for many clients of one
	// server); otherwise from [Min/2, ceiling].
	FullJitter bool
	n          int
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	d := b.Min << min(b.n, 30)
	if d > b.Max || d <= 0 {
		d = b.Max
	} else {
		b.n++
	}
	lo := b.Min / 2
	if b.FullJitter {
		lo = 0
	}
	if d <= lo {
		return d
	}
	return lo + rand.N(d-lo+1)
}

// Reset starts over from Min.
func (b *Backoff) Reset() { b.n = 0 }

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
}

// RunScanner owns one scanner port until ctx is done: it opens the port,
// reads frames, and after any error closes it and reopens it by its path
// with backoff. It never gives up; it returns nil when ctx is cancelled.
func RunScanner(ctx context.Context, o ScannerOptions) error {
	if o.BackoffMin <= 0 {
		o.BackoffMin = 250 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		// A local device path costs nothing to probe, and a replugged
		// scanner should be read again within a couple of seconds.
		o.BackoffMax = 2 * time.Second
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
	framer := NewFramer(o.Framer, o.Frame, o.Reject)
	readTimeout := min(framer.cfg.IdleGap, 100*time.Millisecond)
	bo := Backoff{Min: o.BackoffMin, Max: o.BackoffMax}
	var lastErr string
	for ctx.Err() == nil {
		port, err := OpenPort(o.Port, readTimeout)
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				log.Warn("scanner port unavailable; retrying", "err", msg)
				state(StateDisconnected, msg)
				lastErr = msg
			}
			if !sleep(ctx, bo.Next()) {
				break
			}
			continue
		}
		log.Info("scanner port open", "baud", o.Port.Baud)
		state(StateConnected, "")
		lastErr = ""
		bo.Reset()
		// On cancel, ReadFrames drains what has already arrived, then returns.
		err = ReadFrames(port, framer, ctx.Done(), time.Now)
		port.Close()
		if err == nil || ctx.Err() != nil {
			break
		}
		reason := Explain(err)
		log.Warn("scanner port lost; reopening", "err", reason)
		state(StateDisconnected, reason)
		if !sleep(ctx, bo.Next()) {
			break
		}
	}
	state(StateDisconnected, "stopped")
	return nil
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
