package station

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

func testStation(t *testing.T, cfg config.Station) *Station {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "induct-1"
	}
	return New(Config{Station: cfg, Agent: config.Agent{ID: "hub", Site: "SITE"}}, Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// TestStationValidation: identifier rules per kind and the station's
// accepted kinds, as they land in the event.
func TestStationValidation(t *testing.T) {
	tests := []struct {
		accept    []string
		code, aim string
		kind      string
		valid     bool
		reason    string
	}{
		// UPU S10: valid, and each reason.
		{nil, "RR473124829GB", "]C0", "s10", true, ""},
		{nil, "RR287043775IN", "]C0", "s10", true, ""}, // check digit 11 -> 5
		{nil, "RR473124828GB", "]C0", "s10", false, "check_digit"},
		{nil, "JJ473124829GB", "]C0", "s10", false, "service_indicator"},
		{nil, "SA473124829GB", "", "s10", false, "service_indicator"},
		{nil, "RR473124829XX", "]C0", "s10", false, "country"},
		{nil, "RR473124829UK", "]C0", "s10", false, "country"}, // GB is the code
		// Russian Post 14-digit.
		{nil, "10100024010003", "]C0", "ru14", true, ""},
		{nil, "10100024010004", "]C0", "ru14", false, "check_digit"},
		// GS1: SSCC in GS1-128 (AI 00), GTIN with AIs, plain GTIN-13, bracketed.
		{nil, "00106141412345678908", "]C1", "gs1", true, ""},
		{nil, "00106141412345678907", "]C1", "gs1", false, "check_digit"},
		{nil, "0109506000134352\x1d10AB-123", "]C1", "gs1", true, ""},
		{nil, "0109506000134353\x1d10AB-123", "]d2", "gs1", false, "check_digit"},
		{nil, "(01)09506000134352(10)AB1", "]Q3", "gs1", true, ""},
		{nil, "4006381333931", "]E0", "gs1", true, ""},
		{nil, "4006381333932", "]E0", "gs1", false, "check_digit"},
		{nil, "400638133393", "]E4", "gs1", false, "format"},
		{nil, "106141412345678908", "", "gs1", true, ""}, // SSCC without AIM
		{nil, "HELLO-123", "]C0", "other", true, ""},
		// UPU S9 receptacles.
		{nil, "BEBRUABOLPBBAEN60073003000227", "]C0", "s9", true, ""},
		{nil, "BEBRUABOLPBBAEN60073000000227", "]C0", "s9", false, "serial"},
		{nil, "XXBRUABOLPBBAEN60073003000227", "]C0", "s9", false, "origin"},
		{[]string{"s10", "s9"}, "INBOMAJPKWSAAUY60597001100039", "]C0", "s9", true, ""},
		{[]string{"s10"}, "INBOMAJPKWSAAUY60597001100039", "]C0", "s9", false, "unexpected_kind"},
		// Accepted kinds.
		{[]string{"s10"}, "RR473124829GB", "]C0", "s10", true, ""},
		{[]string{"s10"}, "10100024010003", "]C0", "ru14", false, "unexpected_kind"},
		{[]string{"s10", "ru14"}, "10100024010004", "]C0", "ru14", false, "check_digit"},
		{[]string{"s10", "ru14"}, "00106141412345678908", "]C1", "gs1", false, "unexpected_kind"},
		{[]string{"gs1"}, "HELLO-123", "", "other", false, "unexpected_kind"},
		{[]string{"s10"}, "RR473124828GB", "]C0", "s10", false, "check_digit"},
	}
	for _, tc := range tests {
		s := testStation(t, config.Station{Accept: tc.accept, Event: "EDD"})
		sc := s.scan(devices.Frame{Data: tc.code, AIM: tc.aim, At: time.Now()})
		if sc.Kind != tc.kind || sc.Valid != tc.valid || sc.Reason != tc.reason {
			t.Errorf("accept %v, %q %q: kind %s valid %v reason %q; want %s %v %q",
				tc.accept, tc.aim, tc.code, sc.Kind, sc.Valid, sc.Reason, tc.kind, tc.valid, tc.reason)
		}
		station, back, err := record.Decode(s.value(sc).Bytes(7))
		if err != nil || station != "induct-1" || back.Seq != 7 || back.Barcode != tc.code || back.Event != "EDD" || back.Reason != tc.reason {
			t.Errorf("record %s %+v %v", station, back, err)
		}
	}
}

func TestDoubleReads(t *testing.T) {
	s := testStation(t, config.Station{DedupWindow: config.Duration(time.Second)})
	t0 := time.Now()
	read := func(code string, after time.Duration) bool {
		return s.double(devices.Frame{Data: code, At: t0.Add(after)})
	}
	steps := []struct {
		code   string
		at     time.Duration
		double bool
	}{
		{"RR473124829GB", 0, false},
		{"RR473124829GB", 300 * time.Millisecond, true},   // double read
		{"RR287043775IN", 400 * time.Millisecond, false},  // another parcel
		{"RR473124829GB", 1200 * time.Millisecond, true},  // still under the scanner: the window slides
		{"RR473124829GB", 2300 * time.Millisecond, false}, // scanned again after the window: a new event
		{"RR287043775IN", 2500 * time.Millisecond, false},
	}
	for i, st := range steps {
		if got := read(st.code, st.at); got != st.double {
			t.Fatalf("step %d %s at %s: double %v", i, st.code, st.at, got)
		}
	}
	if n := s.n.suppressed.Load(); n != 2 {
		t.Fatalf("suppressed %d", n)
	}
	off := testStation(t, config.Station{DedupWindow: 0})
	for range 2 {
		if off.double(devices.Frame{Data: "A", At: t0}) {
			t.Fatal("dedup_window 0 suppressed a read")
		}
	}
}

func TestSSIBeep(t *testing.T) {
	// Length, opcode, source, status, beep code, then the two's complement
	// of their sum, high byte first: 0x05+0xE6+0x04+0x00+0x00 = 0xEF -> 0xFF11.
	if got := ssiBeep(0); string(got) != "\x05\xe6\x04\x00\x00\xff\x11" {
		t.Fatalf("% x", got)
	}
	if got := ssiBeep(6); string(got) != "\x05\xe6\x04\x00\x06\xff\x0b" {
		t.Fatalf("% x", got)
	}
}

// TestRefusedScanLeavesDoubleReadFilter: a scan the buffer refuses (full,
// reject_new) does not make the operator's rescan a suppressed double
// read: once space is back the rescan is an accepted scan. A real Badger
// buffer refuses; the station's callbacks run on its commit goroutine.
func TestRefusedScanLeavesDoubleReadFilter(t *testing.T) {
	s := testStation(t, config.Station{DedupWindow: config.Duration(time.Minute)})
	t0 := time.Now()
	first := devices.Frame{Data: "RR473124829GB", AIM: "]C0", At: t0}
	// Room for one scan, not two.
	size := int64(len(s.value(s.scan(first)).Bytes(1)))
	q, err := buffer.Open(t.TempDir(), buffer.Options{MaxBytes: size + 64, WhenFull: buffer.RejectNew, MinFreeDisk: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	s.q = q
	// What Run does around process: the outcomes are handled on their
	// own goroutine until every submitted scan has one.
	submitted, drained := make(chan uint64, 1), make(chan struct{})
	go func() { s.drainOutcomes(submitted); close(drained) }()
	t.Cleanup(func() { submitted <- s.subs; <-drained })
	ctx := context.Background()
	process := func(f devices.Frame) { s.process(ctx, f) }
	waitFor := func(what string, ok func(status.Counters) bool) status.Counters {
		t.Helper()
		var c status.Counters
		waitUntil(t, what, func() bool { c, _ = s.counters(); return ok(c) },
			func() string { return fmt.Sprintf("counters %+v, buffer %+v", c, q.Stats()) })
		return c
	}

	process(first)
	waitFor("the first scan accepted", func(c status.Counters) bool { return c.Scans == 1 })
	code := "RR287043775IN"
	process(devices.Frame{Data: code, AIM: "]C0", At: t0.Add(time.Second)})
	waitFor("the second scan refused", func(c status.Counters) bool { return c.NotAccepted[buffer.ReasonFull] == 1 })

	// The first scan is delivered: space is back.
	recs, err := q.Read(0, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("read %d records, %v", len(recs), err)
	}
	q.Ack(recs...)
	waitUntil(t, "the acknowledged record deleted", func() bool { return q.Stats().Bytes == 0 },
		func() string { return fmt.Sprintf("%+v", q.Stats()) })

	// The operator scans the refused parcel again, well within the window.
	process(devices.Frame{Data: code, AIM: "]C0", At: t0.Add(3 * time.Second)})
	c := waitFor("the rescan", func(c status.Counters) bool { return c.Scans == 2 || c.Suppressed > 0 })
	if c.Scans != 2 || c.Suppressed != 0 {
		t.Fatalf("the rescan of a refused scan was suppressed: %+v", c)
	}
	recs, _ = q.Read(0, 10)
	if len(recs) != 1 || !strings.Contains(string(recs[0].Value), code) {
		t.Fatalf("buffer holds %d records, want the rescan", len(recs))
	}

	// An accepted scan still suppresses its double read.
	process(devices.Frame{Data: code, AIM: "]C0", At: t0.Add(4 * time.Second)})
	if c, _ := s.counters(); c.Suppressed != 1 || c.Scans != 2 {
		t.Fatalf("double read of an accepted scan: %+v", c)
	}
}

// TestForgetKeepsNewerRead: a refusal takes out only its own read, not a
// newer scan of the same code.
func TestForgetKeepsNewerRead(t *testing.T) {
	s := testStation(t, config.Station{DedupWindow: config.Duration(time.Second)})
	t0 := time.Now()
	read := func(after time.Duration) bool { return s.double(devices.Frame{Data: "A", At: t0.Add(after)}) }
	if read(0) || !read(100*time.Millisecond) {
		t.Fatal("first read suppressed, or double read not")
	}
	s.forget("A", t0) // the first scan was refused
	if read(200 * time.Millisecond) {
		t.Fatal("rescan after a refusal suppressed")
	}
	s.forget("A", t0) // a stale refusal: the rescan's entry stays
	if !read(300 * time.Millisecond) {
		t.Fatal("double read of the rescan not suppressed")
	}
}

type fixedClock string

func (c fixedClock) Quality() string { return string(c) }

// TestScanS9AndClock: an S9 receptacle identifier's fields land in the
// event when it parses (also at a station that does not accept s9), not
// when a field fails; every event carries the clock quality, unknown
// without a clock.
func TestScanS9AndClock(t *testing.T) {
	yes, no := true, false
	decoded := &record.S9{Origin: "INBOMA", Destination: "JPKWSA", Category: "A", Class: "U", Subclass: "Y", Year: 6,
		Dispatch: "INBOMAJPKWSAAUY60597", Serial: 1, Highest: &yes, Registered: &no, DeclaredGrams: 3900}
	for _, tc := range []struct {
		accept []string
		code   string
		clock  Clock
		s9     *record.S9
		q      string
	}{
		{nil, "INBOMAJPKWSAAUY60597001100039", fixedClock("synced"), decoded, "synced"},
		{[]string{"s10"}, "INBOMAJPKWSAAUY60597001100039", fixedClock("unsynced"), decoded, "unsynced"},
		{nil, "RUMOWDDEFRAACCN59999999919999", nil, &record.S9{Origin: "RUMOWD", Destination: "DEFRAA", Category: "C", Class: "C",
			Subclass: "N", Year: 5, Dispatch: "RUMOWDDEFRAACCN59999", Serial: 999, Registered: &yes, DeclaredGrams: 999900}, "unknown"},
		{nil, "INBOMAJPKWSAAUY60597000100039", fixedClock("synced"), nil, "synced"}, // serial 000
		{nil, "RR473124829GB", fixedClock("synced"), nil, "synced"},
	} {
		s := New(Config{Station: config.Station{ID: "induct-1", Accept: tc.accept}, Agent: config.Agent{ID: "hub", Site: "SITE"}},
			Deps{Log: discardLog(), Clock: tc.clock})
		_, ev, err := record.Decode(s.value(s.scan(devices.Frame{Data: tc.code, AIM: "]C0", At: time.Now()})).Bytes(1))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ev.S9, tc.s9) {
			t.Errorf("%s: s9 %+v, want %+v", tc.code, ev.S9, tc.s9)
		}
		if ev.Clock != tc.q {
			t.Errorf("%s: clock %q, want %q", tc.code, ev.Clock, tc.q)
		}
	}
}
