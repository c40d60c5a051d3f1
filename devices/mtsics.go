package devices

// Mettler Toledo MT-SICS (Standard Interface Command Set), level 0/1:
// request/response lines ending CR LF.
//
//	S     -> "S S     100.00 g"  stable weight
//	SI    -> "S S ..." stable or "S D ..." dynamic (in motion), at once
//	SIR   -> SI responses repeated until another command
//	          "S I" busy, "S +" overload, "S -" underload
//	          "ES" syntax, "ET" transmission, "EL" logical error
//
// The weight field is right-aligned (about 10 characters) then the unit.
// MT-SICS weights are net weights (gross when no tare is set).

func mtSICS() *Protocol {
	return &Protocol{
		Name:       "mt-sics",
		Split:      splitLines(64),
		Parse:      parseMTSICS,
		Poll:       []byte("SI\r\n"),
		Continuous: []byte("SIR\r\n"),
		MaxFrame:   64,
	}
}

// ErrBusy is an MT-SICS "S I": the scale cannot answer now (taring,
// zeroing, or still settling for an S command).
var ErrBusy = &ParseError{"busy"}

func parseMTSICS(b []byte) (Reading, error) {
	var r Reading
	if !printable(b) {
		return r, ErrGarbage
	}
	id, rest := field(b)
	status, rest := field(rest)
	switch string(id) {
	case "ES", "ET", "EL":
		if len(status) == 0 {
			return r, ErrDevice
		}
		return r, ErrGarbage
	case "S":
	default:
		// Another command's answer (e.g. "Z A", "I4 A ...").
		if isCommandID(id) && len(status) == 1 {
			return r, ErrNoWeight
		}
		return r, ErrGarbage
	}
	if len(status) != 1 {
		return r, ErrGarbage
	}
	switch status[0] {
	case 'S':
		r.Stable = true
	case 'D':
	case '+':
		r.Overload = true
		return r, nil
	case '-':
		r.Underload = true
		return r, nil
	case 'I':
		return r, ErrBusy
	case 'L':
		return r, ErrDevice
	default:
		return r, ErrGarbage
	}
	weight, unit := splitLastField(rest)
	u, ok := unitOf(unit)
	if !ok {
		if len(unit) == 0 {
			return r, ErrFormat
		}
		return r, ErrUnit
	}
	r.Basis = BasisNet
	if err := setWeight(&r, weight, u); err != nil {
		return Reading{}, err
	}
	return r, nil
}

// splitLastField splits "     100.00 g" into the weight and the unit.
func splitLastField(b []byte) (head, last []byte) {
	end := len(b)
	for end > 0 && b[end-1] == ' ' {
		end--
	}
	i := end
	for i > 0 && b[i-1] != ' ' {
		i--
	}
	return b[:i], b[i:end]
}

func isCommandID(b []byte) bool {
	if len(b) == 0 || len(b) > 4 || !('A' <= b[0] && b[0] <= 'Z') {
		return false
	}
	for _, c := range b {
		if !isAlnum(c) {
			return false
		}
	}
	return true
}
