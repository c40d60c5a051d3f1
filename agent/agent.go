// Package agent owns the scanagent daemon: it wires the stations (scanner
// frames -> validated scan events), the durable buffer and the MQTT uplink,
// and serves the local HTTP status. Configuration lives in agent/config,
// identifier rules in agent/parcel.
//
// Imported by cmd/scanagent, which parses flags and calls New and Run.
package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

// Deps are what the agent takes from its caller.
type Deps struct {
	Log     *slog.Logger
	Version string
	// Level, if set, is the level of Log, changed by PUT /loglevel and by
	// Reload.
	Level *slog.LevelVar
	// Ready, if set, is called once the buffer is open, the stations and
	// the uplink are started and the HTTP listener (if any) is bound.
	Ready func(httpAddr string)
	// Waiting, if set, is called when the buffer cannot open yet (the
	// agent retries); the HTTP listener, if any, is bound.
	Waiting func(httpAddr, reason string)
}

// Agent is one configured daemon. New validates and starts nothing; Run
// does the work.
type Agent struct {
	cfg        *config.Config
	log        *slog.Logger
	level      *slog.LevelVar
	version    string
	ready      func(string)
	waiting    func(string, string)
	bufferErr  string // why the buffer is not open yet ("" once open)
	ackLatency prometheus.Histogram
	registry   *prometheus.Registry
	started    time.Time
	mu         sync.Mutex
	q          *buffer.Queue
	stations   []*station // running, in config order
	runners    map[string]*runner
	counts     map[string]*stationCounts // by station id, kept across reloads
	up         *uplink
	runCtx     context.Context
	http       httpLimits
}

// httpLimits bound what clients can hold of the status server, which
// otherwise keeps every idle or half-sent connection (and its file
// descriptor and goroutine) for ever.
type httpLimits struct {
	readHeader time.Duration // request line and headers
	read       time.Duration // the whole request, body included
	// write runs from the end of the request headers to the end of the
	// response. A streaming endpoint (server-sent events) must lift it
	// for its own request: http.NewResponseController(w).SetWriteDeadline(time.Time{}).
	write          time.Duration
	idle           time.Duration // a kept-alive connection between requests
	maxHeaderBytes int           // request line and headers (net/http allows 4 KiB more)
	// maxConns caps open connections; more wait in the kernel's accept
	// queue, holding no descriptor of the agent's. 64 is ample for
	// Prometheus, health probes and technicians' status commands (a few
	// at a time), and bounds the worst case at 64 descriptors, goroutines
	// and buffers (a few MiB with full headers) of the 128 MiB memory limit.
	maxConns int
}

func defaultHTTPLimits() httpLimits {
	return httpLimits{readHeader: 5 * time.Second, read: 10 * time.Second, write: 30 * time.Second, idle: 60 * time.Second,
		maxHeaderBytes: 16 << 10, maxConns: 64}
}

// httpServer serves the agent's Handler on ln within the limits.
func (a *Agent) httpServer() *http.Server {
	l := a.http
	return &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: l.readHeader,
		ReadTimeout:       l.read,
		WriteTimeout:      l.write,
		IdleTimeout:       l.idle,
		MaxHeaderBytes:    l.maxHeaderBytes,
		// net/http's own messages are mostly about what clients sent:
		// at debug, so a client cannot fill the log.
		ErrorLog: slog.NewLogLogger(a.log.With("component", "http").Handler(), slog.LevelDebug),
	}
}

// runner is one running station.
type runner struct {
	st     *station
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks what can be checked before running.
func New(cfg *config.Config, deps Deps) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent: nil config")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: log, level: deps.Level, version: deps.Version, ready: deps.Ready, waiting: deps.Waiting, ackLatency: newAckLatency(),
		http: defaultHTTPLimits(), counts: map[string]*stationCounts{}}
	a.registry = a.newRegistry()
	return a, nil
}

// BufferOptions maps the buffer section of the config.
func BufferOptions(cfg *config.Config, log *slog.Logger) buffer.Options {
	o := buffer.Options{
		Logger:       log,
		MaxBytes:     int64(cfg.Buffer.MaxBytes),
		CommitWindow: cfg.Buffer.CommitWindow.D(),
		MinFreeDisk:  int64(cfg.Buffer.MinFreeDisk),
	}
	if cfg.Buffer.WhenFull == "reject_new" {
		o.WhenFull = buffer.RejectNew
	}
	if o.MinFreeDisk == 0 {
		o.MinFreeDisk = -1 // 0 in the config disables the check
	}
	return o
}

