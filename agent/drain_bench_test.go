//go:build unix

package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices/sim"
)

// backlogN is the drain benchmark's backlog (BENCH_BACKLOG overrides).
func backlogN() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_BACKLOG")); err == nil {
		return n
	}
	return 1_000_000
}

// fillBacklog writes n scan events into the agent's buffer (agent stopped).
func fillBacklog(b *testing.B, cfg *config.Config, n int) int {
	q, err := buffer.Open(agent.BufferDir(cfg), agent.BufferOptions(cfg, nil))
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	out := make(chan buffer.Outcome, 4096)
	size := 0
	go func() {
		for i := range n {
			ev := record.Event{Schema: record.Schema, ID: fmt.Sprintf("0193f2c4-9a4e-7c1d-8f3a-%012d", i), Agent: cfg.Agent.ID, Site: cfg.Agent.Site,
				Station: "backlog-1", Event: "EMB", ScannedAt: record.Timestamp(time.Now()), Barcode: s10(i % 100_000_000), AIM: "]C0", Kind: "s10", Valid: true}
			v, err := record.EventValue("backlog-1", &ev)
			if err != nil {
				b.Error(err)
				return
			}
			if i == 0 {
				size = len(v.Bytes(1))
			}
			q.Submit(v, nil, out)
		}
	}()
	for range n {
		if o := <-out; o.Err != nil {
			b.Error(o.Err)
		}
	}
	return size
}

// rawPaho publishes n payloads with QoS 1 and window tokens in flight, the
// baseline for the agent's drain.
func rawPaho(b *testing.B, url string, n, window int, payload []byte) time.Duration {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("baseline").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	toks := make(chan mqtt.Token, window)
	done := make(chan struct{})
	go func() {
		for t := range toks {
			t.Wait()
			if t.Error() != nil {
				b.Error(t.Error())
			}
		}
		close(done)
	}()
	start := time.Now()
	for range n {
		toks <- c.Publish("baseline/scans/backlog-1", 1, false, payload)
	}
	close(toks)
	<-done
	return time.Since(start)
}

// BenchmarkDrain compares, in one run against the same mosquitto, the
// agent draining a backlog (buffer read, publish with a window, PUBACK,
// delete) with a raw paho publisher using the same window and payload
// size. The agent runs with its default memory limit (128 MiB). Run with
// -benchtime 1x; BENCH_BACKLOG sets the backlog (default 1,000,000).
func BenchmarkDrain(b *testing.B) {
	n := backlogN()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(benchMemLimit()))
	broker := testmqtt.Start(b)
	dir := b.TempDir()
	const window = 1000
	cfg, err := config.Parse("bench.yaml", fmt.Appendf(nil, "agent: {id: bench, site: LAB, data_dir: %q}\nmqtt: {brokers: [%q], window: %d, connect_spread: 0s, drain_rate: 0}\nhttp: {listen: \"127.0.0.1:0\"}\nstations: [{id: backlog-1, scanner: {port: %q}}]\n",
		filepath.Join(dir, "data"), broker.URL(), window, filepath.Join(dir, "no-scanner")), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		b.StopTimer()
		size := fillBacklog(b, cfg, n)
		base := rawPaho(b, broker.URL(), n, window, make([]byte, size))

		a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- a.Run(ctx) }()
		for {
			st := a.Status()
			if st.Buffer.Acked >= uint64(n) {
				break
			}
			time.Sleep(5 * time.Millisecond) // the measurement's resolution
		}
		el := time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		b.ReportMetric(float64(n)/el.Seconds(), "agent-msg/s")
		b.ReportMetric(float64(n)/base.Seconds(), "paho-msg/s")
		b.ReportMetric(base.Seconds()/el.Seconds(), "ratio")
		b.ReportMetric(el.Seconds(), "drain-s")
		b.ReportMetric(float64(size), "payload-B")
	}
}

