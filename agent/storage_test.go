//go:build unix

package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/station"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices/sim"
)

// storageRig is a scanner on a pseudo-terminal and an agent config
// (mqtt and station keys given) for the storage tests.
func storageRig(t *testing.T, broker *testmqtt.Broker, mqttKeys, scannerKeys string) (*sim.Scanner, *config.Config) {
	t.Helper()
	return storageRigAt(t, broker.URL(), mqttKeys, scannerKeys)
}

// storageRigAt is storageRig with the agent connecting to url.
func storageRigAt(t *testing.T, url, mqttKeys, scannerKeys string) (*sim.Scanner, *config.Config) {
	t.Helper()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	cfg, err := config.Parse("test.yaml", fmt.Appendf(nil, `
agent: {id: hub-test-01, site: TEST-HUB, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, connect_spread: 0s, drain_rate: 0%s}
http: {listen: "127.0.0.1:0"}
stations: [{id: induct-3, scanner: {port: %q, baud: 115200%s}}]
`, filepath.Join(t.TempDir(), "data"), url, mqttKeys, sc.Path(), scannerKeys), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return sc, cfg
}

// TestBufferThatCannotOpenIsWaitedFor: a buffer that cannot open (here,
// held by another process; in the field, a full disk) does not make the
// agent exit, which would only start a restart loop: it serves its status
// saying why, retries, and starts scanning once the buffer opens.
func TestBufferThatCannotOpenIsWaitedFor(t *testing.T) {
	broker := testmqtt.Start(t)
	sc, cfg := storageRig(t, broker, ", reconnect_max: 300ms", "")
	holder, err := buffer.Open(agent.BufferDir(cfg), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sub := testmqtt.Subscribe(t, broker, "central", cfg.MQTT.TopicPrefix+"/scans/#")
	waiting, ready := make(chan string, 1), make(chan string, 1)
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), nil)), Version: "test",
		Waiting: func(addr, reason string) { waiting <- addr },
		Ready:   func(addr string) { ready <- addr }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var addr string
	select {
	case addr = <-waiting:
	case err := <-done:
		t.Fatalf("Run returned while the buffer was held: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not waiting")
	}
	code, body := httpGet(t, "http://"+addr+"/readyz", "")
	if code != 503 || !strings.Contains(body, "in use by another process") {
		t.Fatalf("/readyz while waiting: %d %q", code, body)
	}
	if st := a.Status(); !strings.Contains(st.BufferError, "in use") || len(st.Stations) != 0 {
		t.Fatalf("status while waiting: %+v", st)
	}
	holder.Close()
	select {
	case <-ready:
	case <-time.After(40 * time.Second):
		t.Fatal("buffer not opened after it was let go")
	}
	if err := sc.Send("]C0", "RR473124829GB"); err != nil {
		t.Fatal(err)
	}
	sub.WaitFor(10*time.Second, "the scan", countScans(1))
	if code, _ := httpGet(t, "http://"+addr+"/readyz", ""); code != 200 {
		t.Fatalf("/readyz once open: %d", code)
	}
}

// TestOversizedEventRefusedAtStation: a code whose event would exceed
// mqtt.max_event_bytes (16KiB by default) is refused at the station with
// reason too_large and the bad-read signal, and is never buffered; the
// scans around it go through.
func TestOversizedEventRefusedAtStation(t *testing.T) {
	r := newRigStation(t, ", max_length: 65536", "    feedback: {protocol: honeywell, group: 0}\n")
	r.sc.Send("]C0", "RR473124829GB")
	r.sc.Send("", strings.Repeat("A", 20000))
	if !r.sc.WaitReceived([]byte("0\x1b8,"), 10*time.Second) {
		t.Fatalf("no bad-read command; scanner received %q", r.sc.Received())
	}
	r.sc.Send("]C0", "RR473124832GB")
	evs := scans(r.sub.WaitFor(15*time.Second, "two scans", countScans(2)))
	if evs[0].Barcode != "RR473124829GB" || evs[1].Barcode != "RR473124832GB" {
		t.Fatalf("events %+v", evs)
	}
	st := r.a.Status()
	if c := st.Stations[0].Counters; c.NotAccepted[station.ReasonTooLarge] != 1 || c.Scans != 2 || c.Feedback["bad"] != 1 {
		t.Fatalf("counters %+v", c)
	}
	if st.Buffer.Rejected[buffer.ReasonRefused] != 1 || st.Buffer.Rejected[buffer.ReasonError] != 0 {
		t.Fatalf("buffer rejected %+v", st.Buffer.Rejected)
	}
}

