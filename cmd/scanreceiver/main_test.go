package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/central/pgtest"
)

var pg *pgtest.Cluster

// envArgs, when set, makes the test binary the receiver itself (its
// arguments, separated by newlines): the crash tests kill -9 a real
// process running the real code.
const envArgs = "SCANRECEIVER_TEST_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(envArgs); args != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, strings.Split(args, "\n"), os.Stdout, os.Stderr)
		stop()
		os.Exit(exitCode(err, os.Stderr))
	}
	os.Exit(pgtest.Main(m, &pg, pgtest.Options{}))
}

// proc is a receiver process.
type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	health string
	done   chan struct{}
}

func writeConfig(t *testing.T, b *testmqtt.Broker, dbURL, name string) (file, healthURL string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	file = filepath.Join(t.TempDir(), name+".yaml")
	text := fmt.Sprintf(`mqtt:
  brokers: [%q]
  reconnect_min: 50ms
  reconnect_max: 500ms
postgres: {url: %q}
receiver: {name: %s, batch_size: 100, batch_wait: 20ms}
http: {listen: %q}
log: {level: debug}
`, b.URL(), dbURL, name, addr)
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, "http://" + addr + "/healthz"
}

// startProc runs the receiver with the config file and waits until its
// /healthz says it is connected and migrated.
func startProc(t *testing.T, file, health string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(os.Args[0]), stderr: &bytes.Buffer{}, health: health, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), envArgs+"=run\n-c\n"+file)
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("receiver %s log:\n%s", file, p.stderr)
		}
	})
	waitFor(t, 30*time.Second, "receiver healthy", func() bool {
		select {
		case <-p.done:
			t.Fatalf("receiver exited: %s", p.stderr)
		default:
		}
		resp, err := http.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// kill9 kills the receiver at once, as a crash.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agent publishes scans as an agent does and keeps its receipts.
type agent struct {
	t      *testing.T
	prefix string
	c      mqtt.Client
	mu     sync.Mutex
	events map[int64][]byte
	got    map[int64]bool
	last   time.Time // last receipt that named a new seq
}

func newAgent(t *testing.T, b *testmqtt.Broker, id string) *agent {
	a := &agent{t: t, prefix: "scanagent/MSK/" + id, events: map[int64][]byte{}, got: map[int64]bool{}, last: time.Now()}
	a.c = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("sim-" + id).SetCleanSession(true))
	if tok := a.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("agent connect: %v", tok.Error())
	}
	tok := a.c.Subscribe(a.prefix+"/receipts", 1, func(_ mqtt.Client, m mqtt.Message) {
		var rc struct{ Ranges [][2]int64 }
		json.Unmarshal(m.Payload(), &rc)
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, r := range rc.Ranges {
			for s := r[0]; s <= r[1]; s++ {
				if !a.got[s] {
					a.got[s], a.last = true, time.Now()
				}
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("agent subscribe: %v", tok.Error())
	}
	for s := int64(1); s <= 1000; s++ {
		ev, _ := json.Marshal(record.Event{Schema: record.Schema, ID: uuid.Must(uuid.NewV7()).String(), Seq: uint64(s),
			Agent: id, Site: "MSK", Station: "induct-3", ScannedAt: record.Timestamp(time.Now()),
			Barcode: fmt.Sprintf("RR%09dGB", s), Kind: "s10", Valid: true})
		a.events[s] = ev
	}
	t.Cleanup(func() { a.c.Disconnect(50) })
	return a
}

func (a *agent) publish(seqs []int64) {
	var toks []mqtt.Token
	for _, s := range seqs {
		toks = append(toks, a.c.Publish(a.prefix+"/scans/induct-3", 1, false, a.events[s]))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			a.t.Fatalf("publish: %v", tok.Error())
		}
	}
}

func (a *agent) unreceipted(n int64) []int64 {
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

func (a *agent) sinceProgress() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return time.Since(a.last)
}

func all(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

func count(t *testing.T, db *pgxpool.Pool, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// lockScans holds the scans table so that every receiver's next batch
// stops inside its transaction, waiting; the returned function lets go.
func lockScans(t *testing.T, db *pgxpool.Pool) func() {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE scans IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { tx.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}

// waitingBatches counts the batches of the receiver named name that wait
// inside their transaction.
func waitingBatches(t *testing.T, db *pgxpool.Pool, name string) int {
	return count(t, db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'scanreceiver "+name+"' AND wait_event_type = 'Lock'")
}
