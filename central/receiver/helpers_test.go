package receiver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/central/config"
	"github.com/scanagent/scanagent/central/pgtest"
	"github.com/scanagent/scanagent/central/receiver"
	"github.com/scanagent/scanagent/central/store"
)

var pg *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg, pgtest.Options{Durable: true})) }

// brokerConfig lets the broker have a batch's worth of messages in flight
// to a receiver (mosquitto's default is 20; docs/CENTRAL.md).
const brokerConfig = "max_inflight_messages 1000"

func startBroker(t testing.TB) *testmqtt.Broker {
	return testmqtt.Start(t, testmqtt.WithConfig(brokerConfig))
}

// testReceiver is one receiver running in this process.
type testReceiver struct {
	*receiver.Receiver
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels the receiver and waits for Run to return.
func (r *testReceiver) stop() error {
	r.once.Do(func() { r.cancel(); r.err = <-r.done })
	return r.err
}

func receiverConfig(t testing.TB, b *testmqtt.Broker, dbURL, name, extra string) *config.Config {
	t.Helper()
	text := fmt.Sprintf("mqtt:\n  brokers: [%q]\n  reconnect_min: 50ms\n  reconnect_max: 500ms\npostgres: {url: %q, max_conns: 8}\nreceiver:\n  name: %s\n  batch_wait: 20ms\n%s",
		b.URL(), dbURL, name, extra)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "r.yaml"), []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startReceiver(t testing.TB, cfg *config.Config) *testReceiver {
	t.Helper()
	st, err := store.Open(store.Options{URL: cfg.Postgres.URL})
	if err != nil {
		t.Fatal(err)
	}
	r, err := receiver.New(cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testReceiver{Receiver: r, cancel: cancel, done: make(chan error, 1)}
	go func() { tr.done <- r.Run(ctx); st.Close() }()
	t.Cleanup(func() {
		if err := tr.stop(); err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	waitFor(t, 20*time.Second, "receiver connected", func() bool { return healthy(r) })
	return tr
}

func healthy(r *receiver.Receiver) bool {
	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	return rec.Code == 200
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agentSim publishes scan events as an agent does (QoS 1), and reads its
// receipts.
type agentSim struct {
	t      testing.TB
	id     string
	prefix string
	c      mqtt.Client
	mu     sync.Mutex
	events map[int64][]byte // by seq
	got    map[int64]bool   // seqs receipted
	raw    [][]byte         // receipt payloads
}

func newAgent(t testing.TB, b *testmqtt.Broker, id string) *agentSim {
	t.Helper()
	a := &agentSim{t: t, id: id, prefix: "scanagent/MSK/" + id, events: map[int64][]byte{}, got: map[int64]bool{}}
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("sim-" + id).SetCleanSession(true).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond)
	a.c = mqtt.NewClient(o)
	if tok := a.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("agent connect: %v", tok.Error())
	}
	tok := a.c.Subscribe(a.prefix+"/receipts", 1, func(_ mqtt.Client, m mqtt.Message) {
		var rc receiver.Receipt
		if err := json.Unmarshal(m.Payload(), &rc); err != nil {
			t.Errorf("receipt %s: %v", m.Payload(), err)
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.raw = append(a.raw, append([]byte(nil), m.Payload()...))
		for _, r := range rc.Ranges {
			for s := r[0]; s <= r[1]; s++ {
				a.got[s] = true
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("agent subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { a.c.Disconnect(50) })
	return a
}

// event makes the scan event of seq, with the agent's JSON encoding.
func (a *agentSim) event(seq int64) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ev, ok := a.events[seq]; ok {
		return ev
	}
	g := &record.Weight{Grams: 1234, Value: "1.234", Unit: "kg", Stable: true, MeasuredAt: record.Timestamp(time.Now())}
	ev, err := json.Marshal(record.Event{Schema: record.Schema, ID: uuid.Must(uuid.NewV7()).String(), Seq: uint64(seq),
		Agent: a.id, Site: "MSK", Station: "induct-3", Event: "EDD", ScannedAt: record.Timestamp(time.Now()),
		Barcode: fmt.Sprintf("RR%09dGB", seq), AIM: "]C0", Kind: "s10", Valid: true, Weight: g, WeightStatus: "ok"})
	if err != nil {
		a.t.Fatal(err)
	}
	a.events[seq] = ev
	return ev
}

// publish sends the events of seqs, a window of them in flight.
func (a *agentSim) publish(seqs ...int64) {
	a.t.Helper()
	var toks []mqtt.Token
	for _, s := range seqs {
		toks = append(toks, a.c.Publish(a.prefix+"/scans/induct-3", 1, false, a.event(s)))
		if len(toks) == 500 {
			a.wait(toks)
			toks = toks[:0]
		}
	}
	a.wait(toks)
}

func (a *agentSim) publishRaw(topic string, retained bool, payload []byte) {
	a.t.Helper()
	a.wait([]mqtt.Token{a.c.Publish(topic, 1, retained, payload)})
}

func (a *agentSim) wait(toks []mqtt.Token) {
	a.t.Helper()
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			a.t.Fatalf("publish: %v", tok.Error())
		}
	}
}

// unreceipted lists the seqs of 1..n with no receipt yet.
func (a *agentSim) unreceipted(n int64) []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []int64
	for s := int64(1); s <= n; s++ {
		if !a.got[s] {
			out = append(out, s)
		}
	}
	return out
}

func (a *agentSim) receipts() [][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]byte(nil), a.raw...)
}

func seqs(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func count(t testing.TB, p *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	if err := p.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return 0 // not migrated yet
		}
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// receiptSchema compiles docs/schemas/receipt.json.
func receiptSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.AssertFormat()
	for _, name := range []string{"receipt.json", "scan.json"} {
		f, err := os.Open(filepath.Join("..", "..", "docs", "schemas", name))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := comp.AddResource("https://github.com/scanagent/scanagent/raw/main/docs/schemas/"+name, doc); err != nil {
			t.Fatal(err)
		}
	}
	s, err := comp.Compile("https://github.com/scanagent/scanagent/raw/main/docs/schemas/receipt.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}
