//go:build chaos && unix

// The chaos suite: the real binary, a real mosquitto and a scanner feed
// running throughout, under faults. Run with
//
//	go test -tags chaos -run Chaos -v -timeout 20m ./cmd/scanagent
//
// Each scenario prints one result line (fed, accepted, delivered, lost,
// duplicates, max delivery delay) and fails if an accepted scan is lost.
package main

import (
	"encoding/json"
	"fmt"
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

	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

type chaosRig struct {
	t        *testing.T
	bin, cfg string
	dir      string
	broker   *testmqtt.Broker
	sc       *sim.Scanner
	sub      *testmqtt.Subscriber
	accepted sync.Map // barcode -> seq, from the agents' logs
	fed      atomic.Int64
	next     atomic.Int64 // the next code number to feed
	feedMu   sync.Mutex   // one writer to the scanner at a time
	stopFeed chan struct{}
	feedDone chan struct{}
	proc     *agentProc
	log      *chaosLog
	poison   map[string]bool // codes the broker refuses: parked, not delivered
	// refusing: the agent that finishes refuses new scans (a full disk),
	// so finish does not wait for the last code fed to be accepted.
	refusing bool
}

// chaosLog reads the agents' JSON log lines (all but "scan accepted"):
// scans recovered from the other copy, and refusals.
type chaosLog struct {
	mu        sync.Mutex
	recovered int64
	refused   map[string]int64 // "scan NOT accepted" lines by reason (rate-limited: at least one per reason)
	lines     []map[string]any
}

func (l *chaosLog) Write(p []byte) (int, error) {
	var m map[string]any
	if json.Unmarshal(p, &m) != nil {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, m)
	n, _ := m["records"].(float64)
	switch m["msg"] {
	case "buffer: replayed journal records the store did not have",
		"buffer: records whose journal copy was damaged or missing were copied back from the store":
		l.recovered += int64(n)
	case "buffer: a record was damaged in the store; restored from its journal copy":
		l.recovered++
	case "scan NOT accepted":
		if l.refused == nil {
			l.refused = map[string]int64{}
		}
		r, _ := m["reason"].(string)
		l.refused[r]++
	}
	return len(p), nil
}

// seen reports whether a line with msg was logged.
func (l *chaosLog) seen(msg string) bool { return l.count(msg) > 0 }

// count is how many lines whose msg begins with msg were logged, by all
// the agents of the scenario so far.
func (l *chaosLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.lines {
		if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
			n++
		}
	}
	return n
}

