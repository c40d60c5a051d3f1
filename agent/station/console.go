package station

import (
	"errors"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/devices"
)

// Console is what a station tells the technician console: what became of
// each scan, and where its devices' frames are kept (the serial tap). It
// must not wait.
type Console interface {
	// Scan is called once per scan submitted: accepted with its seq (err
	// nil) or not accepted. It must not keep sc.
	Scan(seq uint64, sc *record.Scan, err error)
	// Tap is the tap of this station's scanner or scale (nil: none).
	Tap(station, device string) *devices.Tap
}

func (s *Station) tell(sc *record.Scan, seq uint64, err error) {
	if s.console != nil && sc != nil {
		s.console.Scan(seq, sc, err)
	}
}

func (s *Station) tap(device string) *devices.Tap {
	if s.console == nil {
		return nil
	}
	return s.console.Tap(s.cfg.ID, device)
}

// Errors of PollScale.
var (
	ErrNoScale      = errors.New("the station has no scale")
	ErrScaleStreams = errors.New("the scale streams its readings (mode stream): there is nothing to poll")
)

// PollScale asks the scale for a reading now (a scale in poll mode).
func (s *Station) PollScale() error {
	switch {
	case s.cfg.Scale == nil:
		return ErrNoScale
	case s.cfg.Scale.Mode != "poll":
		return ErrScaleStreams
	}
	select {
	case s.pollNow <- struct{}{}:
	default: // a poll is already asked for
	}
	return nil
}
