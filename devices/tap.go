package devices

import (
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// Tap keeps the last frames a device sent, raw, with what the decoder made
// of them: the serial tap of the technician console and "scanagent tap".
// It has a fixed size, allocated once: recording a frame copies at most
// TapFrameBytes bytes into a slot under a mutex and allocates nothing.
// The port goroutine records; any goroutine may read. The zero value is
// not usable: make one with NewTap. A nil *Tap records nothing.
type Tap struct {
	mu    sync.Mutex
	slots []tapSlot // a power of two of them
	mask  uint64    // len(slots)-1
	next  uint64    // the seq the next frame gets (the first is 1)
}

// TapFrameBytes is how many bytes of a frame the tap keeps; longer frames
// are kept truncated (TapFrame.Len says how long they were).
const TapFrameBytes = 320

// DefaultTapFrames is the number of frames a tap keeps by default.
const DefaultTapFrames = 64

type tapSlot struct {
	seq    uint64
	at     int64 // Unix nanoseconds: no pointer to write
	n      int   // bytes of the frame (may exceed TapFrameBytes)
	raw    [TapFrameBytes]byte
	code   string // scanner: the decoded code
	aim    string
	weight Reading // scale: the reading
	isW    bool
	reason string // the reject reason ("" when decoded)
}

// TapFrame is one frame as the tap shows it.
type TapFrame struct {
	Seq       uint64    `json:"seq"`
	At        time.Time `json:"at"`
	Len       int       `json:"len"`                 // the frame's bytes, terminator included
	Truncated bool      `json:"truncated,omitempty"` // only the first TapFrameBytes are shown
	Hex       string    `json:"hex"`                 // "52 52 34 ..."
	Text      string    `json:"text"`                // printable, control bytes as <CR>, <LF>, <02> ...
	// What the decoder made of it: a code (scanner), a weight (scale) or
	// the reason it was rejected.
	Code   string `json:"code,omitempty"`
	AIM    string `json:"aim,omitempty"`
	Weight string `json:"weight,omitempty"` // value and unit, e.g. "1.234 kg"
	Grams  *int64 `json:"grams,omitempty"`
	Stable *bool  `json:"stable,omitempty"`
	Reject string `json:"reject,omitempty"`
}

// NewTap returns a tap keeping the last n frames, rounded up to a power
// of two (DefaultTapFrames when n <= 0).
func NewTap(n int) *Tap {
	if n <= 0 {
		n = DefaultTapFrames
	}
	size := 1
	for size < n {
		size *= 2
	}
	return &Tap{slots: make([]tapSlot, size), mask: uint64(size - 1), next: 1}
}

// slot takes the next slot and fills its common part; t.mu is held.
func (t *Tap) slot(raw []byte, at time.Time) *tapSlot {
	s := &t.slots[t.next&t.mask]
	s.seq = t.next
	t.next++
	s.at = at.UnixNano()
	s.n = len(raw)
	copy(s.raw[:], raw)
	return s
}

// Code records a scanner frame decoded into code (with its AIM
// identifier).
func (t *Tap) Code(raw []byte, at time.Time, code, aim string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	s := t.slot(raw, at)
	s.code, s.aim, s.isW, s.reason = code, aim, false, ""
	t.mu.Unlock()
}

// Weight records a scale frame decoded into r.
func (t *Tap) Weight(raw []byte, r Reading) {
	if t == nil {
		return
	}
	t.mu.Lock()
	s := t.slot(raw, r.At)
	s.code, s.aim, s.weight, s.isW, s.reason = "", "", r, true, ""
	t.mu.Unlock()
}

// Reject records a frame the decoder rejected, and why.
func (t *Tap) Reject(raw []byte, at time.Time, reason string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	s := t.slot(raw, at)
	s.code, s.aim, s.isW, s.reason = "", "", false, reason
	t.mu.Unlock()
}

// Last is the seq of the latest frame recorded (0: none yet).
func (t *Tap) Last() uint64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next - 1
}

// Since returns the frames kept whose seq is above after, oldest first
// (at most the ring's size: older ones are gone).
func (t *Tap) Since(after uint64) []TapFrame {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	n := uint64(len(t.slots))
	first := max(after+1, t.next-min(t.next-1, n))
	held := make([]tapSlot, 0, t.next-min(first, t.next))
	for seq := first; seq < t.next; seq++ {
		held = append(held, t.slots[seq&t.mask])
	}
	t.mu.Unlock()
	out := make([]TapFrame, len(held))
	for i := range held {
		out[i] = held[i].frame()
	}
	return out
}

func (s *tapSlot) frame() TapFrame {
	raw := s.raw[:min(s.n, TapFrameBytes)]
	f := TapFrame{Seq: s.seq, At: time.Unix(0, s.at), Len: s.n, Truncated: s.n > TapFrameBytes, Hex: hexSpaced(raw), Text: Printable(raw),
		Code: s.code, AIM: s.aim, Reject: s.reason}
	if s.isW {
		f.Weight = s.weight.Value.String() + " " + s.weight.Unit
		g, st := s.weight.Grams, s.weight.Stable
		f.Grams, f.Stable = &g, &st
		if s.weight.Overload {
			f.Weight = "overload"
		} else if s.weight.Underload {
			f.Weight = "underload"
		}
	}
	return f
}

func hexSpaced(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b) * 3)
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(hex.EncodeToString([]byte{c}))
	}
	return sb.String()
}

// Printable shows bytes as text: printable ASCII as is, CR and LF and the
// common framing bytes by name (<CR>, <LF>, <STX>, <ETX>, <GS>), any other
// byte as <hh>.
func Printable(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == '\r':
			sb.WriteString("<CR>")
		case c == '\n':
			sb.WriteString("<LF>")
		case c == stx:
			sb.WriteString("<STX>")
		case c == etx:
			sb.WriteString("<ETX>")
		case c == gs:
			sb.WriteString("<GS>")
		case c >= 0x20 && c < 0x7F:
			sb.WriteByte(c)
		default:
			sb.WriteString("<" + hex.EncodeToString([]byte{c}) + ">")
		}
	}
	return sb.String()
}
