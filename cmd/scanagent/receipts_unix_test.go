//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestKillNineWithUnreceiptedScans: the real binary with receipts on
// holds scans published and acknowledged by the broker, half of them
// receipted, when it is killed with kill -9. After the restart only the
// unreceipted half is published again, and once receipted the buffer is
// empty: nothing lost, nothing receipted sent twice.
func TestKillNineWithUnreceiptedScans(t *testing.T) {
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
	addr := freePort(t)
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, `
agent: {id: rcpt-01, site: LAB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 300ms, connect_spread: 0s, drain_rate: 0, receipts: {enabled: true, timeout: 1h}}
http: {listen: %q}
log: {level: debug, format: json}
stations:
  - id: induct-1
    scanner: {port: %q, baud: 115200}
`, filepath.Join(dir, "data"), broker.URL(), addr, link), 0o644)

	// The central side: records every delivery by seq, receipts on demand.
	var mu sync.Mutex
	deliveries := map[uint64]int{}
	rc := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("central-rcpt"))
	if tok := rc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer rc.Disconnect(100)
	rc.Subscribe("scanagent/LAB/rcpt-01/scans/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		var ev record.Event
		if json.Unmarshal(m.Payload(), &ev) == nil {
			mu.Lock()
			deliveries[ev.Seq]++
			mu.Unlock()
		}
	}).Wait()
	receipt := func(first, last uint64) {
		b, _ := json.Marshal(map[string]any{"schema": "scanagent.receipt/v1", "agent": "rcpt-01", "ranges": [][2]uint64{{first, last}},
			"receiver": "test", "stored_at": time.Now().UTC().Format(time.RFC3339)})
		rc.Publish("scanagent/LAB/rcpt-01/receipts", 1, false, b).Wait()
	}
	delivered := func(lo, hi uint64) (seqs, total int) {
		mu.Lock()
		defer mu.Unlock()
		for s := lo; s <= hi; s++ {
			if deliveries[s] > 0 {
				seqs++
			}
			total += deliveries[s]
		}
		return seqs, total
	}
	agentStatus := func() (st status.Status) {
		resp, err := http.Get("http://" + addr + "/status")
		if err != nil {
			return st
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&st)
		return st
	}

	var accepted sync.Map
	p := startAgent(t, bin, cfg, &accepted, nil)
	const n = 40
	for i := 1; i <= n; i++ {
		sc.Send("]C0", s10(i))
	}
	waitFor(t, 20*time.Second, "every scan published", func() bool { s, _ := delivered(1, n); return s == n })
	waitFor(t, 10*time.Second, "every PUBACK", func() bool { return agentStatus().MQTT.Acked == n })
	receipt(1, n/2)
	waitFor(t, 10*time.Second, "the first half receipted", func() bool {
		st := agentStatus()
		return st.MQTT.Receipts != nil && st.MQTT.Receipts.Receipted == n/2
	})
	p.signal(t, syscall.SIGKILL)
	_, before := delivered(1, n)

	p = startAgent(t, bin, cfg, &accepted, nil)
	waitFor(t, 20*time.Second, "the unreceipted half published again", func() bool { _, total := delivered(n/2+1, n); return total >= n })
	receipt(n/2+1, n)
	waitFor(t, 10*time.Second, "the buffer empty", func() bool { st := agentStatus(); return st.Buffer.LastSeq >= n && st.Buffer.Depth == 0 })
	p.signal(t, syscall.SIGTERM)
	_, again := delivered(1, n/2)
	if again != n/2 {
		t.Errorf("receipted scans published again after the restart: %d deliveries of %d scans", again, n/2)
	}
	_, after := delivered(1, n)
	t.Logf("deliveries: %d before the kill, %d after the restart (the %d unreceipted scans)", before, after-before, n/2)
	if after-before != n/2 {
		t.Errorf("after the restart %d deliveries, want the %d unreceipted scans once each", after-before, n/2)
	}
}
