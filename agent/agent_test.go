//go:build unix

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

type rig struct {
	t      *testing.T
	addr   chan string
	broker *testmqtt.Broker
	sub    *testmqtt.Subscriber
	sc     *sim.Scanner
	a      *agent.Agent
	cfg    *config.Config
	cancel context.CancelFunc
	done   chan error
}

// newRig starts mosquitto, a persistent subscriber, a simulated scanner on a
// pseudo-terminal (behind a by-id style link) and the agent.
func newRig(t *testing.T, scannerYAML string) *rig {
	t.Helper()
	return newRigStation(t, scannerYAML, "")
}

// newRigStation is newRig with more station keys (indented lines).
func newRigStation(t *testing.T, scannerYAML, stationYAML string) *rig {
	t.Helper()
	r := &rig{t: t, broker: testmqtt.Start(t), addr: make(chan string, 1)}
	dir := t.TempDir()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	link := filepath.Join(dir, "usb-Honeywell_1900-if00")
	if err := sc.Link(link); err != nil {
		t.Fatal(err)
	}
	r.sc = sc
	text := fmt.Sprintf(`
agent: {id: hub-test-01, site: TEST-HUB, data_dir: %q}
mqtt:
  brokers: [%q]
  reconnect_min: 50ms
  reconnect_max: 300ms
  connect_timeout: 2s
  connect_spread: 0s
  drain_rate: 0
http: {listen: "127.0.0.1:0"}
log: {level: debug}
stations:
  - id: induct-3
    event: EDD
    scanner: {port: %q, baud: 115200%s}
%s`, filepath.Join(dir, "data"), r.broker.URL(), link, scannerYAML, stationYAML)
	r.cfg, err = config.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	r.sub = testmqtt.Subscribe(t, r.broker, "central-"+t.Name(), r.cfg.MQTT.TopicPrefix+"/#")
	r.start()
	t.Cleanup(r.stop)
	return r
}

// start makes and runs the agent on r.cfg.
func (r *rig) start() {
	r.t.Helper()
	var err error
	r.a, err = agent.New(r.cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(r.t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})), Version: "test",
		Ready: func(addr string) {
			select {
			case r.addr <- addr:
			default:
			}
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.a.Run(ctx) }()
}

// restart runs a new agent on the same configuration and data directory
// (after stop).
func (r *rig) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("agent Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		r.t.Error("agent did not stop within 15s")
	}
}

func (r *rig) waitAccepted(n uint64) {
	r.t.Helper()
	waitUntil(r.t, 15*time.Second, fmt.Sprintf("%d accepted scans", n), func() bool {
		st := r.a.Status()
		return len(st.Stations) > 0 && st.Stations[0].Counters.Scans >= n
	}, func() string { return fmt.Sprintf("%+v", r.a.Status().Stations) })
}

func scans(msgs []testmqtt.Message) []record.Event {
	var out []record.Event
	for _, m := range msgs {
		if strings.Contains(m.Topic, "/scans/") {
			var ev record.Event
			if err := json.Unmarshal(m.Payload, &ev); err == nil {
				out = append(out, ev)
			}
		}
	}
	return out
}

func countScans(n int) func([]testmqtt.Message) bool {
	return func(m []testmqtt.Message) bool { return len(uniqueScans(scans(m))) >= n }
}

