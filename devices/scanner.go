package devices

import (
	"bytes"
	"io"
	"time"
	"unicode/utf8"
)

// Frame is one decoded barcode read.
type Frame struct {
	Data   string    // the code, without prefix, suffix, identifiers and terminator
	AIM    string    // AIM symbology identifier such as "]C0" (sent, or mapped from a Code ID), or ""
	CodeID string    // Honeywell Code ID character when configured and sent, or ""
	At     time.Time // when the frame's last byte was read
}

// Reject reasons counted by the framer.
const (
	RejectOverlong = "overlong" // longer than MaxLength: discarded to the next terminator
	RejectEmpty    = "empty"    // nothing left after stripping
	RejectControl  = "control"  // control characters in the data (wrong baud or parity?)
	RejectUTF8     = "utf8"     // invalid UTF-8 (wrong baud, parity or data bits?)
	RejectStale    = "stale"    // a partial frame never terminated within StaleAfter
)

// RejectReasons lists every reason a scanner frame is discarded.
var RejectReasons = []string{RejectOverlong, RejectEmpty, RejectControl, RejectUTF8, RejectStale}

// Control characters a frame may carry around its data.
const (
	stx = 0x02 // start of text: some scanners frame STX ... ETX
	etx = 0x03 // end of text
	gs  = 0x1D // group separator: GS1 FNC1, kept in the data
)

// FramerConfig selects how a scanner's byte stream is cut into frames.
type FramerConfig struct {
	// Terminator ends a frame; nil or empty frames on IdleGap instead.
	Terminator []byte
	// MaxLength caps a frame's data in bytes, AIM prefix and terminator
	// not counted (default 256).
	MaxLength int
	// IdleGap ends a frame when there is no terminator (default 50ms).
	IdleGap time.Duration
	// StaleAfter drops a partial frame that saw no byte for this long when
	// a terminator is configured (default 1s), so line noise is not glued
	// to the next scan.
	StaleAfter time.Duration
	// StripPrefix and StripSuffix are removed from a frame's data when
	// present: characters the scanner is set up to add around each code.
	StripPrefix, StripSuffix []byte
	// CodeID "honeywell" reads a leading Honeywell Code ID character
	// (when it is one of the known ones) and maps it to an AIM identifier.
	CodeID string
	// StripControl removes control characters (other than GS, kept for
	// GS1) instead of rejecting the frame.
	StripControl bool
}

// slack is how many bytes beyond MaxLength a raw frame may hold before it
// is judged overlong: an AIM prefix, an STX, and a stray CR/LF around it.
const slack = 3 + 1 + 2

// Framer cuts a scanner's byte stream into frames. It is fed arbitrary
// pieces (a serial read returns whatever has arrived) and calls emit for each
// complete frame and reject for each discarded one. Not safe for concurrent
// use; one port goroutine owns it.
type Framer struct {
	cfg        FramerConfig
	term       []byte
	buf        []byte
	discarding bool
	last       time.Time // when the last byte arrived
	emit       func(Frame)
	reject     func(reason string)
	tap        *Tap   // nil: no tap
	raw        []byte // the raw bytes of the frame being judged, for the tap
}

// NewFramer returns a framer calling emit and reject (reject may be nil).
func NewFramer(cfg FramerConfig, emit func(Frame), reject func(reason string)) *Framer {
	if cfg.MaxLength <= 0 {
		cfg.MaxLength = 256
	}
	if cfg.IdleGap <= 0 {
		cfg.IdleGap = 50 * time.Millisecond
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = time.Second
	}
	if reject == nil {
		reject = func(string) {}
	}
	return &Framer{
		cfg:    cfg,
		term:   bytes.Clone(cfg.Terminator),
		buf:    make([]byte, 0, cfg.MaxLength+len(cfg.Terminator)+slack),
		emit:   emit,
		reject: reject,
	}
}