// TestPoisonEventParked: a broker that closes the session whenever it
// receives the event (here it is larger than the broker's
// max_packet_size, and mqtt.max_event_bytes was left above that). Each
// session leaves it unacknowledged; after three, it is parked and the
// scans behind it flow on. It is reported, and kept for export.
func TestPoisonEventParked(t *testing.T) {
	broker := testmqtt.Start(t, testmqtt.WithConfig("max_packet_size 8192"))
	sc, cfg := storageRig(t, broker, ", reconnect_max: 200ms, window: 4, connect_timeout: 2s", ", max_length: 65536")
	sub := testmqtt.Subscribe(t, broker, "central", cfg.MQTT.TopicPrefix+"/scans/#")
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	codes := []string{"RR473124829GB", strings.Repeat("B", 10000), "RR473124832GB", "RR473124846GB"}
	for _, c := range codes {
		if err := sc.Send("", c); err != nil {
			t.Fatal(err)
		}
	}
	// At least once: a scan published in the session the poison ended
	// comes again in the next one.
	evs := uniqueScans(scans(sub.WaitFor(30*time.Second, "the three scans around the poison", countScans(3))))
	for i, want := range []string{codes[0], codes[2], codes[3]} {
		if evs[i].Barcode != want {
			t.Fatalf("event %d: %s, want %s", i, evs[i].Barcode, want)
		}
	}
	// The delivered scans' deletes are committed after their PUBACKs.
	waitUntil(t, 10*time.Second, "the buffer emptied", func() bool { return a.Status().Buffer.Depth == 0 })
	st := a.Status()
	if st.MQTT.Parked != 1 || !strings.Contains(st.MQTT.LastParked, "seq 2,") || st.Buffer.Parked != 1 || st.Buffer.Depth != 0 {
		t.Fatalf("mqtt %+v buffer parked %d depth %d", st.MQTT, st.Buffer.Parked, st.Buffer.Depth)
	}
}

// TestPoisonParkedNotTheScanBefore: the broker's answers reach the agent
// 200 ms late (slowAnswers), so when the broker closes the connection over
// the refused event, the PUBACK of the scan published just before it is
// always still on its way and is lost with the connection. That scan is
// then the oldest unacknowledged one of the session, but only a suspect:
// published alone in the next session, it is acknowledged; the refused
// event, published alone three times, is the one parked.
func TestPoisonParkedNotTheScanBefore(t *testing.T) {
	broker := testmqtt.Start(t, testmqtt.WithConfig("max_packet_size 8192"))
	sc, cfg := storageRigAt(t, slowAnswers(t, broker.Addr(), 200*time.Millisecond),
		", reconnect_max: 200ms, window: 4, connect_timeout: 2s", ", max_length: 65536")
	sub := testmqtt.Subscribe(t, broker, "central", cfg.MQTT.TopicPrefix+"/scans/#")
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), nil)), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	codes := []string{"RR473124829GB", strings.Repeat("B", 10000), "RR473124832GB", "RR473124846GB"}
	for _, c := range codes {
		if err := sc.Send("", c); err != nil {
			t.Fatal(err)
		}
	}
	evs := uniqueScans(scans(sub.WaitFor(30*time.Second, "the three scans around the poison", countScans(3))))
	for i, want := range []string{codes[0], codes[2], codes[3]} {
		if evs[i].Barcode != want {
			t.Fatalf("event %d: %s, want %s", i, evs[i].Barcode, want)
		}
	}
	waitUntil(t, 10*time.Second, "the buffer emptied", func() bool { return a.Status().Buffer.Depth == 0 })
	st := a.Status()
	// Seq 1 (the scan before) parked as well would make two.
	if st.MQTT.Parked != 1 || !strings.Contains(st.MQTT.LastParked, "seq 2,") || st.Buffer.Parked != 1 || st.Buffer.Depth != 0 {
		t.Fatalf("mqtt %+v buffer parked %d depth %d", st.MQTT, st.Buffer.Parked, st.Buffer.Depth)
	}
}

// slowAnswers is a TCP relay to addr that passes what the client sends at
// once and what the server sends delay later; when the server closes, what
// it sent in the last delay is dropped and the client's connection is
// reset, like a reset that overtakes data on a slow link. It returns the
// broker URL of the relay.
func slowAnswers(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	keep := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	type chunk struct {
		due time.Time
		p   []byte
	}
	wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", addr)
			if err != nil {
				client.Close()
				continue
			}
			keep(client)
			keep(server)
			wg.Go(func() {
				io.Copy(server, client)
				server.Close()
			})
			pending := make(chan chunk, 1024)
			closed := make(chan struct{})
			wg.Go(func() {
				defer close(closed)
				buf := make([]byte, 64<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 {
						pending <- chunk{time.Now().Add(delay), bytes.Clone(buf[:n])}
					}
					if err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				defer func() {
					client.(*net.TCPConn).SetLinger(0) // a reset
					client.Close()
				}()
				for {
					var c chunk
					select {
					case c = <-pending:
					case <-closed:
						return // whatever is pending is lost
					}
					timer := time.NewTimer(time.Until(c.due))
					select {
					case <-timer.C:
					case <-closed:
						timer.Stop()
						return
					}
					if _, err := client.Write(c.p); err != nil {
						return
					}
				}
			})
		}
	})
	return "tcp://" + ln.Addr().String()
}