// uniqueScans keeps the first delivery of each event id (delivery is at
// least once).
func uniqueScans(evs []record.Event) []record.Event {
	seen := map[string]bool{}
	var out []record.Event
	for _, e := range evs {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

func TestEndToEndSchema(t *testing.T) {
	r := newRig(t, "")
	before := time.Now().UTC().Truncate(time.Millisecond)
	r.sc.Send("]C0", "RR473124829GB")    // valid S10
	r.sc.Send("]C0", "RR473124828GB")    // wrong check digit
	r.sc.Send("", "10100024010003")      // valid Russian Post, no AIM
	r.sc.Send("]C0", "10100024010004")   // wrong check digit
	r.sc.Send("]C0", "PARCEL-LABEL-123") // other
	msgs := r.sub.WaitFor(15*time.Second, "5 scans", countScans(5))
	evs := uniqueScans(scans(msgs))
	want := []struct {
		barcode, aim, kind string
		valid              bool
		reason             string
	}{
		{"RR473124829GB", "]C0", "s10", true, ""},
		{"RR473124828GB", "]C0", "s10", false, "check_digit"},
		{"10100024010003", "", "ru14", true, ""},
		{"10100024010004", "]C0", "ru14", false, "check_digit"},
		{"PARCEL-LABEL-123", "]C0", "other", true, ""},
	}
	for i, w := range want {
		e := evs[i]
		if e.Barcode != w.barcode || e.AIM != w.aim || e.Kind != w.kind || e.Valid != w.valid || e.Reason != w.reason {
			t.Errorf("event %d = %+v, want %+v", i, e, w)
		}
		if e.Schema != "scanagent.scan/v1" || e.Agent != "hub-test-01" || e.Site != "TEST-HUB" || e.Station != "induct-3" || e.Event != "EDD" {
			t.Errorf("event %d envelope = %+v", i, e)
		}
		id, err := uuid.Parse(e.ID)
		if err != nil || id.Version() != 7 {
			t.Errorf("event %d id %q is not a UUIDv7 (%v)", i, e.ID, err)
		}
		if e.Seq != uint64(i+1) {
			t.Errorf("event %d seq %d, want %d", i, e.Seq, i+1)
		}
		ts, err := time.Parse(time.RFC3339Nano, e.ScannedAt)
		if err != nil || !strings.HasSuffix(e.ScannedAt, "Z") || len(e.ScannedAt) != len("2026-11-22T01:31:44.781Z") {
			t.Errorf("event %d scanned_at %q: want UTC with milliseconds (%v)", i, e.ScannedAt, err)
		}
		if ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("event %d scanned_at %v not within the test run", i, ts)
		}
		if e.Weight != nil {
			t.Errorf("event %d has a weight without a scale", i)
		}
	}
	// Absent fields are absent, not empty: the third event has no AIM and
	// no reason.
	var raw map[string]any
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, "/scans/induct-3") && strings.Contains(string(m.Payload), "10100024010003") {
			json.Unmarshal(m.Payload, &raw)
		}
	}
	for _, k := range []string{"aim", "reason", "weight"} {
		if _, ok := raw[k]; ok {
			t.Errorf("key %q present in %v", k, raw)
		}
	}
	// Retained online status.
	var online map[string]any
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, "/status") {
			json.Unmarshal(m.Payload, &online)
		}
	}
	if online["state"] != "online" || online["agent"] != "hub-test-01" {
		t.Errorf("status = %v", online)
	}
	// The local status API, once the station has heard every scan is
	// accepted (that can come after the scan is published).
	waitUntil(t, 10*time.Second, "five scans counted", func() bool { return r.a.Status().Stations[0].Counters.Scans == 5 })
	addr := <-r.addr
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready; broker connected"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st status.Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Agent != "hub-test-01" || st.Buffer.LastSeq != 5 || st.Stations[0].Counters.Scans != 5 || st.Stations[0].Counters.Invalid != 2 ||
		!st.MQTT.Connected || st.Process.HeapBytes == 0 || st.Stations[0].Scanner.State != "connected" {
		t.Errorf("status %+v", st)
	}

	// Graceful stop publishes a retained offline status.
	r.stop()
	r.sub.WaitFor(10*time.Second, "offline status", func(m []testmqtt.Message) bool {
		last := m[len(m)-1]
		return strings.HasSuffix(last.Topic, "/status") && strings.Contains(string(last.Payload), `"offline"`)
	})
}

// TestBrokerOutageBuffersAndDrainsInOrder stops mosquitto, scans while it
// is down (every scan is accepted into the buffer), starts it again and
// checks that everything arrives, in seq order.
func TestBrokerOutageBuffersAndDrainsInOrder(t *testing.T) {
	r := newRig(t, "")
	r.sc.Send("]C0", "RR473124829GB")
	r.sub.WaitFor(15*time.Second, "first scan", countScans(1))

	r.broker.Stop()
	codes := sim.NewCodes(42, 0.1)
	const outage = 300
	for range outage {
		code, aim := codes.Next()
		if err := r.sc.Send(aim, code); err != nil {
			t.Fatal(err)
		}
	}
	r.waitAccepted(1 + outage)
	if st := r.a.Status(); st.Buffer.Depth != outage || st.MQTT.Connected {
		t.Fatalf("during outage: buffer depth %d (want %d), connected %v", st.Buffer.Depth, outage, st.MQTT.Connected)
	}

	r.broker.Restart()
	msgs := r.sub.WaitFor(30*time.Second, "all scans after the outage", countScans(1+outage))
	evs := uniqueScans(scans(msgs))
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: not in seq order", i, e.Seq)
		}
	}
	waitUntil(t, 10*time.Second, "the buffer drained", func() bool { return r.a.Status().Buffer.Depth == 0 },
		func() string { return fmt.Sprintf("%+v", r.a.Status().Buffer) })
	if st := r.a.Status(); st.MQTT.Sessions < 2 {
		t.Errorf("want a second MQTT session after the outage, got %d", st.MQTT.Sessions)
	}
}