// BufferDir is where the agent keeps its Badger buffer under data_dir.
func BufferDir(cfg *config.Config) string { return filepath.Join(cfg.Agent.DataDir, "buffer") }

// Run opens the buffer and runs the stations, the uplink and the HTTP
// server until ctx is cancelled. Shutdown order: stop reading devices (every
// scan read so far is already durable), then let the uplink flush in-flight
// publishes and publish the offline status, then close the buffer.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if !a.started.IsZero() {
		a.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	a.started = time.Now()
	a.mu.Unlock()

	var httpSrv *http.Server
	httpAddr := ""
	if a.cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.HTTP.Listen)
		if err != nil {
			// The status page is a convenience; scanning goes on without it.
			a.log.Error("http status listener not started", "listen", a.cfg.HTTP.Listen, "err", err)
		} else {
			httpAddr = ln.Addr().String()
			httpSrv = a.httpServer()
			go httpSrv.Serve(netutil.LimitListener(ln, a.http.maxConns))
			a.log.Info("http status listening", "addr", httpAddr)
		}
	}
	defer func() {
		if httpSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			httpSrv.Shutdown(sctx)
			cancel()
		}
	}()

	q := a.openBuffer(ctx, httpAddr)
	if q == nil {
		return nil // stopped while waiting for the buffer
	}
	st := q.Stats()
	a.log.Info("buffer open", "dir", BufferDir(a.cfg), "backlog", st.Depth, "last_seq", st.LastSeq)
	up := newUplink(a.cfg.MQTT, a.cfg.Agent, a.version, q, a.log)
	up.ackLatency = a.ackLatency
	up.health = func() any { return a.Status() }
	up.devices = a.deviceReports
	a.mu.Lock()
	a.q, a.up = q, up
	a.mu.Unlock()

	upCtx, stopUplink := context.WithCancel(context.Background())
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		up.run(upCtx)
	}()
	a.mu.Lock()
	a.runCtx = ctx
	a.runners = map[string]*runner{}
	for _, sc := range a.cfg.Stations {
		a.startStation(sc)
	}
	a.mu.Unlock()
	if a.ready != nil {
		a.ready(httpAddr)
	}

	<-ctx.Done()
	a.log.Info("stopping: devices first")
	a.mu.Lock()
	runners := a.runners
	a.mu.Unlock()
	for _, r := range runners {
		<-r.done
	}
	stopUplink()
	<-upDone
	if err := q.Close(); err != nil {
		return fmt.Errorf("close buffer: %w", err)
	}
	a.log.Info("stopped", "backlog", q.Stats().Depth)
	return nil
}

