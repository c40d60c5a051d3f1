//go:build unix

package agent_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
)

// receiver stands for the central side in these tests: it takes the scans
// of hub-1 and, while on, answers each with a receipt naming its seq. It
// remembers every scan it saw by id.
type receiver struct {
	t    *testing.T
	c    mqtt.Client
	on   atomic.Bool
	mu   sync.Mutex
	seen map[string]int // scan id -> deliveries
	seqs map[uint64]string
}

func startReceiver(t *testing.T, url string) *receiver {
	t.Helper()
	r := &receiver{t: t, seen: map[string]int{}, seqs: map[uint64]string{}}
	r.on.Store(true)
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID("receiver-test").SetCleanSession(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond)
	o.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe("scanagent/LAB/hub-1/scans/#", 1, r.scan)
	})
	r.c = mqtt.NewClient(o)
	if tok := r.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("receiver connect: %v", tok.Error())
	}
	t.Cleanup(func() { r.c.Disconnect(100) })
	return r
}

func (r *receiver) scan(c mqtt.Client, m mqtt.Message) {
	var ev record.Event
	if err := json.Unmarshal(m.Payload(), &ev); err != nil {
		r.t.Errorf("receiver: %v", err)
		return
	}
	r.mu.Lock()
	r.seen[ev.ID]++
	r.seqs[ev.Seq] = ev.ID
	r.mu.Unlock()
	if r.on.Load() {
		r.receipt(c, "hub-1", [2]uint64{ev.Seq, ev.Seq})
	}
}

func (r *receiver) receipt(c mqtt.Client, agent string, ranges ...[2]uint64) {
	b, _ := json.Marshal(map[string]any{"schema": "scanagent.receipt/v1", "agent": agent, "ranges": ranges,
		"receiver": "test", "stored_at": time.Now().UTC().Format(time.RFC3339Nano)})
	r.publish(c, b)
}

func (r *receiver) publish(c mqtt.Client, payload []byte) {
	c.Publish("scanagent/LAB/hub-1/receipts", 1, false, payload)
}

// ids is how many distinct scans the receiver saw.
func (r *receiver) ids() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// deliveries is how many scans it received, duplicates included.
func (r *receiver) deliveries() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, v := range r.seen {
		n += v
	}
	return n
}

func receiptStats(r *running) status.Receipts {
	if rc := r.a.Status().MQTT.Receipts; rc != nil {
		return *rc
	}
	return status.Receipts{}
}

// TestReceiptsEndToEnd: with receipts on, a PUBACK does not delete: the
// scans stay in the buffer, counted unreceipted, until the receiver's
// receipts name them; then they are deleted.
func TestReceiptsEndToEnd(t *testing.T) {
	b := testmqtt.Start(t)
	rcv := startReceiver(t, b.URL())
	rcv.on.Store(false)
	r := startAgent(t, fmt.Sprintf("brokers: [%q], receipts: {enabled: true, timeout: 1h}", b.URL()), nil)
	r.waitState(t, status.UplinkConnected)
	const n = 50
	for i := 1; i <= n; i++ {
		r.sc.Send("]C0", s10(i))
	}
	r.waitAccepted(t, n)
	waitUntil(t, 20*time.Second, "every scan at the receiver", func() bool { return rcv.ids() == n })
	waitUntil(t, 10*time.Second, "every PUBACK", func() bool { return r.a.Status().MQTT.Acked == n })
	st := r.a.Status()
	if st.Buffer.Depth != n || st.MQTT.Receipts == nil || st.MQTT.Receipts.Unreceipted != n || st.MQTT.Receipts.OldestAge <= 0 {
		t.Fatalf("PUBACKed but not receipted: depth %d, receipts %+v", st.Buffer.Depth, st.MQTT.Receipts)
	}
	// The receiver stores them: one receipt for all, as ranges.
	rcv.receipt(rcv.c, "hub-1", [2]uint64{1, 20}, [2]uint64{21, n})
	waitUntil(t, 10*time.Second, "the buffer emptied by the receipt", func() bool { return r.a.Status().Buffer.Depth == 0 },
		func() string { return fmt.Sprintf("%+v", r.a.Status().MQTT.Receipts) })
	rs := receiptStats(r)
	if rs.Unreceipted != 0 || rs.Receipted != n || rs.Republished != 0 || len(rs.Bad) != 0 {
		t.Fatalf("receipts %+v", rs)
	}
	// A second receipt for them is ignored, counted, and deletes nothing.
	rcv.receipt(rcv.c, "hub-1", [2]uint64{1, n})
	waitUntil(t, 10*time.Second, "the second receipt counted", func() bool { return receiptStats(r).Bad["unknown_seq"] == 1 })
	// Live: each scan receipted as it comes.
	rcv.on.Store(true)
	for i := n + 1; i <= 2*n; i++ {
		r.sc.Send("]C0", s10(i))
	}
	waitUntil(t, 20*time.Second, "live scans receipted", func() bool { return receiptStats(r).Receipted == 2*n && r.a.Status().Buffer.Depth == 0 })
	if st := r.a.Status().MQTT; st.State != status.UplinkConnected {
		t.Fatalf("state %+v", st)
	}
}