// TestRestartKeepsBacklogAndSeq stops the agent while the broker is down,
// starts a new agent on the same data dir, and checks the backlog is sent
// and seq continues.
func TestRestartKeepsBacklogAndSeq(t *testing.T) {
	r := newRig(t, "")
	r.broker.Stop()
	for _, c := range []string{"RR473124829GB", "RR287043775IN", "10100024010003"} {
		r.sc.Send("]C0", c)
	}
	r.waitAccepted(3)
	r.stop()

	a2, err := agent.New(r.cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a2.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r.broker.Restart()
	r.sc.Send("]C0", "RR473124850GB")
	msgs := r.sub.WaitFor(20*time.Second, "4 scans across the restart", countScans(4))
	evs := uniqueScans(scans(msgs))
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d (%s) seq %d, want %d", i, e.Barcode, e.Seq, i+1)
		}
	}
	if evs[3].Barcode != "RR473124850GB" {
		t.Fatalf("last event %+v", evs[3])
	}
}

func TestOverlongAndEmptyFramesCounted(t *testing.T) {
	r := newRig(t, ", max_length: 32")
	r.sc.Write([]byte(strings.Repeat("X", 100) + "\r\n\r\n]C0RR473124829GB\r\n"))
	r.sub.WaitFor(15*time.Second, "the good scan", countScans(1))
	// The buffer wakes the uplink before the station hears the scan is
	// accepted: the published scan can come before the counter.
	waitUntil(t, 10*time.Second, "the scan counted", func() bool { return r.a.Status().Stations[0].Counters.Scans >= 1 })
	st := r.a.Status().Stations[0]
	if st.Counters.Rejected["overlong"] != 1 || st.Counters.Scans != 1 {
		t.Fatalf("counters %+v", st.Counters)
	}
	if st.Scanner.State != "connected" {
		t.Fatalf("scanner state %+v", st.Scanner)
	}
}

