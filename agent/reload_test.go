//go:build unix

package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestReloadStations: while station A is scanned without pause, a reload
// keeps A running untouched, restarts B with its new event code, starts C
// and stops D; every scan A read arrives, and B's and C's later scans
// carry the new settings. An invalid configuration never reaches Reload
// (config.Parse refuses it); the command layer's SIGHUP test covers that.
func TestReloadStations(t *testing.T) {
	broker := testmqtt.Start(t)
	dir := t.TempDir()
	scanners := map[string]*sim.Scanner{}
	for _, id := range []string{"a", "b", "c", "d"} {
		sc, err := sim.NewScanner("\r\n")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Close() })
		scanners[id] = sc
	}
	head := fmt.Sprintf("agent: {id: hub-1, site: LAB, data_dir: %q}\nmqtt: {brokers: [%q], connect_spread: 0s}\nhttp: {listen: \"\"}\nstations:\n",
		filepath.Join(dir, "data"), broker.URL())
	station := func(id, event string) string {
		return fmt.Sprintf("  - {id: %s, event: %s, scanner: {port: %q}}\n", id, event, scanners[id].Path())
	}
	parse := func(text string) *config.Config {
		cfg, err := config.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := parse(head + station("a", "EDD") + station("b", "EDD") + station("d", "EDD"))
	sub := testmqtt.Subscribe(t, broker, "central", cfg.MQTT.TopicPrefix+"/scans/#")
	level := new(slog.LevelVar)
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level})), Level: level})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, 10*time.Second, "stations connected", func() bool {
		st := a.Status()
		return len(st.Stations) == 3 && st.Stations[0].Scanner.State == "connected" && st.Stations[1].Scanner.State == "connected"
	})

	// Station A is scanned every 2ms throughout.
	var sent atomic.Int64
	stop := make(chan struct{})
	feeding := make(chan struct{})
	go func() {
		defer close(feeding)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if scanners["a"].Send("]C0", s10(i)) == nil {
				sent.Add(1)
			}
			time.Sleep(2 * time.Millisecond) // wall time: the scanner's pace, about 500 scans/s
		}
	}()
	before := sent.Load()
	waitUntil(t, 10*time.Second, "scans flowing before the reload", func() bool { return sent.Load() >= before+50 })
	restart, err := a.Reload(parse(head + station("a", "EDD") + station("b", "EDE") + station("c", "EMD") +
		"log: {level: debug}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(restart) != 0 {
		t.Errorf("restart needed for %v", restart)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("log level %v after reload", level.Level())
	}
	before = sent.Load()
	waitUntil(t, 10*time.Second, "scans flowing after the reload", func() bool { return sent.Load() >= before+50 })
	close(stop)
	<-feeding

	st := a.Status()
	if len(st.Stations) != 3 || st.Stations[0].ID != "a" || st.Stations[1].ID != "b" || st.Stations[2].ID != "c" {
		t.Fatalf("stations after reload: %+v", st.Stations)
	}
	waitUntil(t, 10*time.Second, "b and c connected after the reload", func() bool {
		st := a.Status()
		return st.Stations[1].Scanner.State == "connected" && st.Stations[2].Scanner.State == "connected"
	})
	scanners["b"].Send("]C0", "RR473124829GB")
	scanners["c"].Send("]C0", "RR287043775IN")
	n := int(sent.Load())
	msgs := sub.WaitFor(20*time.Second, "every scan", func(m []testmqtt.Message) bool { return len(uniqueScans(scans(m))) >= n+2 })
	byStation := map[string][]record.Event{}
	for _, ev := range uniqueScans(scans(msgs)) {
		byStation[ev.Station] = append(byStation[ev.Station], ev)
	}
	if len(byStation["a"]) != n {
		t.Errorf("station a: %d of %d scans arrived", len(byStation["a"]), n)
	}
	for i, ev := range byStation["a"] {
		if ev.Barcode != s10(i) {
			t.Fatalf("station a scan %d is %s, want %s (order)", i, ev.Barcode, s10(i))
		}
	}
	if b := byStation["b"]; len(b) != 1 || b[0].Event != "EDE" {
		t.Errorf("station b: %+v", b)
	}
	if c := byStation["c"]; len(c) != 1 || c[0].Event != "EMD" {
		t.Errorf("station c: %+v", c)
	}
	t.Logf("station a: %d scans across the reload, all delivered in order", n)

	// A change outside stations is reported, not applied.
	restart, err = a.Reload(parse(head + station("a", "EDD") + station("b", "EDE") + station("c", "EMD") +
		"buffer: {max_bytes: 1GiB}\n"))
	if err != nil || len(restart) != 1 || restart[0] != "buffer" {
		t.Errorf("restart needed %v, err %v", restart, err)
	}
}

