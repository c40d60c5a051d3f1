package store_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/central/pgtest"
	"github.com/scanagent/scanagent/central/store"
)

var pg *pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg, pgtest.Options{Durable: true})) }

func open(t testing.TB, url string, m store.Method) *store.Store {
	t.Helper()
	s, err := store.Open(store.Options{URL: url, Method: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	url := pg.NewDB(t)
	ms, err := store.Migrations()
	if err != nil || len(ms) == 0 {
		t.Fatalf("migrations: %v, %d", err, len(ms))
	}
	var wg sync.WaitGroup
	applied := make([][]int, 6)
	errs := make([]error, 6)
	for i := range applied {
		wg.Go(func() {
			s, err := store.Open(store.Options{URL: url})
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			applied[i], errs[i] = s.Migrate(context.Background())
		})
	}
	wg.Wait()
	total := 0
	for i := range applied {
		if errs[i] != nil {
			t.Fatalf("receiver %d: %v", i, errs[i])
		}
		total += len(applied[i])
	}
	if total != len(ms) {
		t.Fatalf("%d migrations applied in all, want each of the %d once", total, len(ms))
	}
	s := open(t, url, "")
	if again, err := s.Migrate(context.Background()); err != nil || len(again) != 0 {
		t.Fatalf("second run applied %v, %v", again, err)
	}
	var n int
	if err := s.Pool().QueryRow(context.Background(), "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != len(ms) {
		t.Fatalf("schema_migrations has %d rows (%v), want %d", n, err, len(ms))
	}
}

func scan(seq int64) store.Scan {
	g := int64(1234)
	return store.Scan{
		ID: uuid.Must(uuid.NewV7()), Seq: seq, Agent: "hub-1", Site: "MSK", Station: "induct-3", Event: "EDD",
		ScannedAt: time.Now().UTC().Truncate(time.Millisecond), Barcode: "RR473124829GB", AIM: "]C0", Kind: "s10",
		Valid: true, WeightGrams: &g, WeightStatus: "ok", ReceivedAt: time.Now(),
		Payload: []byte(fmt.Sprintf(`{"seq":%d,"barcode":"RR473124829GB"}`, seq)),
	}
}

func TestWriteMethods(t *testing.T) {
	for _, m := range []store.Method{store.MethodCopy, store.MethodUnnest, store.MethodInserts} {
		t.Run(string(m), func(t *testing.T) {
			s := open(t, pg.NewDB(t), m)
			ctx := context.Background()
			first := []store.Scan{scan(1), scan(2), scan(3)}
			first[2].Event, first[2].AIM, first[2].Reason, first[2].WeightGrams, first[2].WeightStatus, first[2].Valid = "", "", "check_digit", nil, "", false
			res, err := s.Write(ctx, &store.Batch{Receiver: "r1", Scans: append([]store.Scan(nil), first...)})
			if err != nil || res.Inserted != 3 {
				t.Fatalf("first batch: %+v, %v", res, err)
			}
			// Two already stored, one new, one twice in the batch.
			next := scan(4)
			res, err = s.Write(ctx, &store.Batch{Receiver: "r1", Scans: []store.Scan{first[0], next, first[2], next}})
			if err != nil || res.Inserted != 1 {
				t.Fatalf("second batch: %+v, %v (want 1 inserted)", res, err)
			}
			var n, nulls int
			var barcode string
			if err := s.Pool().QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE event IS NULL AND aim IS NULL AND weight_grams IS NULL AND weight_status IS NULL AND NOT valid),
				min(payload->>'barcode') FROM scans`).Scan(&n, &nulls, &barcode); err != nil {
				t.Fatal(err)
			}
			if n != 4 || nulls != 1 || barcode != "RR473124829GB" {
				t.Fatalf("rows %d, null optionals %d, payload barcode %q", n, nulls, barcode)
			}
		})
	}
}

func TestWriteStatesAndRejected(t *testing.T) {
	s := open(t, pg.NewDB(t), "")
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	b := &store.Batch{
		Receiver: "r1",
		Rejected: []store.Rejected{{ReceivedAt: t0, Topic: "scanagent/S/h/scans/x", Reason: "not_json", Payload: []byte{0xff, 0}}},
		Statuses: []store.Status{
			{Prefix: "p/b", Agent: "b", Site: "S", State: "online", Since: t0, ReceivedAt: t0},
			{Prefix: "p/a", Agent: "a", Site: "S", State: "online", Since: t0, Version: "1.2", ReceivedAt: t0},
			{Prefix: "p/a", Agent: "a", Site: "S", State: "offline", Since: t0.Add(time.Second), ReceivedAt: t0},
			{Prefix: "p/a", Agent: "a", Site: "S", State: "online", Since: t0.Add(-time.Hour), ReceivedAt: t0}, // older: ignored
		},
		Healths: []store.Health{{Prefix: "p/b", Agent: "b", Site: "S", Time: t0, BufferDepth: 7, BufferOldestAge: 2.5, BufferLastSeq: 99, Doc: []byte(`{"agent":"b"}`), ReceivedAt: t0}},
		Devices: []store.Device{
			{Prefix: "p/a", Station: "st", Device: "scanner", Port: "/dev/x", State: "connected", Since: t0},
			{Prefix: "p/a", Station: "st", Device: "scale", Port: "/dev/y", State: "error", Reason: "busy", Since: t0},
			{Prefix: "p/a", Station: "st", Device: "scale", Cleared: true},
		},
	}
	if _, err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	var state, version string
	if err := s.Pool().QueryRow(ctx, "SELECT status, version FROM agents WHERE prefix = 'p/a'").Scan(&state, &version); err != nil || state != "offline" || version != "1.2" {
		t.Fatalf("agent a: %q %q %v", state, version, err)
	}
	var depth, lastSeq int64
	if err := s.Pool().QueryRow(ctx, "SELECT buffer_depth, buffer_last_seq FROM agents WHERE prefix = 'p/b'").Scan(&depth, &lastSeq); err != nil || depth != 7 || lastSeq != 99 {
		t.Fatalf("agent b: %d %d %v", depth, lastSeq, err)
	}
	var devices, rejected int
	if err := s.Pool().QueryRow(ctx, "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM rejected WHERE payload = '\\xff00'::bytea)").Scan(&devices, &rejected); err != nil || devices != 1 || rejected != 1 {
		t.Fatalf("devices %d, rejected %d, %v", devices, rejected, err)
	}
}

// BenchmarkWrite compares the write methods: batches of 500 new scans,
// then the same batches again (all duplicates).
//
//	go test -run x -bench Write -benchtime 200x ./central/store
func BenchmarkWrite(b *testing.B) {
	for _, m := range []store.Method{store.MethodCopy, store.MethodUnnest, store.MethodInserts} {
		b.Run(string(m), func(b *testing.B) {
			s := open(b, pg.NewDB(b), m)
			ctx := context.Background()
			const size = 500
			batches := make([][]store.Scan, b.N)
			for i := range batches {
				for j := range size {
					batches[i] = append(batches[i], scan(int64(i*size+j+1)))
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.Write(ctx, &store.Batch{Scans: batches[i]}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "scans/s")
		})
	}
}

// TestQueryDocumented: docs/CENTRAL.md shows the hubs query as it is.
func TestQueryDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CENTRAL.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```sql\n"+store.HubsNeedingAttention+"\n```") {
		t.Fatal("docs/CENTRAL.md does not hold store.HubsNeedingAttention as it is: copy it there")
	}
}

// TestStatusSessions: a late Last Will of an older session is ignored even
// when its since is later (the old session's clock was ahead); the offline
// of the current session is taken; an online replayed after its session
// ended is ignored.
func TestStatusSessions(t *testing.T) {
	s := open(t, pg.NewDB(t), "")
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	state := func() (string, int64) {
		t.Helper()
		var st string
		var session int64
		if err := s.Pool().QueryRow(ctx, "SELECT status, status_session FROM agents WHERE prefix = 'p/a'").Scan(&st, &session); err != nil {
			t.Fatal(err)
		}
		return st, session
	}
	for i, step := range []struct {
		st          store.Status
		wantState   string
		wantSession int64
	}{
		{store.Status{State: "online", Since: t0, Session: 7}, "online", 7},
		{store.Status{State: "offline", Since: t0.Add(time.Hour), Session: 6}, "online", 7}, // late Will of session 6
		{store.Status{State: "offline", Since: t0, Session: 7}, "offline", 7},
		{store.Status{State: "online", Since: t0, Session: 7}, "offline", 7}, // replayed online of an ended session
		{store.Status{State: "online", Since: t0.Add(-time.Hour), Session: 8}, "online", 8},
	} {
		st := step.st
		st.Prefix, st.Agent, st.Site, st.ReceivedAt = "p/a", "a", "S", t0
		if _, err := s.Write(ctx, &store.Batch{Receiver: "r1", Statuses: []store.Status{st}}); err != nil {
			t.Fatal(err)
		}
		if got, session := state(); got != step.wantState || session != step.wantSession {
			t.Fatalf("step %d: %s session %d, want %s session %d", i, got, session, step.wantState, step.wantSession)
		}
	}
}
