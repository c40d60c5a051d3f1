//go:build unix

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestKillNineMidReceptacle: the real binary, an open_receptacles
// station and an operator signed in, is killed with SIGKILL at random
// moments while items are scanned out of one receptacle, and restarted.
// Each restarted agent continues the same receptacle with the same
// operator, and the receptacle event, once the close code is scanned,
// counts exactly the items delivered in it, from the first to the last.
func TestKillNineMidReceptacle(t *testing.T) {
	bin, broker, sc, _, cfg := workflowBinary(t, "crash-02", "keepalive: 2s")
	sub := testmqtt.Subscribe(t, broker, "central-crash-receptacle", "scanagent/LAB/crash-02/#")
	const label = "BEBRUABOLPBBAEN60073003000227"

	var accepted sync.Map
	p := startAgent(t, bin, cfg, &accepted, nil)
	sc.Send("", "OP0042")
	sc.Send("]C0", label)
	sub.WaitFor(15*time.Second, "the label", func(m []testmqtt.Message) bool {
		return len(testmqtt.Events(m, "/scans/")) >= 1
	})

	var fed atomic.Int64
	stopFeed := make(chan struct{})
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		for i := 1; ; i++ {
			select {
			case <-stopFeed:
				return
			default:
			}
			if sc.Send("]C0", s10(500_000+i)) != nil {
				return
			}
			fed.Store(int64(i))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill moments: seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const cycles = 4
	for c := range cycles {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		p.signal(t, syscall.SIGKILL)
		t.Logf("cycle %d: fed %d", c, fed.Load())
		p = startAgent(t, bin, cfg, &accepted, nil)
	}
	close(stopFeed)
	<-feedDone
	sc.Send("", "CTL-CLOSE") // after the last item, in the same stream
	msgs := sub.WaitFor(60*time.Second, "the receptacle event", func(m []testmqtt.Message) bool {
		return len(testmqtt.Events(m, "/receptacles/")) >= 1
	})
	p.signal(t, syscall.SIGTERM)

	recs := testmqtt.Events(msgs, "/receptacles/")
	ev := recs[0]
	for _, again := range recs[1:] {
		if again["id"] != ev["id"] {
			t.Fatalf("two receptacle events: %v and %v", ev, again)
		}
	}
	// The items delivered in the receptacle (first delivery of each id).
	seen := map[string]bool{}
	items, first, last := 0, 0.0, 0.0
	outside := 0
	for _, e := range testmqtt.Events(msgs, "/scans/") {
		id, _ := e["id"].(string)
		if seen[id] || e["kind"] != "s10" {
			continue
		}
		seen[id] = true
		if e["receptacle"] != label || e["operator"] != "OP0042" {
			outside++
			continue
		}
		seq := e["seq"].(float64)
		if first == 0 {
			first = seq
		}
		items, last = items+1, seq
	}
	t.Logf("fed %d items; %d delivered in the receptacle, %d outside; the event: %v", fed.Load(), items, outside, ev)
	if outside > 0 {
		t.Errorf("%d items delivered outside the receptacle or without the operator after a restart", outside)
	}
	if items < 200 {
		t.Fatalf("only %d items delivered; the agent is not reading", items)
	}
	if ev["receptacle"] != label || ev["operator"] != "OP0042" || ev["closed_by"] != "control" ||
		int(ev["items"].(float64)) != items || ev["first_item_seq"] != first || ev["last_item_seq"] != last {
		t.Errorf("receptacle event %v; want %d items, seqs %v..%v", ev, items, first, last)
	}
}

// workflowBinary builds the real binary and starts mosquitto and a
// simulated scanner; it writes the config of one open_receptacles station
// (badges OP0000-OP9999, the close code CTL-CLOSE) of agent id, with
// mqtt keys extra. It returns the config's path and its directory (the
// data_dir is dir/data).
func workflowBinary(t *testing.T, id, extra string) (bin string, broker *testmqtt.Broker, sc *sim.Scanner, dir, cfg string) {
	t.Helper()
	bin = buildAgent(t)
	broker = testmqtt.Start(t)
	dir = t.TempDir()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	link := filepath.Join(dir, "usb-scanner")
	sc.Link(link)
	if extra != "" {
		extra = ", " + extra
	}
	cfg = filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, `
agent: {id: %s, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 300ms, connect_spread: 0s, drain_rate: 0%s}
http: {listen: ""}
log: {level: debug, format: json}
stations:
  - id: open-1
    workflow: open_receptacles
    operator_pattern: "^OP[0-9]{4}$"
    controls: {close: CTL-CLOSE}
    scanner: {port: %q, baud: 115200}
`, id, filepath.Join(dir, "data"), broker.URL(), extra, link), 0o644)
	return bin, broker, sc, dir, cfg
}

