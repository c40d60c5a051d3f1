package fleet_test

// This end-to-end test uses the agent's real uplink and buffer: test code
// only; the fleet package itself imports nothing of the agent.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/agent/uplink"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/central/fleet"
)

// freezer is a TCP proxy to a broker that can freeze: the agent's side is
// closed at once (the agent fails over) while the broker's side is kept
// open and alive with PINGREQs, so the broker does not fire the Will until
// Cut, as a broker that only later notices a dead link.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	agents []net.Conn
	broker []net.Conn
	stop   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, stop: make(chan struct{})}
	go f.accept()
	t.Cleanup(func() { ln.Close(); f.Cut() })
	return f
}

func (f *freezer) URL() string { return "tcp://" + f.ln.Addr().String() }

func (f *freezer) accept() {
	for {
		a, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		frozen := f.frozen
		f.mu.Unlock()
		if frozen {
			a.Close() // the broker is gone for new connections
			continue
		}
		b, err := net.Dial("tcp", f.target)
		if err != nil {
			a.Close()
			continue
		}
		f.mu.Lock()
		f.agents, f.broker = append(f.agents, a), append(f.broker, b)
		f.mu.Unlock()
		go func() { io.Copy(b, a) }() // stops when a is closed; b stays open
		go func() { io.Copy(a, b); a.Close() }()
	}
}

// Freeze closes the agents' side and keeps the broker's alive.
func (f *freezer) Freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
	for _, a := range f.agents {
		a.Close()
	}
	for _, b := range f.broker {
		go func() {
			t := time.NewTicker(300 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-f.stop:
					return
				case <-t.C:
					if _, err := b.Write([]byte{0xC0, 0x00}); err != nil { // PINGREQ
						return
					}
				}
			}
		}()
	}
}

// Cut closes the broker's side: the broker publishes the Will now.
func (f *freezer) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	for _, b := range f.broker {
		b.Close()
	}
}

type reporter struct{}

func (reporter) Status() status.Status          { return status.Status{Agent: "hub-1", Site: "LAB"} }
func (reporter) Devices() []status.DeviceReport { return nil }

// TestLateWillAfterFailover: an agent with two brokers fails over from A
// to B; A notices only later and publishes the Will of the old session.
// The fleet view, fed from both brokers, keeps the hub online with the new
// session and counts the Will stale; a new agent start numbers on from the
// session file.
func TestLateWillAfterFailover(t *testing.T) {
	a, b := testmqtt.Start(t), testmqtt.Start(t)
	px := newFreezer(t, a.Addr())
	willAtA := testmqtt.Subscribe(t, a, "will-watcher", "scanagent/LAB/hub-1/status")

	v, err := fleet.NewView("scanagent/+/+", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, br := range []*testmqtt.Broker{a, b} {
		w, err := fleet.Watch(ctx, fleet.Conn{Brokers: []string{br.URL()}, ClientID: fmt.Sprintf("fleet-%d", i), ConnectTimeout: 2 * time.Second}, "scanagent/+/+", v)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
	}

	dir := t.TempDir()
	q, err := buffer.Open(dir+"/buffer", buffer.Options{MinFreeDisk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cfg := config.MQTT{Brokers: []string{px.URL(), b.URL()}, ClientID: "hub-1", TopicPrefix: "scanagent/LAB/hub-1", Window: 8,
		KeepAlive: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(2 * time.Second),
		ReconnectMin: config.Duration(50 * time.Millisecond), ReconnectMax: config.Duration(200 * time.Millisecond),
		HealthInterval: config.Duration(time.Hour), Order: "seq"}
	u := uplink.New(uplink.Config{MQTT: cfg, Agent: config.Agent{ID: "hub-1", Site: "LAB"}, Version: "test", SessionFile: dir + "/mqtt-session"},
		uplink.Deps{Queue: q, Reporter: reporter{}})
	uctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- u.Run(uctx) }()
	defer func() { stop(); <-done }()

	row := func(cond func(fleet.Hub) bool, what string) fleet.Hub {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			if hubs := v.Snapshot(time.Now()); len(hubs) == 1 && cond(hubs[0]) {
				return hubs[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("fleet view: %s not seen: %+v", what, v.Snapshot(time.Now()))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first := row(func(h fleet.Hub) bool { return h.State == "online" && h.Session > 0 }, "online at A")
	if got := u.Stats().Broker; got != px.URL() {
		t.Fatalf("connected to %s, want A through the proxy", got)
	}

	px.Freeze() // the agent fails over to B; A still thinks it is there
	second := row(func(h fleet.Hub) bool { return h.State == "online" && h.Session > first.Session }, "online at B with a newer session")
	if got := u.Stats().Broker; got != b.URL() {
		t.Fatalf("connected to %s after the failover, want B", got)
	}
	staleBefore := v.Counts().Stale

	px.Cut() // A fires the old session's Will now, after B's online
	willAtA.WaitFor(10*time.Second, "A's Will of the first session", func(ms []testmqtt.Message) bool {
		for _, m := range ms {
			var s struct {
				State   string
				Session uint64
			}
			if json.Unmarshal(m.Payload, &s) == nil && s.State == "offline" && s.Session == first.Session {
				return true
			}
		}
		return false
	})
	deadline := time.Now().Add(5 * time.Second)
	for v.Counts().Stale == staleBefore && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if v.Counts().Stale == staleBefore {
		t.Fatal("the late Will never reached the fleet view")
	}
	h := v.Snapshot(time.Now())[0]
	if h.State != "online" || h.Session != second.Session {
		t.Fatalf("after the late Will: %s session %d, want online session %d", h.State, h.Session, second.Session)
	}

	// A graceful stop: offline with the current session is taken.
	stop()
	<-done
	done <- nil
	row(func(h fleet.Hub) bool { return h.State == "offline" && h.Session == second.Session }, "offline of the current session")
}
