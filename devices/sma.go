package devices

// SMA standard serial scale protocol (Scale Manufacturers Association),
// level 1: request <LF>W<CR>, response
//
//	<LF> s r n m f <weight: 10> <unit: 3> <CR>
//
// s: 'Z' centre of zero, 'O' over capacity, 'U' under capacity, 'E'/'I'/'T'
// errors (the weight is dashed), ' ' none; r: range; n: 'G' gross, 'N' net,
// 'T' tare; m: 'M' in motion or ' '; f: reserved. An unknown command is
// answered <LF>?<CR>.

const lf = '\n'

func sma() *Protocol {
	return &Protocol{
		Name:     "sma",
		Split:    splitFramed(lf, cr, 32, false),
		Parse:    parseSMA,
		Poll:     []byte("\nW\r"),
		MaxFrame: 32,
	}
}

func parseSMA(b []byte) (Reading, error) {
	var r Reading
	if len(b) < 3 || b[0] != lf || b[len(b)-1] != cr {
		return r, ErrGarbage
	}
	b = b[1 : len(b)-1]
	if !printable(b) {
		return r, ErrGarbage
	}
	if string(b) == "?" {
		return r, ErrDevice // the scale did not understand the request
	}
	if len(b) != 18 {
		return r, ErrFormat
	}
	s, n, m := b[0], b[2], b[3]
	switch s {
	case ' ', 'Z':
	case 'O':
		r.Overload = true
		return r, nil
	case 'U':
		r.Underload = true
		return r, nil
	case 'E', 'I', 'T':
		return r, ErrDevice
	default:
		return r, ErrFormat
	}
	switch n {
	case 'G':
		r.Basis = BasisGross
	case 'N':
		r.Basis = BasisNet
	case 'T':
		return r, ErrNoWeight // a tare value, not a weight
	default:
		return r, ErrFormat
	}
	switch m {
	case ' ':
		r.Stable = true
	case 'M':
	default:
		return r, ErrFormat
	}
	u, ok := unitOf(b[15:18])
	if !ok {
		return r, ErrUnit
	}
	if err := setWeight(&r, b[5:15], u); err != nil {
		return Reading{}, err
	}
	return r, nil
}
