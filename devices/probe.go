package devices

import (
	"context"
	"fmt"
	"time"
)

// ProbeOptions configure Probe.
type ProbeOptions struct {
	Path string
	// Window is how long each setting is listened to (default 1.5s).
	Window time.Duration
	// Protocol, when set, is the only detector and its polls are sent.
	Protocol *Protocol
	// Scanner, when set, is the only detector (a scanner framer).
	Scanner *FramerConfig
	// Settings to try, in order (default ProbeSettings()).
	Settings []PortConfig
	// Progress, when not nil, is called after each setting.
	Progress func(ProbeResult)
}

// ProbeResult is what one line setting gave.
type ProbeResult struct {
	Settings string         `json:"settings"` // "9600 8N1"
	Port     PortConfig     `json:"-"`
	Bytes    int            `json:"bytes"`
	Valid    map[string]int `json:"valid"`    // frames that decoded, by detector
	Rejected map[string]int `json:"rejected"` // frames that did not, by detector
	Err      string         `json:"error,omitempty"`
}

// Score is the number of valid frames of the detector that did best, and
// that detector; frames of a detector that rejected more than it accepted
// do not count.
func (r ProbeResult) Score() (int, string) {
	best, name := 0, ""
	for d, v := range r.Valid {
		if v > r.Rejected[d] && (v > best || v == best && d < name) {
			best, name = v, d
		}
	}
	return best, name
}

// ProbeSettings are the line settings Probe tries by default, the most
// common first: scanners and scales ship at 9600 8N1 or 115200 8N1, NCI and
// some Ohaus scales use 7 data bits.
func ProbeSettings() []PortConfig {
	var out []PortConfig
	framings := []struct {
		bits   int
		parity string
		stop   string
	}{{8, "none", "1"}, {7, "even", "1"}, {7, "odd", "1"}, {7, "none", "2"}}
	for _, f := range framings {
		for _, baud := range []int{9600, 115200, 19200, 38400, 57600, 4800, 2400, 1200} {
			out = append(out, PortConfig{Baud: baud, DataBits: f.bits, Parity: f.parity, StopBits: f.stop})
		}
	}
	return out
}

// Probe opens the port at each setting in turn, listens (sending polls
// when a poll protocol is given) and counts the frames each detector
// decodes. It returns every result and the index of the best one (-1 when
// no setting gave valid frames).
func Probe(ctx context.Context, o ProbeOptions) ([]ProbeResult, int) {
	if o.Window <= 0 {
		o.Window = 1500 * time.Millisecond
	}
	if o.Settings == nil {
		o.Settings = ProbeSettings()
	}
	var results []ProbeResult
	top := 0
	for _, s := range o.Settings {
		if ctx.Err() != nil {
			break
		}
		s.Path = o.Path
		r := probeOne(ctx, s, o)
		results = append(results, r)
		top = max(top, first(r.Score()))
		if o.Progress != nil {
			o.Progress(r)
		}
	}
	// Frame counts in a window vary (a busy machine opens a port late, a
	// device loses what it sends before the port is set up), and several
	// settings often decode an ASCII protocol equally well (7E1 and 8N1):
	// the first, most common, setting with at least two thirds of the top
	// count is the best.
	for i, r := range results {
		if score := first(r.Score()); top > 0 && score*3 >= top*2 {
			return results, i
		}
	}
	return results, -1
}

func first(n int, _ string) int { return n }

func probeOne(ctx context.Context, s PortConfig, o ProbeOptions) ProbeResult {
	r := ProbeResult{Settings: s.String(), Port: s, Valid: map[string]int{}, Rejected: map[string]int{}}
	port, err := OpenPort(s, 20*time.Millisecond)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer port.Close()
	port.ResetInputBuffer() // bytes read at the previous setting

	type detector struct {
		name   string
		write  func([]byte, time.Time)
		idle   func(time.Time)
		finish func()
	}
	var ds []detector
	addScale := func(p *Protocol) {
		sr := NewScaleReader(p, func(Reading) { r.Valid[p.Name]++ }, func(reason string) {
			if reason != ErrNoWeight.Reason {
				r.Rejected[p.Name]++
			}
		})
		ds = append(ds, detector{p.Name, sr.Write, func(time.Time) {}, func() {}})
	}
	addScanner := func(cfg FramerConfig) {
		f := NewFramer(cfg, func(Frame) { r.Valid["scanner"]++ }, func(string) { r.Rejected["scanner"]++ })
		ds = append(ds, detector{"scanner", f.Write, f.Idle, func() {
			if len(cfg.Terminator) == 0 {
				f.End()
			}
		}})
	}
	switch {
	case o.Protocol != nil:
		addScale(o.Protocol)
	case o.Scanner != nil:
		addScanner(*o.Scanner)
	default:
		for _, p := range Protocols() {
			addScale(p)
		}
		// Frame on idle gaps: any suffix (CR, LF, CR LF, none) works.
		addScanner(FramerConfig{IdleGap: 50 * time.Millisecond})
	}
	var poll []byte
	if o.Protocol != nil && !o.Protocol.Streams {
		poll = o.Protocol.Poll
	}
	buf := make([]byte, 256)
	end := time.Now().Add(o.Window)
	var nextPoll time.Time
	for now := time.Now(); now.Before(end) && ctx.Err() == nil; now = time.Now() {
		if poll != nil && !now.Before(nextPoll) {
			if _, err := port.Write(poll); err != nil {
				r.Err = fmt.Sprintf("write poll: %s", Explain(err))
				break
			}
			nextPoll = now.Add(200 * time.Millisecond)
		}
		n, err := port.Read(buf)
		at := time.Now()
		r.Bytes += n
		for _, d := range ds {
			if n > 0 {
				d.write(buf[:n], at)
			} else {
				d.idle(at)
			}
		}
		if err != nil {
			r.Err = Explain(err)
			break
		}
	}
	for _, d := range ds {
		d.finish()
	}
	return r
}
