package devices

import "bytes"

// Mettler Toledo continuous output, 18 bytes, sent unasked:
//
//	STX SWA SWB SWC w w w w w w t t t t t t CR CHK
//
// Six weight and six tare digits without decimal point or sign. CHK is the
// two's complement of the sum of the low 7 bits of STX through CR.
//
//	SWA bits 0-2: decimal position (0: XXXX00, 1: XXXXX0, 2: XXXXXX,
//	              3: XXXXX.X ... 7: X.XXXXX); bits 3-4 count-by; bit 5 = 1
//	SWB bit 0 net, 1 negative, 2 out of range, 3 motion, 4 kg (0: lb); bit 5 = 1
//	SWC bit 3 print request; bit 5 = 1
//
// Out of range with the negative bit set is read as underload, without it
// as overload.

const (
	toledoFrame = 18
	cr          = '\r'
)

func toledo() *Protocol {
	return &Protocol{
		Name:     "toledo",
		Split:    splitToledo,
		Parse:    parseToledo,
		Streams:  true,
		MaxFrame: toledoFrame,
	}
}

// splitToledo cuts 18-byte frames starting at STX with CR at offset 16.
// An STX not followed by a frame (noise, or a frame cut short) is garbage
// up to the next STX.
func splitToledo(data []byte, atEOF bool) (int, []byte, error) {
	if len(data) == 0 {
		return 0, nil, nil
	}
	if data[0] != stx {
		return skipTo(data, stx, toledoFrame, atEOF)
	}
	// No byte before offset 16 can be a CR (status bytes have bit 5 set):
	// a CR there tells a cut frame before all 18 bytes arrive.
	if i := bytes.IndexByte(data[1:min(len(data), 16)], cr); i >= 0 {
		return toledoGarbage(data)
	}
	if len(data) < toledoFrame {
		if atEOF {
			return len(data), data, nil
		}
		return 0, nil, nil
	}
	if data[16] != cr {
		return toledoGarbage(data)
	}
	return toledoFrame, data[:toledoFrame], nil
}

// toledoGarbage discards a false STX; the bytes after it are judged
// afresh.
func toledoGarbage(data []byte) (int, []byte, error) {
	return 1, data[:1], nil
}

func parseToledo(b []byte) (Reading, error) {
	var r Reading
	if len(b) != toledoFrame || b[0] != stx || b[16] != cr {
		return r, ErrGarbage
	}
	var sum byte
	for _, c := range b[:17] {
		sum += c & 0x7F
	}
	if (-sum)&0x7F != b[17]&0x7F {
		return r, ErrChecksum
	}
	swa, swb, swc := b[1]&0x7F, b[2]&0x7F, b[3]&0x7F
	if swa&0x20 == 0 || swb&0x20 == 0 || swc&0x20 == 0 {
		return r, ErrFormat
	}
	var mant int64
	for _, c := range b[4:10] {
		c &= 0x7F
		switch {
		case c == ' ':
			c = '0' // blanked leading zero
		case c < '0' || c > '9':
			return r, ErrFormat
		}
		mant = mant*10 + int64(c-'0')
	}
	for _, c := range b[10:16] {
		if c &= 0x7F; c != ' ' && (c < '0' || c > '9') {
			return r, ErrFormat
		}
	}
	var scale int64 = 1
	switch dp := swa & 7; dp {
	case 0:
		mant *= 100
	case 1:
		mant *= 10
	case 2:
	default:
		for range dp - 2 {
			scale *= 10
		}
	}
	neg := swb&0x02 != 0
	if swb&0x04 != 0 {
		r.Overload, r.Underload = !neg, neg
		return r, nil
	}
	r.Stable = swb&0x08 == 0
	r.Basis = BasisGross
	if swb&0x01 != 0 {
		r.Basis = BasisNet
	}
	u := 3 // lb
	if swb&0x10 != 0 {
		u = 1 // kg
	}
	if err := setDecimal(&r, neg, mant, scale, u); err != nil {
		return Reading{}, err
	}
	return r, nil
}
