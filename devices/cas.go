package devices

// CAS continuous or on-demand output, lines ending CR LF. The 18-byte form:
//
//	ST,GS,+  4.876kg
//
// status ST stable, US unstable, OL overload; GS gross, NT net; an 8-byte
// signed weight; a 2-byte unit. The 22-byte form adds a device id byte and
// a lamp byte (bit flags, often not ASCII):
//
//	ST,GS,<id><lamp>,  0013.5 kg

func cas() *Protocol {
	return &Protocol{
		Name:     "cas",
		Split:    splitLines(48),
		Parse:    parseCAS,
		Streams:  true,
		MaxFrame: 48,
	}
}

func parseCAS(b []byte) (Reading, error) {
	var r Reading
	if len(b) < 6 || b[2] != ',' || b[5] != ',' {
		return r, ErrGarbage
	}
	rest := b[6:]
	if len(rest) >= 3 && rest[2] == ',' {
		rest = rest[3:] // device id and lamp byte
	}
	if !printable(b[:6]) || !printable(rest) {
		return r, ErrGarbage
	}
	switch string(b[3:5]) {
	case "GS":
		r.Basis = BasisGross
	case "NT":
		r.Basis = BasisNet
	case "TR", "TA":
		return r, ErrNoWeight
	default:
		return r, ErrFormat
	}
	w, unit := splitWeightUnit(rest)
	switch string(b[0:2]) {
	case "ST":
		r.Stable = true
	case "US":
	case "OL":
		if len(w) > 0 && w[0] == '-' {
			r.Underload = true
		} else {
			r.Overload = true
		}
		r.Basis = ""
		return r, nil
	default:
		return r, ErrFormat
	}
	u, ok := unitOf(unit)
	if !ok {
		if len(unit) == 0 {
			return r, ErrFormat
		}
		return r, ErrUnit
	}
	if err := setWeight(&r, w, u); err != nil {
		return Reading{}, err
	}
	return r, nil
}
