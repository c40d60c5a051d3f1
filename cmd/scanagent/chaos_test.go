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
	stopFeed chan struct{}
	feedDone chan struct{}
	proc     *agentProc
}

// newChaos starts mosquitto, a subscriber, a scanner feeding one unique
// S10 code every 2 ms, and writes the agent's config. brokerURL overrides
// the broker address (for the proxy); dataDir overrides data_dir.
func newChaos(t *testing.T, bin string, brokerURL func(*testmqtt.Broker) string, dataDir string) *chaosRig {
	r := &chaosRig{t: t, bin: bin, dir: t.TempDir(), broker: testmqtt.Start(t), stopFeed: make(chan struct{}), feedDone: make(chan struct{})}
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
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 500ms, keepalive: 2s, connect_timeout: 2s}
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
		for i := 1; ; i++ {
			select {
			case <-r.stopFeed:
				return
			default:
			}
			if r.sc.Send("]C0", s10(i)) == nil {
				r.fed.Add(1) // not while unplugged: nothing was written
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

func (r *chaosRig) start() { r.proc = startAgent(r.t, r.bin, r.cfg, &r.accepted, nil) }

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
			if !got[k.(string)] {
				missing++
			}
			return true
		})
		return missing == 0
	}
	deadline := time.Now().Add(90 * time.Second)
	for !wantAll(r.sub.Messages()) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the last scans read from the pty be accepted too
	for !wantAll(r.sub.Messages()) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	r.stop(syscall.SIGTERM)
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
		if !got[k.(string)] {
			lost++
			lostCodes = append(lostCodes, k.(string))
		}
		return true
	})
	line := fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %s |", name, r.fed.Load(), accepted, len(got), lost, evs-len(got), maxDelay.Round(time.Millisecond))
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
			time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
			r.stop(syscall.SIGKILL)
		}
		r.finish("agent kill -9 (20 cycles)")
	})

	t.Run("broker-restarts-and-long-outage", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.feed()
		r.start()
		for range 5 {
			time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
			r.broker.Stop()
			time.Sleep(time.Duration(300+rand.IntN(1500)) * time.Millisecond)
			r.broker.Restart()
		}
		time.Sleep(time.Second)
		r.broker.Stop()
		time.Sleep(outage())
		r.broker.Restart()
		time.Sleep(time.Second)
		r.finish(fmt.Sprintf("broker restarted 5x, then down %v", outage()))
	})

	t.Run("proxy-drop-stall-cut", func(t *testing.T) {
		var px *testmqtt.Proxy
		r := newChaos(t, bin, func(b *testmqtt.Broker) string { px = testmqtt.NewProxy(t, b.Addr()); return px.URL() }, "")
		r.feed()
		r.start()
		for i := range 12 {
			time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
			switch i % 3 {
			case 0: // cut between PUBLISH and PUBACK
				px.Hold()
				time.Sleep(200 * time.Millisecond)
				px.Cut()
			case 1: // stall past the keepalive: the agent gives up the session
				px.Hold()
				time.Sleep(5 * time.Second)
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
		time.Sleep(time.Second)
		var st syscall.Statfs_t
		syscall.Statfs(mnt, &st)
		free := int64(st.Bavail) * int64(st.Bsize)
		filler := filepath.Join(mnt, "filler")
		os.WriteFile(filler, make([]byte, free-(16<<20)), 0o644) // below min_free_disk
		time.Sleep(2 * time.Second)
		os.Remove(filler)
		time.Sleep(time.Second)
		r.broker.Restart()
		r.finish("disk nearly full for 2 s (tmpfs, min_free_disk 24MiB)")
	})

	t.Run("corrupt-buffer-at-start", func(t *testing.T) {
		r := newChaos(t, bin, nil, "")
		r.broker.Stop()
		r.feed()
		r.start()
		time.Sleep(2 * time.Second)
		r.stop(syscall.SIGKILL)
		manifest := filepath.Join(r.dir, "data", "buffer", "store", "MANIFEST")
		if err := os.WriteFile(manifest, []byte("garbage, not a manifest"), 0o644); err != nil {
			t.Fatal(err)
		}
		r.broker.Restart()
		r.start()
		time.Sleep(2 * time.Second)
		if m, _ := filepath.Glob(filepath.Join(r.dir, "data", "buffer", "store.corrupt-*")); len(m) != 1 {
			t.Fatalf("store not quarantined: %v", m)
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
