//go:build unix

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
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
	bin := buildAgent(t)
	broker := testmqtt.Start(t)
	dir := t.TempDir()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	link := filepath.Join(dir, "usb-scanner")
	sc.Link(link)
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, `
agent: {id: crash-02, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 300ms, keepalive: 2s}
http: {listen: ""}
log: {level: debug, format: json}
stations:
  - id: open-1
    workflow: open_receptacles
    operator_pattern: "^OP[0-9]{4}$"
    controls: {close: CTL-CLOSE}
    scanner: {port: %q, baud: 115200}
`, filepath.Join(dir, "data"), broker.URL(), link), 0o644)
	sub := testmqtt.Subscribe(t, broker, "central-crash-receptacle", "scanagent/LAB/crash-02/#")
	const label = "BEBRUABOLPBBAEN60073003000227"

	var accepted sync.Map
	p := startAgent(t, bin, cfg, &accepted, nil)
	sc.Send("", "OP0042")
	time.Sleep(100 * time.Millisecond) // the badge before the label: a real operator's pace
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
	const cycles = 4
	for c := range cycles {
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		p.signal(t, syscall.SIGKILL)
		t.Logf("cycle %d: fed %d", c, fed.Load())
		p = startAgent(t, bin, cfg, &accepted, nil)
	}
	close(stopFeed)
	<-feedDone
	time.Sleep(200 * time.Millisecond) // the last items read before the close code
	sc.Send("", "CTL-CLOSE")
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
