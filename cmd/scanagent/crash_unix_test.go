//go:build unix

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// buildAgent compiles the real scanagent binary once per test.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "scanagent")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// agentProc is one running scanagent process whose JSON log is watched for
// "scan accepted" lines (logged only after the scan was synced to disk).
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startAgent(t *testing.T, bin, cfg string, accepted *sync.Map, logs io.Writer) *agentProc {
	t.Helper()
	cmd := exec.Command(bin, "run", "-c", cfg)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg     string `json:"msg"`
				Barcode string `json:"barcode"`
				Seq     uint64 `json:"seq"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue // a line cut by kill -9
			}
			if line.Msg == "scan accepted" {
				accepted.Store(line.Barcode, line.Seq)
			} else if logs != nil && line.Msg != "scan accepted" {
				fmt.Fprintln(logs, sc.Text())
			}
		}
		cmd.Wait()
	}()
	return p
}

func (p *agentProc) signal(t *testing.T, sig syscall.Signal) {
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not exit after %v", sig)
	}
}

func s10(n int) string {
	serial := fmt.Sprintf("%08d", n)
	d, _ := parcel.S10CheckDigit(serial)
	return fmt.Sprintf("RR%s%dGB", serial, d)
}

// TestKillNineLosesNoAcceptedScan feeds a scanner continuously while the
// real binary is killed with SIGKILL at random moments and restarted; then
// every scan the agent had logged as accepted (durable) must reach the
// central subscriber, and seq order must hold across restarts.
func TestKillNineLosesNoAcceptedScan(t *testing.T) {
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
agent: {id: crash-01, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 300ms, keepalive: 2s, connect_spread: 0s, drain_rate: 0}
http: {listen: "127.0.0.1:0"}
log: {level: debug, format: json}
stations:
  - id: induct-1
    scanner: {port: %q, baud: 115200}
`, filepath.Join(dir, "data"), broker.URL(), link), 0o644)
	sub := testmqtt.Subscribe(t, broker, "central-crash", "scanagent/LAB/crash-01/#")

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
			if sc.Send("]C0", s10(i)) != nil {
				return
			}
			fed.Store(int64(i))
			time.Sleep(time.Millisecond) // paces the feed: one scan every millisecond
		}
	}()

	var accepted sync.Map
	const cycles = 6
	for c := range cycles {
		p := startAgent(t, bin, cfg, &accepted, nil)
		// A random moment to kill it at: the wall time is the test.
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		p.signal(t, syscall.SIGKILL)
		t.Logf("cycle %d: fed %d", c, fed.Load())
		if c == 0 {
			// The broker publishes the Last Will: the centre sees the
			// killed agent go offline (retained).
			sub.WaitFor(10*time.Second, "offline status from the Last Will", func(m []testmqtt.Message) bool {
				for i := len(m) - 1; i >= 0; i-- {
					if strings.HasSuffix(m[i].Topic, "/status") {
						return strings.Contains(string(m[i].Payload), `"offline"`)
					}
				}
				return false
			})
		}
	}
	close(stopFeed)
	<-feedDone

	var logs strings.Builder
	final := startAgent(t, bin, cfg, &accepted, &logs)
	var want []string
	accepted.Range(func(k, _ any) bool { want = append(want, k.(string)); return true })
	if len(want) < 500 {
		t.Fatalf("only %d scans accepted over %d cycles; the agent is not reading", len(want), cycles)
	}
	// Every scan read by the final agent from the pseudo-terminal backlog is
	// accepted too; wait until all accepted ones are delivered.
	msgs := sub.WaitFor(60*time.Second, "every accepted scan", func(m []testmqtt.Message) bool {
		got := map[string]bool{}
		for _, e := range testmqtt.Events(m, "/scans/") {
			got[e["barcode"].(string)] = true
		}
		n := 0
		accepted.Range(func(k, _ any) bool {
			if !got[k.(string)] {
				n++
			}
			return true
		})
		return n == 0
	})
	final.signal(t, syscall.SIGTERM)
	if code := final.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("SIGTERM: exit code %d\n%s", code, logs.String())
	}

	// Per-station seq order across restarts (first delivery of each id).
	seen := map[string]bool{}
	var last float64
	dups := 0
	for _, e := range testmqtt.Events(msgs, "/scans/") {
		id := e["id"].(string)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		if s := e["seq"].(float64); s <= last {
			t.Fatalf("seq %v delivered after %v", s, last)
		} else {
			last = s
		}
	}
	n := 0
	accepted.Range(func(_, _ any) bool { n++; return true })
	t.Logf("fed %d, accepted %d, delivered %d unique (%d duplicates); fed but not accepted (read by a killed process before its sync): %d",
		fed.Load(), n, len(seen), dups, fed.Load()-int64(len(seen)))

	// The Last Will told the centre the killed agents went offline; the
	// final clean stop published offline too.
	offline := 0
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, "/status") && strings.Contains(string(m.Payload), `"offline"`) {
			offline++
		}
	}
	if offline == 0 {
		t.Error("no offline status seen")
	}
}
