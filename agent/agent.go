// Package agent wires the scanagent daemon: one station per configured
// station (agent/station), the durable buffer (buffer), the MQTT uplink
// (agent/uplink) and the local HTTP interface (agent/httpapi), around the
// status document (agent/status) and the scan record (agent/record). It
// builds each part with what it needs, runs them under one lifecycle, and
// applies reloads; the parts never reach into each other.
//
// Imported by cmd/scanagent, which parses flags and calls New and Run.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/scanagent/scanagent/agent/clock"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/dispatch"
	"github.com/scanagent/scanagent/agent/httpapi"
	"github.com/scanagent/scanagent/agent/live"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/station"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/uplink"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
	"github.com/scanagent/scanagent/devices/backoff"
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
	// ConfigPath is the file the config was loaded from: ReloadFile (the
	// console's reload, SIGHUP) reads it again ("": no reload).
	ConfigPath string
}

// Agent is one configured daemon. New validates and starts nothing; Run
// does the work.
type Agent struct {
	log        *slog.Logger
	deps       Deps
	ackLatency prometheus.Histogram
	api        *httpapi.API
	devKick    chan struct{}  // a device state changed: the uplink publishes them
	clock      *clock.Watcher // the clock quality, read every few seconds
	bus        *live.Bus      // the console's scan events

	tapMu sync.Mutex
	taps  map[tapKey]*devices.Tap // the serial taps, kept across reloads

	reloadMu sync.Mutex // one ReloadFile at a time
	loadMu   sync.Mutex
	lastLoad status.ConfigLoad

	mu        sync.Mutex
	cfg       *config.Config // the stations and log level follow reloads
	started   time.Time
	bufferErr string // why the buffer is not open yet ("" once open)
	q         *buffer.Queue
	up        *uplink.Uplink
	disp      *dispatch.Tracker          // nil when its state cannot be opened
	stations  []*running                 // running, in config order
	counts    map[string]*station.Counts // by station id, kept across reloads
	runCtx    context.Context            // the stations' context, set by Run
}

// running is one running station.
type running struct {
	st     *station.Station
	cfg    config.Station
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks what can be checked before running.
func New(cfg *config.Config, deps Deps) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("agent: nil config")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{log: deps.Log, deps: deps, cfg: cfg, ackLatency: httpapi.NewAckLatency(),
		devKick: make(chan struct{}, 1), counts: map[string]*station.Counts{}, clock: clock.New(deps.Log),
		bus: live.New(0), taps: map[tapKey]*devices.Tap{}}
	a.lastLoad = status.ConfigLoad{Path: deps.ConfigPath, At: record.Timestamp(time.Now()), Kind: "start", OK: true}
	for _, w := range cfg.Warnings {
		a.lastLoad.Warnings = append(a.lastLoad.Warnings, w.Error())
	}
	a.api = a.newAPI(httpapi.DefaultLimits())
	return a, nil
}

func (a *Agent) newAPI(l httpapi.Limits) *httpapi.API {
	return httpapi.New(httpapi.Config{Token: a.cfg.HTTP.Token, Version: a.deps.Version, Limits: l},
		httpapi.Deps{Source: a, Log: a.log, Level: a.deps.Level, AckLatency: a.ackLatency, Console: a, Live: a.bus})
}

// BufferOptions maps the buffer section of the config.
func BufferOptions(cfg *config.Config, log *slog.Logger) buffer.Options {
	o := buffer.Options{
		Logger:       log,
		MaxBytes:     int64(cfg.Buffer.MaxBytes),
		CommitWindow: cfg.Buffer.CommitWindow.D(),
		MinFreeDisk:  int64(cfg.Buffer.MinFreeDisk),
		SpillAfter:   cfg.Buffer.SpillAfter.D(),
	}
	if o.SpillAfter == 0 {
		o.SpillAfter = -1 // 0 in the config: into the store in the commit
	}
	if cfg.Buffer.WhenFull == "reject_new" {
		o.WhenFull = buffer.RejectNew
	}
	if o.MinFreeDisk == 0 {
		o.MinFreeDisk = -1 // 0 in the config disables the check
	}
	return o
}

// SessionFile is where the uplink keeps its session number under data_dir.
func SessionFile(cfg *config.Config) string { return filepath.Join(cfg.Agent.DataDir, "mqtt-session") }

// BufferDir is where the agent keeps its Badger buffer under data_dir.
func BufferDir(cfg *config.Config) string { return filepath.Join(cfg.Agent.DataDir, "buffer") }

// StateDir is where the agent keeps the stations' workflow state and the
// dispatches' under data_dir (docs/WORKFLOWS.md).
func StateDir(cfg *config.Config) string { return filepath.Join(cfg.Agent.DataDir, "state") }

// openDispatches opens the dispatch tracker; without its state file the
// agent runs without it (logged), scanning goes on.
func (a *Agent) openDispatches(cfg *config.Config) *dispatch.Tracker {
	t, err := dispatch.Open(dispatch.Config{Path: filepath.Join(StateDir(cfg), "dispatches.state"), Agent: cfg.Agent.ID,
		Site: cfg.Agent.Site, Expire: time.Duration(cfg.Dispatches.ExpireDays) * 24 * time.Hour, Log: a.log, Clock: a.clock})
	if err != nil {
		a.log.Error("dispatch completeness is off: its state cannot be opened", "err", err,
			"hint", "check that the agent's user can write agent.data_dir")
		return nil
	}
	return t
}

