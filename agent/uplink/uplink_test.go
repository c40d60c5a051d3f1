package uplink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/buffer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// reporter is a fixed status and device list.
type reporter struct {
	mu      sync.Mutex
	devices []status.DeviceReport
}

func (r *reporter) Status() status.Status { return status.Status{Agent: "hub-1", Site: "LAB"} }
func (r *reporter) Devices() []status.DeviceReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]status.DeviceReport(nil), r.devices...)
}

func mqttConfig(url string) config.MQTT {
	return config.MQTT{Brokers: []string{url}, ClientID: "uplink-test", TopicPrefix: "scanagent/LAB/hub-1", Window: 8,
		KeepAlive: config.Duration(5 * time.Second), ConnectTimeout: config.Duration(2 * time.Second),
		ReconnectMin: config.Duration(50 * time.Millisecond), ReconnectMax: config.Duration(200 * time.Millisecond),
		HealthInterval: config.Duration(time.Hour), Order: "fifo"}
}

// TestUplinkDeliversInOrderAndAcknowledges: the uplink on its own, with a
// real buffer and a real mosquitto: every record goes out in seq order on
// P/scans/<station>, each is acknowledged in the buffer (deleted), the
// device states are published retained, and a device change is published
// again when DevicesChanged says so.
func TestUplinkDeliversInOrderAndAcknowledges(t *testing.T) {
	b := testmqtt.Start(t)
	sub := testmqtt.Subscribe(t, b, "watcher", "scanagent/#")
	q, err := buffer.Open(t.TempDir(), buffer.Options{MinFreeDisk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const n = 200
	for i := range n {
		ev := record.Event{Schema: record.Schema, ID: fmt.Sprintf("id-%d", i), Station: "induct-1", Barcode: fmt.Sprintf("code-%d", i), Kind: "other", Valid: true}
		v, err := record.EventValue("induct-1", &ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(v); err != nil {
			t.Fatal(err)
		}
	}
	rep := &reporter{devices: []status.DeviceReport{{Station: "induct-1", Kind: "scanner", Device: status.Device{Port: "/dev/ttyUSB0", State: "connected"}}}}
	changed := make(chan struct{}, 1)
	u := New(Config{MQTT: mqttConfig(b.URL()), Agent: config.Agent{ID: "hub-1", Site: "LAB"}, Version: "test"},
		Deps{Queue: q, Reporter: rep, DevicesChanged: changed})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()

	msgs := sub.WaitFor(20*time.Second, "every scan", func(m []testmqtt.Message) bool { return len(testmqtt.Events(m, "/scans/")) == n })
	for i, ev := range testmqtt.Events(msgs, "/scans/") {
		if ev["seq"] != float64(i+1) || ev["barcode"] != fmt.Sprintf("code-%d", i) {
			t.Fatalf("scan %d out of order: %v", i, ev)
		}
	}
	waitFor(t, "the buffer emptied", func() bool { return q.Stats().Depth == 0 })
	if st := u.Stats(); st.State != status.UplinkConnected || st.Published != n || st.Acked != n || !u.Connected() {
		t.Fatalf("stats %+v", st)
	}
	sub.WaitFor(10*time.Second, "the scanner's state", func(m []testmqtt.Message) bool {
		return hasPayload(m, "/devices/induct-1/scanner", `"connected"`)
	})
	rep.mu.Lock()
	rep.devices[0].State, rep.devices[0].Reason = "error", "unplugged"
	rep.mu.Unlock()
	changed <- struct{}{}
	sub.WaitFor(10*time.Second, "the scanner's new state", func(m []testmqtt.Message) bool {
		return hasPayload(m, "/devices/induct-1/scanner", `"unplugged"`)
	})

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := u.Stats(); st.State != status.UplinkStopped {
		t.Fatalf("state after stop %q", st.State)
	}
	sub.WaitFor(10*time.Second, "offline status", func(m []testmqtt.Message) bool { return hasPayload(m, "/status", `"offline"`) })
}

func hasPayload(msgs []testmqtt.Message, topicSuffix, part string) bool {
	for _, m := range msgs {
		if strings.HasSuffix(m.Topic, topicSuffix) && strings.Contains(string(m.Payload), part) {
			return true
		}
	}
	return false
}

// TestUnreachableIsRetried: nothing listens at the broker address: the
// uplink reports unreachable with a hint, retries, and stops with ctx.
func TestUnreachableIsRetried(t *testing.T) {
	q, err := buffer.Open(t.TempDir(), buffer.Options{MinFreeDisk: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	cfg := mqttConfig("tcp://127.0.0.1:1") // nothing listens on port 1
	u := New(Config{MQTT: cfg, Agent: config.Agent{ID: "hub-1"}}, Deps{Queue: q, Reporter: &reporter{}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	waitFor(t, "unreachable", func() bool { st := u.Stats(); return st.State == status.UplinkUnreachable && st.Sessions >= 2 })
	if st := u.Stats(); st.Hint == "" || st.LastError == "" || st.Connected {
		t.Fatalf("stats %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestPace: max_rate spaces publishes; a burst of 2 ms worth passes at
// once, and an idle limiter does not catch up. Fake time (synctest).
func TestPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		lost := make(chan struct{})
		if !pace(ctx, nil, lost) {
			t.Fatal("no limit waited")
		}
		lim := newLimiter(1000) // burst 2
		start := time.Now()
		for range 1002 {
			if !pace(ctx, lim, lost) {
				t.Fatal("pace gave up")
			}
		}
		if d := time.Since(start); d < 999*time.Millisecond || d > 1001*time.Millisecond {
			t.Fatalf("1002 publishes at 1000/s with a burst of 2 took %v, want 1s", d)
		}
		time.Sleep(time.Minute) // idle
		start = time.Now()
		for range 12 {
			pace(ctx, lim, lost)
		}
		if d := time.Since(start); d < 9*time.Millisecond {
			t.Fatalf("after a minute idle, 12 publishes took %v: caught up in a burst", d)
		}
		close(lost)
		lim = newLimiter(1)
		pace(ctx, lim, lost) // the burst
		if pace(ctx, lim, lost) {
			t.Fatal("pace did not give up on a lost connection")
		}
	})
}

// TestClassify: each failure gets its state and a hint naming the fix.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err   error
		state string
	}{
		{fmt.Errorf("x: %w", errStalled), status.UplinkStalled},
		{errors.New("mqtt.tls.ca_file: open /nope: no such file or directory"), status.UplinkTLSError},
		{fmt.Errorf("connect: %w", errTLSClosed), status.UplinkTLSError},
		{errors.New("dial tcp: lookup broker.invalid: no such host"), status.UplinkUnreachable},
	} {
		state, hint := classify(tc.err)
		if state != tc.state || hint == "" {
			t.Errorf("%v: %s %q, want %s with a hint", tc.err, state, hint, tc.state)
		}
	}
}
