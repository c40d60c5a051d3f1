package record

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/devices"
)

func testScan(code, aim string, at time.Time) *Scan {
	return &Scan{Origin: &Origin{Station: "induct-3", Agent: "hub", Site: "SITE", Event: "EDD"}, ID: uuid.Must(uuid.NewV7()), At: at,
		Barcode: code, AIM: aim, Kind: "s10", Valid: true}
}

// encode makes the whole record of s with seq, as the buffer does.
func encode(s *Scan, seq uint64) []byte {
	return s.Value().Bytes(seq)
}

// TestScanMatchesEvent: the record written field by field decodes to the
// Event encoding/json makes of the same scan, byte for byte when no
// character needs escaping differently (encoding/json also escapes < > &),
// and EventValue, the tools' way through encoding/json, writes the same
// record.
func TestScanMatchesEvent(t *testing.T) {
	at := time.Date(2026, 11, 22, 1, 31, 44, 781_000_000, time.UTC)
	w := readingOf(t, "S S      1.234 kg\r\n", at.Add(-131*time.Millisecond))
	yes, no := true, false
	s9 := &S9{Origin: "BEBRUA", Destination: "BOLPBB", Category: "A", Class: "E", Subclass: "N", Year: 6,
		Dispatch: "BEBRUABOLPBBAEN60073", Serial: 3, Highest: &no, Registered: &no, DeclaredGrams: 22700}
	s9Highest := &S9{Origin: "INBOMA", Destination: "JPKWSA", Category: "A", Class: "U", Subclass: "Y", Year: 6,
		Dispatch: "INBOMAJPKWSAAUY60597", Serial: 1, Highest: &yes, Registered: &no, DeclaredGrams: 3900}
	s9Unstated := &S9{Origin: "RUMOWD", Destination: "DEFRAA", Category: "C", Class: "C", Subclass: "N", Year: 5,
		Dispatch: "RUMOWDDEFRAACCN59999", Serial: 999, Registered: &yes, DeclaredGrams: 999900}
	for _, tc := range []struct {
		code, aim string
		weight    bool
		status    string
		s9        *S9
		clock     string
		ctx       [3]string // receptacle, bag session, operator
	}{
		{"RR473124829GB", "]C0", true, "ok", nil, "", [3]string{}},
		{"RR473124828GB", "", false, "motion", nil, "", [3]string{}},
		{"0109506000134352\x1d10AB-123", "]C1", false, "", nil, "", [3]string{}},
		{`quote" back\slash tab\t nl\n \x01 \x7f Посылка \u2028`, "", false, "", nil, "", [3]string{}},
		{"\xff\xfebad utf-8", "", false, "", nil, "", [3]string{}},
		{"RR473124829GB", "]C0", true, "ok", nil, "synced", [3]string{}},
		{"RR473124829GB", "", false, "", nil, "unknown", [3]string{}},
		{"BEBRUABOLPBBAEN60073003000227", "]C0", true, "ok", s9, "synced", [3]string{}},
		{"INBOMAJPKWSAAUY60597001100039", "", false, "", s9Highest, "unsynced", [3]string{}},
		{"RUMOWDDEFRAACCN59999999919999", "]C0", false, "none", s9Unstated, "", [3]string{}},
		{"RUMOWDDEFRAACCN59999999999999", "]C0", false, "", &S9{Origin: "a\"b<", Dispatch: "\x01"}, "unknown", [3]string{}},
		{"RR473124829GB", "]C0", true, "ok", nil, "synced", [3]string{"BEBRUABOLPBBAEN60073003000227", "", "OP0042"}},
		{"RR473124829GB", "", false, "", nil, "unknown", [3]string{"", "019ad3b4-7f00-7000-8000-000000000001", "оператор \"7\""}},
	} {
		sc := testScan(tc.code, tc.aim, at)
		sc.HasWeight, sc.WeightStatus, sc.S9, sc.Clock = tc.weight, tc.status, tc.s9, tc.clock
		sc.Receptacle, sc.BagSession, sc.Operator = tc.ctx[0], tc.ctx[1], tc.ctx[2]
		if tc.s9 != nil {
			sc.Kind = "s9"
		}
		if tc.weight {
			sc.Weight = w
		}
		rec := encode(sc, 1042)
		station, payload, err := Split(rec)
		if err != nil || station != "induct-3" || !json.Valid(payload) {
			t.Fatalf("%q: station %q, valid JSON %v, err %v: %s", tc.code, station, json.Valid(payload), err, payload)
		}
		want := Event{Schema: Schema, ID: sc.ID.String(), Seq: 1042, Agent: "hub", Site: "SITE", Station: "induct-3", Event: "EDD",
			ScannedAt: Timestamp(at), Barcode: viaJSON(tc.code), AIM: tc.aim, Kind: sc.Kind, Valid: sc.Valid, Reason: sc.Reason,
			S9: tc.s9, WeightStatus: tc.status, Clock: tc.clock, Receptacle: tc.ctx[0], BagSession: tc.ctx[1], Operator: tc.ctx[2]}
		if tc.weight {
			want.Weight = WeightOf(w)
		}
		var got Event
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
		}
		room := 448 + len(tc.code)
		if ctx := len(tc.ctx[0]) + len(tc.ctx[1]) + len(tc.ctx[2]); ctx > 0 {
			room += 48 + ctx
		}
		if v := sc.Value(); len(v.Head)+len(v.Tail) > room && tc.s9 == nil ||
			len(v.Head)+len(v.Tail) > room+256 {
			t.Errorf("%q: the record's %d bytes outgrow the one allocation of Value", tc.code, len(v.Head)+len(v.Tail))
		}
		if std, _ := json.Marshal(want); !strings.ContainsAny(tc.code, "<>&\x7f\u2028") && utf8.ValidString(tc.code) &&
			(tc.s9 == nil || !strings.ContainsAny(tc.s9.Origin, "<>&")) {
			if string(std) != string(payload) {
				t.Errorf("bytes differ from encoding/json:\n%s\n%s", payload, std)
			}
			v, err := EventValue("induct-3", &want)
			if err != nil {
				t.Fatal(err)
			}
			if again := v.Bytes(1042); string(again) != string(rec) {
				t.Errorf("EventValue differs from Encode:\n%q\n%q", again, rec)
			}
		}
	}
}

