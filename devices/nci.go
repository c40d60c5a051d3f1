package devices

import "bytes"

// Avery Weigh-Tronix NCI (SCP-01): request W<CR>, response
//
//	<LF>0012.34kg<CR><LF>hh<CR><ETX>
//
// The weight is what the display shows, sign and decimal point included,
// then the unit. Over capacity fills it with '^', under capacity with '_',
// a zeroing error with '-'. Status bytes have bits 4 and 5 set; bit 6 says
// another status byte follows:
//
//	byte 1: bit 0 motion, 1 at zero, 2 RAM error, 3 EEPROM error
//	byte 2: bit 0 under capacity, 1 over capacity, 2 ROM error, 3 calibration
//	byte 3 (optional): bits 0-1 range, 2 net weight, 3 initial zero error
//
// S<CR> answers the status alone; an unknown command <LF>?<CR><ETX>.

func nci() *Protocol {
	return &Protocol{
		Name:     "nci",
		Split:    splitFramed(lf, etx, 48, true),
		Parse:    parseNCI,
		Poll:     []byte("W\r"),
		MaxFrame: 48,
	}
}

func parseNCI(b []byte) (Reading, error) {
	var r Reading
	if len(b) < 4 || b[0] != lf || b[len(b)-1] != etx || b[len(b)-2] != cr {
		return r, ErrGarbage
	}
	body := b[1 : len(b)-2] // "0012.34kg\r\nhh" or "hh" or "?"
	if !printableExcept(body, "\r\n") {
		return r, ErrGarbage
	}
	if string(body) == "?" {
		return r, ErrDevice
	}
	var weight []byte
	status := body
	if i := bytes.LastIndex(body, []byte("\r\n")); i >= 0 {
		weight, status = body[:i], body[i+2:]
	}
	if len(status) < 2 || len(status) > 4 {
		return r, ErrFormat
	}
	for i, c := range status {
		// Bits 4 and 5 always set; bit 6 is clear in the first byte, and
		// in later ones set when another byte follows.
		follows := c&0x40 != 0
		want := i > 0 && i < len(status)-1
		if c&0x30 != 0x30 || follows != want {
			return r, ErrFormat
		}
	}
	s1, s2 := status[0], status[1]
	if s1&0x0C != 0 || s2&0x0C != 0 {
		return r, ErrDevice // RAM, EEPROM, ROM or calibration error
	}
	if len(status) > 2 && status[2]&0x08 != 0 {
		return r, ErrDevice // initial zero error
	}
	if s2&0x02 != 0 {
		r.Overload = true
		return r, nil
	}
	if s2&0x01 != 0 {
		r.Underload = true
		return r, nil
	}
	if weight == nil {
		return r, ErrNoWeight // a status answer (S, Z, T)
	}
	r.Stable = s1&0x01 == 0
	if len(status) > 2 {
		r.Basis = BasisGross
		if status[2]&0x04 != 0 {
			r.Basis = BasisNet
		}
	}
	w, unit := splitWeightUnit(weight)
	if bytes.ContainsAny(w, "^_") || bytes.Count(w, []byte("-")) > 1 {
		return r, ErrDevice // bars on the display with no status bit
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

// printableExcept is printable allowing the bytes in extra.
func printableExcept(b []byte, extra string) bool {
	for _, c := range b {
		if (c < 0x20 || c > 0x7E) && bytes.IndexByte([]byte(extra), c) < 0 {
			return false
		}
	}
	return true
}
