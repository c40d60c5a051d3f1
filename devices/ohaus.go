package devices

import "bytes"

// Ohaus print format, lines ending CR LF: the weight right-justified in 10
// characters, a space, the unit, a space, '?' when the weight is not
// stable, then an optional legend (G/GROSS, N/NET, T/TARE ...):
//
//	     192.21 g
//	       0.01 g ?
//	      1.250 kg   N
//
// IP prints now, SP prints the next stable weight, CP prints continuously.
// Lines that carry no weight (headers and totals of a GLP print) are
// counted and skipped; "Err ..." lines are device errors.

func ohaus() *Protocol {
	return &Protocol{
		Name:     "ohaus",
		Split:    splitLines(64),
		Parse:    parseOhaus,
		Poll:     []byte("IP\r\n"),
		Streams:  true,
		MaxFrame: 64,
	}
}

func parseOhaus(b []byte) (Reading, error) {
	var r Reading
	if !printable(b) {
		return r, ErrGarbage
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return r, ErrNoWeight
	}
	if bytes.HasPrefix(t, []byte("Err")) || bytes.HasPrefix(t, []byte("ERR")) {
		return r, ErrDevice
	}
	// The display's over/under range marks, when the scale prints
	// them (models differ; most do not print out of range).
	switch string(t) {
	case "OL", "-OL-", "oL":
		r.Overload = true
		return r, nil
	case "UL", "-UL-", "uL":
		r.Underload = true
		return r, nil
	}
	if !(t[0] == '-' || t[0] == '+' || '0' <= t[0] && t[0] <= '9' || t[0] == '.') {
		return r, ErrNoWeight // a header or label line
	}
	w, rest := field(t)
	if len(w) == 1 && (w[0] == '-' || w[0] == '+') {
		// a sign set apart: "-     12.34 g"
		var num []byte
		num, rest = field(rest)
		if len(num) == 0 || num[0] == '-' || num[0] == '+' {
			return r, ErrFormat
		}
		w = t[:len(t)-len(rest)]
	}
	unit, rest := field(rest)
	u, ok := unitOf(unit)
	if !ok {
		if len(unit) == 0 {
			return r, ErrFormat
		}
		return r, ErrUnit
	}
	r.Stable = true
	for {
		var tok []byte
		tok, rest = field(rest)
		if len(tok) == 0 {
			break
		}
		switch string(tok) {
		case "?":
			r.Stable = false
		case "G", "GROSS", "Gross", "g":
			r.Basis = BasisGross
		case "N", "NET", "Net", "n":
			r.Basis = BasisNet
		case "T", "TARE", "Tare", "PT":
			return Reading{}, ErrNoWeight
		}
	}
	if err := setWeight(&r, w, u); err != nil {
		return Reading{}, err
	}
	return r, nil
}