// lockedLog collects an agent's log lines for a test to read while the
// agent runs.
type lockedLog struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// TestWorkflowStateFaults: the real binary meets its workflow state files
// damaged, then a data directory where the state cannot be written at
// all: each time it says so in its log, keeps running and accepts scans.
func TestWorkflowStateFaults(t *testing.T) {
	bin, broker, sc, dir, cfg := workflowBinary(t, "state-01", "")
	data := filepath.Join(dir, "data")
	sub := testmqtt.Subscribe(t, broker, "central-state-faults", "scanagent/LAB/state-01/#")
	const label = "BEBRUABOLPBBAEN60073003000227"
	var accepted sync.Map
	scan := func(code string) {
		t.Helper()
		before, _ := accepted.Load(code)
		sc.Send("", code)
		waitFor(t, 15*time.Second, "scan "+code+" accepted", func() bool {
			seq, ok := accepted.Load(code)
			return ok && seq != before
		})
	}

	// start runs the agent and waits until its scanner port is open (the
	// simulated scanner loses what it sends before).
	start := func() (*agentProc, *lockedLog) {
		t.Helper()
		logs := &lockedLog{}
		p := startAgent(t, bin, cfg, &accepted, logs)
		waitFor(t, 15*time.Second, "the scanner port open", func() bool { return strings.Contains(logs.String(), `"msg":"scanner port open"`) })
		return p, logs
	}
	p, _ := start()
	scan(label)
	scan(s10(1))
	p.signal(t, syscall.SIGTERM)

	for _, f := range []string{"station-open-1.state", "dispatches.state"} {
		if err := os.WriteFile(filepath.Join(data, "state", f), []byte("\x00garbage, not state"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	p, logs := start()
	scan(label)
	scan(s10(2))
	sc.Send("", "CTL-CLOSE")
	sub.WaitFor(15*time.Second, "the receptacle after the damage", func(m []testmqtt.Message) bool {
		return len(testmqtt.Events(m, "/receptacles/")) >= 1
	})
	p.signal(t, syscall.SIGTERM)
	for _, want := range []string{`"msg":"workflow state damaged"`, `"msg":"dispatch state damaged"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %s in the log:\n%s", want, logs)
		}
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after damaged state", code)
	}

	// The state directory is a file: nothing can be written there.
	os.RemoveAll(filepath.Join(data, "state"))
	os.WriteFile(filepath.Join(data, "state"), []byte("in the way"), 0o640)
	p, logs = start()
	scan(label)
	scan(s10(3))
	sc.Send("", "CTL-CLOSE")
	sub.WaitFor(15*time.Second, "the receptacle without a state directory", func(m []testmqtt.Message) bool {
		return len(testmqtt.Events(m, "/receptacles/")) >= 2
	})
	p.signal(t, syscall.SIGTERM)
	for _, want := range []string{`"msg":"workflow state cannot be opened`, `"msg":"dispatch completeness is off`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %s in the log:\n%s", want, logs)
		}
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d without a state directory", code)
	}
}