// TestBufferFullRejectNew: with the broker down and reject_new, scans past
// buffer.max_bytes are refused, counted per station, and the buffer is
// flagged full; the scanner keeps being read.
func TestBufferFullRejectNew(t *testing.T) {
	r := newRig(t, "")
	r.stop()
	r.broker.Stop()
	cfg := *r.cfg
	cfg.Buffer.MaxBytes = 1 << 20
	cfg.Buffer.WhenFull = "reject_new"
	a, err := agent.New(&cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	codes := sim.NewCodes(7, 0)
	var batch []byte
	const n = 5000 // ~1.7 MB of events: more than max_bytes
	for i := range n {
		code, aim := codes.Next()
		batch = append(batch, aim+code+"\r\n"...)
		if i%100 == 99 {
			r.sc.Write(batch)
			batch = batch[:0]
		}
	}
	var st status.Status
	waitUntil(t, 20*time.Second, fmt.Sprintf("all %d scans accounted for", n), func() bool {
		st = a.Status()
		c := st.Stations[0].Counters
		return c.Scans+c.NotAccepted["buffer_full"] == n
	}, func() string { return fmt.Sprintf("%+v", st.Stations[0].Counters) })
	c := st.Stations[0].Counters
	if c.NotAccepted["buffer_full"] == 0 || !st.Buffer.Full || st.Buffer.Bytes > 1<<20 || st.Buffer.Rejected["buffer_full"] != c.NotAccepted["buffer_full"] {
		t.Fatalf("counters %+v, buffer %+v", c, st.Buffer)
	}
	t.Logf("accepted %d, refused %d (buffer_full), buffer %d bytes", c.Scans, c.NotAccepted["buffer_full"], st.Buffer.Bytes)
}

// TestStationScaleAndScannerOptions: a station's scale is supervised next
// to its scanner: its state is published on P/devices/<station>/scale and
// its readings and frames by result are in the status. Scanner options
// reach the framer (Honeywell Code ID, suffix stripping).
func TestStationScaleAndScannerOptions(t *testing.T) {
	scale, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, sim.Weight{Value: "12.34", Unit: "kg", Stable: true}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scale.Close() })
	r := newRigStation(t, ", code_id: honeywell, strip_suffix: \"\\t\"", fmt.Sprintf("    scale: {port: %q, baud: 9600, protocol: toledo}\n", scale.Path()))
	r.sc.Send("", "jRR473124829GB\t")
	msgs := r.sub.WaitFor(15*time.Second, "the scan and the scale's state", func(m []testmqtt.Message) bool {
		scale := false
		for _, msg := range m {
			scale = scale || strings.HasSuffix(msg.Topic, "/devices/induct-3/scale") && strings.Contains(string(msg.Payload), `"connected"`)
		}
		return scale && len(scans(m)) == 1
	})
	ev := scans(msgs)[0]
	if ev.Barcode != "RR473124829GB" || ev.AIM != "]C0" || !ev.Valid {
		t.Errorf("event %+v", ev)
	}
	waitUntil(t, 10*time.Second, "the scale's reading in the status", func() bool {
		sc := r.a.Status().Stations[0].Scale
		return sc != nil && sc.Last != nil && sc.Last.Grams == 12340 && sc.Frames["ok"] > 0 && sc.State == "connected"
	}, func() string { return fmt.Sprintf("%+v", r.a.Status().Stations[0].Scale) })
}

// TestWeightsEndToEnd: a simulated MT-SICS (polled) and Toledo
// (streaming) scale on pseudo-terminals; the scan events carry the grams,
// or none with the reason.
func TestWeightsEndToEnd(t *testing.T) {
	for _, protocol := range []string{"mt-sics", "toledo"} {
		t.Run(protocol, func(t *testing.T) {
			scale, err := sim.NewScale(protocol, sim.Line{Baud: 9600}, sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 50*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { scale.Close() })
			r := newRigStation(t, "", fmt.Sprintf("    scale: {port: %q, baud: 9600, protocol: %s, wait_stable: 300ms, poll_interval: 50ms}\n", scale.Path(), protocol))
			waitScale := func(grams int64) {
				waitUntil(t, 10*time.Second, fmt.Sprintf("the scale to show %d g", grams), func() bool {
					st := r.a.Status().Stations
					return len(st) > 0 && st[0].Scale != nil && st[0].Scale.Last != nil && st[0].Scale.Last.Grams == grams
				})
			}
			waitScale(1234)
			r.sc.Send("]C0", "RR473124829GB")

			// The next parcel is still moving when scanned.
			r.sub.WaitFor(15*time.Second, "the first scan", countScans(1))
			scale.Set(sim.Weight{Value: "2.50", Unit: "kg", Stable: false})
			waitUntil(t, 10*time.Second, "the scale to report motion", func() bool {
				sc := r.a.Status().Stations[0].Scale
				return sc.Last != nil && sc.Last.Grams == 2500 && !sc.Last.Stable
			})
			r.sc.Send("]C0", "RR287043775IN")
			r.sub.WaitFor(15*time.Second, "the second scan", countScans(2))

			// The scale is unplugged: scans go on, without weight, at once.
			scale.Unplug()
			waitUntil(t, 10*time.Second, "the scale disconnected", func() bool { return r.a.Status().Stations[0].Scale.State == "disconnected" })
			r.sc.Send("]C0", "EE123456785RU")
			evs := scans(r.sub.WaitFor(15*time.Second, "the third scan", countScans(3)))

			first, second, third := evs[0], evs[1], evs[2]
			if first.WeightStatus != "ok" || first.Weight == nil || first.Weight.Grams != 1234 || first.Weight.Value != "1.234" ||
				first.Weight.Unit != "kg" || !first.Weight.Stable || first.Weight.MeasuredAt == "" {
				t.Errorf("first scan: %+v %+v", first, first.Weight)
			}
			if second.Weight != nil || second.WeightStatus != "motion" {
				t.Errorf("second scan: %+v", second)
			}
			if third.Weight != nil || third.WeightStatus != "scale_offline" {
				t.Errorf("third scan: %+v", third)
			}
			c := r.a.Status().Stations[0].Counters
			if c.Weights["ok"] != 1 || c.Weights["motion"] != 1 || c.Weights["scale_offline"] != 1 {
				t.Errorf("weight counters %v", c.Weights)
			}
		})
	}
}

