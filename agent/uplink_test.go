//go:build unix

package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// syncBuffer collects log output for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type running struct {
	a    *agent.Agent
	sc   *sim.Scanner
	logs *syncBuffer
	stop func()
}

// startAgent runs an agent with one station fed by a simulated scanner.
// mqttYAML is the mqtt section's body (flow style, without braces).
func startAgent(t *testing.T, mqttYAML string, env map[string]string) *running {
	t.Helper()
	return startAgentIn(t, t.TempDir(), mqttYAML, env)
}

// startAgentIn is startAgent with its data and scanner link under dir,
// so that an agent can be started again on the same buffer.
func startAgentIn(t *testing.T, dir, mqttYAML string, env map[string]string) *running {
	t.Helper()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	link := filepath.Join(dir, "scanner")
	sc.Link(link)
	text := fmt.Sprintf("agent: {id: hub-1, site: LAB, data_dir: %q}\nmqtt: {reconnect_min: 50ms, reconnect_max: 300ms, connect_timeout: 2s, connect_spread: 0s, drain_rate: 0, %s}\nhttp: {listen: \"127.0.0.1:0\"}\nstations: [{id: induct-1, event: EMB, scanner: {port: %q}}]\n",
		filepath.Join(dir, "data"), mqttYAML, link)
	cfg, err := config.Parse(filepath.Join(dir, "scanagent.yaml"), []byte(text), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := agent.New(cfg, agent.Deps{Log: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("agent did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return &running{a: a, sc: sc, logs: logs, stop: stop}
}

func (r *running) waitState(t *testing.T, state string) status.Uplink {
	t.Helper()
	var st status.Uplink
	waitUntil(t, 20*time.Second, "uplink state "+state, func() bool {
		st = r.a.Status().MQTT
		return st.State == state
	}, func() string { return fmt.Sprintf("%q (%s)", st.State, st.LastError) })
	return st
}

func (r *running) waitAccepted(t *testing.T, n uint64) {
	t.Helper()
	waitUntil(t, 20*time.Second, fmt.Sprintf("%d accepted scans", n), func() bool {
		st := r.a.Status()
		return len(st.Stations) > 0 && st.Stations[0].Counters.Scans >= n
	})
}

func s10(n int) string {
	serial := fmt.Sprintf("%08d", n)
	d, _ := parcel.S10CheckDigit(serial)
	return fmt.Sprintf("RR%s%dGB", serial, d)
}

func barcodes(msgs []testmqtt.Message) map[string]int {
	got := map[string]int{}
	for _, e := range scans(msgs) {
		got[e.Barcode]++
	}
	return got
}

func TestMutualTLS(t *testing.T) {
	pki := testmqtt.NewPKI(t)
	b := testmqtt.Start(t, testmqtt.WithTLS(testmqtt.TLSFiles{CAFile: pki.CA, CertFile: pki.ServerCert, KeyFile: pki.ServerKey, RequireClientCert: true}))
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/#")
	r := startAgent(t, fmt.Sprintf("brokers: [%q], tls: {ca_file: %q, cert_file: %q, key_file: %q}", b.TLSURL(), pki.CA, pki.ClientCert, pki.ClientKey), nil)
	r.waitState(t, status.UplinkConnected)
	r.sc.Send("]C0", "RR473124829GB")
	r.sub(t, sub, 1)
}

func (r *running) sub(t *testing.T, sub *testmqtt.Subscriber, n int) []testmqtt.Message {
	t.Helper()
	return sub.WaitFor(20*time.Second, fmt.Sprintf("%d scans", n), countScans(n))
}

// TestTLSFailuresAreClassified: no client certificate, a wrong CA and an
// expired client certificate each give a tls_error state with a hint
// naming the cause, while scans keep being accepted into the buffer.
func TestTLSFailuresAreClassified(t *testing.T) {
	pki := testmqtt.NewPKI(t)
	b := testmqtt.Start(t, testmqtt.WithTLS(testmqtt.TLSFiles{CAFile: pki.CA, CertFile: pki.ServerCert, KeyFile: pki.ServerKey, RequireClientCert: true}))
	cases := []struct {
		name, tls, hint string
	}{
		{"no client certificate", fmt.Sprintf("{ca_file: %q}", pki.CA), "client certificate"},
		{"wrong CA", fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", pki.OtherCA, pki.ClientCert, pki.ClientKey), "not signed by mqtt.tls.ca_file"},
		{"expired client certificate", fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", pki.CA, pki.ExpiredCert, pki.ExpiredKey), "expired"},
		{"plain port with TLS", fmt.Sprintf("{ca_file: %q}", pki.CA), "did not answer TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := b.TLSURL()
			if strings.HasPrefix(tc.name, "plain") {
				url = strings.Replace(b.URL(), "tcp://", "ssl://", 1)
			}
			r := startAgent(t, fmt.Sprintf("brokers: [%q], tls: %s", url, tc.tls), nil)
			st := r.waitState(t, status.UplinkTLSError)
			if !strings.Contains(st.Hint+st.LastError, tc.hint) {
				t.Fatalf("state %+v: want %q in the hint or error", st, tc.hint)
			}
			r.sc.Send("]C0", "RR473124829GB")
			r.waitAccepted(t, 1)
			if d := r.a.Status().Buffer.Depth; d != 1 {
				t.Fatalf("buffer depth %d, want 1", d)
			}
			if !strings.Contains(r.logs.String(), "mqtt not connected; scans stay buffered") {
				t.Fatalf("no log line for the failure:\n%s", r.logs.String())
			}
		})
	}
}

// TestAuthRefusedThenFixed: a broker with passwords refuses the agent
// without one (auth_refused, scans buffered); with the password in the
// environment the backlog is delivered. The password is never logged.
func TestAuthRefused(t *testing.T) {
	b := testmqtt.Start(t, testmqtt.WithPasswords(t, "hub-1", "s3cret-pw", "central", "c-pw"))
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/#", func(o *mqtt.ClientOptions) { o.SetUsername("central").SetPassword("c-pw") })

	r := startAgent(t, fmt.Sprintf("brokers: [%q], username: hub-1", b.URL()), map[string]string{"SCANAGENT_MQTT_PASSWORD": "wrong-pw"})
	st := r.waitState(t, status.UplinkAuthRefused)
	if !strings.Contains(st.Hint, "password") {
		t.Fatalf("hint %q", st.Hint)
	}
	r.sc.Send("]C0", "RR473124829GB")
	r.waitAccepted(t, 1)
	r.stop()

	r2 := startAgent(t, fmt.Sprintf("brokers: [%q], username: hub-1", b.URL()), map[string]string{"SCANAGENT_MQTT_PASSWORD": "s3cret-pw"})
	r2.waitState(t, status.UplinkConnected)
	r2.sc.Send("]C0", "RR287043775IN")
	r2.sub(t, sub, 1)
	for _, l := range []string{r.logs.String(), r2.logs.String()} {
		if strings.Contains(l, "s3cret-pw") || strings.Contains(l, "wrong-pw") {
			t.Fatal("a password appears in the log")
		}
	}
}

// TestFailover: two brokers; the first is stopped mid-stream; the agent
// moves to the second and nothing is lost.
func TestFailover(t *testing.T) {
	b1, b2 := testmqtt.Start(t), testmqtt.Start(t)
	sub1 := testmqtt.Subscribe(t, b1, "central-1", "scanagent/LAB/hub-1/scans/#")
	sub2 := testmqtt.Subscribe(t, b2, "central-2", "scanagent/LAB/hub-1/scans/#")
	r := startAgent(t, fmt.Sprintf("brokers: [%q, %q]", b1.URL(), b2.URL()), nil)
	r.waitState(t, status.UplinkConnected)
	const n = 200
	for i := 1; i <= n; i++ {
		r.sc.Send("]C0", s10(i))
		if i == n/2 {
			b1.Stop()
		}
		time.Sleep(2 * time.Millisecond) // wall time: the scanner's pace
	}
	r.waitAccepted(t, n)
	missing := 0
	waitUntil(t, 30*time.Second, "every scan at either broker", func() bool {
		got := barcodes(sub1.Messages())
		for k, v := range barcodes(sub2.Messages()) {
			got[k] += v
		}
		missing = 0
		for i := 1; i <= n; i++ {
			if got[s10(i)] == 0 {
				missing++
			}
		}
		return missing == 0
	}, func() string { return fmt.Sprintf("%d of %d never arrived", missing, n) })
	if st := r.a.Status().MQTT; !strings.Contains(st.Broker, fmt.Sprint(b2.Port)) {
		t.Fatalf("connected to %q, want the second broker", st.Broker)
	}
}

// TestProxyCutsAndHeldAcks feeds scans through a TCP proxy that, over and
// over, holds back the broker's PUBACKs (the broker has the publishes, the
// agent does not know) and then cuts the connection. Nothing is lost,
// duplicates stay within the window per cut, and first deliveries are in
// seq order.
func TestProxyCutsAndHeldAcks(t *testing.T) {
	b := testmqtt.Start(t)
	px := testmqtt.NewProxy(t, b.Addr())
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/scans/#")
	const window = 32
	r := startAgent(t, fmt.Sprintf("brokers: [%q], window: %d, keepalive: 1s", px.URL(), window), nil)
	r.waitState(t, status.UplinkConnected)
	const n, cuts = 600, 6
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 1; i <= n; i++ {
			r.sc.Send("]C0", s10(i))
			time.Sleep(time.Millisecond) // wall time: the scanner's pace
		}
	}()
	for range cuts { // wall time is what is tested: cuts and held PUBACKs at random points of the flow
		time.Sleep(150 * time.Millisecond)
		px.Hold()
		time.Sleep(100 * time.Millisecond)
		px.Cut()
	}
	<-fed
	r.waitAccepted(t, n)
	msgs := sub.WaitFor(40*time.Second, "every scan", func(m []testmqtt.Message) bool { return len(barcodes(m)) == n })
	evs := scans(msgs)
	if dups := len(evs) - n; dups > window*(cuts+1) {
		t.Fatalf("%d duplicates for %d cuts with a window of %d", dups, cuts, window)
	} else {
		t.Logf("%d scans, %d duplicates, %d proxy connections", n, dups, px.Connections())
	}
	var last uint64
	for _, e := range uniqueScans(evs) {
		if e.Seq <= last {
			t.Fatalf("seq %d first delivered after %d", e.Seq, last)
		}
		last = e.Seq
	}
}

// TestHealthAndDeviceTopics: P/health arrives periodically with the
// figures; P/devices/<station>/scanner is retained and follows the port.
func TestHealthAndDeviceTopics(t *testing.T) {
	b := testmqtt.Start(t)
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/#")
	r := startAgent(t, fmt.Sprintf("brokers: [%q], health_interval: 1s", b.URL()), nil)
	r.sc.Send("]C0", "RR473124829GB")
	msgs := sub.WaitFor(20*time.Second, "two health messages", func(m []testmqtt.Message) bool {
		n := 0
		for _, x := range m {
			if strings.HasSuffix(x.Topic, "/health") && strings.Contains(string(x.Payload), `"scans":1`) {
				n++
			}
		}
		return n >= 2
	})
	var h status.Status
	for _, x := range msgs {
		if strings.HasSuffix(x.Topic, "/health") {
			json.Unmarshal(x.Payload, &h)
		}
	}
	if h.Agent != "hub-1" || h.Version != "test" || h.Uptime == "" || !h.MQTT.Connected || len(h.Stations) != 1 || h.Stations[0].Scanner.State != "connected" {
		t.Fatalf("health %+v", h)
	}
	device := func(state string) func([]testmqtt.Message) bool {
		return func(m []testmqtt.Message) bool {
			for i := len(m) - 1; i >= 0; i-- {
				if strings.HasSuffix(m[i].Topic, "/devices/induct-1/scanner") {
					return strings.Contains(string(m[i].Payload), `"state":"`+state+`"`)
				}
			}
			return false
		}
	}
	sub.WaitFor(10*time.Second, "device connected", device("connected"))
	r.sc.Unplug()
	sub.WaitFor(10*time.Second, "device disconnected", device("disconnected"))
	r.sc.Replug()
	sub.WaitFor(10*time.Second, "device connected again", device("connected"))

	// Retained: a subscriber arriving later gets the current state at once.
	late := testmqtt.Subscribe(t, b, "late", "scanagent/LAB/hub-1/devices/#")
	m := late.WaitFor(10*time.Second, "retained device state", func(m []testmqtt.Message) bool { return len(m) > 0 })
	if !m[0].Retained || !strings.Contains(string(m[0].Payload), `"port"`) {
		t.Fatalf("device message %+v", m[0])
	}
}

// TestMaxRateAndLiveFirst: a backlog drains at max_rate; with live_first a
// scan made after reconnecting overtakes the backlog.
func TestMaxRateAndLiveFirst(t *testing.T) {
	b := testmqtt.Start(t)
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/scans/#")
	b.Stop()
	r := startAgent(t, fmt.Sprintf("brokers: [%q], max_rate: 100, order: live_first", b.URL()), nil)
	const backlog = 200
	for i := 1; i <= backlog; i++ {
		r.sc.Send("]C0", s10(i))
	}
	r.waitAccepted(t, backlog)
	b.Restart()
	r.waitState(t, status.UplinkConnected)
	start := time.Now()
	r.sc.Send("]C0", "RR999999990GB"[:0]+s10(99999))
	msgs := sub.WaitFor(30*time.Second, "backlog and live scan", countScans(backlog+1))
	el := time.Since(start)
	pos := -1
	for i, e := range uniqueScans(scans(msgs)) {
		if e.Barcode == s10(99999) {
			pos = i
		}
	}
	if pos < 0 || pos > backlog/2 {
		t.Fatalf("live scan delivered at position %d of %d", pos, backlog+1)
	}
	// 200 at 100/s: about 2 s (never much faster).
	if el < 1500*time.Millisecond {
		t.Fatalf("backlog of %d drained in %v despite max_rate 100", backlog, el)
	}
	t.Logf("live scan at position %d; %d scans in %v", pos, backlog+1, el)
}

// TestLiveFirstRecoversFromCutWithoutLiveScans: in live_first mode, with
// the backlog's in-flight cap reached and no new scan, a cut connection
// must still end the session and the backlog must finish draining.
func TestLiveFirstRecoversFromCutWithoutLiveScans(t *testing.T) {
	b := testmqtt.Start(t)
	px := testmqtt.NewProxy(t, b.Addr())
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/scans/#")
	b.Stop()
	r := startAgent(t, fmt.Sprintf("brokers: [%q], max_rate: 200, order: live_first, keepalive: 1s", px.URL()), nil)
	const backlog = 300
	for i := 1; i <= backlog; i++ {
		r.sc.Send("]C0", s10(i))
	}
	r.waitAccepted(t, backlog)
	b.Restart()
	r.waitState(t, status.UplinkConnected)
	px.Hold()
	waitUntil(t, 10*time.Second, "the cap of 64 backlog publishes in flight, PUBACKs held", func() bool {
		m := r.a.Status().MQTT
		return m.Published >= m.Acked+64
	})
	px.Cut()
	sub.WaitFor(20*time.Second, "the whole backlog after the cut", func(m []testmqtt.Message) bool { return len(barcodes(m)) == backlog })
}

// TestStalledState: the broker's replies are held back (PUBACKs stop while
// the connection looks up): the session ends and the uplink reports
// stalled, with its hint, in /status and in the log, not unreachable.
// Once the link works again the scan is delivered.
func TestStalledState(t *testing.T) {
	b := testmqtt.Start(t)
	px := testmqtt.NewProxy(t, b.Addr())
	sub := testmqtt.Subscribe(t, b, "central", "scanagent/LAB/hub-1/scans/#")
	r := startAgent(t, fmt.Sprintf("brokers: [%q], keepalive: 1s", px.URL()), nil) // no PUBACK within 1s×2 + 2s: stalled
	r.waitState(t, status.UplinkConnected)
	px.Hold()
	r.sc.Send("]C0", "RR473124829GB")
	r.waitAccepted(t, 1)
	var st status.Uplink
	waitUntil(t, 30*time.Second, "the session to end after PUBACKs stopped", func() bool {
		st = r.a.Status().MQTT
		return st.State != status.UplinkConnected
	})
	if st.State != status.UplinkStalled || !strings.Contains(st.Hint, "no PUBACK") || !strings.Contains(st.LastError, "no PUBACK for seq 1") {
		t.Fatalf("after PUBACKs stopped: %+v", st)
	}
	// The session's end is logged as stalled once classified.
	stalledLogged := func() bool {
		for _, l := range strings.Split(r.logs.String(), "\n") {
			if strings.Contains(l, "mqtt not connected; scans stay buffered") && strings.Contains(l, "state=stalled") {
				return true
			}
		}
		return false
	}
	waitUntil(t, 10*time.Second, "a stalled log line", stalledLogged, r.logs.String)
	if st := r.a.Status().MQTT; st.State != status.UplinkStalled && st.State != status.UplinkUnreachable {
		t.Fatalf("state %+v", st) // later attempts through the held proxy time out: unreachable
	}
	px.Cut() // drops the held bytes and the hold
	r.waitState(t, status.UplinkConnected)
	r.sub(t, sub, 1)
}
