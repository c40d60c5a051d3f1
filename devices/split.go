package devices

import (
	"bufio"
	"bytes"
)

// splitLines cuts at LF, dropping a CR before it. Input with no LF within
// max bytes is returned as one token (garbage for the parser).
func splitLines(max int) bufio.SplitFunc {
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if len(data) == 0 {
			return 0, nil, nil
		}
		i := bytes.IndexByte(data, '\n')
		switch {
		case i >= 0 && i <= max:
			return i + 1, bytes.TrimSuffix(data[:i], []byte{'\r'}), nil
		case i > max || len(data) > max:
			return max, data[:max], nil
		case atEOF:
			return len(data), data, nil
		}
		return 0, nil, nil
	}
}

// splitFramed cuts frames that begin with start and end with end (both
// kept in the token). Bytes before a start are returned as a token of their
// own. When nested is false, a second start before the end means the first
// frame was cut short: it becomes a token of its own up to that start.
func splitFramed(start, end byte, max int, nested bool) bufio.SplitFunc {
	return func(data []byte, atEOF bool) (int, []byte, error) {
		if len(data) == 0 {
			return 0, nil, nil
		}
		if data[0] != start {
			return skipTo(data, start, max, atEOF)
		}
		// Decide on the first max bytes only, so the cut does not depend on
		// how the stream was fragmented.
		w := data[:min(len(data), max)]
		j := bytes.IndexByte(w[1:], end) + 1 // index of end, or 0
		if !nested {
			lim := len(w)
			if j > 0 {
				lim = j
			}
			if k := bytes.IndexByte(w[1:lim], start); k >= 0 {
				return k + 1, data[:k+1], nil // a frame cut short
			}
		}
		switch {
		case j > 0:
			return j + 1, data[:j+1], nil
		case len(data) >= max:
			return max, data[:max], nil
		case atEOF:
			return len(data), data, nil
		}
		return 0, nil, nil
	}
}

// printable reports whether b holds only printable ASCII (space to ~).
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7E {
			return false
		}
	}
	return true
}

// field returns the next space-separated field of b and the rest.
func field(b []byte) ([]byte, []byte) {
	b = bytes.TrimLeft(b, " ")
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i:]
}

// splitWeightUnit separates a weight field and its unit when they are
// written together ("0012.34kg", "+  4.876kg", "  0013.5 kg"): the unit is
// the trailing run of letters.
func splitWeightUnit(b []byte) (weight, unit []byte) {
	b = bytes.TrimRight(b, " ")
	i := len(b)
	for i > 0 && isAlpha(b[i-1]) {
		i--
	}
	return b[:i], b[i:]
}

// skipTo returns the bytes before the next start byte as one garbage token,
// so that a run of noise counts the same however it was fragmented: it
// waits for a start byte, max bytes, or the end of input.
func skipTo(data []byte, start byte, max int, atEOF bool) (int, []byte, error) {
	i := bytes.IndexByte(data, start)
	switch {
	case i >= 0 && i <= max:
		return i, data[:i], nil
	case i > max || len(data) >= max:
		return max, data[:max], nil
	case atEOF:
		return len(data), data, nil
	}
	return 0, nil, nil
}
