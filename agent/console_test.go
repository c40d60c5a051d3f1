//go:build unix

package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/station"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestConsoleHooks: what the console asks of the agent: the taps of the
// configured devices only, a scale poll (refused for a streaming scale or
// none), and a reload from the file with its result, refused with every
// error and applied with the sections that need a restart.
func TestConsoleHooks(t *testing.T) {
	broker := testmqtt.Start(t)
	dir := t.TempDir()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	scale, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scale.Close() })
	path := filepath.Join(dir, "scanagent.yaml")
	text := func(level, brokerURL string) string {
		return fmt.Sprintf(`agent: {id: hub-1, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], connect_spread: 0s}
http: {listen: ""}
log: {level: %s}
stations:
  - id: induct-1
    scanner: {port: %q}
    scale: {port: %q, baud: 9600, protocol: toledo}
`, filepath.Join(dir, "data"), brokerURL, level, sc.Path(), scale.Path())
	}
	os.WriteFile(path, []byte(text("info", broker.URL())), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level})), Level: level, ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	if l := a.ConfigLoad(); l.Kind != "start" || !l.OK || l.Path != path {
		t.Fatalf("before run: %+v", l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for a.Tap("induct-1", "scale").Last() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the scale's tap never got a frame")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sc.Send("]C0", "RR473124829GB"); err != nil {
		t.Fatal(err)
	}
	for a.Tap("induct-1", "scanner").Last() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the scanner's tap never got the frame")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f := a.Tap("induct-1", "scanner").Since(0); len(f) != 1 || f[0].Code != "RR473124829GB" {
		t.Fatalf("scanner tap %+v", f)
	}
	if a.Tap("induct-1", "printer") != nil || a.Tap("other", "scanner") != nil {
		t.Fatal("a tap for a device that is not configured")
	}

	if err := a.PollScale("induct-1"); !errors.Is(err, station.ErrScaleStreams) {
		t.Errorf("poll a streaming scale: %v", err)
	}
	if err := a.PollScale("nope"); !errors.Is(err, agent.ErrNoStation) {
		t.Errorf("poll an unknown station: %v", err)
	}

	os.WriteFile(path, []byte("agent: {id: hub-1\nbogus: 1\n"), 0o644)
	res, err := a.ReloadFile("console")
	if err != nil || res.OK || len(res.Errors) == 0 || res.By != "console" || res.Kind != "reload" {
		t.Fatalf("a bad file: %+v %v", res, err)
	}
	if a.ConfigLoad().OK {
		t.Fatal("the refused reload is not the last result")
	}
	os.WriteFile(path, []byte(text("debug", "tcp://127.0.0.1:1")), 0o644)
	res, err = a.ReloadFile("signal")
	if err != nil || !res.OK || len(res.RestartNeeded) != 1 || res.RestartNeeded[0] != "mqtt" || level.Level() != slog.LevelDebug {
		t.Fatalf("a good file: %+v %v (level %v)", res, err, level.Level())
	}
	// The taps outlive a reload that restarts nothing.
	if a.Tap("induct-1", "scanner").Last() != 1 {
		t.Fatal("the tap was lost")
	}
}

// TestReloadFileWithoutPath: an agent given no file cannot reload one.
func TestReloadFileWithoutPath(t *testing.T) {
	cfg, err := config.Parse("x.yaml", []byte("agent: {id: a, site: s, data_dir: /tmp/x}\nmqtt: {brokers: [\"tcp://127.0.0.1:1\"]}\n"+
		"stations: [{id: s1, scanner: {port: /dev/null}}]\n"),
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, agent.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReloadFile("console"); !errors.Is(err, agent.ErrNoConfigFile) {
		t.Fatalf("%v", err)
	}
}