// TestReloadKeepsStationCounters: a station restarted by a reload (its
// event code changed), then removed and added again, keeps every counter
// (scans, invalid, double reads, rejected frames, weights, feedback,
// scale frames): they are Prometheus counters and must never go back
// while the process lives.
func TestReloadKeepsStationCounters(t *testing.T) {
	dir := t.TempDir()
	scA, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scA.Close() })
	scB, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scB.Close() })
	scale, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scale.Close() })
	head := fmt.Sprintf("agent: {id: hub-1, site: LAB, data_dir: %q}\nmqtt: {brokers: [\"tcp://127.0.0.1:1\"]}\nhttp: {listen: \"\"}\nstations:\n"+
		"  - {id: a, scanner: {port: %q}}\n", filepath.Join(dir, "data"), scA.Path())
	b := func(event string) string {
		return fmt.Sprintf("  - id: b\n    event: %s\n    dedup_window: 1m\n    feedback: {protocol: custom, bad: \"!\"}\n"+
			"    scanner: {port: %q}\n    scale: {port: %q, protocol: toledo, wait_stable: 0s, share_reading: true}\n", event, scB.Path(), scale.Path())
	}
	parse := func(text string) *config.Config {
		cfg, err := config.Parse("test.yaml", []byte(text), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	a, err := agent.New(parse(head+b("EDD")), agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a)
	stationB := func() (status.Station, bool) {
		for _, st := range a.Status().Stations {
			if st.ID == "b" {
				return st, true
			}
		}
		return status.Station{}, false
	}
	waitB := func(what string, ok func(status.Station) bool) status.Station {
		t.Helper()
		var st status.Station
		waitUntil(t, 15*time.Second, "station b: "+what, func() bool {
			var found bool
			st, found = stationB()
			return found && ok(st)
		}, func() string { return fmt.Sprintf("%+v %+v", st.Counters, st.Scale) })
		return st
	}
	connected := func(st status.Station) bool {
		return st.Scanner.State == "connected" && st.Scale != nil && st.Scale.State == "connected" && st.Scale.Frames["ok"] > 0
	}
	waitB("connected with a weight", connected)
	scB.Send("]C0", "RR473124829GB")
	scB.Send("]C0", "RR473124829GB")              // a double read
	scB.Send("]C0", "RR473124828GB")              // wrong check digit: invalid, bad-read feedback
	scB.Write([]byte("]C0RR\x01473124829GB\r\n")) // a control character: rejected
	before := waitB("counted", func(st status.Station) bool {
		c := st.Counters
		return c.Scans == 2 && c.Invalid == 1 && c.Suppressed == 1 && c.Rejected["control"] == 1 && c.Weights["ok"] == 2 && c.Feedback["bad"] == 1
	})

	notBehind := func(when string, st status.Station) {
		t.Helper()
		c, w := st.Counters, before.Counters
		if c.Scans < w.Scans || c.Invalid < w.Invalid || c.Suppressed < w.Suppressed || c.InvalidByReason["check_digit"] < 1 ||
			c.Rejected["control"] < 1 || c.Weights["ok"] < 2 || c.Feedback["bad"] < 1 || st.Scale == nil || st.Scale.Frames["ok"] < before.Scale.Frames["ok"] {
			t.Fatalf("%s: counters went back\nbefore %+v %v\nafter  %+v %v", when, w, before.Scale.Frames, c, st.Scale)
		}
	}

	// Restarted by a reload.
	if _, err := a.Reload(parse(head + b("EDE"))); err != nil {
		t.Fatal(err)
	}
	st, _ := stationB()
	notBehind("right after the restart", st)
	waitB("reconnected", connected)
	scB.Send("]C0", "RR287043775IN")
	st = waitB("one more scan", func(st status.Station) bool { return st.Counters.Scans == before.Counters.Scans+1 })
	notBehind("after one more scan", st)

	// Removed, then added again.
	if _, err := a.Reload(parse(head)); err != nil {
		t.Fatal(err)
	}
	if _, found := stationB(); found {
		t.Fatal("station b still there after its removal")
	}
	if _, err := a.Reload(parse(head + b("EDD"))); err != nil {
		t.Fatal(err)
	}
	st, _ = stationB()
	notBehind("after removal and re-adding", st)
	if st.Counters.Scans != before.Counters.Scans+1 {
		t.Fatalf("scans %d after re-adding, want %d", st.Counters.Scans, before.Counters.Scans+1)
	}
}
