package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scanagent/scanagent/agent/live"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/devices"
)

// The technician console: a page at / (assets embedded, no build step),
// its JSON and event-stream endpoints under /api/, and the login that
// keeps the token in a cookie. docs/OPERATIONS.md, "Technician console".

//go:embed assets
var assets embed.FS

// Console is what the console asks of the agent besides its status.
type Console interface {
	// Tap is the serial tap of a station's "scanner" or "scale"; nil
	// when there is no such device.
	Tap(station, device string) *devices.Tap
	// PollScale asks a station's scale for a reading now.
	PollScale(station string) error
	// ReloadFile reads the configuration file again and applies it, as
	// SIGHUP does; the error is for a reload that cannot be tried.
	ReloadFile(by string) (status.ConfigLoad, error)
	// ConfigLoad is the result of the last load or reload.
	ConfigLoad() status.ConfigLoad
}

// cookieName holds the console's session: a hash of the token, never
// the token itself.
const cookieName = "scanagent_session"

// maxStreams caps the open event streams, so that forgotten tabs cannot
// take the connections /metrics and the status command need.
const maxStreams = 8

// contentSecurity is the pages' Content-Security-Policy: nothing inline,
// nothing from elsewhere.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// sessionValue is the cookie's value for token.
func sessionValue(token string) string {
	h := sha256.Sum256([]byte("scanagent console session\x00" + token))
	return hex.EncodeToString(h[:])
}

// console is the state behind the console's handlers.
type console struct {
	api     *API
	c       Console // nil: status only
	bus     *live.Bus
	streams chan struct{} // a slot per open event stream
	hist    history
	static  fs.FS
}

func newConsole(a *API, c Console, bus *live.Bus) *console {
	sub, _ := fs.Sub(assets, "assets")
	return &console{api: a, c: c, bus: bus, streams: make(chan struct{}, maxStreams), hist: newHistory(360), static: sub}
}

// register adds the console's routes to mux and its metrics to reg.
func (k *console) register(mux *http.ServeMux, reg *prometheus.Registry) {
	mux.HandleFunc("GET /{$}", k.index)
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", k.assetHandler()))
	mux.HandleFunc("GET /api/session", k.session)
	mux.HandleFunc("POST /api/login", k.login)
	mux.HandleFunc("POST /api/logout", k.logout)
	mux.HandleFunc("GET /api/console", k.snapshotHandler)
	mux.HandleFunc("GET /api/events", k.events)
	mux.HandleFunc("GET /api/tap/{station}/{device}", k.tap)
	mux.HandleFunc("POST /api/stations/{station}/poll-scale", k.pollScale)
	mux.HandleFunc("POST /api/reload", k.reload)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scanagent_console_streams", Help: "Console event streams open."},
			func() float64 { return float64(len(k.streams)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "scanagent_console_events_dropped_total",
			Help: "Console events dropped because a client read its stream too slowly."},
			func() float64 { return float64(k.bus.Dropped()) }),
	)
}

// openPath: what needs no token: the page and its assets (they hold no
// data), the session check and the login, and the liveness probe.
func openPath(r *http.Request) bool {
	p := r.URL.Path
	return p == "/healthz" || p == "/" || strings.HasPrefix(p, "/assets/") || p == "/api/session" ||
		(p == "/api/login" && r.Method == http.MethodPost)
}

// securityHeaders are set on every answer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurity)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// languages the page speaks, the first the default.
var languages = []string{"en", "ru", "zh"}

// pickLanguage chooses from an Accept-Language header (RFC 9110: tags
// with q weights; a tag's primary subtag is enough here).
func pickLanguage(header string) string {
	best, bestQ := languages[0], -1.0
	for part := range strings.SplitSeq(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		primary, _, _ := strings.Cut(strings.ToLower(tag), "-")
		for _, l := range languages {
			if primary == l && q > bestQ && q > 0 {
				best, bestQ = l, q
			}
		}
	}
	return best
}