// TestReceiptTimeoutRepublishes: a receiver that does not answer: after
// mqtt.receipts.timeout the scans are published again, same id and seq,
// the state is no_receipts with a hint naming the causes, and nothing is
// deleted. Once receipts come, everything is deleted and the state is
// connected again.
func TestReceiptTimeoutRepublishes(t *testing.T) {
	b := testmqtt.Start(t)
	rcv := startReceiver(t, b.URL())
	rcv.on.Store(false)
	r := startAgent(t, fmt.Sprintf("brokers: [%q], receipts: {enabled: true, timeout: 1s}", b.URL()), nil)
	r.waitState(t, status.UplinkConnected)
	const n = 10
	for i := 1; i <= n; i++ {
		r.sc.Send("]C0", s10(i))
	}
	r.waitAccepted(t, n)
	st := r.waitState(t, status.UplinkNoReceipts)
	for _, cause := range []string{"ACL", "receiver", "scanagent/LAB/hub-1/receipts"} {
		if !strings.Contains(st.Hint, cause) {
			t.Errorf("hint does not name %q: %s", cause, st.Hint)
		}
	}
	waitUntil(t, 20*time.Second, "scans published again", func() bool { return receiptStats(r).Republished >= n && rcv.deliveries() >= 2*n })
	if rcv.ids() != n || r.a.Status().Buffer.Depth != n {
		t.Fatalf("ids %d, depth %d", rcv.ids(), r.a.Status().Buffer.Depth)
	}
	rcv.on.Store(true)
	waitUntil(t, 20*time.Second, "everything receipted after the republish", func() bool { return r.a.Status().Buffer.Depth == 0 })
	r.waitState(t, status.UplinkConnected)
	if rcv.ids() != n {
		t.Fatalf("ids %d, want %d", rcv.ids(), n)
	}
}

