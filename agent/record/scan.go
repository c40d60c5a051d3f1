package record

import (
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/scanagent/scanagent/buffer"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/devices"
)

// Origin is where scans come from: the same for every scan of a station.
type Origin struct {
	Station            string // station id
	Agent, Site, Event string // agent.id, agent.site, the station's event code
}

// Scan is one scan as a station reads it, kept in that form: Value writes
// the event JSON straight into the buffer record, a few allocations
// instead of one per string field. Event is the same scan decoded.
type Scan struct {
	*Origin
	ID           uuid.UUID
	At           time.Time // scanned_at
	Barcode, AIM string
	Kind, Reason string
	Valid        bool
	S9           *S9 // a decoded S9 receptacle identifier, or nil
	Weight       devices.Reading
	HasWeight    bool
	WeightStatus string
	Clock        string // clock quality: synced, unsynced, unknown ("": not written)
	// The station's context (docs/WORKFLOWS.md), "" when none.
	Receptacle, BagSession, Operator string
}

// Value returns the buffer value of s: its record, with the sequence
// number left to the buffer, in the field order and with the omissions of
// Event's JSON encoding. Head and Tail share one allocation.
func (s *Scan) Value() buffer.Value {
	n := 448 + len(s.Barcode)
	if ctx := len(s.Receptacle) + len(s.BagSession) + len(s.Operator); ctx > 0 {
		n += 48 + ctx
	}
	if s.S9 != nil {
		n += 256
	}
	b := make([]byte, 0, n)
	b = appendStation(b, s.Station)
	b = append(b, `{"schema":"`+Schema+`","id":"`...)
	b = appendUUID(b, s.ID)
	b = append(b, `","seq":`...)
	split := len(b)
	b = appendField(b, "agent", s.Agent)
	b = appendField(b, "site", s.Site)
	b = appendField(b, "station", s.Station)
	if s.Event != "" {
		b = appendField(b, "event", s.Event)
	}
	b = append(b, `,"scanned_at":"`...)
	b = s.At.UTC().AppendFormat(b, timestampLayout)
	b = append(b, '"')
	b = appendField(b, "barcode", s.Barcode)
	if s.AIM != "" {
		b = appendField(b, "aim", s.AIM)
	}
	b = appendField(b, "kind", s.Kind)
	b = append(b, `,"valid":`...)
	b = strconv.AppendBool(b, s.Valid)
	if s.Reason != "" {
		b = appendField(b, "reason", s.Reason)
	}
	if s.S9 != nil {
		b = appendS9(b, s.S9)
	}
	if s.HasWeight {
		w := &s.Weight
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
	if s.WeightStatus != "" {
		b = appendField(b, "weight_status", s.WeightStatus)
	}
	if s.Clock != "" {
		b = appendField(b, "clock", s.Clock)
	}
	if s.Receptacle != "" {
		b = appendField(b, "receptacle", s.Receptacle)
	}
	if s.BagSession != "" {
		b = appendField(b, "bag_session", s.BagSession)
	}
	if s.Operator != "" {
		b = appendField(b, "operator", s.Operator)
	}
	b = append(b, '}')
	return buffer.Value{Head: b[:split:split], Tail: b[split:]}
}

// WeightOf converts a reading for events and status; nil when it carries
// no weight.
func WeightOf(r devices.Reading) *Weight {
	if !r.Valid() {
		return nil
	}
	return &Weight{Grams: r.Grams, Value: r.Value.String(), Unit: r.Unit, Stable: r.Stable, MeasuredAt: Timestamp(r.At)}
}

// appendS9 appends ,"s9":{...} in the field order of S9's JSON.
func appendS9(b []byte, s *S9) []byte {
	b = append(b, `,"s9":{"origin":`...)
	b = appendString(b, s.Origin)
	b = appendField(b, "destination", s.Destination)
	b = appendField(b, "category", s.Category)
	b = appendField(b, "class", s.Class)
	b = appendField(b, "subclass", s.Subclass)
	b = append(b, `,"year":`...)
	b = strconv.AppendInt(b, int64(s.Year), 10)
	b = appendField(b, "dispatch", s.Dispatch)
	b = append(b, `,"serial":`...)
	b = strconv.AppendInt(b, int64(s.Serial), 10)
	if s.Highest != nil {
		b = append(b, `,"highest":`...)
		b = strconv.AppendBool(b, *s.Highest)
	}
	if s.Registered != nil {
		b = append(b, `,"registered":`...)
		b = strconv.AppendBool(b, *s.Registered)
	}
	b = append(b, `,"declared_grams":`...)
	b = strconv.AppendInt(b, s.DeclaredGrams, 10)
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
