package devices

import (
	"bufio"
	"bytes"
	"time"
)

// Reading is one weight a scale reported. It is a plain value: parsing a
// frame into a Reading does not allocate.
type Reading struct {
	Value     Decimal   // the number as the scale sent it, sign and decimals kept
	Grams     int64     // Value converted to whole grams (rounded half away from zero)
	Unit      string    // "g", "kg", "t", "lb" or "oz"
	Stable    bool      // the scale reported no motion
	Overload  bool      // over capacity: Value is not a weight
	Underload bool      // under zero range: Value is not a weight
	Basis     string    // "gross", "net", or "" when the protocol does not say
	At        time.Time // when the frame's last byte was read (set by the port reader)
}

// Valid reports whether the reading carries a weight (neither over- nor
// underloaded).
func (r Reading) Valid() bool { return !r.Overload && !r.Underload && r.Value.n > 0 }

// Weighing basis values.
const (
	BasisGross = "gross"
	BasisNet   = "net"
)

// Decimal is a decimal number as a scale sent it ("-12.340"), held without
// allocation. The zero value is empty (no number).
type Decimal struct {
	b [maxDecimal]byte
	n uint8
}

// maxDecimal bounds a weight's digits: scales send at most 8 significant
// digits, and conversion to grams must not overflow an int64.
const maxDecimal = 12

// String returns the number, e.g. "12.34" or "-0.5"; "" when empty.
func (d Decimal) String() string { return string(d.b[:d.n]) }

// AppendTo appends the number to b.
func (d *Decimal) AppendTo(b []byte) []byte { return append(b, d.b[:d.n]...) }

// IsZero reports whether d holds no number.
func (d Decimal) IsZero() bool { return d.n == 0 }

// Parse errors. Each is a *ParseError carrying a reason used as a counter
// label; they are preallocated so that a bad frame costs no allocation.
var (
	ErrGarbage  = &ParseError{"garbage"}   // bytes that are not a frame of this protocol (wrong baud or protocol?)
	ErrChecksum = &ParseError{"checksum"}  // a frame whose checksum does not match
	ErrFormat   = &ParseError{"format"}    // a frame of this protocol with a malformed field
	ErrUnit     = &ParseError{"unit"}      // a unit this agent cannot convert to grams
	ErrDevice   = &ParseError{"device"}    // the scale reported an error (syntax, logical, hardware)
	ErrNoWeight = &ParseError{"no_weight"} // a valid answer carrying no weight (an acknowledgement)
)

// ParseError is why a scale frame gave no reading.
type ParseError struct{ Reason string }

func (e *ParseError) Error() string { return "scale frame: " + e.Reason }

// Protocol is one scale protocol: how its byte stream is cut into frames and
// how a frame becomes a reading.
type Protocol struct {
	Name string
	// Split cuts the stream into frames. Bytes that cannot start a frame
	// are returned as a token of their own, which Parse rejects as garbage,
	// so every byte read is accounted for.
	Split bufio.SplitFunc
	// Parse turns one frame into a reading. It is pure and does not
	// allocate.
	Parse func(frame []byte) (Reading, error)
	// Poll is the request for one reading, nil for a protocol that only
	// streams.
	Poll []byte
	// Continuous, when not nil, is sent once after the port opens to make
	// a poll protocol stream on its own (MT-SICS SIR).
	Continuous []byte
	// Streams reports whether the scale sends readings unasked by default.
	Streams bool
	// MaxFrame bounds a frame: longer input is garbage.
	MaxFrame int
}

// Protocols lists every supported scale protocol, by config name.
func Protocols() []*Protocol {
	return []*Protocol{mtSICS(), toledo(), sma(), nci(), cas(), ohaus()}
}

// LookupProtocol returns the protocol with the given config name, or nil.
func LookupProtocol(name string) *Protocol {
	for _, p := range Protocols() {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// ProtocolNames lists the config names of all protocols.
func ProtocolNames() []string {
	var names []string
	for _, p := range Protocols() {
		names = append(names, p.Name)
	}
	return names
}

// Units and their size in grams as a fraction num/den.
var units = [...]struct {
	name     string
	num, den int64
}{
	{"g", 1, 1},
	{"kg", 1000, 1},
	{"t", 1000000, 1},
	{"lb", 45359237, 100000},     // 453.59237 g, exact by definition
	{"oz", 226796185, 8000000},   // 28.349523125 g = lb/16
	{"mg", 1, 1000},              // laboratory balances (MT-SICS)
	{"ozt", 311034768, 10000000}, // troy ounce 31.1034768 g
}

// unitOf returns the canonical name and index of a unit field, which may
// be padded with spaces or upper-case; ok is false for an unknown unit.
func unitOf(f []byte) (int, bool) {
	f = bytes.TrimSpace(f)
	if len(f) == 0 || len(f) > 3 {
		return 0, false
	}
	var lower [3]byte
	for i, c := range f {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	l := lower[:len(f)]
	for i, u := range units {
		if string(l) == u.name {
			return i, true
		}
	}
	switch string(l) {
	case "lbs":
		return 3, true
	case "kgs":
		return 1, true
	}
	return 0, false
}

// setWeight parses a weight field (spaces, an optional sign, digits and at
// most one decimal point) into r.Value and, with unit index u, r.Grams.
func setWeight(r *Reading, field []byte, u int) error {
	field = bytes.TrimSpace(field)
	neg := false
	if len(field) > 0 && (field[0] == '-' || field[0] == '+') {
		neg = field[0] == '-'
		field = bytes.TrimLeft(field[1:], " ")
	}
	if len(field) == 0 {
		return ErrFormat
	}
	var mant, scale int64 = 0, 1
	digits, point := 0, false
	for _, c := range field {
		switch {
		case '0' <= c && c <= '9':
			if digits == 0 && c == '0' && !point {
				// leading zeros do not count towards the digit limit
			} else {
				digits++
			}
			mant = mant*10 + int64(c-'0')
			if point {
				scale *= 10
			}
		case (c == '.' || c == ',') && !point:
			point = true
		default:
			return ErrFormat
		}
		if digits > 10 || scale > 1e9 {
			return ErrFormat
		}
	}
	return setDecimal(r, neg, mant, scale, u)
}

// setDecimal sets r.Value from a mantissa and decimal scale (a power of
// ten, 1 for an integer), and r.Grams and r.Unit from unit index u.
func setDecimal(r *Reading, neg bool, mant, scale int64, u int) error {
	decimals := 0
	for s := scale; s > 1; s /= 10 {
		decimals++
	}
	// Format: sign, integer part without leading zeros, point, decimals.
	var tmp [24]byte
	i := len(tmp)
	m := mant
	for k := 0; k < decimals; k++ {
		i--
		tmp[i] = byte('0' + m%10)
		m /= 10
	}
	if decimals > 0 {
		i--
		tmp[i] = '.'
	}
	for {
		i--
		tmp[i] = byte('0' + m%10)
		m /= 10
		if m == 0 {
			break
		}
	}
	if neg && mant != 0 {
		i--
		tmp[i] = '-'
	}
	if len(tmp)-i > maxDecimal {
		return ErrFormat
	}
	r.Value.n = uint8(copy(r.Value.b[:], tmp[i:]))
	unit := units[u]
	// grams = mant/scale * num/den, rounded half away from zero. mant has
	// at most 10 significant digits and num at most 9: no overflow.
	num := mant * unit.num
	den := scale * unit.den
	g := (num + den/2) / den
	if neg {
		g = -g
	}
	r.Grams = g
	r.Unit = unit.name
	return nil
}
