package devices

import (
	"bytes"
	"io"
	"time"
)

// Frame is one decoded barcode read.
type Frame struct {
	Data string    // the code, without AIM prefix and terminator
	AIM  string    // AIM symbology identifier such as "]C0", or ""
	At   time.Time // when the frame's last byte was read
}

// Reject reasons counted by the framer.
const (
	RejectOverlong = "overlong" // longer than MaxLength: discarded to the next terminator
	RejectEmpty    = "empty"    // nothing left after stripping
)

// FramerConfig selects how a scanner's byte stream is cut into frames.
type FramerConfig struct {
	// Terminator ends a frame; nil or empty frames on IdleGap instead.
	Terminator []byte
	// MaxLength caps a frame's data in bytes (default 256).
	MaxLength int
}

// Framer cuts a scanner's byte stream into frames. It is fed arbitrary
// pieces (a serial read returns whatever has arrived) and calls emit for each
// complete frame and reject for each discarded one. Not safe for concurrent
// use; one port goroutine owns it.
type Framer struct {
	term       []byte
	max        int
	buf        []byte
	discarding bool
	emit       func(Frame)
	reject     func(reason string)
}

// NewFramer returns a framer calling emit and reject (reject may be nil).
func NewFramer(cfg FramerConfig, emit func(Frame), reject func(reason string)) *Framer {
	if cfg.MaxLength <= 0 {
		cfg.MaxLength = 256
	}
	if reject == nil {
		reject = func(string) {}
	}
	return &Framer{
		term:   bytes.Clone(cfg.Terminator),
		max:    cfg.MaxLength,
		buf:    make([]byte, 0, cfg.MaxLength+len(cfg.Terminator)),
		emit:   emit,
		reject: reject,
	}
}

// Write feeds bytes read at time at.
func (f *Framer) Write(p []byte, at time.Time) {
	if len(f.term) == 0 {
		f.appendData(p)
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, f.term[len(f.term)-1])
		if i < 0 {
			f.appendData(p)
			return
		}
		f.appendData(p[:i+1])
		p = p[i+1:]
		if f.discarding {
			// Only the terminator matters while discarding; keep its tail.
			if len(f.buf) >= len(f.term) && bytes.HasSuffix(f.buf, f.term) {
				f.discarding = false
				f.buf = f.buf[:0]
			}
			continue
		}
		if bytes.HasSuffix(f.buf, f.term) {
			f.frame(f.buf[:len(f.buf)-len(f.term)], at)
			f.buf = f.buf[:0]
		}
	}
}

// Idle tells the framer that no byte arrived for the idle gap: without a
// terminator this ends the pending frame; with one, a partial frame is kept.
func (f *Framer) Idle(at time.Time) {
	if len(f.term) > 0 {
		return
	}
	if f.discarding {
		f.discarding = false
		f.buf = f.buf[:0]
		return
	}
	if len(f.buf) > 0 {
		f.frame(f.buf, at)
		f.buf = f.buf[:0]
	}
}

// Reset drops a partial frame (after the port was lost mid-frame).
func (f *Framer) Reset() {
	f.buf = f.buf[:0]
	f.discarding = false
}

// Pending reports whether a partial frame is buffered.
func (f *Framer) Pending() bool { return len(f.buf) > 0 || f.discarding }

func (f *Framer) appendData(p []byte) {
	if f.discarding {
		// Keep only enough bytes to recognise the terminator.
		f.buf = append(f.buf, p...)
		if k := len(f.term); len(f.buf) > k {
			f.buf = append(f.buf[:0], f.buf[len(f.buf)-k:]...)
		}
		return
	}
	f.buf = append(f.buf, p...)
	// The terminator may still be arriving; allow for it before judging.
	if len(f.buf) > f.max+len(f.term) {
		f.reject(RejectOverlong)
		f.discarding = true
		k := len(f.term)
		f.buf = append(f.buf[:0], f.buf[len(f.buf)-k:]...)
	}
}

func (f *Framer) frame(b []byte, at time.Time) {
	b = bytes.Trim(b, "\r\n")
	if len(b) > f.max {
		f.reject(RejectOverlong)
		return
	}
	aim, data := splitAIM(b)
	if len(data) == 0 {
		f.reject(RejectEmpty)
		return
	}
	f.emit(Frame{Data: string(data), AIM: aim, At: at})
}

// splitAIM separates an AIM symbology identifier (ISO/IEC 15424: ']', a
// code character, a modifier character) from the data.
func splitAIM(b []byte) (string, []byte) {
	if len(b) >= 3 && b[0] == ']' && isAlpha(b[1]) && isAlnum(b[2]) {
		return string(b[:3]), b[3:]
	}
	return "", b
}

func isAlpha(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }

// ReadFrames reads r until it returns an error, feeding the framer. A read
// returning 0 bytes and no error (a serial read timeout) counts as idle time;
// when idleGap has passed since the last byte, Idle is called. now is the
// clock. It returns the read error (io.EOF at end of input).
func ReadFrames(r io.Reader, f *Framer, idleGap time.Duration, now func() time.Time) error {
	buf := make([]byte, 512)
	var last time.Time
	for {
		n, err := r.Read(buf)
		t := now()
		if n > 0 {
			f.Write(buf[:n], t)
			last = t
		} else if err == nil && f.Pending() && t.Sub(last) >= idleGap {
			f.Idle(t)
		}
		if err != nil {
			if err == io.EOF {
				f.Idle(t)
			}
			return err
		}
	}
}