func readingOf(t *testing.T, frame string, at time.Time) devices.Reading {
	t.Helper()
	var r devices.Reading
	devices.NewScaleReader(devices.LookupProtocol("mt-sics"), func(rd devices.Reading) { r = rd }, nil).Write([]byte(frame), at)
	if !r.Valid() {
		t.Fatalf("no reading from %q", frame)
	}
	return r
}

// viaJSON is s after an encoding/json round trip (each invalid UTF-8 byte
// becomes U+FFFD).
func viaJSON(s string) string {
	b, _ := json.Marshal(s)
	var out string
	json.Unmarshal(b, &out)
	return out
}

func TestEventValueLongStation(t *testing.T) {
	if _, err := EventValue(strings.Repeat("s", 256), &Event{Schema: Schema}); err == nil {
		t.Fatal("a 256-byte station id was accepted")
	}
}

func FuzzScan(f *testing.F) {
	f.Add("RR473124829GB", "]C0", "EDD", "", "", int64(0))
	f.Add("a\x1db\"c\\", "", "", "", "synced", int64(0))
	f.Add("\xff\xc3\x28", "]d2", "X", "\xff\"", "\x00", int64(-1))
	f.Add("BEBRUABOLPBBAEN60073003000227", "]C0", "EDD", "BEBRUA", "unknown", int64(22700))
	f.Fuzz(func(t *testing.T, code, aim, event, office, clock string, n int64) {
		sc := testScan(code, aim, time.Unix(1700000000, 0))
		sc.Origin = &Origin{Station: sc.Station, Agent: sc.Agent, Site: sc.Site, Event: event}
		sc.Clock = clock
		sc.Receptacle, sc.BagSession, sc.Operator = office, aim, event
		var s9 *S9
		if office != "" { // every field of the S9 from the office and n
			yes := n%2 == 0
			s9 = &S9{Origin: office, Destination: office, Category: office, Class: office, Subclass: office, Year: int(n % 10),
				Dispatch: office, Serial: int(n), DeclaredGrams: n}
			if n%3 != 0 {
				s9.Highest = &yes
			}
			if n%5 != 0 {
				s9.Registered = &yes
			}
			sc.S9 = s9
		}
		_, payload, err := Split(encode(sc, 7))
		if err != nil {
			t.Fatal(err)
		}
		var got Event
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatalf("invalid JSON %q: %v", payload, err)
		}
		if got.Barcode != viaJSON(code) || got.AIM != viaJSON(aim) || got.Seq != 7 || got.Event != viaJSON(event) ||
			got.Clock != viaJSON(clock) || got.Receptacle != viaJSON(office) || got.BagSession != viaJSON(aim) || got.Operator != viaJSON(event) {
			t.Fatalf("round trip: %+v from %q %q %q %q", got, code, aim, event, clock)
		}
		if s9 != nil {
			o := viaJSON(office)
			want := *s9
			want.Origin, want.Destination, want.Category, want.Class, want.Subclass, want.Dispatch = o, o, o, o, o, o
			if got.S9 == nil || !reflect.DeepEqual(*got.S9, want) {
				t.Fatalf("s9 round trip: %+v, want %+v", got.S9, want)
			}
		} else if got.S9 != nil {
			t.Fatalf("s9 %+v from a scan without one", got.S9)
		}
	})
}