// newChaos starts mosquitto, a subscriber, a scanner feeding one unique
// S10 code every 2 ms, and writes the agent's config. brokerURL overrides
// the broker address (for the proxy); dataDir overrides data_dir.
func newChaos(t *testing.T, bin string, brokerURL func(*testmqtt.Broker) string, dataDir string, brokerOpts ...testmqtt.Option) *chaosRig {
	r := &chaosRig{t: t, bin: bin, dir: t.TempDir(), broker: testmqtt.Start(t, brokerOpts...), stopFeed: make(chan struct{}), feedDone: make(chan struct{}), log: &chaosLog{}}
	r.next.Store(1)
	if dataDir == "" {
		dataDir = filepath.Join(r.dir, "data")
	}
	url := r.broker.URL()
	if brokerURL != nil {
		url = brokerURL(r.broker)
	}
	var err error
	if r.sc, err = sim.NewScanner("\r\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.sc.Close() })
	link := filepath.Join(r.dir, "usb-scanner")
	r.sc.Link(link)
	r.cfg = filepath.Join(r.dir, "scanagent.yaml")
	os.WriteFile(r.cfg, fmt.Appendf(nil, `
agent: {id: chaos-01, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 500ms, keepalive: 2s, connect_timeout: 2s, connect_spread: 0s, drain_rate: 0}
buffer: {min_free_disk: 24MiB}
http: {listen: "127.0.0.1:0"}
log: {level: debug, format: json}
stations: [{id: induct-1, scanner: {port: %q, baud: 115200}}]
`, dataDir, url, link), 0o644)
	r.sub = testmqtt.Subscribe(t, r.broker, "central-"+t.Name(), "scanagent/LAB/chaos-01/scans/#")
	return r
}

func (r *chaosRig) feed() {
	go func() {
		defer close(r.feedDone)
		for {
			select {
			case <-r.stopFeed:
				return
			default:
			}
			r.feedOne()
			time.Sleep(2 * time.Millisecond) // paces the feed: one scan every 2 ms
		}
	}()
}

// feedOne feeds the next code, and reports it and whether it was written
// (not while the scanner is unplugged).
func (r *chaosRig) feedOne() (string, bool) {
	r.feedMu.Lock()
	defer r.feedMu.Unlock()
	code := s10(int(r.next.Load()))
	if r.sc.Send("]C0", code) != nil {
		return code, false
	}
	r.next.Add(1)
	r.fed.Add(1)
	return code, true
}

// burst feeds n unique codes as fast as the scanner's pseudo-terminal
// takes them (beside the steady feed).
func (r *chaosRig) burst(n int) {
	for n > 0 {
		var b []byte
		r.feedMu.Lock()
		k := min(n, 200)
		for range k {
			b = append(b, "]C0"+s10(int(r.next.Add(1)-1))+"\r\n"...)
		}
		if err := r.sc.Write(b); err == nil {
			r.fed.Add(int64(k))
		}
		r.feedMu.Unlock()
		n -= k
	}
}

// send feeds one code (not counted as fed: the scenario accounts for it).
func (r *chaosRig) send(code string) {
	r.feedMu.Lock()
	defer r.feedMu.Unlock()
	if err := r.sc.Send("", code); err != nil {
		r.t.Fatal(err)
	}
}

func (r *chaosRig) start() { r.proc = startAgent(r.t, r.bin, r.cfg, &r.accepted, r.log) }

// alive fails the test if the agent process ended by itself (a crash).
func (r *chaosRig) alive() {
	r.t.Helper()
	select {
	case <-r.proc.done:
		r.t.Fatalf("the agent died: %v", r.proc.cmd.ProcessState)
	default:
	}
}

func (r *chaosRig) acceptedCount() int {
	n := 0
	r.accepted.Range(func(_, _ any) bool { n++; return true })
	return n
}

// waitAccepted waits until at least n scans were logged as accepted.
func (r *chaosRig) waitAccepted(n int, d time.Duration) {
	r.t.Helper()
	if !poll(d, func() bool { return r.acceptedCount() >= n }) {
		r.t.Fatalf("%d scans accepted, want %d", r.acceptedCount(), n)
	}
}

// lastFed is the last code the scanner was given (by the feed or a
// burst).
func (r *chaosRig) lastFed() string { return s10(int(r.next.Load() - 1)) }

func (r *chaosRig) stop(sig syscall.Signal) {
	if r.proc != nil {
		r.proc.signal(r.t, sig)
		r.proc = nil
	}
}

// finish stops the feed, lets a final agent deliver everything accepted,
// reports the scenario and fails on any lost accepted scan.
func (r *chaosRig) finish(name string) {
	t := r.t
	close(r.stopFeed)
	<-r.feedDone
	// A last code once the feed has stopped: one scanner, one port, so once
	// it is accepted, so is every scan read before it that will be.
	last, ok := r.feedOne()
	if !ok {
		t.Fatal("the scanner is unplugged at the end of the scenario")
	}
	if r.proc == nil {
		r.start()
	}
	wantAll := func(m []testmqtt.Message) bool {
		got := map[string]bool{}
		for _, e := range testmqtt.Events(m, "/scans/") {
			got[e["barcode"].(string)] = true
		}
		missing := 0
		r.accepted.Range(func(k, _ any) bool {
			if !got[k.(string)] && !r.poison[k.(string)] {
				missing++
			}
			return true
		})
		return missing == 0
	}
	if !r.refusing && !poll(30*time.Second, func() bool { _, ok := r.accepted.Load(last); return ok }) {
		t.Logf("the last code fed (%s) was not accepted", last)
	}
	poll(120*time.Second, func() bool { return wantAll(r.sub.Messages()) })
	r.stop(syscall.SIGTERM)
	parked := map[string]bool{}
	if out, err := exec.Command(r.bin, "buffer", "export", "--parked", "-c", r.cfg).Output(); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			var e struct {
				Event struct {
					Barcode string `json:"barcode"`
				} `json:"event"`
			}
			if json.Unmarshal([]byte(l), &e) == nil && e.Event.Barcode != "" {
				parked[e.Event.Barcode] = true
			}
		}
	}
	msgs := r.sub.Messages()
	got := map[string]bool{}
	var maxDelay time.Duration
	evs := 0
	for _, m := range msgs {
		var e struct {
			Barcode   string `json:"barcode"`
			ScannedAt string `json:"scanned_at"`
		}
		if json.Unmarshal(m.Payload, &e) != nil {
			continue
		}
		evs++
		got[e.Barcode] = true
		if ts, err := time.Parse(time.RFC3339Nano, e.ScannedAt); err == nil && m.At.Sub(ts) > maxDelay {
			maxDelay = m.At.Sub(ts)
		}
	}
	accepted, lost := 0, 0
	var lostCodes []string
	r.accepted.Range(func(k, _ any) bool {
		accepted++
		if !got[k.(string)] && !parked[k.(string)] {
			lost++
			lostCodes = append(lostCodes, k.(string))
		}
		return true
	})
	r.log.mu.Lock()
	recovered := r.log.recovered
	r.log.mu.Unlock()
	line := fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %d | %s |", name, r.fed.Load(), accepted, len(got), len(parked), lost, recovered, evs-len(got), maxDelay.Round(time.Millisecond))
	t.Log("RESULT " + line)
	if f, err := os.OpenFile(os.Getenv("CHAOS_RESULTS"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644); err == nil {
		fmt.Fprintln(f, line)
		f.Close()
	}
	if lost > 0 {
		t.Fatalf("%d accepted scans never delivered, e.g. %v", lost, lostCodes[:min(5, len(lostCodes))])
	}
}