// dispatchSink gives the stations the tracker.
type dispatchSink struct{ t *dispatch.Tracker }

func (d dispatchSink) Seen(l station.DispatchLabel) { d.t.Seen(dispatch.Label(l)) }
func (d dispatchSink) LastSeq(st string) uint64     { return d.t.LastSeq(st) }

// retainedSource gives the uplink the tracker's retained messages.
type retainedSource struct{ t *dispatch.Tracker }

func (r retainedSource) Retained(all bool) []uplink.RetainedMessage {
	var out []uplink.RetainedMessage
	for _, m := range r.t.Retained(all) {
		out = append(out, uplink.RetainedMessage(m))
	}
	return out
}
func (r retainedSource) RetainedSent(topic string, v uint64) { r.t.RetainedSent(topic, v) }
func (r retainedSource) RetainedChanged() <-chan struct{}    { return r.t.RetainedChanged() }

// Run opens the buffer and runs the stations, the uplink and the HTTP
// server until ctx is cancelled. What happens when a part fails:
//   - HTTP: a listener that cannot bind, or a server that fails, is logged;
//     scanning goes on without it.
//   - buffer: a buffer that cannot open is waited for (retried, reported on
//     /readyz and /status; a restart would meet the same disk). One that
//     fails to close makes Run return the error (the command exits 1).
//   - stations: ports that fail are reopened by the station itself; a
//     station that cannot run at all is logged and the others go on.
//   - uplink: every failure is retried with backoff; it stops only with
//     ctx.
//
// Shutdown order: stop reading devices (every scan read so far is then
// durable), then let the uplink flush in-flight publishes and publish the
// offline status, then close the buffer.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if !a.started.IsZero() {
		a.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	a.started = time.Now()
	cfg := a.cfg
	a.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { a.clock.Run(gctx); return nil })
	httpAddr := ""
	if cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			// The status page is a convenience; scanning goes on without it.
			a.log.Error("http status listener not started", "listen", cfg.HTTP.Listen, "err", err)
		} else {
			httpAddr = ln.Addr().String()
			a.log.Info("http status listening", "addr", httpAddr)
			g.Go(func() error {
				if err := a.api.Serve(gctx, ln); err != nil {
					a.log.Error("http status server stopped", "addr", httpAddr, "err", err)
				}
				return nil
			})
		}
	}

	q := a.openBuffer(gctx, httpAddr)
	if q == nil {
		return g.Wait() // stopped while waiting for the buffer
	}
	bs := q.Stats()
	a.log.Info("buffer open", "dir", BufferDir(cfg), "backlog", bs.Depth, "last_seq", bs.LastSeq)
	disp := a.openDispatches(cfg)
	if disp != nil {
		disp.ClampLastSeq(bs.LastSeq)
	}
	ud := uplink.Deps{Queue: q, Reporter: a, Log: a.log, DevicesChanged: a.devKick, AckLatency: a.ackLatency, Delivery: a.bus}
	if disp != nil {
		ud.Retained = retainedSource{disp}
	}
	up := uplink.New(uplink.Config{MQTT: cfg.MQTT, Agent: cfg.Agent, Version: a.deps.Version, SessionFile: SessionFile(cfg)}, ud)
	// The uplink outlives the stations: it stops once they have.
	upCtx, stopUplink := context.WithCancel(context.WithoutCancel(gctx))
	defer stopUplink()
	a.mu.Lock()
	a.q, a.up, a.runCtx, a.disp = q, up, gctx, disp
	for _, sc := range cfg.Stations {
		a.startStation(sc)
	}
	a.mu.Unlock()
	g.Go(func() error { return up.Run(upCtx) })
	dispCtx, stopDisp := context.WithCancel(context.WithoutCancel(gctx))
	defer stopDisp()
	if disp != nil {
		g.Go(func() error {
			if err := disp.Run(dispCtx); err != nil {
				a.log.Error("dispatch state not closed cleanly", "err", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		a.log.Info("stopping: devices first")
		a.stopStations()
		stopUplink()
		stopDisp()
		return nil
	})
	if a.deps.Ready != nil {
		a.deps.Ready(httpAddr)
	}
	err := g.Wait()
	if cerr := q.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("close buffer: %w", cerr))
	}
	a.log.Info("stopped", "backlog", q.Stats().Depth)
	return err
}