// TestOperatorFeedback: the scanner's pseudo-terminal receives the
// Honeywell Host ACK good-read command after an accepted scan and the
// bad-read command for an invalid code and a code of an unexpected kind.
func TestOperatorFeedback(t *testing.T) {
	r := newRigStation(t, "", "    accept: [s10]\n    feedback: {protocol: honeywell, good_read: true, group: 0}\n")
	r.sc.Send("]C0", "RR473124828GB") // wrong check digit
	if !r.sc.WaitReceived([]byte("0\x1b8,"), 10*time.Second) {
		t.Fatalf("no bad-read command; scanner received %q", r.sc.Received())
	}
	r.sc.Send("]C0", "RR473124829GB")
	if !r.sc.WaitReceived([]byte("0\x1b8,0\x1b7,"), 10*time.Second) {
		t.Fatalf("no good-read command; scanner received %q", r.sc.Received())
	}
	r.sc.Send("]C0", "10100024010003") // valid, but not what this station accepts
	if !r.sc.WaitReceived([]byte("0\x1b8,0\x1b7,0\x1b8,"), 10*time.Second) {
		t.Fatalf("no bad-read command for an unexpected kind; scanner received %q", r.sc.Received())
	}
	evs := scans(r.sub.WaitFor(15*time.Second, "three scans", countScans(3)))
	if evs[2].Valid || evs[2].Reason != "unexpected_kind" || evs[2].Kind != "ru14" {
		t.Errorf("unexpected kind event %+v", evs[2])
	}
	// The station counts a scan once its outcome is back from the buffer,
	// which may be after the subscriber has it.
	waitUntil(t, 10*time.Second, "the counters", func() bool {
		c := r.a.Status().Stations[0].Counters
		return c.Feedback["bad"] == 2 && c.Feedback["good"] == 1 && c.InvalidByReason["check_digit"] == 1 && c.InvalidByReason["unexpected_kind"] == 1
	}, func() string { return fmt.Sprintf("counters %+v", r.a.Status().Stations[0].Counters) })
}

// TestFeedbackLineWithoutModemLines: a line pulse on a port without modem
// lines (a pseudo-terminal, like some adapters) is counted as an error; the
// scans go on.
func TestFeedbackLineWithoutModemLines(t *testing.T) {
	r := newRigStation(t, "", "    feedback: {protocol: line, line: rts, pulse: 10ms}\n")
	r.sc.Send("]C0", "RR473124828GB")
	r.sc.Send("]C0", "RR473124829GB")
	r.sub.WaitFor(15*time.Second, "both scans", countScans(2))
	waitUntil(t, 10*time.Second, "a feedback error counted", func() bool { return r.a.Status().Stations[0].Counters.Feedback["error"] == 1 },
		func() string { return fmt.Sprint(r.a.Status().Stations[0].Counters.Feedback) })
}

// TestDoubleReadSuppressed: the same code twice within dedup_window is one
// event; again after the window it is a new one.
func TestDoubleReadSuppressed(t *testing.T) {
	r := newRigStation(t, "", "    dedup_window: 400ms\n")
	r.sc.Send("]C0", "RR473124829GB")
	r.sc.Send("]C0", "RR473124829GB")
	r.sc.Send("]C0", "RR287043775IN")
	r.sub.WaitFor(15*time.Second, "two scans", countScans(2))
	time.Sleep(500 * time.Millisecond) // wall time is what is tested: the 400ms dedup window passes
	r.sc.Send("]C0", "RR473124829GB")
	evs := scans(r.sub.WaitFor(15*time.Second, "the scan after the window", countScans(3)))
	got := []string{evs[0].Barcode, evs[1].Barcode, evs[2].Barcode}
	if got[0] != "RR473124829GB" || got[1] != "RR287043775IN" || got[2] != "RR473124829GB" {
		t.Errorf("events %v", got)
	}
	if n := r.a.Status().Stations[0].Counters.Suppressed; n != 1 {
		t.Errorf("suppressed %d", n)
	}
}

