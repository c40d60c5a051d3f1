//go:build unix

package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// BenchmarkEndToEnd measures the whole path for real: 8 simulated scanners
// on pseudo-terminals write b.N codes as fast as the agent takes them; the
// agent frames, validates, syncs to Badger and publishes to mosquitto; a
// subscriber counts arrivals. Reported: scans/s from the first byte written
// to the last event received.
func BenchmarkEndToEnd(b *testing.B) {
	const scanners = 8
	broker := testmqtt.Start(b)
	dir := b.TempDir()
	var ports []string
	var scs []*sim.Scanner
	for i := range scanners {
		sc, err := sim.NewScanner("\r\n")
		if err != nil {
			b.Fatal(err)
		}
		defer sc.Close()
		link := filepath.Join(dir, fmt.Sprintf("scanner-%d", i))
		sc.Link(link)
		scs = append(scs, sc)
		ports = append(ports, link)
	}
	var st strings.Builder
	for i, p := range ports {
		fmt.Fprintf(&st, "  - {id: line-%d, event: EDD, scanner: {port: %q, baud: 115200}}\n", i, p)
	}
	cfg, err := config.Parse("bench.yaml", fmt.Appendf(nil, "agent: {id: bench, site: LAB, data_dir: %q}\nmqtt: {brokers: [%q], window: 1000, connect_spread: 0s, drain_rate: 0}\nhttp: {listen: \"127.0.0.1:0\"}\nstations:\n%s",
		filepath.Join(dir, "data"), broker.URL(), st.String()), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}

	var received atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	target := int64(b.N)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL()).SetClientID("bench-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe(cfg.MQTT.TopicPrefix+"/scans/#", 1, func(mqtt.Client, mqtt.Message) {
		if received.Add(1) == target {
			once.Do(func() { close(done) })
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}

	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	waitUntil(b, 10*time.Second, "ports open, MQTT connected", func() bool {
		st := a.Status()
		return st.MQTT.Connected && len(st.Stations) > 0 && st.Stations[0].Scanner.State == "connected"
	})

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, sc := range scs {
		wg.Go(func() {
			codes := sim.NewCodes(uint64(i+1), 0.05)
			var buf []byte
			for n := i; n < b.N; n += scanners {
				code, aim := codes.Next()
				buf = append(buf, aim+code+"\r\n"...)
				if len(buf) > 256 {
					sc.Write(buf)
					buf = buf[:0]
				}
			}
			if len(buf) > 0 {
				sc.Write(buf)
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(time.Duration(b.N)*time.Millisecond + 30*time.Second):
		b.Fatalf("received %d of %d", received.Load(), b.N)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "scans/s")
	s := a.Status()
	b.ReportMetric(float64(s.Buffer.Appended)/float64(max(s.Buffer.Commits, 1)), "records/commit")
}