// openBuffer opens the buffer, retrying until it opens or ctx is done (nil
// then). A buffer that cannot open (a full disk, a data directory it may
// not write, another agent holding it) is a state to report and wait out,
// not an exit: a restart would meet the same disk. Stations start only
// once it is open; meanwhile /status and /readyz say why, and the logs
// repeat the reason when it changes and every 5 minutes.
func (a *Agent) openBuffer(ctx context.Context, httpAddr string) *buffer.Queue {
	dir := BufferDir(a.cfg)
	bo := devices.Backoff{Min: time.Second, Max: 30 * time.Second}
	var last string
	var lastLog time.Time
	for {
		q, err := buffer.Open(dir, BufferOptions(a.cfg, a.log.With("component", "buffer")))
		if err == nil {
			a.mu.Lock()
			a.bufferErr = ""
			a.mu.Unlock()
			if last != "" {
				a.log.Info("buffer open after waiting", "dir", dir)
			}
			return q
		}
		msg := err.Error()
		a.mu.Lock()
		a.bufferErr = msg
		a.mu.Unlock()
		if msg != last || time.Since(lastLog) >= 5*time.Minute {
			a.log.Error("buffer cannot open: scans are not accepted until it does; retrying", "dir", dir, "err", err, "hint", bufferHint(err))
			lastLog = time.Now()
			if last == "" && a.waiting != nil {
				a.waiting(httpAddr, msg)
			}
		}
		last = msg
		t := time.NewTimer(bo.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// bufferHint names the fix for a buffer that cannot open.
func bufferHint(err error) string {
	switch {
	case errors.Is(err, buffer.ErrDiskFull):
		return "free space on the filesystem of agent.data_dir; the agent opens the buffer as soon as there is room"
	case errors.Is(err, buffer.ErrLocked):
		return "another scanagent uses this agent.data_dir: stop it, or give each agent its own data_dir"
	case errors.Is(err, fs.ErrPermission):
		return "the agent's user cannot write agent.data_dir: fix its owner (chown scanagent: DIR) or permissions"
	}
	return ""
}

// startStation starts one station under the run context. a.mu is held.
func (a *Agent) startStation(sc config.Station) {
	n := a.counts[sc.ID]
	if n == nil {
		n = newStationCounts()
		a.counts[sc.ID] = n
	}
	st := newStation(sc, a.cfg.Agent, int(a.cfg.MQTT.MaxEventBytes), a.q, a.log, n)
	st.changed = a.up.deviceChanged
	ctx, cancel := context.WithCancel(a.runCtx)
	r := &runner{st: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		st.run(ctx)
	}()
	a.runners[sc.ID] = r
	a.stations = append(a.stations, st)
}

// Reload applies a new configuration to the running agent. Stations that
// are added, removed or changed are started or stopped (a stopped station
// first processes every scan it has read); unchanged stations keep
// running untouched. A restarted station keeps its counters, and so does
// one removed and added again later. The log level follows log.level. Changes to agent,
// mqtt, buffer, http and log.format need a restart: they are reported in
// the returned list and the running values are kept.
func (a *Agent) Reload(cfg *config.Config) (restartNeeded []string, err error) {
	a.mu.Lock()
	if a.runners == nil || a.runCtx.Err() != nil {
		a.mu.Unlock()
		return nil, errors.New("agent: not running")
	}
	old := a.cfg
	for _, d := range []struct {
		name     string
		old, new any
	}{
		{"agent", old.Agent, cfg.Agent},
		{"mqtt", old.MQTT, cfg.MQTT},
		{"buffer", old.Buffer, cfg.Buffer},
		{"http", old.HTTP, cfg.HTTP},
		{"log.format", old.Log.Format, cfg.Log.Format},
	} {
		if !reflect.DeepEqual(d.old, d.new) {
			restartNeeded = append(restartNeeded, d.name)
		}
	}
	want := map[string]config.Station{}
	for _, sc := range cfg.Stations {
		want[sc.ID] = sc
	}
	var stopping []*runner
	var stopped, started, kept []string
	for _, sc := range old.Stations {
		if nsc, ok := want[sc.ID]; ok && reflect.DeepEqual(sc, nsc) {
			kept = append(kept, sc.ID)
			continue
		}
		r := a.runners[sc.ID]
		r.cancel()
		stopping = append(stopping, r)
		delete(a.runners, sc.ID)
		stopped = append(stopped, sc.ID)
	}
	a.mu.Unlock()
	// Wait outside the lock: a stopping station finishes the scans it has
	// read (Status stays available meanwhile).
	for _, r := range stopping {
		<-r.done
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	keep := a.stations[:0]
	for _, st := range a.stations {
		if _, running := a.runners[st.cfg.ID]; running {
			keep = append(keep, st)
		}
	}
	a.stations = keep
	if a.runCtx.Err() != nil {
		return restartNeeded, errors.New("agent: stopping; reload not applied")
	}
	for _, sc := range cfg.Stations {
		if _, running := a.runners[sc.ID]; !running {
			a.startStation(sc)
			started = append(started, sc.ID)
		}
	}
	// Keep the config order for status and device topics.
	order := map[string]int{}
	for i, sc := range cfg.Stations {
		order[sc.ID] = i
	}
	slices.SortFunc(a.stations, func(x, y *station) int { return order[x.cfg.ID] - order[y.cfg.ID] })
	next := *old
	next.Stations = cfg.Stations
	next.Log.Level = cfg.Log.Level
	next.Warnings = cfg.Warnings
	a.cfg = &next
	if a.level != nil {
		if l, err := config.ParseLevel(cfg.Log.Level); err == nil {
			a.level.Set(l)
		}
	}
	a.up.deviceChanged()
	a.log.Info("configuration reloaded", "stations_kept", kept, "stations_stopped", stopped, "stations_started", started,
		"log_level", cfg.Log.Level, "restart_needed_for", restartNeeded)
	return restartNeeded, nil
}

// Status is the agent's state as served on /status.
type Status struct {
	Agent   string        `json:"agent"`
	Site    string        `json:"site"`
	Version string        `json:"version"`
	Time    string        `json:"time"`
	Uptime  string        `json:"uptime"`
	Process ProcessStatus `json:"process"`
	Buffer  buffer.Stats  `json:"buffer"`
	// BufferError says why the buffer is not open yet (scans are not
	// accepted meanwhile; the agent retries).
	BufferError string          `json:"buffer_error,omitempty"`
	MQTT        UplinkStats     `json:"mqtt"`
	Stations    []StationStatus `json:"stations"`
}

// ProcessStatus is the agent process's memory.
type ProcessStatus struct {
	RSSBytes     int64 `json:"rss_bytes,omitempty"`      // resident set (Linux)
	PeakRSSBytes int64 `json:"peak_rss_bytes,omitempty"` // its high-water mark (Linux)
	HeapBytes    int64 `json:"heap_bytes"`               // Go heap in use
	MemoryLimit  int64 `json:"memory_limit,omitempty"`   // Go soft limit (GOMEMLIMIT)
}

func processStatus() ProcessStatus {
	var p ProcessStatus
	p.RSSBytes, p.PeakRSSBytes = rss()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(samples)
	p.HeapBytes = int64(samples[0].Value.Uint64())
	if l := samples[1].Value.Uint64(); l < 1<<62 {
		p.MemoryLimit = int64(l)
	}
	return p
}

// StationStatus is one station's part of Status.
type StationStatus struct {
	ID       string          `json:"id"`
	Counters StationCounters `json:"counters"`
	Scanner  DeviceStatus    `json:"scanner"`
	Scale    *ScaleStatus    `json:"scale,omitempty"`
}

// Status returns a snapshot; before Run it is mostly empty.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Status{Agent: a.cfg.Agent.ID, Site: a.cfg.Agent.Site, Version: a.version, Process: processStatus(), Time: Timestamp(time.Now())}
	if !a.started.IsZero() {
		s.Uptime = time.Since(a.started).Round(time.Second).String()
	}
	if a.q != nil {
		s.Buffer = a.q.Stats()
	}
	s.BufferError = a.bufferErr
	if a.up != nil {
		s.MQTT = a.up.stats()
	}
	for _, st := range a.stations {
		c, d := st.counters()
		s.Stations = append(s.Stations, StationStatus{ID: st.cfg.ID, Counters: c, Scanner: d, Scale: st.scaleStatus()})
	}
	return s
}

// bufferOpen reports whether the buffer is open.
func (a *Agent) bufferOpen() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.q != nil
}

// deviceReports lists every device's current state.
func (a *Agent) deviceReports() []DeviceReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []DeviceReport
	for _, st := range a.stations {
		_, d := st.counters()
		out = append(out, DeviceReport{Station: st.cfg.ID, Kind: "scanner", DeviceStatus: d})
		if sc := st.scaleStatus(); sc != nil {
			out = append(out, DeviceReport{Station: st.cfg.ID, Kind: "scale", DeviceStatus: sc.DeviceStatus})
		}
	}
	return out
}

// Handler serves /healthz, /readyz, /status, /metrics and /loglevel. With
// http.token_file set, every path but /healthz needs the bearer token.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// Ready means scans are being accepted; a broker outage does not
		// make the agent unready (it buffers), it is only reported.
		a.mu.Lock()
		open, up, why := a.q != nil, a.up, a.bufferErr
		a.mu.Unlock()
		if !open {
			if why == "" {
				why = "opening"
			}
			http.Error(w, "buffer not open: "+why, http.StatusServiceUnavailable)
			return
		}
		broker := "disconnected"
		if up.connected.Load() {
			broker = "connected"
		}
		fmt.Fprintf(w, "ready; broker %s\n", broker)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /loglevel", func(w http.ResponseWriter, r *http.Request) {
		if a.level == nil {
			http.Error(w, "log level is fixed", http.StatusNotImplemented)
			return
		}
		fmt.Fprintln(w, strings.ToLower(a.level.Level().String()))
	})
	mux.HandleFunc("PUT /loglevel", func(w http.ResponseWriter, r *http.Request) {
		if a.level == nil {
			http.Error(w, "log level is fixed", http.StatusNotImplemented)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64))
		l, err := config.ParseLevel(string(bytes.TrimSpace(body)))
		if err != nil {
			http.Error(w, "level must be debug, info, warn or error", http.StatusBadRequest)
			return
		}
		old := a.level.Level()
		a.level.Set(l)
		a.log.Info("log level changed over HTTP", "from", old, "to", l, "remote", r.RemoteAddr)
		fmt.Fprintln(w, strings.ToLower(l.String()))
	})
	return a.authorize(mux)
}

// authorize requires the configured bearer token on every path but
// /healthz (a liveness probe learns nothing from it).
func (a *Agent) authorize(next http.Handler) http.Handler {
	token := a.cfg.HTTP.Token
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && !bearer(r.Header.Get("Authorization"), want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scanagent"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer reports whether an Authorization header value carries the bearer
// token whose SHA-256 is want. The scheme is case-insensitive (RFC 7235,
// section 2.1: "bearer", "BEARER") and one or more spaces may follow it.
// The token is compared in constant time, through its hash so that its
// length does not show either.
func bearer(header string, want [sha256.Size]byte) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimLeft(token, " ")))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