// Write feeds bytes read at time at.
func (f *Framer) Write(p []byte, at time.Time) {
	if len(p) == 0 {
		return
	}
	f.last = at
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
		if !bytes.HasSuffix(f.buf, f.term) {
			continue
		}
		if f.discarding {
			f.discarding = false
		} else {
			f.raw = f.buf
			f.frame(f.buf[:len(f.buf)-len(f.term)], at)
		}
		f.buf = f.buf[:0]
	}
}

// Idle tells the framer that no byte arrived since the last Write, at time
// now. Without a terminator, an idle gap ends the pending frame; with one,
// a partial frame idle for StaleAfter is dropped.
func (f *Framer) Idle(now time.Time) {
	if !f.Pending() {
		return
	}
	idle := now.Sub(f.last)
	switch {
	case len(f.term) == 0 && idle >= f.cfg.IdleGap:
		if !f.discarding {
			f.raw = f.buf
			f.frame(f.buf, f.last)
		}
		f.Reset()
	case len(f.term) > 0 && idle >= f.cfg.StaleAfter:
		if !f.discarding {
			f.tap.Reject(f.buf, f.last, RejectStale)
			f.reject(RejectStale)
		}
		f.Reset()
	}
}

// End flushes at the end of the input: a frame without terminator ends
// here; a partial frame with a terminator configured is dropped silently
// (the device went away mid-frame).
func (f *Framer) End() {
	if len(f.term) == 0 && len(f.buf) > 0 && !f.discarding {
		f.raw = f.buf
		f.frame(f.buf, f.last)
	}
	f.Reset()
}

// Reset drops a partial frame (after the port was lost mid-frame).
func (f *Framer) Reset() {
	f.buf = f.buf[:0]
	f.discarding = false
}

// Pending reports whether a partial frame is buffered.
func (f *Framer) Pending() bool { return len(f.buf) > 0 || f.discarding }

func (f *Framer) appendData(p []byte) {
	f.buf = append(f.buf, p...)
	k := len(f.term)
	if f.discarding {
		// Keep only enough bytes to recognise the terminator.
		if len(f.buf) > k {
			f.buf = append(f.buf[:0], f.buf[len(f.buf)-k:]...)
		}
		return
	}
	if len(f.buf) > f.cfg.MaxLength+k+slack {
		f.tap.Reject(f.buf, f.last, RejectOverlong)
		f.reject(RejectOverlong)
		f.discarding = true
		f.buf = append(f.buf[:0], f.buf[len(f.buf)-k:]...)
	}
}

func (f *Framer) frame(b []byte, at time.Time) {
	b = bytes.Trim(b, "\r\n")
	b = bytes.TrimPrefix(b, []byte{stx})
	b = bytes.TrimSuffix(b, []byte{etx})
	if len(f.cfg.StripPrefix) > 0 {
		b = bytes.TrimPrefix(b, f.cfg.StripPrefix)
	}
	if len(f.cfg.StripSuffix) > 0 {
		b = bytes.TrimSuffix(b, f.cfg.StripSuffix)
	}
	var codeID string
	if f.cfg.CodeID == CodeIDHoneywell && len(b) > 1 {
		if aim, id, ok := honeywellID(b[0]); ok {
			codeID = id
			b = b[1:]
			if a, data := splitAIM(b); a != "" {
				aim, b = a, data // both identifiers sent: the AIM one is exact
			}
			f.emitData(b, aim, codeID, at)
			return
		}
	}
	aim, data := splitAIM(b)
	f.emitData(data, aim, codeID, at)
}

func (f *Framer) emitData(data []byte, aim, codeID string, at time.Time) {
	if f.cfg.StripControl {
		data = stripControl(data)
	}
	reason := ""
	switch {
	case len(data) == 0:
		reason = RejectEmpty
	case len(data) > f.cfg.MaxLength:
		reason = RejectOverlong
	case hasControl(data):
		reason = RejectControl
	case !utf8.Valid(data):
		reason = RejectUTF8
	default:
		fr := Frame{Data: string(data), AIM: aim, CodeID: codeID, At: at}
		f.tap.Code(f.raw, at, fr.Data, aim)
		f.emit(fr)
		return
	}
	f.tap.Reject(f.raw, at, reason)
	f.reject(reason)
}

