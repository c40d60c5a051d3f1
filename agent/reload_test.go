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
	head := fmt.Sprintf("agent: {id: hub-1, site: LAB, data_dir: %q}\nmqtt: {brokers: [%q]}\nhttp: {listen: \"\"}\nstations:\n",
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
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := a.Status()
		if len(st.Stations) == 3 && st.Stations[0].Scanner.State == "connected" && st.Stations[1].Scanner.State == "connected" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stations not connected")
		}
	}

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
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
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
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-feeding

	st := a.Status()
	if len(st.Stations) != 3 || st.Stations[0].ID != "a" || st.Stations[1].ID != "b" || st.Stations[2].ID != "c" {
		t.Fatalf("stations after reload: %+v", st.Stations)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := a.Status()
		if st.Stations[1].Scanner.State == "connected" && st.Stations[2].Scanner.State == "connected" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b and c not connected after the reload")
		}
	}
	scanners["b"].Send("]C0", "RR473124829GB")
	scanners["c"].Send("]C0", "RR287043775IN")
	n := int(sent.Load())
	msgs := sub.WaitFor(20*time.Second, "every scan", func(m []testmqtt.Message) bool { return len(uniqueScans(scans(m))) >= n+2 })
	byStation := map[string][]agent.Event{}
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