func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds one sample in Prometheus text output.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestMetrics: /metrics carries the scanagent_ series, and they move with
// scans; Go and process collectors are there too.
func TestMetrics(t *testing.T) {
	r := newRig(t, "")
	addr := <-r.addr
	code, body := httpGet(t, "http://"+addr+"/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, name := range []string{"scanagent_build_info", "scanagent_buffer_depth", "scanagent_buffer_sync_seconds_bucket",
		"scanagent_mqtt_connected", "scanagent_mqtt_ack_latency_seconds_bucket", "scanagent_device_connected",
		`scanagent_device_state{device="scanner",state="connected",station="induct-3"}`,
		"scanagent_scans_accepted_total", "go_goroutines", "process_resident_memory_bytes", "scanagent_start_time_seconds"} {
		if !strings.Contains(body, name) {
			t.Errorf("no %s in /metrics", name)
		}
	}
	r.sc.Send("]C0", "RR473124829GB")
	r.sc.Send("]C0", "RR473124828GB")
	r.sub.WaitFor(15*time.Second, "two scans", countScans(2))
	var scans, invalid, acked, latency, appended float64
	waitUntil(t, 10*time.Second, "the metrics to move", func() bool {
		_, body = httpGet(t, "http://"+addr+"/metrics", "")
		scans, _ = metricValue(body, `scanagent_scans_accepted_total{station="induct-3"}`)
		invalid, _ = metricValue(body, `scanagent_scans_invalid_total{reason="check_digit",station="induct-3"}`)
		acked, _ = metricValue(body, "scanagent_mqtt_acked_total")
		latency, _ = metricValue(body, "scanagent_mqtt_ack_latency_seconds_count")
		appended, _ = metricValue(body, "scanagent_buffer_appended_total")
		return scans == 2 && invalid == 1 && acked >= 2 && latency >= 2 && appended == 2
	}, func() string {
		return fmt.Sprintf("scans %v invalid %v acked %v latency %v appended %v", scans, invalid, acked, latency, appended)
	})
}

// TestHTTPTokenAndLogLevel: with a token, every path but /healthz needs
// it; the log level can be read and changed at runtime.
func TestHTTPTokenAndLogLevel(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)
	text := fmt.Sprintf("agent: {id: hub-1, site: LAB, data_dir: %q}\nmqtt: {brokers: [\"tcp://127.0.0.1:1\"]}\nhttp: {listen: \"0.0.0.0:0\", token_file: %q}\nstations:\n  - id: s1\n    scanner: {port: /nonexistent/tty}\n",
		filepath.Join(dir, "data"), tokenFile)
	cfg, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	addrCh := make(chan string, 1)
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: level})), Level: level,
		Ready: func(addr string) { addrCh <- addr }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	_, port, _ := net.SplitHostPort(<-addrCh)
	base := "http://127.0.0.1:" + port
	if code, _ := httpGet(t, base+"/healthz", ""); code != 200 {
		t.Errorf("/healthz without token: %d", code)
	}
	for _, p := range []string{"/status", "/metrics", "/readyz", "/loglevel"} {
		if code, _ := httpGet(t, base+p, ""); code != 401 {
			t.Errorf("%s without token: %d", p, code)
		}
		if code, _ := httpGet(t, base+p, "wrong"); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
		if code, _ := httpGet(t, base+p, "s3cret"); code != 200 {
			t.Errorf("%s with the token: %d", p, code)
		}
	}
	put := func(body, token string) int {
		req, _ := http.NewRequest("PUT", base+"/loglevel", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("debug", "s3cret"); code != 200 || level.Level() != slog.LevelDebug {
		t.Errorf("PUT debug: %d, level %v", code, level.Level())
	}
	if code := put("loud", "s3cret"); code != 400 || level.Level() != slog.LevelDebug {
		t.Errorf("PUT loud: %d, level %v", code, level.Level())
	}
	if code := put("error", "nope"); code != 401 || level.Level() != slog.LevelDebug {
		t.Errorf("PUT without the token: %d, level %v", code, level.Level())
	}
	if _, body := httpGet(t, base+"/loglevel", "s3cret"); strings.TrimSpace(body) != "debug" {
		t.Errorf("GET /loglevel: %q", body)
	}
}
