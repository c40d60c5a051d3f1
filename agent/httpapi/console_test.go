package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/live"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/devices"
)

// fakeConsole is a Console with one station, "induct-1", with a scanner.
type fakeConsole struct {
	tap     *devices.Tap
	polled  []string
	reloads int
}

func (f *fakeConsole) Tap(station, device string) *devices.Tap {
	if station == "induct-1" && device == "scanner" {
		return f.tap
	}
	return nil
}

func (f *fakeConsole) PollScale(station string) error {
	if station != "induct-1" {
		return errors.New("no such station: " + station)
	}
	f.polled = append(f.polled, station)
	return nil
}

func (f *fakeConsole) ReloadFile(by string) (status.ConfigLoad, error) {
	f.reloads++
	return status.ConfigLoad{Kind: "reload", By: by, OK: true, Path: "/etc/scanagent.yaml"}, nil
}

func (f *fakeConsole) ConfigLoad() status.ConfigLoad {
	return status.ConfigLoad{Kind: "start", OK: true, Path: "/etc/scanagent.yaml"}
}

func consoleAPI(t *testing.T, token string) (*API, *fakeConsole, *live.Bus) {
	t.Helper()
	fc := &fakeConsole{tap: devices.NewTap(8)}
	bus := live.New(16)
	src := &source{s: status.Status{Agent: "hub", BufferOpen: true, Stations: []status.Station{{ID: "induct-1"}}}}
	return New(Config{Token: token}, Deps{Source: src, Level: new(slog.LevelVar), Console: fc, Live: bus}), fc, bus
}