// BenchmarkLiveWhileDraining: with order live_first, a scanner feeds 1,000
// scans/s while a backlog drains; reported: latency from the scan's last
// byte written to the pseudo-terminal to its receipt by a subscriber.
// BENCH_BACKLOG sets the backlog (default 1,000,000; the feed runs for 10 s
// or until the backlog is drained).
func BenchmarkLiveWhileDraining(b *testing.B) {
	n := backlogN()
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(benchMemLimit()))
	broker := testmqtt.Start(b)
	dir := b.TempDir()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	link := filepath.Join(dir, "scanner")
	sc.Link(link)
	cfg, err := config.Parse("bench.yaml", fmt.Appendf(nil, "agent: {id: bench, site: LAB, data_dir: %q}\nmqtt: {brokers: [%q], window: 1000, order: live_first, connect_spread: 0s, drain_rate: 0}\nhttp: {listen: \"127.0.0.1:0\"}\nstations: [{id: live-1, scanner: {port: %q, baud: 115200}}]\n",
		filepath.Join(dir, "data"), broker.URL(), link), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		b.StopTimer()
		fillBacklog(b, cfg, n)
		var mu sync.Mutex
		sent := map[string]time.Time{}
		var lat, read []time.Duration // written -> received; written -> framed (scanned_at)
		sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("live-sub"))
		if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		sub.Subscribe(cfg.MQTT.TopicPrefix+"/scans/live-1", 0, func(_ mqtt.Client, m mqtt.Message) {
			now := time.Now()
			ev, err := decodeEvent(m.Payload())
			if err != nil {
				return
			}
			mu.Lock()
			if t, ok := sent[ev.Barcode]; ok {
				lat = append(lat, now.Sub(t))
				if ts, err := time.Parse(time.RFC3339Nano, ev.ScannedAt); err == nil {
					read = append(read, ts.Sub(t))
				}
				delete(sent, ev.Barcode)
			}
			mu.Unlock()
		}).Wait()

		a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		waitUntil(b, 20*time.Second, "connected", func() bool { return a.Status().MQTT.Connected })
		b.StartTimer()
		var fed atomic.Int64
		tick := time.NewTicker(time.Millisecond)
		feedStart := time.Now()
		i := 0
	feed:
		for range tick.C {
			el := time.Since(feedStart)
			if el > 10*time.Second || (i%100 == 0 && a.Status().Buffer.Acked >= uint64(n)) {
				break feed
			}
			// 1,000 scans/s on average, catching up when scheduled late.
			for ; i < int(el/time.Millisecond); i++ {
				code := s10(90_000_000 + i)
				mu.Lock()
				sent[code] = time.Now()
				mu.Unlock()
				sc.Send("]C0", code)
				fed.Add(1)
			}
		}
		tick.Stop()
		drained := a.Status().Buffer.Acked
		time.Sleep(2 * time.Second) // wall time: the last live scans' PUBACKs come in
		b.StopTimer()
		cancel()
		<-done
		sub.Disconnect(100)
		mu.Lock()
		slices.Sort(lat)
		if len(lat) == 0 {
			b.Fatal("no live scan received")
		}
		b.ReportMetric(float64(fed.Load()), "live-fed")
		b.ReportMetric(float64(len(lat)), "live-received")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		b.ReportMetric(float64(drained), "backlog-acked-meanwhile")
		slices.Sort(read)
		if len(read) > 0 {
			b.ReportMetric(float64(read[len(read)*99/100].Microseconds())/1000, "p99-read-ms")
		}
		mu.Unlock()
	}
}

func decodeEvent(p []byte) (record.Event, error) {
	var ev record.Event
	err := json.Unmarshal(p, &ev)
	return ev, err
}

// benchMemLimit is the agent's default soft memory limit (128 MiB), or
// BENCH_MEMLIMIT_MIB.
func benchMemLimit() int64 {
	if v, err := strconv.Atoi(os.Getenv("BENCH_MEMLIMIT_MIB")); err == nil {
		return int64(v) << 20
	}
	return 128 << 20
}