// openBuffer opens the buffer, retrying until it opens or ctx is done (nil
// then). A buffer that cannot open (a full disk, a data directory it may
// not write, another agent holding it) is a state to report and wait out,
// not an exit: a restart would meet the same disk. Stations start only
// once it is open; meanwhile /status and /readyz say why, and the logs
// repeat the reason when it changes and every 5 minutes.
func (a *Agent) openBuffer(ctx context.Context, httpAddr string) *buffer.Queue {
	dir := BufferDir(a.cfg)
	bo := backoff.Backoff{Min: time.Second, Max: 30 * time.Second}
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
			if last == "" && a.deps.Waiting != nil {
				a.deps.Waiting(httpAddr, msg)
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
		n = station.NewCounts()
		a.counts[sc.ID] = n
	}
	d := station.Deps{Buffer: a.q, Log: a.log, Counts: n, Changed: a.devKick, Clock: a.clock, Console: stationConsole{a}}
	if a.disp != nil {
		d.Dispatches = dispatchSink{a.disp}
	}
	st := station.New(station.Config{Station: sc, Agent: a.cfg.Agent, MaxEvent: int(a.cfg.MQTT.MaxEventBytes), StateDir: StateDir(a.cfg)}, d)
	ctx, cancel := context.WithCancel(a.runCtx)
	r := &running{st: st, cfg: sc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := st.Run(ctx); err != nil {
			a.log.Error("station stopped: it cannot run; the other stations go on", "station", sc.ID, "err", err)
		}
	}()
	a.stations = append(a.stations, r)
}

// stopStations stops every station and waits until each has processed the
// scans it read.
func (a *Agent) stopStations() {
	a.mu.Lock()
	stations := a.stations
	a.mu.Unlock()
	for _, r := range stations {
		r.cancel()
	}
	for _, r := range stations {
		<-r.done
	}
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
	if a.runCtx == nil || a.runCtx.Err() != nil {
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
		{"dispatches", old.Dispatches, cfg.Dispatches},
	} {
		if !reflect.DeepEqual(d.old, d.new) {
			restartNeeded = append(restartNeeded, d.name)
		}
	}
	want := map[string]config.Station{}
	for _, sc := range cfg.Stations {
		want[sc.ID] = sc
	}
	var stopping []*running
	var stopped, started, kept []string
	for _, r := range a.stations {
		if nsc, ok := want[r.cfg.ID]; ok && reflect.DeepEqual(r.cfg, nsc) {
			kept = append(kept, r.cfg.ID)
			continue
		}
		r.cancel()
		stopping = append(stopping, r)
		stopped = append(stopped, r.cfg.ID)
	}
	a.mu.Unlock()
	// Wait outside the lock: a stopping station finishes the scans it has
	// read (Status stays available meanwhile, and the station stays in it
	// and in the device topics until it has stopped).
	for _, r := range stopping {
		<-r.done
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stations = slices.DeleteFunc(a.stations, func(r *running) bool { return slices.Contains(stopping, r) })
	if a.runCtx.Err() != nil {
		return restartNeeded, errors.New("agent: stopping; reload not applied")
	}
	for _, sc := range cfg.Stations {
		if !slices.ContainsFunc(a.stations, func(r *running) bool { return r.cfg.ID == sc.ID }) {
			a.startStation(sc)
			started = append(started, sc.ID)
		}
	}
	// Keep the config order for status and device topics.
	order := map[string]int{}
	for i, sc := range cfg.Stations {
		order[sc.ID] = i
	}
	slices.SortFunc(a.stations, func(x, y *running) int { return order[x.cfg.ID] - order[y.cfg.ID] })
	next := *old
	next.Stations = cfg.Stations
	next.Log.Level = cfg.Log.Level
	next.Warnings = cfg.Warnings
	a.cfg = &next
	if a.deps.Level != nil {
		if l, err := config.ParseLevel(cfg.Log.Level); err == nil {
			a.deps.Level.Set(l)
		}
	}
	select {
	case a.devKick <- struct{}{}:
	default:
	}
	a.log.Info("configuration reloaded", "stations_kept", kept, "stations_stopped", stopped, "stations_started", started,
		"log_level", cfg.Log.Level, "restart_needed_for", restartNeeded)
	return restartNeeded, nil
}

// Status returns a snapshot of the whole agent; before Run it is mostly
// empty.
func (a *Agent) Status() status.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := status.Status{Agent: a.cfg.Agent.ID, Site: a.cfg.Agent.Site, Version: a.deps.Version, Process: status.ReadProcess(),
		Time: record.Timestamp(time.Now()), Started: a.started, BufferOpen: a.q != nil, BufferError: a.bufferErr,
		Clock: a.clock.Quality()}
	if !a.started.IsZero() {
		s.Uptime = time.Since(a.started).Round(time.Second).String()
	}
	if a.q != nil {
		s.Buffer = a.q.Stats()
	}
	if a.up != nil {
		s.MQTT = a.up.Stats()
	}
	for _, r := range a.stations {
		s.Stations = append(s.Stations, r.st.Status())
	}
	if a.disp != nil {
		ds := a.disp.Stats()
		s.Dispatches = &status.Dispatches{Tracked: ds.Tracked, Complete: ds.Complete, Incomplete: ds.Incomplete, WriteErrors: ds.WriteErrors}
	}
	return s
}

// Devices lists every device's current state.
func (a *Agent) Devices() []status.DeviceReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []status.DeviceReport
	for _, r := range a.stations {
		out = append(out, r.st.Devices()...)
	}
	return out
}
