package devices

import "time"

// ScaleReader cuts a scale's byte stream into readings with its protocol.
// It is fed arbitrary pieces, like Framer, and keeps at most a few frames'
// worth of bytes whatever it is fed. Not safe for concurrent use.
type ScaleReader struct {
	p      *Protocol
	buf    []byte
	emit   func(Reading)
	reject func(reason string)
	tap    *Tap // nil: no tap
}

// Result labels for frames that gave no reading, beyond the ParseError
// reasons.
const (
	ResultTruncated = "truncated" // a partial frame when the port was lost
)

// NewScaleReader returns a reader calling emit with each reading and
// reject with the reason of each frame that gave none (reject may be nil).
func NewScaleReader(p *Protocol, emit func(Reading), reject func(reason string)) *ScaleReader {
	if reject == nil {
		reject = func(string) {}
	}
	return &ScaleReader{p: p, buf: make([]byte, 0, 2*p.MaxFrame+512), emit: emit, reject: reject}
}

// Write feeds bytes read at time at.
func (s *ScaleReader) Write(p []byte, at time.Time) {
	for len(p) > 0 {
		// Never grow: take what fits, cut frames, repeat.
		n := min(len(p), cap(s.buf)-len(s.buf))
		s.buf = append(s.buf, p[:n]...)
		p = p[n:]
		s.cut(at)
	}
}

func (s *ScaleReader) cut(at time.Time) {
	data := s.buf
	for len(data) > 0 {
		adv, tok, err := s.p.Split(data, false)
		if err != nil || adv <= 0 {
			break
		}
		data = data[adv:]
		if len(tok) == 0 {
			continue // an empty line between frames
		}
		r, err := s.p.Parse(tok)
		if err != nil {
			s.tap.Reject(tok, at, reasonOf(err))
			s.reject(reasonOf(err))
			continue
		}
		r.At = at
		s.tap.Weight(tok, r)
		s.emit(r)
	}
	if len(data) >= cap(s.buf) {
		// The splitter wants more than the buffer holds: cannot happen
		// with a correct MaxFrame; drop rather than grow.
		s.tap.Reject(data, at, ErrGarbage.Reason)
		s.reject(ErrGarbage.Reason)
		data = data[:0]
	}
	s.buf = append(s.buf[:0], data...)
}

// End drops a partial frame (the port was lost or closed mid-frame).
func (s *ScaleReader) End() {
	if len(s.buf) > 0 {
		s.reject(ResultTruncated)
	}
	s.buf = s.buf[:0]
}

// Pending reports whether a partial frame is buffered.
func (s *ScaleReader) Pending() bool { return len(s.buf) > 0 }

func reasonOf(err error) string {
	if pe, ok := err.(*ParseError); ok {
		return pe.Reason
	}
	return "error"
}
