package station

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/internal/ratelog"
	"github.com/scanagent/scanagent/devices"
)

// feedback tells the operator about a read through the scanner: its
// bad-read (and optionally good-read) command, or a pulse on a modem line
// of its port driving a lamp or buzzer. Signals are queued and written by
// the feedback goroutine, so a slow or absent port never delays a scan.
type feedback struct {
	cfg  config.Feedback
	good []byte // command of a good read, nil for none
	bad  []byte // command of a bad read, nil for a line pulse
	log  *slog.Logger
	ch   chan bool // true: good read

	n *Counts // counts signals: good, bad, dropped, no_port, error

	mu     sync.Mutex
	port   devices.PortHandle
	errLog ratelog.Limiter
}

func newFeedback(cfg config.Feedback, log *slog.Logger, n *Counts) *feedback {
	f := &feedback{cfg: cfg, log: log.With("device", "scanner"), ch: make(chan bool, 64),
		n: n, errLog: ratelog.Limiter{Every: 30 * time.Second}}
	switch cfg.Protocol {
	case "honeywell":
		// Host ACK: application work group, ESC, command, comma.
		f.good = fmt.Appendf(nil, "%d\x1b7,", cfg.Group)
		f.bad = fmt.Appendf(nil, "%d\x1b8,", cfg.Group)
	case "zebra":
		f.good = ssiBeep(byte(cfg.BeepGood))
		f.bad = ssiBeep(byte(cfg.BeepBad))
	case "custom":
		if cfg.Good != "" {
			f.good = []byte(cfg.Good)
		}
		if cfg.Bad != "" {
			f.bad = []byte(cfg.Bad)
		}
	}
	if !cfg.GoodRead {
		f.good = nil
	}
	return f
}

// ssiBeep is a Zebra SSI BEEP command: length, opcode 0xE6, source 0x04
// (host), status 0, the beep code, then the 16-bit two's complement of the
// sum of those bytes, high byte first.
func ssiBeep(code byte) []byte {
	p := []byte{0x05, 0xE6, 0x04, 0x00, code}
	var sum uint16
	for _, b := range p {
		sum += uint16(b)
	}
	ck := -sum
	return append(p, byte(ck>>8), byte(ck))
}

// setPort is given the scanner's port when it opens, nil when it closes.
func (f *feedback) setPort(p devices.PortHandle) {
	f.mu.Lock()
	f.port = p
	f.mu.Unlock()
}

// signal queues a good or bad read signal; it never blocks.
func (f *feedback) signal(good bool) {
	if good && f.good == nil {
		return
	}
	select {
	case f.ch <- good:
	default:
		f.count("dropped")
	}
}

func (f *feedback) count(k string) { f.n.add(f.n.feedback, k) }

// run writes queued signals until ctx is done.
func (f *feedback) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case good := <-f.ch:
			f.send(ctx, good)
		}
	}
}

func (f *feedback) send(ctx context.Context, good bool) {
	f.mu.Lock()
	p := f.port
	f.mu.Unlock()
	if p == nil {
		f.count("no_port")
		return
	}
	var err error
	switch {
	case f.cfg.Protocol == "line":
		if good {
			return
		}
		err = f.pulse(ctx, p)
	case good:
		_, err = p.Write(f.good)
	default:
		_, err = p.Write(f.bad)
	}
	if err != nil {
		f.count("error")
		f.mu.Lock()
		ok, held := f.errLog.Allow("feedback", time.Now())
		f.mu.Unlock()
		if ok {
			f.log.Warn("operator feedback not sent", "protocol", f.cfg.Protocol, "err", err, "similar_suppressed", held,
				"hint", "modem lines need an adapter that has them; commands need the scanner's host-command mode")
		}
		return
	}
	if good {
		f.count("good")
	} else {
		f.count("bad")
	}
}

// pulse raises the configured modem line for the pulse time.
func (f *feedback) pulse(ctx context.Context, p devices.PortHandle) error {
	set := p.SetRTS
	if f.cfg.Line == "dtr" {
		set = p.SetDTR
	}
	if err := set(true); err != nil {
		return err
	}
	t := time.NewTimer(f.cfg.Pulse.D())
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return set(false)
}
