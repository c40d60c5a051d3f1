//go:build unix

package main

import (
	"fmt"
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

// lockedBuilder is a strings.Builder safe for a writer and readers.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSIGHUPReloadUnderLoad runs the real binary with a scanner fed
// without pause, and sends SIGHUP with an invalid configuration (refused,
// every error logged, the agent goes on) and then a valid one adding a
// station (applied). Every scan the agent logged as accepted arrives.
func TestSIGHUPReloadUnderLoad(t *testing.T) {
	bin := buildAgent(t)
	broker := testmqtt.Start(t)
	dir := t.TempDir()
	a, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	head := fmt.Sprintf(`agent: {id: reload-01, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 300ms, connect_spread: 0s}
http: {listen: "127.0.0.1:0"}
log: {level: debug, format: json}
stations:
  - id: induct-1
    scanner: {port: %q}
`, filepath.Join(dir, "data"), broker.URL(), a.Path())
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, []byte(head), 0o644)
	sub := testmqtt.Subscribe(t, broker, "central-reload", "scanagent/LAB/reload-01/scans/#")

	var accepted sync.Map
	logs := &lockedBuilder{}
	p := startAgent(t, bin, cfg, &accepted, logs)
	waitLog := func(what string) {
		t.Helper()
		if !poll(15*time.Second, func() bool { return strings.Contains(logs.String(), what) }) {
			t.Fatalf("no %q in the log:\n%s", what, logs.String())
		}
	}
	waitLog("scanner port open")

	var fed atomic.Int64
	stop := make(chan struct{})
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if a.Send("]C0", s10(i)) == nil {
				fed.Store(int64(i))
			}
			time.Sleep(2 * time.Millisecond) // paces the feed: one scan every 2 ms
		}
	}()

	acceptedCount := func() int {
		n := 0
		accepted.Range(func(_, _ any) bool { n++; return true })
		return n
	}
	// The reloads come while the feed is being accepted.
	waitFor(t, 15*time.Second, "the feed to be accepted", func() bool { return acceptedCount() > 0 })
	os.WriteFile(cfg, []byte(head+"  - id: induct-1\n    scanner: {port: /dev/ttyS9}\n    event: NOPE\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`duplicate station id \"induct-1\"`)
	waitLog(`must be three upper-case letters such as EDD, got \"NOPE\"`)
	if n := strings.Count(logs.String(), "reload refused"); n != 2 {
		t.Errorf("%d reload refused lines, want one per error (2)", n)
	}

	// The agent goes on accepting scans after the refused reload.
	n := acceptedCount()
	waitFor(t, 15*time.Second, "scans accepted after the refused reload", func() bool { return acceptedCount() > n })
	os.WriteFile(cfg, []byte(head+fmt.Sprintf("  - id: sort-2\n    event: EDE\n    scanner: {port: %q}\n", b.Path())), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("configuration reloaded")
	waitLog(`"msg":"scanner port open","station":"sort-2"`)
	b.Send("]C0", "RR473124829GB")
	close(stop)
	<-feedDone

	msgs := sub.WaitFor(30*time.Second, "every accepted scan and sort-2's", func(m []testmqtt.Message) bool {
		got := map[string]bool{}
		sort2 := false
		for _, e := range testmqtt.Events(m, "/scans/") {
			sort2 = sort2 || e["station"] == "sort-2" && e["event"] == "EDE"
			got[e["barcode"].(string)] = true
		}
		missing := 0
		accepted.Range(func(k, _ any) bool {
			if !got[k.(string)] {
				missing++
			}
			return true
		})
		return sort2 && missing == 0
	})
	p.signal(t, syscall.SIGTERM)
	n = acceptedCount()
	if int64(n) < fed.Load()-5 {
		t.Errorf("fed %d, accepted only %d", fed.Load(), n)
	}
	t.Logf("fed %d scans across two reloads, %d accepted, %d messages delivered", fed.Load(), n, len(msgs))
}
