package fleet

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func statusJSON(state string, since time.Time, session uint64) []byte {
	return fmt.Appendf(nil, `{"state":%q,"agent":"hub-1","site":"LAB","version":"1.2","since":%q,"session":%d}`, state, since.Format(time.RFC3339Nano), session)
}

// TestNewerStatus: the higher session wins whatever the clocks say; within
// a session offline follows online, never the reverse; without numbers the
// later since wins.
func TestNewerStatus(t *testing.T) {
	st := func(state string, since time.Time, session uint64) *status {
		return &status{State: state, Since: since, Session: session}
	}
	for _, tc := range []struct {
		name   string
		o, n   *status
		newer  bool
		reason string
	}{
		{"first", nil, st("online", t0, 5), true, ""},
		{"late Will of an old session", st("online", t0, 6), st("offline", t0.Add(time.Hour), 5), false, "the clock of session 5 was ahead"},
		{"Will of this session", st("online", t0, 6), st("offline", t0, 6), true, ""},
		{"new session, clock stepped back", st("offline", t0, 6), st("online", t0.Add(-time.Hour), 7), true, ""},
		{"online replayed after its end", st("offline", t0, 6), st("online", t0, 6), false, ""},
		{"no numbers: later since", st("online", t0, 0), st("offline", t0.Add(time.Second), 0), true, ""},
		{"no numbers: earlier since", st("online", t0, 0), st("offline", t0.Add(-time.Second), 0), false, ""},
	} {
		if got := newer(tc.o, tc.n); got != tc.newer {
			t.Errorf("%s: newer = %v, want %v", tc.name, got, tc.newer)
		}
	}
}

// TestViewRows: status, health and devices make one row; a late Will is
// counted stale and ignored; a live offline's since is when it came; a
// cleared device is gone; a hub offline past the forget time is dropped.
func TestViewRows(t *testing.T) {
	v, err := NewView("scanagent/+/+", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := "scanagent/LAB/hub-1"
	v.Handle(p+"/status", statusJSON("online", t0, 10), true, t0)
	v.Handle(p+"/health", fmt.Appendf(nil, `{"agent":"hub-1","site":"LAB","time":%q,"clock":"synced","buffer":{"depth":7,"oldest_age":30},"mqtt":{"state":"connected","session":10,"receipts":{"unreceipted":3}}}`,
		t0.Add(time.Minute).Format(time.RFC3339)), false, t0.Add(time.Minute))
	v.Handle(p+"/devices/s1/scanner", []byte(`{"port":"COM3","state":"error","since":"2026-11-29T12:00:00Z"}`), true, t0)
	v.Handle(p+"/devices/s1/scale", []byte(`{"port":"COM4","state":"connected","since":"2026-11-29T12:00:00Z"}`), true, t0)
	v.Handle(p+"/devices/s2/scale", []byte(`{"port":"COM5","state":"error","since":"2026-11-29T12:00:00Z"}`), true, t0)
	v.Handle(p+"/devices/s2/scale", nil, true, t0) // cleared
	v.Handle(p+"/status", statusJSON("offline", t0.Add(-time.Hour), 9), false, t0.Add(2*time.Minute))
	v.Handle("scanagent/LAB/hub-2/health", []byte(`{"time":"2026-11-29T12:00:00Z"}`), false, t0) // no status yet: no row
	v.Handle("scanagent/LAB/hub-3/status", []byte(`not json`), false, t0)

	now := t0.Add(2 * time.Minute)
	hubs := v.Snapshot(now)
	if len(hubs) != 1 {
		t.Fatalf("rows %+v, want hub-1 only", hubs)
	}
	h := hubs[0]
	if h.State != "online" || h.Session != 10 || h.Backlog != 7 || h.BacklogOldestAge != 90 || h.Unreceipted == nil || *h.Unreceipted != 3 ||
		h.DevicesInError != 1 || h.Devices != 2 || h.Clock != "synced" || h.Uplink != "connected" || h.Version != "1.2" {
		t.Errorf("row %+v", h)
	}
	if c := v.Counts(); c.Stale != 1 || c.Bad != 1 {
		t.Errorf("counts %+v, want 1 stale, 1 bad", c)
	}
	// The Will of session 10 comes live: offline since it came, not since
	// the session's start.
	v.Handle(p+"/status", statusJSON("offline", t0, 10), false, t0.Add(3*time.Minute))
	h = v.Snapshot(t0.Add(3 * time.Minute))[0]
	if h.State != "offline" || !h.Since.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("after the Will: %s since %v", h.State, h.Since)
	}
	probs := Check([]Hub{h}, t0.Add(10*time.Minute), 5*time.Minute, 10*time.Minute)
	if len(probs) != 1 || !strings.Contains(probs[0].Reason, "offline for 7m0s") {
		t.Errorf("check: %+v", probs)
	}
	probs = Check(v.Snapshot(t0.Add(20*time.Minute)), t0.Add(20*time.Minute), 0, 10*time.Minute)
	if len(probs) != 1 || !strings.Contains(probs[0].Reason, "backlog of 7") {
		t.Errorf("backlog check: %+v", probs)
	}
	if hubs := v.Snapshot(t0.Add(2 * time.Hour)); len(hubs) != 0 {
		t.Errorf("a hub offline and unseen past forget is still there: %+v", hubs)
	}
}

func TestPrefixFilter(t *testing.T) {
	for _, f := range []string{"", "a/#", "a/b+", "/a", "a//b", "$SYS/+"} {
		if CheckPrefixFilter(f) == nil {
			t.Errorf("%q accepted", f)
		}
	}
	if err := CheckPrefixFilter("scanagent/+/+"); err != nil {
		t.Error(err)
	}
}

func TestConfigErrors(t *testing.T) {
	_, err := Parse("fleet.yaml", []byte("mqtt:\n  brokers: [\"http://x:1\"]\n  password: x\nfleet:\n  prefix: \"a/#\"\n  max_offlin: 5m\n"), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"fleet.yaml:2:13: mqtt.brokers[0]", "fleet.yaml:3:3: mqtt.password: passwords are not read", "fleet.yaml:5:11: fleet.prefix", `fleet.yaml:6:3: unknown key "max_offlin"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	cfg, err := Parse("fleet.yaml", []byte("mqtt: {brokers: [\"ssl://central:8883\"], username: fleet}\nfleet: {listen: \"127.0.0.1:9182\", max_offline: 1m}\n"), func(string) (string, bool) { return "pw", true })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.Password != "pw" || cfg.Fleet.MaxOffline.D() != time.Minute || cfg.Fleet.Prefix != "scanagent/+/+" {
		t.Errorf("config %+v", cfg)
	}
}
