//go:build chaos && unix

// Hostile input against the real binary, with the chaos suite's rig (a
// real mosquitto, a scanner feeding one code every 2 ms, a final check
// that every accepted scan was delivered). Run with
//
//	go test -tags chaos -run ChaosHostile -count=1 -v ./cmd/scanagent
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostileLog collects the agent's log lines (all but "scan accepted").
type hostileLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *hostileLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

// find returns the first line whose msg is msg and for which ok holds.
func (l *hostileLog) find(msg string, ok func(map[string]any) bool) (map[string]any, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg && (ok == nil || ok(m)) {
			return m, true
		}
	}
	return nil, false
}

func (l *hostileLog) wait(t *testing.T, d time.Duration, msg string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var m map[string]any
	if !poll(d, func() (found bool) { m, found = l.find(msg, ok); return found }) {
		t.Fatalf("no %q log line within %v", msg, d)
	}
	return m
}

// startLogged starts the rig's agent with its log lines collected.
func (r *chaosRig) startLogged() *hostileLog {
	logs := &hostileLog{}
	r.proc = startAgent(r.t, r.bin, r.cfg, &r.accepted, logs)
	return logs
}

// waitMoreAccepted waits until the agents have accepted more than n scans.
func (r *chaosRig) waitMoreAccepted(what string, n int) {
	r.t.Helper()
	if !poll(15*time.Second, func() bool { return r.acceptedCount() > n }) {
		r.t.Fatalf("%s: no scan accepted in 15 s (still %d)", what, n)
	}
}

func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// bombYAML is a chain of merge keys that would expand to 10^(levels-1)
// entries, anchored at top-level keys x0..x<levels-1>.
func bombYAML(levels int) string {
	var b strings.Builder
	b.WriteString("x0: &a0 {baud: 115200}\n")
	for i := 1; i < levels; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "x%d: &a%d {<<: [%s]}\n", i, i, refs)
	}
	return b.String()
}

func TestChaosHostile(t *testing.T) {
	bin := buildAgent(t)

	// Thousands of connections to the status port that send nothing or
	// stop inside their headers, held for 10 s while the scanner feeds:
	// scans go on being accepted, the agent's open descriptors stay
	// within its connection cap, and /healthz answers once the flood is
	// gone (during it a request waits its turn behind the queue).
	t.Run("http-flood", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.feed()
		logs := r.startLogged()
		addr := logs.wait(t, 15*time.Second, "http status listening", nil)["addr"].(string)
		pid := r.proc.cmd.Process.Pid
		r.waitMoreAccepted("before the flood", 0)
		base := openFDs(t, pid)

		const flood = 3000
		start := time.Now()
		var conns []net.Conn
		for i := range flood {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			if i%2 == 1 {
				c.Write([]byte("GET /status HTTP/1.1\r\nHost: agent\r\nX-Half: "))
			}
			conns = append(conns, c)
		}
		t.Logf("%d connections opened in %v", flood, time.Since(start).Round(time.Millisecond))
		before := r.acceptedCount()
		peak := 0
		// The flood is held for 10 s (the wall time is the test), its
		// descriptors sampled every 50 ms.
		for hold := time.Now().Add(10 * time.Second); time.Now().Before(hold); time.Sleep(50 * time.Millisecond) {
			peak = max(peak, openFDs(t, pid))
		}
		during := r.acceptedCount() - before
		for _, c := range conns {
			c.Close()
		}
		if during == 0 {
			t.Fatal("no scan accepted during the flood")
		}
		// 64 connections at most, plus what Badger and the uplink may open.
		if peak > base+64+16 {
			t.Fatalf("agent descriptors: %d before the flood, %d at its peak (cap 64 connections)", base, peak)
		}
		start = time.Now()
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + addr + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/healthz after the flood: %v %v", resp, err)
		}
		resp.Body.Close()
		t.Logf("agent descriptors %d before, at most %d during a flood of %d; %d scans accepted during it; /healthz answered %v after the flood ended",
			base, peak, flood, during, time.Since(start).Round(time.Millisecond))
		r.finish(fmt.Sprintf("%d idle and half-sent HTTP connections for 10 s (descriptors %d -> max %d)", flood, base, peak))
	})

	// A merge-key bomb: "scanagent check" refuses it at once, and so does
	// a SIGHUP reload of the running agent, which goes on scanning with
	// its running configuration.
	t.Run("merge-key-bomb", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.feed()
		logs := r.startLogged()
		logs.wait(t, 15*time.Second, "http status listening", nil)
		r.waitMoreAccepted("before the reload", 0)

		good, err := os.ReadFile(r.cfg)
		if err != nil {
			t.Fatal(err)
		}
		bomb := bombYAML(10) + strings.Replace(string(good), "scanner: {port:", "scanner: {<<: *a9, port:", 1)
		if bomb == bombYAML(10)+string(good) {
			t.Fatal("the station's scanner was not found in the config")
		}
		bombFile := r.cfg + ".bomb"
		os.WriteFile(bombFile, []byte(bomb), 0o644)

		start := time.Now()
		out, err := exec.Command(bin, "check", "-c", bombFile).CombinedOutput()
		took := time.Since(start)
		if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "expand to more than 100000 entries") {
			t.Fatalf("check of the bomb: exit %d (%v) after %v\n%s", code, err, took, out)
		}
		t.Logf("check refused the %d-byte bomb in %v (exit 2):\n%s", len(bombYAML(10)), took.Round(time.Millisecond), lastLines(string(out), 1))

		// The running agent is sent the bomb as its new configuration.
		if err := os.WriteFile(r.cfg, []byte(bomb), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(r.cfg, good, 0o644) })
		n := r.acceptedCount()
		start = time.Now()
		r.proc.cmd.Process.Signal(syscall.SIGHUP)
		refused := logs.wait(t, 15*time.Second, "reload refused: the running configuration stays", func(m map[string]any) bool {
			e, _ := m["error"].(string)
			return strings.Contains(e, "expand to more than 100000 entries")
		})
		t.Logf("reload refused %v after SIGHUP: %s", time.Since(start).Round(time.Millisecond), refused["error"])
		r.waitMoreAccepted("after the refused reload", n)
		if _, found := logs.find("configuration reloaded", nil); found {
			t.Fatal("the bomb was applied")
		}
		os.WriteFile(r.cfg, good, 0o644) // finish may start a new agent
		r.finish("merge-key bomb (10^9 entries in 608 bytes) to check and to a SIGHUP reload")
	})
}

func exitCodeOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