// TestBadReceipts: receipts that are not JSON, for another agent, with a
// reversed or zero range, beyond the last seq, or naming nothing waiting
// are ignored and counted by reason; nothing is deleted.
func TestBadReceipts(t *testing.T) {
	b := testmqtt.Start(t)
	rcv := startReceiver(t, b.URL())
	rcv.on.Store(false)
	r := startAgent(t, fmt.Sprintf("brokers: [%q], receipts: {enabled: true, timeout: 1h}", b.URL()), nil)
	r.waitState(t, status.UplinkConnected)
	for i := 1; i <= 3; i++ {
		r.sc.Send("]C0", s10(i))
	}
	r.waitAccepted(t, 3)
	waitUntil(t, 10*time.Second, "the PUBACKs", func() bool { return r.a.Status().MQTT.Acked == 3 })
	rcv.publish(rcv.c, []byte("{not json"))
	rcv.publish(rcv.c, []byte(`{"schema":"scanagent.receipt/v2","agent":"hub-1","ranges":[[1,3]]}`))
	rcv.receipt(rcv.c, "hub-2", [2]uint64{1, 3})
	rcv.receipt(rcv.c, "hub-1", [2]uint64{3, 1})
	rcv.receipt(rcv.c, "hub-1", [2]uint64{0, 2})
	rcv.receipt(rcv.c, "hub-1")
	rcv.receipt(rcv.c, "hub-1", [2]uint64{1, 1 << 40})
	want := map[string]uint64{"malformed": 1, "schema": 1, "other_agent": 1, "bad_range": 3, "beyond_last_seq": 1}
	waitUntil(t, 10*time.Second, "every bad receipt counted", func() bool {
		bad := receiptStats(r).Bad
		for k, v := range want {
			if bad[k] != v {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprint(receiptStats(r).Bad) })
	if st := r.a.Status(); st.Buffer.Depth != 3 || st.MQTT.Receipts.Receipted != 0 {
		t.Fatalf("a bad receipt deleted scans: depth %d, %+v", st.Buffer.Depth, st.MQTT.Receipts)
	}
	if !strings.Contains(r.logs.String(), "receipt ignored; nothing deleted") {
		t.Fatal("bad receipts not logged")
	}
	// The scans are still receipted by a good one.
	rcv.receipt(rcv.c, "hub-1", [2]uint64{1, 3})
	waitUntil(t, 10*time.Second, "the good receipt applied", func() bool { return r.a.Status().Buffer.Depth == 0 })
}

// TestReceiptsACLDenied: a broker whose ACL denies the scans topic still
// acknowledges every publish (MQTT 3.1.1) and drops it. Without receipts
// that loses every scan; with them nothing is deleted, the state says why,
// and once the ACL is fixed and the broker restarted every scan arrives.
func TestReceiptsACLDenied(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	deny := "topic readwrite scanagent/LAB/hub-1/status\ntopic readwrite scanagent/LAB/hub-1/health\n" +
		"topic readwrite scanagent/LAB/hub-1/devices/#\ntopic readwrite scanagent/LAB/hub-1/receipts\ntopic read scanagent/#\n"
	if err := os.WriteFile(acl, []byte(deny), 0o644); err != nil {
		t.Fatal(err)
	}
	// A site broker's queue limit (the test broker's 0, unlimited, makes
	// mosquitto 2.0 close the connection on a denied QoS 1 publish
	// instead of acknowledging it).
	b := testmqtt.Start(t, testmqtt.WithConfig("acl_file "+acl+"\nmax_queued_messages 1000"))
	rcv := startReceiver(t, b.URL())
	r := startAgent(t, fmt.Sprintf("brokers: [%q], receipts: {enabled: true, timeout: 1s}", b.URL()), nil)
	r.waitState(t, status.UplinkConnected)
	const n = 20
	for i := 1; i <= n; i++ {
		r.sc.Send("]C0", s10(i))
	}
	r.waitAccepted(t, n)
	st := r.waitState(t, status.UplinkNoReceipts)
	t.Logf("while the ACL denies the scans: state %s, hint: %s", st.State, st.Hint)
	waitUntil(t, 10*time.Second, "every scan acknowledged by the broker", func() bool { return r.a.Status().MQTT.Acked >= n },
		func() string { return fmt.Sprintf("%+v %+v", r.a.Status().MQTT, r.a.Status().MQTT.Receipts) })
	if got := rcv.ids(); got != 0 {
		t.Fatalf("the receiver got %d scans through a denying ACL", got)
	}
	if d := r.a.Status().Buffer.Depth; d != n {
		t.Fatalf("depth %d while nothing was stored centrally, want %d", d, n)
	}
	// The ACL is fixed and the broker restarted.
	if err := os.WriteFile(acl, []byte("topic readwrite scanagent/#\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	b.Restart()
	waitUntil(t, 30*time.Second, "every scan stored and receipted", func() bool { return r.a.Status().Buffer.Depth == 0 && rcv.ids() == n },
		func() string { return fmt.Sprintf("depth %d, receiver %d ids", r.a.Status().Buffer.Depth, rcv.ids()) })
	r.waitState(t, status.UplinkConnected)
	t.Logf("after the fix: %d scans at the receiver, %d deliveries, receipts %+v", rcv.ids(), rcv.deliveries(), receiptStats(r))
}

// TestReceiptsAcrossRestart: scans published but not receipted when the
// agent stops stay in the buffer; after a restart only those are published
// again, and a receipt then deletes them.
func TestReceiptsAcrossRestart(t *testing.T) {
	b := testmqtt.Start(t)
	rcv := startReceiver(t, b.URL())
	dir := t.TempDir()
	mqttYAML := fmt.Sprintf("brokers: [%q], receipts: {enabled: true, timeout: 1h}", b.URL())
	r := startAgentIn(t, dir, mqttYAML, nil)
	r.waitState(t, status.UplinkConnected)
	const n = 20
	for i := 1; i <= n; i++ { // receipted
		r.sc.Send("]C0", s10(i))
	}
	waitUntil(t, 20*time.Second, "the first scans receipted", func() bool { return receiptStats(r).Receipted == n })
	rcv.on.Store(false)
	for i := n + 1; i <= 2*n; i++ { // published, not receipted
		r.sc.Send("]C0", s10(i))
	}
	waitUntil(t, 20*time.Second, "the next scans at the receiver", func() bool { return rcv.ids() == 2*n })
	waitUntil(t, 10*time.Second, "their PUBACKs", func() bool { return r.a.Status().MQTT.Acked == 2*n })
	r.stop()
	r.sc.Close()
	before := rcv.deliveries()

	rcv.on.Store(true)
	r = startAgentIn(t, dir, mqttYAML, nil)
	waitUntil(t, 20*time.Second, "the unreceipted scans receipted after the restart", func() bool {
		st := r.a.Status()
		return st.BufferOpen && st.Buffer.Depth == 0
	},
		func() string { return fmt.Sprintf("depth %d", r.a.Status().Buffer.Depth) })
	if again := rcv.deliveries() - before; again != n {
		t.Fatalf("published again after the restart: %d scans, want the %d unreceipted ones", again, n)
	}
	if rcv.ids() != 2*n {
		t.Fatalf("ids %d", rcv.ids())
	}
}

// TestContractWithReceipts: with receipts on, every message on the wire
// (scans, status, health carrying mqtt.receipts, devices, and the
// receipts themselves) matches docs/asyncapi.yaml.
func TestContractWithReceipts(t *testing.T) {
	c := loadContract(t)
	b := testmqtt.Start(t)
	sub := testmqtt.Subscribe(t, b, "contract-receipts", "scanagent/#")
	startReceiver(t, b.URL())
	r := startAgent(t, fmt.Sprintf("brokers: [%q], health_interval: 1s, receipts: {enabled: true, timeout: 1h}", b.URL()), nil)
	r.waitState(t, status.UplinkConnected)
	for i := 1; i <= 5; i++ {
		r.sc.Send("]C0", s10(i))
	}
	msgs := sub.WaitFor(20*time.Second, "a health document with the receipted scans", func(m []testmqtt.Message) bool {
		for _, msg := range m {
			var h status.Status
			if strings.HasSuffix(msg.Topic, "/health") && json.Unmarshal(msg.Payload, &h) == nil &&
				h.MQTT.Receipts != nil && h.MQTT.Receipts.Receipted == 5 {
				return true
			}
		}
		return false
	})
	kinds := map[string]int{}
	for _, m := range msgs {
		ch := c.match("scanagent/LAB/hub-1", m.Topic)
		if ch == nil {
			t.Fatalf("%s: no channel in the contract", m.Topic)
		}
		msg, err := ch.validateOne(m.Payload)
		if err != nil {
			t.Fatalf("%s: %s\n%s", m.Topic, err, m.Payload)
		}
		kinds[msg.name]++
	}
	if kinds["receipt"] == 0 || kinds["health"] == 0 || kinds["scan"] != 5 {
		t.Fatalf("validated %v", kinds)
	}
	t.Logf("validated %v", kinds)
}