func do(h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestConsolePage: the page and its assets need no token (they hold no
// data), carry a CSP without inline scripts, and speak the browser's
// language.
func TestConsolePage(t *testing.T) {
	a, _, _ := consoleAPI(t, "s3cret")
	h := a.Handler()
	w := do(h, "GET", "/", "", map[string]string{"Accept-Language": "de-DE,ru;q=0.8,en;q=0.5"})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `<html lang="ru">`) {
		t.Fatalf("page: %d %.200s", w.Code, w.Body.String())
	}
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q", csp)
	}
	if body := w.Body.String(); strings.Contains(body, "<script>") || strings.Contains(body, " onclick=") || strings.Contains(body, " onload=") {
		t.Error("the page has inline script")
	}
	for _, p := range []string{"/assets/console.js", "/assets/i18n.js", "/assets/console.css", "/assets/icon.svg"} {
		if w := do(h, "GET", p, "", nil); w.Code != 200 || w.Body.Len() == 0 {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
	if w := do(h, "GET", "/assets/", "", nil); w.Code != 404 {
		t.Errorf("asset listing: %d", w.Code)
	}
	if w := do(h, "GET", "/api/console", "", nil); w.Code != 401 {
		t.Errorf("console data without token: %d", w.Code)
	}
}

func TestPickLanguage(t *testing.T) {
	for header, want := range map[string]string{
		"":                           "en",
		"ru-RU,ru;q=0.9,en;q=0.8":    "ru",
		"zh-CN,zh;q=0.9":             "zh",
		"fr-FR, en;q=0.3, ru;q=0.2":  "en",
		"de, ru;q=0.1, zh;q=0.5":     "zh",
		"ru;q=0, en;q=0.1":           "en",
		"garbage;;;,, q=x":           "en",
		"ZH-Hans-CN;q=0.7, ru;q=0.6": "zh",
	} {
		if got := pickLanguage(header); got != want {
			t.Errorf("%q: %s, want %s", header, got, want)
		}
	}
}

// TestConsoleLogin: a wrong token is refused; the right one sets an
// HttpOnly, SameSite=Strict cookie (holding a hash, not the token) that
// then opens what the bearer token opens.
func TestConsoleLogin(t *testing.T) {
	a, _, _ := consoleAPI(t, "s3cret")
	h := a.Handler()
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if w := do(h, "POST", "/api/login", "token=wrong", form); w.Code != 401 || len(w.Result().Cookies()) != 0 {
		t.Fatalf("wrong token: %d %v", w.Code, w.Result().Cookies())
	}
	w := do(h, "POST", "/api/login", "token=s3cret", form)
	cs := w.Result().Cookies()
	if w.Code != 204 || len(cs) != 1 {
		t.Fatalf("login: %d %v", w.Code, cs)
	}
	c := cs[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, "s3cret") || c.Path != "/" {
		t.Fatalf("cookie %+v", c)
	}
	withCookie := map[string]string{"Cookie": c.Name + "=" + c.Value}
	for _, p := range []string{"/api/console", "/status", "/api/tap/induct-1/scanner"} {
		if w := do(h, "GET", p, "", withCookie); w.Code != 200 {
			t.Errorf("%s with the cookie: %d", p, w.Code)
		}
	}
	if w := do(h, "GET", "/status", "", map[string]string{"Cookie": c.Name + "=" + c.Value + "x"}); w.Code != 401 {
		t.Errorf("a wrong cookie: %d", w.Code)
	}
	var s map[string]bool
	json.Unmarshal(do(h, "GET", "/api/session", "", withCookie).Body.Bytes(), &s)
	if !s["authorized"] || !s["token_required"] {
		t.Errorf("session with cookie %v", s)
	}
	json.Unmarshal(do(h, "GET", "/api/session", "", nil).Body.Bytes(), &s)
	if s["authorized"] {
		t.Errorf("session without cookie %v", s)
	}
	if w := do(h, "POST", "/api/login", "s3cret", nil); w.Code != 204 {
		t.Errorf("plain body login: %d", w.Code)
	}
}

// TestConsoleActions: the safe actions need the token and pass a
// same-origin check; a page elsewhere cannot make the browser post.
func TestConsoleActions(t *testing.T) {
	a, fc, _ := consoleAPI(t, "s3cret")
	h := a.Handler()
	auth := func(extra map[string]string) map[string]string {
		m := map[string]string{"Authorization": "Bearer s3cret"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	if w := do(h, "POST", "/api/reload", "", nil); w.Code != 401 {
		t.Errorf("reload without token: %d", w.Code)
	}
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Origin": "http://evil.example"},
	} {
		for _, req := range [][2]string{{"POST", "/api/reload"}, {"PUT", "/loglevel"}, {"POST", "/api/stations/induct-1/poll-scale"}} {
			if w := do(h, req[0], req[1], "debug", auth(hdr)); w.Code != 403 {
				t.Errorf("%s %s with %v: %d", req[0], req[1], hdr, w.Code)
			}
		}
	}
	if fc.reloads != 0 || len(fc.polled) != 0 {
		t.Fatal("a refused request acted")
	}
	same := auth(map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"})
	w := do(h, "POST", "/api/reload", "", same)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"by":"console"`) || fc.reloads != 1 {
		t.Errorf("reload: %d %s", w.Code, w.Body.String())
	}
	if w := do(h, "POST", "/api/stations/induct-1/poll-scale", "", same); w.Code != 204 || len(fc.polled) != 1 {
		t.Errorf("poll: %d", w.Code)
	}
	if w := do(h, "POST", "/api/stations/nope/poll-scale", "", same); w.Code != 404 {
		t.Errorf("poll an unknown station: %d", w.Code)
	}
	if w := do(h, "PUT", "/loglevel", "debug", same); w.Code != 200 {
		t.Errorf("log level: %d", w.Code)
	}
	if w := do(h, "POST", "/api/reload", "", auth(nil)); w.Code != 200 { // curl, scanagent: no browser headers
		t.Errorf("reload by a tool: %d", w.Code)
	}
}

// TestConsoleTap: /api/tap returns a device's frames after a seq.
func TestConsoleTap(t *testing.T) {
	a, fc, _ := consoleAPI(t, "")
	h := a.Handler()
	for _, code := range []string{"RR473124829GB", "RR287043775IN", "RR473124828GB"} {
		fc.tap.Code([]byte("]C0"+code+"\r\n"), time.Now(), code, "]C0")
	}
	var got tapAnswer
	w := do(h, "GET", "/api/tap/induct-1/scanner?after=1", "", nil)
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 {
		t.Fatalf("%d %v %s", w.Code, err, w.Body.String())
	}
	if len(got.Frames) != 2 || got.Last != 3 || got.Frames[0].Code != "RR287043775IN" || got.Frames[1].Text != "]C0RR473124828GB<CR><LF>" {
		t.Fatalf("%+v", got)
	}
	for path, code := range map[string]int{
		"/api/tap/induct-1/scale":           404,
		"/api/tap/other/scanner":            404,
		"/api/tap/induct-1/printer":         400,
		"/api/tap/induct-1/scanner?after=x": 400,
	} {
		if w := do(h, "GET", path, "", nil); w.Code != code {
			t.Errorf("%s: %d, want %d", path, w.Code, code)
		}
	}
}

// TestConsoleEvents: the event stream sends a snapshot, then the scans
// and their delivery states as they come, and the tap's new frames; the
// number of streams is capped.
func TestConsoleEvents(t *testing.T) {
	a, fc, bus := consoleAPI(t, "")
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan [2]string, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				ev = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				events <- [2]string{ev, v}
			}
		}
		close(events)
	}()
	next := func(name string) string {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case e, ok := <-events:
				if !ok {
					t.Fatalf("stream ended waiting for %s", name)
				}
				if e[0] == name {
					return e[1]
				}
			case <-timeout:
				t.Fatalf("no %s event", name)
			}
		}
	}
	if s := next("snapshot"); !strings.Contains(s, `"agent":"hub"`) {
		t.Fatalf("snapshot %s", s)
	}
	for bus.Clients() == 0 {
		time.Sleep(time.Millisecond)
	}
	sc := &record.Scan{Origin: &record.Origin{Station: "induct-1"}, At: time.Now(), Barcode: "RR473124829GB", Kind: "s10", Valid: true,
		HasWeight: true, Weight: devices.Reading{Grams: 1234, Unit: "kg"}, WeightStatus: "ok"}
	bus.Scan(42, sc, nil)
	bus.Published(42)
	var b live.Batch
	if err := json.Unmarshal([]byte(next("scans")), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Scans) != 1 || b.Scans[0].Barcode != "RR473124829GB" || *b.Scans[0].Grams != 1234 {
		t.Fatalf("scans %+v", b)
	}
	if len(b.Published) == 0 { // the state may come in the next batch
		json.Unmarshal([]byte(next("scans")), &b)
	}
	if len(b.Published) != 1 || b.Published[0] != [2]uint64{42, 42} {
		t.Fatalf("published %+v", b.Published)
	}
	fc.tap.Code([]byte("]C0RR473124829GB\r\n"), time.Now(), "RR473124829GB", "]C0")
	if s := next("tap"); !strings.Contains(s, `"code":"RR473124829GB"`) || !strings.Contains(s, `"station":"induct-1"`) {
		t.Fatalf("tap %s", s)
	}

	// The cap: maxStreams open streams; one more is refused.
	var open []*http.Response
	for range maxStreams - 1 {
		r, err := http.Get(srv.URL + "/api/events")
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("stream: %v %v", err, r)
		}
		open = append(open, r)
	}
	r, err := http.Get(srv.URL + "/api/events")
	if err != nil || r.StatusCode != 503 {
		t.Fatalf("one stream too many: %v %v", err, r)
	}
	r.Body.Close()
	for _, r := range open {
		r.Body.Close()
	}
	cancel()
	srv.CloseClientConnections()
}

// TestHistory: scans per minute and the drain rate come from the
// samples.
func TestHistory(t *testing.T) {
	h := newHistory(4)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 6 {
		h.add(sampleT{at: t0.Add(time.Duration(i) * historyStep), scans: uint64(i * 100), delivered: uint64(i * 50), depth: int64(i)})
	}
	now := sampleT{at: t0.Add(6 * historyStep), scans: 600, delivered: 300, depth: 6}
	pts := h.points(now)
	if len(pts) != 5 || pts[0].T != t0.Add(2*historyStep).Unix() || pts[4].Backlog != 6 {
		t.Fatalf("points %+v", pts)
	}
	if pts[1].ScansPerMin != 600 { // 100 scans in 10 s
		t.Fatalf("scans per minute %v", pts[1].ScansPerMin)
	}
	if r := h.drainRate(now); r != 5 { // 50 per 10 s
		t.Fatalf("drain rate %v", r)
	}
	empty := newHistory(4)
	if r := empty.drainRate(now); r != 0 {
		t.Fatalf("drain rate without samples %v", r)
	}
}

// TestConsoleFirstLoadSize: the page and everything it references fit
// the first-load budget of 200 KB (the browser test measures the real
// transfer).
func TestConsoleFirstLoadSize(t *testing.T) {
	a, _, _ := consoleAPI(t, "")
	h := a.Handler()
	page := do(h, "GET", "/", "", nil).Body.String()
	total := len(page)
	refs := 0
	for _, part := range strings.Split(page, `"/assets/`)[1:] {
		name, _, _ := strings.Cut(part, `"`)
		w := do(h, "GET", "/assets/"+name, "", nil)
		if w.Code != 200 {
			t.Fatalf("%s: %d", name, w.Code)
		}
		total += w.Body.Len()
		refs++
	}
	total += do(h, "GET", "/api/console", "", nil).Body.Len()
	t.Logf("first load: %d bytes: the page, %d asset references and the snapshot", total, refs)
	if refs < 4 || total > 200_000 {
		t.Fatalf("first load %d bytes (%d assets); want at most 200 KB", total, refs)
	}
}

// TestNoTokenLocalNames: without a token, a request that changes state
// must name the agent by an IP address or localhost (a rebound DNS name
// passes the same-origin check); reading is as before.
func TestNoTokenLocalNames(t *testing.T) {
	a, fc, _ := consoleAPI(t, "")
	h := a.Handler()
	for host, want := range map[string]int{
		"127.0.0.1:9180": 200, "localhost:9180": 200, "[::1]:9180": 200, "10.1.2.3": 200, "LOCALHOST": 200,
		"evil.example:9180": 403, "hub.local": 403,
	} {
		r := httptest.NewRequest("POST", "/api/reload", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("POST with Host %s: %d, want %d", host, w.Code, want)
		}
	}
	if fc.reloads != 5 {
		t.Errorf("%d reloads", fc.reloads)
	}
	if w := do(h, "GET", "/api/console", "", nil); w.Code != 200 { // Host example.com
		t.Errorf("GET by a name: %d", w.Code)
	}
}