func TestChaos(t *testing.T) {
	bin := buildAgent(t)

	t.Run("kill9", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.feed()
		for range 20 {
			r.start()
			// A random moment to kill it at: the wall time is the test.
			time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
			r.stop(syscall.SIGKILL)
		}
		r.finish("agent kill -9 (20 cycles)")
	})

	t.Run("broker-restarts-and-long-outage", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.feed()
		r.start()
		connected := 0
		for range 5 {
			// Up and down for random spans: the wall time is the test.
			time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
			r.broker.Stop()
			time.Sleep(time.Duration(300+rand.IntN(1500)) * time.Millisecond)
			connected = r.log.count("mqtt connected")
			r.broker.Restart()
		}
		// The long outage cuts a session: it begins once the agent is
		// connected again.
		waitFor(t, 30*time.Second, "the agent to reconnect", func() bool { return r.log.count("mqtt connected") > connected })
		r.broker.Stop()
		time.Sleep(outage()) // the outage's length is the test
		r.broker.Restart()
		r.finish(fmt.Sprintf("broker restarted 5x, then down %v", outage()))
	})

	t.Run("proxy-drop-stall-cut", func(t *testing.T) {
		var px *testmqtt.Proxy
		r := newChaos(t, bin, func(b *testmqtt.Broker) string { px = testmqtt.NewProxy(t, b.Addr()); return px.URL() }, "")
		r.feed()
		r.start()
		for i := range 12 {
			// A random span between faults: the wall time is the test.
			time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
			switch i % 3 {
			case 0: // cut between PUBLISH and PUBACK
				px.Hold()
				// The PUBACKs of 200 ms of scans (one every 2 ms) pile up
				// at the proxy; the proxy cannot tell how many.
				time.Sleep(200 * time.Millisecond)
				px.Cut()
			case 1: // stall past the keepalive: the agent gives up the session
				px.Hold()
				time.Sleep(5 * time.Second) // the stall's length (keepalive 2 s) is the test
				px.Release()
			default: // plain cut
				px.Cut()
			}
		}
		r.finish("proxy: 4 held-PUBACK cuts, 4 stalls of 5 s, 4 cuts")
	})

	t.Run("scanner-unplug", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.start()
		r.feed()
		for range 10 {
			// Plugged and unplugged for random spans: the wall time is the test.
			time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond)
			r.sc.Unplug()
			time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
			r.sc.Replug()
		}
		r.finish("scanner unplugged and replugged 10x")
	})

	t.Run("disk-full", func(t *testing.T) {
		mnt := t.TempDir()
		if os.Geteuid() != 0 {
			t.Skip("needs root to mount a small tmpfs")
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs here (%v: %s)", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
		r := newChaos(t, bin, nil, filepath.Join(mnt, "data"))
		r.broker.Stop() // the backlog stays on the small disk
		r.feed()
		r.start()
		r.waitAccepted(500, 30*time.Second) // a backlog on the small disk
		var st syscall.Statfs_t
		syscall.Statfs(mnt, &st)
		free := int64(st.Bavail) * int64(st.Bsize)
		filler := filepath.Join(mnt, "filler")
		os.WriteFile(filler, make([]byte, free-(16<<20)), 0o644) // below min_free_disk
		// The disk stays nearly full for 2 s: the wall time is the test.
		time.Sleep(2 * time.Second)
		n := r.acceptedCount()
		os.Remove(filler)
		// Scans are accepted again once the agent sees the room (the
		// backlog stays: the broker is still down).
		waitFor(t, 15*time.Second, "scans accepted with room on the disk again", func() bool { return r.acceptedCount() > n })
		r.broker.Restart()
		r.finish("disk nearly full for 2 s (tmpfs, min_free_disk 24MiB)")
	})

	t.Run("corrupt-buffer-at-start", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.broker.Stop()
		r.feed()
		r.start()
		r.waitAccepted(500, 30*time.Second) // a backlog in the store
		r.stop(syscall.SIGKILL)
		manifest := filepath.Join(r.dir, "data", "buffer", "store", "MANIFEST")
		if err := os.WriteFile(manifest, []byte("garbage, not a manifest"), 0o644); err != nil {
			t.Fatal(err)
		}
		r.broker.Restart()
		r.start()
		var quarantined []string
		if !poll(30*time.Second, func() bool {
			quarantined, _ = filepath.Glob(filepath.Join(r.dir, "data", "buffer", "store.corrupt-*"))
			return len(quarantined) > 0
		}) || len(quarantined) != 1 {
			t.Fatalf("store not quarantined: %v", quarantined)
		}
		r.finish("corrupt store at start (quarantined, journal replayed)")
	})
}

// outage is the long broker outage (2 minutes; CHAOS_OUTAGE overrides).
func outage() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("CHAOS_OUTAGE")); err == nil {
		return d
	}
	return 2 * time.Minute
}
