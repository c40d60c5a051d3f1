package station

import (
	"time"

	"github.com/scanagent/scanagent/devices"
)

// dedupEntry is a code in the double-read filter.
type dedupEntry struct {
	last  time.Time // its last read
	owner time.Time // the read that was made a scan (not suppressed)
}

// double reports whether f repeats the station's previous read of the same
// code within dedup_window (counted), and records the read. The window
// slides: a code read again and again (a parcel left under a scanner in
// presentation mode) stays suppressed until it has not been read for the
// whole window. A scan the buffer refuses takes its code out again
// (forget), so that the operator's rescan is not suppressed.
func (s *Station) double(f devices.Frame) bool {
	window := s.cfg.DedupWindow.D()
	if window <= 0 {
		return false
	}
	s.dedupMu.Lock()
	defer s.dedupMu.Unlock()
	e, seen := s.dedup[f.Data]
	prev := e.last
	suppress := seen && f.At.Sub(prev) < window && !f.At.Before(prev)
	if suppress {
		e.last = f.At
	} else {
		e = dedupEntry{last: f.At, owner: f.At}
	}
	s.dedup[f.Data] = e
	// Forget codes outside the window once the map has doubled since the
	// last sweep: a sweep per scan would cost O(codes in the window).
	if len(s.dedup) > s.dedupSweep {
		for code, e := range s.dedup {
			if f.At.Sub(e.last) >= window {
				delete(s.dedup, code)
			}
		}
		s.dedupSweep = max(256, 2*len(s.dedup))
	}
	if suppress {
		s.n.suppressed.Add(1)
		s.log.Debug("double read suppressed", "barcode", f.Data, "after", f.At.Sub(prev))
	}
	return suppress
}

// forget takes the code of a scan the buffer refused out of the double-read
// filter: the operator is told to scan again (bad-read signal, "scan NOT
// accepted"), and that rescan must become a scan, not a suppressed double
// read. A newer scan of the same code keeps its entry.
func (s *Station) forget(code string, read time.Time) {
	s.dedupMu.Lock()
	if e, ok := s.dedup[code]; ok && e.owner.Equal(read) {
		delete(s.dedup, code)
	}
	s.dedupMu.Unlock()
}
