package sim

import (
	"fmt"
	"strings"
)

// Weight is what a simulated scale shows.
type Weight struct {
	Value     string // the display, e.g. "1.234" or "-0.50"
	Unit      string // "kg", "g", "lb" or "oz" (toledo: kg or lb)
	Stable    bool
	Overload  bool
	Underload bool
	Net       bool
}

// Encode returns one reading of w as protocol sends it. It is the inverse
// of the agent's parsers, written from the protocol descriptions.
func Encode(protocol string, w Weight) []byte {
	switch protocol {
	case "mt-sics":
		switch {
		case w.Overload:
			return []byte("S +\r\n")
		case w.Underload:
			return []byte("S -\r\n")
		}
		st := "D"
		if w.Stable {
			st = "S"
		}
		return fmt.Appendf(nil, "S %s %10s %s\r\n", st, w.Value, w.Unit)
	case "toledo":
		return encodeToledo(w)
	case "sma":
		s, n, m := " ", "G", " "
		switch {
		case w.Overload:
			s = "O"
		case w.Underload:
			s = "U"
		case strings.Trim(w.Value, "0.-") == "":
			s = "Z"
		}
		if w.Net {
			n = "N"
		}
		if !w.Stable {
			m = "M"
		}
		v := w.Value
		if w.Overload || w.Underload {
			v = strings.Repeat("-", 10)
		}
		return fmt.Appendf(nil, "\n%s1%s%s %10s%-3s\r", s, n, m, v, w.Unit)
	case "nci":
		s1, s2 := byte(0x30), byte(0x30)
		if !w.Stable {
			s1 |= 0x01
		}
		if strings.Trim(w.Value, "0.-") == "" {
			s1 |= 0x02
		}
		v := w.Value
		switch {
		case w.Overload:
			s2 |= 0x02
			v = strings.Repeat("^", 7)
		case w.Underload:
			s2 |= 0x01
			v = strings.Repeat("_", 7)
		}
		status := []byte{s1, s2}
		if w.Net {
			status = []byte{s1, s2 | 0x40, 0x30 | 0x04}
		}
		return fmt.Appendf(nil, "\n%7s%s\r\n%s\r\x03", v, w.Unit, status)
	case "cas":
		st, gs := "US", "GS"
		switch {
		case w.Overload || w.Underload:
			st = "OL"
		case w.Stable:
			st = "ST"
		}
		if w.Net {
			gs = "NT"
		}
		sign, v := "+", w.Value
		if strings.HasPrefix(v, "-") || w.Underload {
			sign, v = "-", strings.TrimPrefix(v, "-")
		}
		return fmt.Appendf(nil, "%s,%s,%s%7s%2s\r\n", st, gs, sign, v, w.Unit)
	case "ohaus":
		switch {
		case w.Overload:
			return []byte("      -OL-\r\n")
		case w.Underload:
			return []byte("      -UL-\r\n")
		}
		line := fmt.Sprintf("%10s %s", w.Value, w.Unit)
		if !w.Stable {
			line += " ?"
		}
		if w.Net {
			line += " N"
		}
		return []byte(line + "\r\n")
	}
	return nil
}

func encodeToledo(w Weight) []byte {
	digits, decimals := w.Value, 0
	neg := strings.HasPrefix(digits, "-")
	digits = strings.TrimPrefix(digits, "-")
	if i := strings.IndexByte(digits, '.'); i >= 0 {
		decimals = len(digits) - i - 1
		digits = digits[:i] + digits[i+1:]
	}
	swa := byte(0x20 | (decimals + 2))
	swb := byte(0x20)
	if w.Net {
		swb |= 0x01
	}
	if neg || w.Underload {
		swb |= 0x02
	}
	if w.Overload || w.Underload {
		swb |= 0x04
	}
	if !w.Stable {
		swb |= 0x08
	}
	if w.Unit != "lb" {
		swb |= 0x10
	}
	f := fmt.Appendf(nil, "\x02%c%c%c%06s000000\r", swa, swb, 0x20, digits)
	var sum byte
	for _, c := range f {
		sum += c & 0x7F
	}
	return append(f, (-sum)&0x7F)
}
