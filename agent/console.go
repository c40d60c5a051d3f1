package agent

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/devices"
)

// What the technician console asks of the agent (httpapi.Console): the
// serial taps, a scale poll, a reload and its result. The stations tell
// the console of their scans through stationConsole.

// tapKey names one device's tap.
type tapKey struct{ station, device string }

// stationConsole is what the stations are given as station.Console: the
// live bus and the taps, kept by the agent across reloads.
type stationConsole struct{ a *Agent }

func (c stationConsole) Scan(seq uint64, sc *record.Scan, err error) { c.a.bus.Scan(seq, sc, err) }

func (c stationConsole) Tap(station, device string) *devices.Tap {
	a := c.a
	a.tapMu.Lock()
	defer a.tapMu.Unlock()
	k := tapKey{station, device}
	t := a.taps[k]
	if t == nil {
		t = devices.NewTap(devices.DefaultTapFrames)
		a.taps[k] = t
	}
	return t
}

// Tap returns the tap of a configured station's scanner or scale; nil
// when there is none.
func (a *Agent) Tap(station, device string) *devices.Tap {
	a.mu.Lock()
	configured := slices.ContainsFunc(a.stations, func(r *running) bool {
		return r.cfg.ID == station && (device == "scanner" || device == "scale" && r.cfg.Scale != nil)
	})
	a.mu.Unlock()
	if !configured {
		return nil
	}
	a.tapMu.Lock()
	defer a.tapMu.Unlock()
	return a.taps[tapKey{station, device}]
}

// ErrNoStation is PollScale's error for a station that is not running.
var ErrNoStation = errors.New("no such station")

// PollScale asks a station's scale for a reading now.
func (a *Agent) PollScale(station string) error {
	a.mu.Lock()
	i := slices.IndexFunc(a.stations, func(r *running) bool { return r.cfg.ID == station })
	var r *running
	if i >= 0 {
		r = a.stations[i]
	}
	a.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w: %q", ErrNoStation, station)
	}
	return r.st.PollScale()
}

// ConfigLoad is the result of the last load or reload.
func (a *Agent) ConfigLoad() status.ConfigLoad {
	a.loadMu.Lock()
	defer a.loadMu.Unlock()
	return a.lastLoad
}

// ErrNoConfigFile is ReloadFile's error when the agent was not given the
// file it was loaded from.
var ErrNoConfigFile = errors.New("the agent was started without a configuration file to read again")

// ReloadFile reads the configuration file again and applies it (what
// SIGHUP does): a file that does not load keeps the running
// configuration. by says who asked ("signal", "console"). Every problem
// is logged and is in the result, which ConfigLoad returns from then on.
func (a *Agent) ReloadFile(by string) (status.ConfigLoad, error) {
	path := a.deps.ConfigPath
	if path == "" {
		return status.ConfigLoad{}, ErrNoConfigFile
	}
	// One reload at a time: a signal and a click must not interleave.
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.log.Info("reload: reading the configuration", "config", path, "by", by)
	res := status.ConfigLoad{Path: path, At: record.Timestamp(time.Now()), Kind: "reload", By: by}
	cfg, err := config.Load(path)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				a.log.Error("reload refused: the running configuration stays", "error", e.Error())
				res.Errors = append(res.Errors, e.Error())
			}
		} else {
			a.log.Error("reload refused: the running configuration stays", "error", err.Error())
			res.Errors = append(res.Errors, err.Error())
		}
		a.setLoad(res)
		return res, nil
	}
	for _, w := range cfg.Warnings {
		a.log.Warn("config problem: scans are buffered but cannot be delivered until it is fixed", "problem", w.Error())
		res.Warnings = append(res.Warnings, w.Error())
	}
	restart, err := a.Reload(cfg)
	res.RestartNeeded = restart
	if err != nil {
		a.log.Error("reload failed", "err", err)
		res.Errors = append(res.Errors, err.Error())
		a.setLoad(res)
		return res, nil
	}
	if len(restart) > 0 {
		a.log.Warn("reload: these sections changed and need a restart to apply; the running values stay", "sections", restart)
	}
	res.OK = true
	a.setLoad(res)
	return res, nil
}

func (a *Agent) setLoad(l status.ConfigLoad) {
	a.loadMu.Lock()
	defer a.loadMu.Unlock()
	a.lastLoad = l
}