// FuzzDecode: buffer records decoded by the uplink and the export tool
// never panic the decoder, and a record splits back into the same station
// and payload.
func FuzzDecode(f *testing.F) {
	ev := Event{Schema: Schema, ID: "0193f2c4-9a4e-7c1d-8f3a-2b5e6d7c8a90", Station: "induct-3", Barcode: "RR473124829GB", Kind: "s10", Valid: true}
	v, _ := EventValue("induct-3", &ev)
	f.Add(v.Bytes(7))
	f.Add([]byte{})
	f.Add([]byte{200, 'a'})
	f.Fuzz(func(t *testing.T, rec []byte) {
		topic, station, payload, err := SplitTopic(rec)
		if err != nil {
			return
		}
		if len(station)+len(payload)+1 != len(rec) {
			t.Fatalf("split %d+%d bytes from %d", len(station), len(payload), len(rec))
		}
		Decode(rec) // any JSON: must not panic
		if again := JoinTopic(topic, station, payload); string(again) != string(rec) {
			t.Fatalf("round trip changed the record")
		}
	})
}

// BenchmarkEncode: the fast encoder against encoding/json on the same
// scan, to show what it earns.
func BenchmarkEncode(b *testing.B) {
	at := time.Date(2026, 11, 22, 1, 31, 44, 781_000_000, time.UTC)
	sc := testScan("RR473124829GB", "]C0", at)
	var r devices.Reading
	devices.NewScaleReader(devices.LookupProtocol("mt-sics"), func(rd devices.Reading) { r = rd }, nil).Write([]byte("S S      1.234 kg\r\n"), at)
	sc.Weight, sc.HasWeight, sc.WeightStatus = r, true, "ok"
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sc.Value()
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev := Event{Schema: Schema, ID: sc.ID.String(), Agent: sc.Agent, Site: sc.Site, Station: sc.Station, Event: sc.Event,
				ScannedAt: Timestamp(sc.At), Barcode: sc.Barcode, AIM: sc.AIM, Kind: sc.Kind, Valid: sc.Valid,
				Weight: WeightOf(sc.Weight), WeightStatus: sc.WeightStatus}
			if _, err := EventValue(sc.Station, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestJSONValueTopics: workflow events are recorded through encoding/json
// with their topic, and a scan record written before topics existed still
// splits as a scan.
func TestJSONValueTopics(t *testing.T) {
	ev := &Receptacle{Schema: SchemaReceptacle, ID: "0193f2c4-9a4e-7c1d-8f3a-2b5e6d7c8a90", Station: "open-1",
		Workflow: "open_receptacles", Receptacle: "BEBRUABOLPBBAEN60073003000227", Items: 3, ClosedBy: "label"}
	v, err := JSONValue(TopicReceptacles, "open-1", ev)
	if err != nil {
		t.Fatal(err)
	}
	topic, station, payload, err := SplitTopic(v.Bytes(4711))
	if err != nil || topic != TopicReceptacles || station != "open-1" {
		t.Fatalf("split: %v %q %v", topic, station, err)
	}
	var got Receptacle
	if err := json.Unmarshal(payload, &got); err != nil || got.Seq != 4711 || got.Items != 3 || got.Receptacle != ev.Receptacle {
		t.Fatalf("decoded %+v, %v: %s", got, err, payload)
	}
	if topic.Name() != "receptacles" || TopicScans.Name() != "scans" {
		t.Fatal("topic names")
	}
	// A record from before topics: its first byte is the station's length.
	old := append([]byte{6}, `open-1{"schema":"scanagent.scan/v1"}`...)
	if topic, station, _, err := SplitTopic(old); err != nil || topic != TopicScans || station != "open-1" {
		t.Fatalf("old record: %v %q %v", topic, station, err)
	}
	if _, err := JSONValue(TopicScans, "s", struct{ A int }{1}); err == nil {
		t.Fatal("an event without schema, id and seq was recorded")
	}
}
