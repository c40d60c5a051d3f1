package agent

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/devices"
)

// scan is one scan on its way into the buffer, kept in the form it was read
// in: the event JSON is written straight into the buffer record, so a scan
// costs a few allocations instead of one per string field. Event is the
// same object decoded.
type scan struct {
	st           *station
	id           uuid.UUID
	at           time.Time // scanned_at
	barcode, aim string
	kind, reason string
	valid        bool
	weight       devices.Reading
	hasWeight    bool
	weightStatus string
}

const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// record returns the buffer record of the scan with seq: the station
// (length-prefixed), then the event JSON, in the field order and with the
// omissions of Event's JSON encoding.
func (s *scan) record(seq uint64) []byte {
	st := s.st
	b := make([]byte, 0, 448+len(s.barcode))
	b = append(b, byte(len(st.cfg.ID)))
	b = append(b, st.cfg.ID...)
	b = append(b, `{"schema":"`+Schema+`","id":"`...)
	b = appendUUID(b, s.id)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = appendField(b, "agent", st.agent.ID)
	b = appendField(b, "site", st.agent.Site)
	b = appendField(b, "station", st.cfg.ID)
	if st.cfg.Event != "" {
		b = appendField(b, "event", st.cfg.Event)
	}
	b = append(b, `,"scanned_at":"`...)
	b = s.at.UTC().AppendFormat(b, timestampLayout)
	b = append(b, '"')
	b = appendField(b, "barcode", s.barcode)
	if s.aim != "" {
		b = appendField(b, "aim", s.aim)
	}
	b = appendField(b, "kind", s.kind)
	b = append(b, `,"valid":`...)
	b = strconv.AppendBool(b, s.valid)
	if s.reason != "" {
		b = appendField(b, "reason", s.reason)
	}
	if s.hasWeight {
		w := &s.weight
		b = append(b, `,"weight":{"grams":`...)
		b = strconv.AppendInt(b, w.Grams, 10)
		b = append(b, `,"value":"`...)
		b = w.Value.AppendTo(b)
		b = append(b, '"')
		b = appendField(b, "unit", w.Unit)
		b = append(b, `,"stable":`...)
		b = strconv.AppendBool(b, w.Stable)
		b = append(b, `,"measured_at":"`...)
		b = w.At.UTC().AppendFormat(b, timestampLayout)
		b = append(b, `"}`...)
	}
	if s.weightStatus != "" {
		b = appendField(b, "weight_status", s.weightStatus)
	}
	return append(b, '}')
}

// appendField appends ,"name":"value" with value as a JSON string.
func appendField(b []byte, name, value string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

func appendUUID(b []byte, id uuid.UUID) []byte {
	var s [36]byte
	hex.Encode(s[0:8], id[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], id[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], id[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], id[8:10])
	s[23] = '-'
	hex.Encode(s[24:], id[10:])
	return append(b, s[:]...)
}

// appendString appends s as a JSON string. Control characters (a GS in a
// GS1 code) are escaped as \u00XX, invalid UTF-8 becomes U+FFFD, as
// encoding/json does; HTML characters are not escaped.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
