package receiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/scanagent/scanagent/central/store"
)

// TestStoresAndReceipts: two agents' events are stored one row per id,
// duplicates too, and each agent gets receipts naming exactly its seqs.
func TestStoresAndReceipts(t *testing.T) {
	b := startBroker(t)
	url := pg.NewDB(t)
	r := startReceiver(t, receiverConfig(t, b, url, "central-1", ""))
	a1, a2 := newAgent(t, b, "hub-1"), newAgent(t, b, "hub-2")
	a1.publish(seqs(1, 300)...)
	a2.publish(seqs(1, 200)...)
	a1.publish(seqs(101, 150)...) // sent again: duplicates
	db := pool(t, url)
	waitFor(t, 30*time.Second, "every seq receipted", func() bool {
		return len(a1.unreceipted(300)) == 0 && len(a2.unreceipted(200)) == 0
	})
	if n := count(t, db, "SELECT count(*) FROM scans"); n != 500 {
		t.Fatalf("%d rows, want 500", n)
	}
	if n := count(t, db, "SELECT count(DISTINCT (agent, seq)) FROM scans WHERE payload->>'id' = id::text AND barcode = payload->>'barcode'"); n != 500 {
		t.Fatalf("%d distinct (agent, seq) matching their payload, want 500", n)
	}
	waitFor(t, 10*time.Second, "duplicates counted", func() bool { return r.Stats().Duplicates == 50 })
	if s := r.Stats(); s.Stored != 500 || s.Rejected != 0 {
		t.Fatalf("stats %+v", s)
	}

	sch := receiptSchema(t)
	exact := regexp.MustCompile(`^\{"schema":"scanagent\.receipt/v1","agent":"hub-[12]","ranges":\[\[\d+,\d+\](,\[\d+,\d+\])*\],"receiver":"central-1","stored_at":"[0-9T:.-]+Z"\}$`)
	for _, a := range []*agentSim{a1, a2} {
		for _, p := range a.receipts() {
			if !exact.Match(p) || !bytes.Contains(p, []byte(`"agent":"`+a.id+`"`)) {
				t.Fatalf("receipt %s", p)
			}
			v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(p))
			if err := sch.Validate(v); err != nil {
				t.Fatalf("receipt %s: %v", p, err)
			}
		}
	}

	rec := httptest.NewRecorder()
	r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{"scanreceiver_events_stored_total 500", "scanreceiver_events_duplicate_total 50", "scanreceiver_mqtt_connected 1", "scanreceiver_batch_seconds_count"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestRejected: malformed events land in the rejected table with the
// reason, raw payload and topic, are acknowledged (not sent again after a
// restart), and those whose agent and seq can be read are receipted.
func TestRejected(t *testing.T) {
	b := startBroker(t)
	url := pg.NewDB(t)
	cfg := receiverConfig(t, b, url, "central-1", "")
	r := startReceiver(t, cfg)
	a := newAgent(t, b, "hub-1")
	topic := a.prefix + "/scans/induct-3"
	bad := map[string]string{
		"not_json":   `{"schema":`,
		"id":         `{"schema":"scanagent.scan/v1","id":"not-a-uuid","seq":7,"agent":"hub-1","site":"MSK","station":"induct-3","scanned_at":"2026-11-22T01:31:44.781Z","barcode":"X","kind":"other","valid":true}`,
		"seq":        `{"schema":"scanagent.scan/v1","id":"019aa8f0-4a3e-7c1d-8f3a-2b5e6d7c8a90","seq":-1,"agent":"hub-1","site":"MSK","station":"induct-3","scanned_at":"2026-11-22T01:31:44.781Z","barcode":"X","kind":"other","valid":true}`,
		"agent":      `{"schema":"scanagent.scan/v1","id":"019aa8f0-4a3e-7c1d-8f3a-2b5e6d7c8a91","seq":8}`,
		"scanned_at": `{"schema":"scanagent.scan/v1","id":"019aa8f0-4a3e-7c1d-8f3a-2b5e6d7c8a92","seq":9,"agent":"hub-1","site":"MSK","station":"induct-3","scanned_at":"yesterday","barcode":"X","kind":"other","valid":true}`,
		"nul":        `{"schema":"scanagent.scan/v1","id":"019aa8f0-4a3e-7c1d-8f3a-2b5e6d7c8a93","seq":10,"agent":"hub-1","site":"MSK","station":"induct-3","scanned_at":"2026-11-22T01:31:44.781Z","barcode":"X\u0000","kind":"other","valid":true}`,
		"utf8":       "{\"schema\":\"scanagent.scan/v1\",\"barcode\":\"\xff\"}",
	}
	for _, p := range bad {
		a.publishRaw(topic, false, []byte(p))
	}
	a.publish(1)
	db := pool(t, url)
	waitFor(t, 20*time.Second, "rejected rows", func() bool { return count(t, db, "SELECT count(*) FROM rejected") == len(bad) })
	for code, p := range bad {
		if n := count(t, db, "SELECT count(*) FROM rejected WHERE reason LIKE $1 AND payload = $2 AND topic = $3 AND receiver = 'central-1'",
			code+": %", []byte(p), topic); n != 1 {
			var reasons []string
			rows, _ := db.Query(context.Background(), "SELECT reason FROM rejected")
			for rows.Next() {
				var s string
				rows.Scan(&s)
				reasons = append(reasons, s)
			}
			t.Errorf("no rejected row for %s (%s); have %q", code, p, reasons)
		}
	}
	// The readable ones (seq 7, 9, 10, and the valid 1) are receipted.
	waitFor(t, 10*time.Second, "receipts", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.got[1] && a.got[7] && a.got[9] && a.got[10]
	})
	if a.got[8] {
		t.Error("seq 8 has no agent: it must not be receipted")
	}

	// Acknowledged: a restart with the same client id gets none of them again.
	r.stop()
	startReceiver(t, cfg)
	a.publish(2)
	waitFor(t, 20*time.Second, "seq 2 stored", func() bool { return count(t, db, "SELECT count(*) FROM scans WHERE seq = 2") == 1 })
	if n := count(t, db, "SELECT count(*) FROM rejected"); n != len(bad) {
		t.Fatalf("%d rejected rows after the restart, want %d: something was not acknowledged", n, len(bad))
	}
}