func (k *console) index(w http.ResponseWriter, r *http.Request) {
	b, err := fs.ReadFile(k.static, "index.html")
	if err != nil {
		http.Error(w, "console page missing from this build", http.StatusInternalServerError)
		return
	}
	page := strings.Replace(string(b), `<html lang="en">`, `<html lang="`+pickLanguage(r.Header.Get("Accept-Language"))+`">`, 1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	io.WriteString(w, page)
}

func (k *console) assetHandler() http.Handler {
	files := http.FileServerFS(k.static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// session tells the page whether it must ask for the token.
func (k *console) session(w http.ResponseWriter, r *http.Request) {
	token := k.api.cfg.Token
	authorized := token == ""
	if !authorized {
		want := sha256.Sum256([]byte(token))
		authorized = bearer(r.Header.Get("Authorization"), want) || cookie(r, sha256.Sum256([]byte(sessionValue(token))))
	}
	writeJSON(w, http.StatusOK, map[string]bool{"token_required": token != "", "authorized": authorized})
}

// login checks the token and keeps it, hashed, in an HttpOnly,
// SameSite=Strict cookie. Without a token configured there is nothing to
// log in to.
func (k *console) login(w http.ResponseWriter, r *http.Request) {
	token := k.api.cfg.Token
	if token == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	got := strings.TrimSpace(string(body))
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if v, err := url.ParseQuery(got); err == nil {
			got = strings.TrimSpace(v.Get("token"))
		}
	}
	g, want := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(g[:], want[:]) != 1 {
		k.api.log.Warn("console login refused: wrong token", "remote", r.RemoteAddr)
		http.Error(w, "wrong token", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sessionValue(token), Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	k.api.log.Info("console login", "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (k *console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// snapshot is what the page shows, apart from the live events.
type snapshot struct {
	Status        status.Status      `json:"status"`
	Config        *status.ConfigLoad `json:"config,omitempty"`
	LogLevel      string             `json:"log_level,omitempty"`
	CanReload     bool               `json:"can_reload"`
	TokenRequired bool               `json:"token_required"`
	History       []point            `json:"history"`
	// DrainRate is the scans delivered per second over the last minute;
	// DrainETA, in seconds, how long the backlog takes at that rate
	// (absent when nothing is delivered).
	DrainRate float64  `json:"drain_rate"`
	DrainETA  *float64 `json:"drain_eta,omitempty"`
	Streams   int      `json:"streams"`
	Dropped   uint64   `json:"dropped"`
}

func (k *console) snapshot() snapshot {
	s := snapshot{Status: k.api.src.Status(), TokenRequired: k.api.cfg.Token != "", Streams: len(k.streams), Dropped: k.bus.Dropped()}
	if k.c != nil {
		l := k.c.ConfigLoad()
		s.Config = &l
		s.CanReload = l.Path != ""
	}
	if k.api.level != nil {
		s.LogLevel = strings.ToLower(k.api.level.Level().String())
	}
	now := sample(s.Status, time.Now())
	s.History = k.hist.points(now)
	s.DrainRate = k.hist.drainRate(now)
	if s.DrainRate > 0 {
		eta := float64(s.Status.Buffer.Depth) / s.DrainRate
		s.DrainETA = &eta
	}
	return s
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func (k *console) snapshotHandler(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, k.snapshot())
}

// tapAnswer is the answer of /api/tap.
type tapAnswer struct {
	Station string             `json:"station"`
	Device  string             `json:"device"`
	Last    uint64             `json:"last"` // the seq to ask after next time
	Frames  []devices.TapFrame `json:"frames"`
}

func (k *console) tap(w http.ResponseWriter, r *http.Request) {
	station, device := r.PathValue("station"), r.PathValue("device")
	if device != "scanner" && device != "scale" {
		http.Error(w, "device must be scanner or scale", http.StatusBadRequest)
		return
	}
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			http.Error(w, "after must be a frame number", http.StatusBadRequest)
			return
		}
		after = n
	}
	var t *devices.Tap
	if k.c != nil {
		t = k.c.Tap(station, device)
	}
	if t == nil {
		http.Error(w, "no "+device+" at station "+strconv.Quote(station), http.StatusNotFound)
		return
	}
	frames := t.Since(after)
	last := after
	if n := len(frames); n > 0 {
		last = frames[n-1].Seq
	}
	writeJSON(w, http.StatusOK, tapAnswer{Station: station, Device: device, Last: last, Frames: frames})
}

func (k *console) pollScale(w http.ResponseWriter, r *http.Request) {
	if k.c == nil {
		http.Error(w, "no console", http.StatusNotImplemented)
		return
	}
	station := r.PathValue("station")
	if err := k.c.PollScale(station); err != nil {
		code := http.StatusConflict
		if strings.Contains(err.Error(), "no such station") {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return
	}
	k.api.log.Info("scale polled from the console", "station", station, "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

func (k *console) reload(w http.ResponseWriter, r *http.Request) {
	if k.c == nil {
		http.Error(w, "no console", http.StatusNotImplemented)
		return
	}
	k.api.log.Info("reload asked from the console", "remote", r.RemoteAddr)
	res, err := k.c.ReloadFile("console")
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotImplemented)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Event stream cadence: scans and delivery states every tick, the taps
// every tapEvery ticks, the snapshot every statusEvery ticks.
const (
	streamTick  = 100 * time.Millisecond
	tapEvery    = 3
	statusEvery = 10
	// streamWrite bounds each write: a client that stops reading is cut
	// off, its queue dropped.
	streamWrite = 10 * time.Second
	// maxBatch bounds the events sent at once.
	maxBatch = 4096
)

// tapEvent is one device's new frames on the event stream.
type tapEvent struct {
	Station string             `json:"station"`
	Device  string             `json:"device"`
	Frames  []devices.TapFrame `json:"frames"`
}

// events is the page's server-sent event stream: "snapshot" (the status
// and the rest, every second), "scans" (live.Batch: scans and delivery
// states), "tap" (new frames of a device).
func (k *console) events(w http.ResponseWriter, r *http.Request) {
	select {
	case k.streams <- struct{}{}:
		defer func() { <-k.streams }()
	default:
		http.Error(w, "too many console streams open; close a console tab", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	var c *live.Client
	if k.bus != nil {
		c = k.bus.Subscribe()
		defer c.Close()
	}
	var buf []byte
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		buf = append(buf, "event: "...)
		buf = append(buf, event...)
		buf = append(buf, "\ndata: "...)
		buf = append(buf, b...)
		buf = append(buf, "\n\n"...)
		return true
	}
	flush := func() bool {
		if len(buf) == 0 {
			return true
		}
		rc.SetWriteDeadline(time.Now().Add(streamWrite))
		_, err := w.Write(buf)
		buf = buf[:0]
		return err == nil && rc.Flush() == nil
	}
	seen := map[[2]string]uint64{}
	taps := func(st status.Status) {
		if k.c == nil {
			return
		}
		for _, s := range st.Stations {
			for _, d := range []string{"scanner", "scale"} {
				t := k.c.Tap(s.ID, d)
				key := [2]string{s.ID, d}
				if t == nil || t.Last() == seen[key] {
					continue
				}
				frames := t.Since(seen[key])
				seen[key] = frames[len(frames)-1].Seq
				send("tap", tapEvent{Station: s.ID, Device: d, Frames: frames})
			}
		}
	}
	snap := k.snapshot()
	send("snapshot", snap)
	taps(snap.Status)
	if !flush() {
		return
	}
	tick := time.NewTicker(streamTick)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
		if c != nil {
			if b := c.Take(maxBatch); !b.Empty() {
				send("scans", b)
			}
		}
		if n%statusEvery == 0 {
			snap = k.snapshot()
			send("snapshot", snap)
		}
		if n%tapEvery == 0 {
			taps(snap.Status)
		}
		if !flush() {
			return
		}
	}
}

// history keeps a sample of the agent every historyStep, for the page's
// chart of scans per minute and backlog over the last hour.
type history struct {
	mu   sync.Mutex
	ring []sampleT
	next int
	n    int
}

const historyStep = 10 * time.Second

// sampleT is one sample of the counters behind the chart.
type sampleT struct {
	at        time.Time
	scans     uint64 // accepted, all stations
	delivered uint64 // acked by the broker (or receipted)
	depth     int64
}

// point is one point of the chart.
type point struct {
	T           int64   `json:"t"` // Unix seconds
	ScansPerMin float64 `json:"scans_per_min"`
	Backlog     int64   `json:"backlog"`
}

func newHistory(n int) history { return history{ring: make([]sampleT, n)} }

func sample(st status.Status, now time.Time) sampleT {
	s := sampleT{at: now, depth: st.Buffer.Depth, delivered: st.Buffer.Acked}
	for _, x := range st.Stations {
		s.scans += x.Counters.Scans
	}
	return s
}

func (h *history) add(s sampleT) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	h.n = min(h.n+1, len(h.ring))
}

// all returns the samples oldest first, then now.
func (h *history) all(now sampleT) []sampleT {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]sampleT, 0, h.n+1)
	for i := range h.n {
		out = append(out, h.ring[(h.next-h.n+i+len(h.ring))%len(h.ring)])
	}
	return append(out, now)
}

func (h *history) points(now sampleT) []point {
	ss := h.all(now)
	out := make([]point, 0, len(ss))
	for i, s := range ss {
		p := point{T: s.at.Unix(), Backlog: s.depth}
		if i > 0 {
			prev := ss[i-1]
			if dt := s.at.Sub(prev.at).Seconds(); dt > 0 && s.scans >= prev.scans {
				p.ScansPerMin = float64(s.scans-prev.scans) * 60 / dt
			}
		}
		out = append(out, p)
	}
	return out
}

// drainRate is the scans delivered per second since the sample about a
// minute ago (0 without one).
func (h *history) drainRate(now sampleT) float64 {
	ss := h.all(now)
	for i := len(ss) - 2; i >= 0; i-- {
		if now.at.Sub(ss[i].at) >= 50*time.Second || i == 0 {
			dt := now.at.Sub(ss[i].at).Seconds()
			if dt <= 0 || now.delivered < ss[i].delivered {
				return 0
			}
			return float64(now.delivered-ss[i].delivered) / dt
		}
	}
	return 0
}

// runHistory samples the agent every historyStep until ctx is done.
func (k *console) runHistory(ctx context.Context) {
	k.hist.add(sample(k.api.src.Status(), time.Now()))
	t := time.NewTicker(historyStep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			k.hist.add(sample(k.api.src.Status(), now))
		}
	}
}