// hasControl reports whether data holds control characters other than GS
// (GS1 separators).
func hasControl(data []byte) bool {
	for _, c := range data {
		if (c < 0x20 && c != gs) || c == 0x7F {
			return true
		}
	}
	return false
}

// stripControl removes control characters other than GS, in place.
func stripControl(data []byte) []byte {
	if !hasControl(data) {
		return data
	}
	out := data[:0]
	for _, c := range data {
		if (c >= 0x20 || c == gs) && c != 0x7F {
			out = append(out, c)
		}
	}
	return out
}

// CodeIDHoneywell selects Honeywell single-character Code IDs.
const CodeIDHoneywell = "honeywell"

// honeywellID maps a Honeywell Code ID character to the AIM identifier of
// the same symbology (Honeywell's symbology charts list both).
func honeywellID(c byte) (aim, id string, ok bool) {
	switch c {
	case 'j':
		return "]C0", "j", true // Code 128
	case 'I':
		return "]C1", "I", true // GS1-128
	case 'd':
		return "]E0", "d", true // EAN-13
	case 'D':
		return "]E4", "D", true // EAN-8
	case 'c':
		return "]E0", "c", true // UPC-A
	case 'E':
		return "]E0", "E", true // UPC-E
	case 'b':
		return "]A0", "b", true // Code 39
	case 'e':
		return "]I0", "e", true // Interleaved 2 of 5
	case 'y':
		return "]e0", "y", true // GS1 DataBar
	case 'r':
		return "]L0", "r", true // PDF417
	case 'z':
		return "]z0", "z", true // Aztec
	case 'w':
		return "]d1", "w", true // Data Matrix
	case 's':
		return "]Q1", "s", true // QR Code
	}
	return "", "", false
}

// splitAIM separates an AIM symbology identifier (ISO/IEC 15424: ']', a
// code character, a modifier character) from the data.
func splitAIM(b []byte) (string, []byte) {
	if len(b) >= 3 && b[0] == ']' && isAlpha(b[1]) && isAlnum(b[2]) {
		return aimString(b[:3]), b[3:]
	}
	return "", b
}

// aimString returns the common identifiers without allocating.
func aimString(b []byte) string {
	switch string(b) {
	case "]C0":
		return "]C0"
	case "]C1":
		return "]C1"
	case "]E0":
		return "]E0"
	case "]E4":
		return "]E4"
	case "]I1":
		return "]I1"
	case "]d1":
		return "]d1"
	case "]d2":
		return "]d2"
	case "]Q1":
		return "]Q1"
	case "]Q3":
		return "]Q3"
	case "]e0":
		return "]e0"
	}
	return string(b)
}

func isAlpha(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }

// ReadFrames reads r until it returns an error or stop is closed, feeding
// the framer. A read returning 0 bytes and no error (a serial read timeout)
// lets the framer judge idle time. After stop is closed it keeps reading
// until the input is quiet (a timeout, or 200ms), so bytes already received
// are not thrown away, then returns nil. It returns the read error
// otherwise (io.EOF at end of input).
func ReadFrames(r io.Reader, f *Framer, stop <-chan struct{}, now func() time.Time) error {
	buf := make([]byte, 4096)
	var stopAt time.Time
	for {
		n, err := r.Read(buf)
		t := now()
		if n > 0 {
			f.Write(buf[:n], t)
		} else if err == nil {
			f.Idle(t)
		}
		if err != nil {
			f.End()
			return err
		}
		if stopAt.IsZero() {
			select {
			case <-stop:
				stopAt = t
			default:
			}
		}
		if !stopAt.IsZero() && (n == 0 || t.Sub(stopAt) > 200*time.Millisecond) {
			f.End()
			return nil
		}
	}
}
