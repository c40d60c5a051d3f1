package receiver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/testmqtt"
)

// BenchmarkReceiver measures one receiver storing what N agents publish
// (paho publishers, 1,000 QoS 1 publishes in flight each) into a durable
// PostgreSQL (fsync on), everything on this machine: from the first
// publish to the last row committed. BENCH_EVENTS (default 200000),
// BENCH_PUBLISHERS (4), BENCH_BATCH (500), BENCH_WRITERS (2) and
// BENCH_INFLIGHT (mosquitto max_inflight_messages, 4 x batch) change the run.
//
//	go test -run x -bench Receiver -benchtime 1x ./central/receiver
func BenchmarkReceiver(b *testing.B) {
	total := envInt("BENCH_EVENTS", 200_000)
	pubs := envInt("BENCH_PUBLISHERS", 4)
	batch := envInt("BENCH_BATCH", 500)
	writers := envInt("BENCH_WRITERS", 2)
	inflight := envInt("BENCH_INFLIGHT", 4*batch)
	br := testmqtt.Start(b, testmqtt.WithConfig(fmt.Sprintf("max_inflight_messages %d", inflight)))
	for range b.N {
		url := pg.NewDB(b)
		r := startReceiver(b, receiverConfig(b, br, url, "bench", fmt.Sprintf("  batch_size: %d\n  writers: %d\n", batch, writers)))
		per := total / pubs
		payloads := make([][][]byte, pubs)
		for p := range pubs {
			for s := 1; s <= per; s++ {
				ev, _ := json.Marshal(record.Event{Schema: record.Schema, ID: uuid.Must(uuid.NewV7()).String(), Seq: uint64(s),
					Agent: fmt.Sprintf("hub-%d", p), Site: "MSK", Station: "induct-3", Event: "EDD", ScannedAt: record.Timestamp(time.Now()),
					Barcode: fmt.Sprintf("RR%09dGB", s), AIM: "]C0", Kind: "s10", Valid: true,
					Weight: &record.Weight{Grams: 1234, Value: "1.234", Unit: "kg", Stable: true, MeasuredAt: record.Timestamp(time.Now())}, WeightStatus: "ok"})
				payloads[p] = append(payloads[p], ev)
			}
		}
		clients := make([]mqtt.Client, pubs)
		for p := range pubs {
			clients[p] = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(br.URL()).SetClientID(fmt.Sprintf("bench-pub-%d", p)))
			if tok := clients[p].Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				b.Fatal(tok.Error())
			}
		}
		b.ResetTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for p := range pubs {
			wg.Go(func() {
				topic := fmt.Sprintf("scanagent/MSK/hub-%d/scans/induct-3", p)
				window := make(chan mqtt.Token, 1000)
				go func() {
					for _, ev := range payloads[p] {
						window <- clients[p].Publish(topic, 1, false, ev)
					}
					close(window)
				}()
				for tok := range window {
					if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
						b.Error(tok.Error())
					}
				}
			})
		}
		wg.Wait()
		published := time.Since(start)
		deadline := time.Now().Add(5 * time.Minute)
		for r.Stats().Stored < uint64(per*pubs) {
			if time.Now().After(deadline) {
				b.Fatalf("stored %d of %d", r.Stats().Stored, per*pubs)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		b.StopTimer()
		st := r.Stats()
		b.ReportMetric(float64(per*pubs)/took.Seconds(), "events/s")
		b.ReportMetric(float64(per*pubs)/published.Seconds(), "published/s")
		b.ReportMetric(float64(per*pubs)/float64(st.Batches), "events/batch")
		b.ReportMetric(took.Seconds()*1000/float64(st.Batches), "ms/batch")
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if strings.HasPrefix(line, "scanreceiver_batch_seconds_sum") || strings.HasPrefix(line, "scanreceiver_batch_seconds_count") {
				b.Log(line)
			}
		}
		for _, c := range clients {
			c.Disconnect(50)
		}
		r.stop()
		var n int
		pool(b, url).QueryRow(context.Background(), "SELECT count(*) FROM scans").Scan(&n)
		if n != per*pubs {
			b.Fatalf("%d rows, want %d", n, per*pubs)
		}
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