// TestDatabaseDown: while writes fail nothing is acknowledged or
// receipted and /healthz says why; once the database works again
// everything is stored.
func TestDatabaseDown(t *testing.T) {
	b := startBroker(t)
	url := pg.NewDB(t)
	r := startReceiver(t, receiverConfig(t, b, url, "central-1", ""))
	db := pool(t, url)
	a := newAgent(t, b, "hub-1")
	a.publish(1)
	waitFor(t, 20*time.Second, "first stored", func() bool { return len(a.unreceipted(1)) == 0 })

	// The table gone (as a database refusing writes): the batch is held.
	if _, err := db.Exec(context.Background(), "ALTER TABLE scans RENAME TO scans_away"); err != nil {
		t.Fatal(err)
	}
	a.publish(seqs(2, 100)...)
	waitFor(t, 20*time.Second, "a failed write", func() bool {
		rec := httptest.NewRecorder()
		r.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return !strings.Contains(rec.Body.String(), "scanreceiver_db_errors_total 0")
	})
	if got := a.unreceipted(100); len(got) != 99 {
		t.Fatalf("%d seqs receipted while the database failed", 99-len(got))
	}
	if _, err := db.Exec(context.Background(), "ALTER TABLE scans_away RENAME TO scans"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "all receipted", func() bool { return len(a.unreceipted(100)) == 0 })
	if n := count(t, db, "SELECT count(*) FROM scans"); n != 100 {
		t.Fatalf("%d rows, want 100", n)
	}
}

// TestHubsNeedingAttention: the agents table, filled from retained status
// and device messages and live health, answers the one query.
func TestHubsNeedingAttention(t *testing.T) {
	b := startBroker(t)
	url := pg.NewDB(t)
	a := newAgent(t, b, "sim")
	now := time.Now().UTC()
	ts := func(d time.Duration) string { return now.Add(d).Format("2006-01-02T15:04:05.000Z") }
	status := func(hub, state string, since time.Duration) {
		a.publishRaw("scanagent/MSK/"+hub+"/status", true, fmt.Appendf(nil, `{"state":%q,"agent":%q,"site":"MSK","version":"1.4.0","since":%q}`, state, hub, ts(since)))
	}
	// Before the receiver starts: retained.
	status("hub-ok", "online", -time.Hour)
	status("hub-off", "offline", -3*time.Hour)
	status("hub-late", "online", -time.Hour)
	status("hub-quiet", "online", -time.Hour)
	a.publishRaw("scanagent/MSK/hub-ok/devices/induct-3/scanner", true, fmt.Appendf(nil, `{"port":"/dev/ttyUSB0","state":"connected","since":%q}`, ts(-time.Hour)))
	a.publishRaw("scanagent/MSK/hub-ok/devices/induct-3/scale", true, fmt.Appendf(nil, `{"port":"/dev/ttyUSB1","state":"error","reason":"permission denied","since":%q}`, ts(-time.Hour)))
	startReceiver(t, receiverConfig(t, b, url, "central-1", ""))
	health := func(hub string, at time.Duration, depth int, oldest float64) {
		a.publishRaw("scanagent/MSK/"+hub+"/health", false, fmt.Appendf(nil,
			`{"agent":%q,"site":"MSK","version":"1.4.0","time":%q,"uptime":"1h0m0s","process":{"heap_bytes":1},"buffer":{"depth":%d,"bytes":1,"oldest_age":%g,"last_seq":42,"full":false},"mqtt":{},"stations":[]}`,
			hub, ts(at), depth, oldest))
	}
	health("hub-ok", -5*time.Second, 3, 0.5)
	health("hub-off", -2*time.Hour, 0, 0)
	health("hub-late", -5*time.Second, 5000, 900)
	health("hub-quiet", -10*time.Minute, 0, 0)
	a.publishRaw("scanagent/MSK/hub-ok/devices/induct-3/scale", false, nil) // removed
	db := pool(t, url)
	waitFor(t, 20*time.Second, "agents and devices", func() bool {
		return count(t, db, "SELECT count(*) FROM agents WHERE health_at IS NOT NULL AND status IS NOT NULL") == 4 &&
			count(t, db, "SELECT count(*) FROM devices") == 1
	})
	rows, err := db.Query(context.Background(), store.HubsNeedingAttention)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var prefix, agent, site, problem string
		var since time.Time
		var depth *int64
		if err := rows.Scan(&prefix, &agent, &site, &problem, &since, &depth); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s", agent, problem, now.Sub(since).Round(time.Minute)))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// Oldest first: hub-off gone since its last health (2h ago, later than
	// its since), hub-late's oldest scan 15 min old, hub-quiet silent 10 min.
	want := []string{"hub-off offline 2h0m0s", "hub-late backed_up 15m0s", "hub-quiet silent 10m0s"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hubs needing attention:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var doc []byte
	if err := db.QueryRow(context.Background(), "SELECT health FROM agents WHERE agent = 'hub-late'").Scan(&doc); err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if json.Unmarshal(doc, &h) != nil || h["uptime"] != "1h0m0s" {
		t.Fatalf("health document %s", doc)
	}
}
