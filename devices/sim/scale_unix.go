//go:build unix

package sim

import (
	"bytes"
	"sync"
	"time"
)

// Scale is a simulated weighing scale behind a pseudo-terminal. Poll
// protocols answer the agent's requests; streaming ones (and MT-SICS after
// SIR, Ohaus after CP) send readings every interval.
type Scale struct {
	*Device
	protocol string
	interval time.Duration

	mu        sync.Mutex
	w         Weight
	mute      bool
	streaming bool
	pending   []byte
	polls     int
	stop      chan struct{}
	done      chan struct{}
}

// NewScale creates a scale speaking protocol at line, showing w. For a
// streaming protocol it sends a reading every interval (default 100ms).
func NewScale(protocol string, line Line, w Weight, interval time.Duration) (*Scale, error) {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	s := &Scale{protocol: protocol, interval: interval, w: w, stop: make(chan struct{}), done: make(chan struct{})}
	// Toledo and CAS stream; an Ohaus prints continuously when set up
	// for it (auto-print), which the simulator is.
	s.streaming = protocol == "toledo" || protocol == "cas" || protocol == "ohaus"
	d, err := NewDevice(line, s.command)
	if err != nil {
		return nil, err
	}
	s.Device = d
	go s.stream()
	return s, nil
}

// Set changes what the scale shows.
func (s *Scale) Set(w Weight) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

// Mute makes the scale ignore requests and stop streaming (a scale
// switched off behind a powered adapter).
func (s *Scale) Mute(m bool) {
	s.mu.Lock()
	s.mute = m
	s.mu.Unlock()
}

// Polls returns how many weight requests the scale has answered or
// ignored.
func (s *Scale) Polls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls
}

// Close stops the scale and releases its pseudo-terminal.
func (s *Scale) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return s.Device.Close()
}

func (s *Scale) stream() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		on, w := s.streaming && !s.mute, s.w
		s.mu.Unlock()
		if on {
			s.Write(Encode(s.protocol, w)) // fails while unplugged
		}
	}
}

// command handles what the agent writes: requests end with CR (and LF).
func (s *Scale) command(p []byte) {
	s.mu.Lock()
	s.pending = append(s.pending, p...)
	var cmds []string
	for {
		i := bytes.IndexByte(s.pending, '\r')
		if i < 0 {
			break
		}
		cmds = append(cmds, string(bytes.Trim(s.pending[:i], "\n")))
		s.pending = bytes.TrimPrefix(s.pending[i+1:], []byte("\n"))
	}
	if len(s.pending) > 64 {
		s.pending = s.pending[:0]
	}
	mute, w := s.mute, s.w
	s.mu.Unlock()
	for _, c := range cmds {
		s.mu.Lock()
		s.polls++
		s.mu.Unlock()
		if mute {
			continue
		}
		if out := s.answer(c, w); out != nil {
			s.Write(out)
		}
	}
}

func (s *Scale) answer(cmd string, w Weight) []byte {
	switch s.protocol {
	case "mt-sics":
		switch cmd {
		case "SI":
			return Encode("mt-sics", w)
		case "S":
			if !w.Stable && !w.Overload && !w.Underload {
				return []byte("S I\r\n")
			}
			return Encode("mt-sics", w)
		case "SIR":
			s.setStreaming(true)
			return nil
		case "@":
			s.setStreaming(false)
			return []byte("I4 A \"0123456789\"\r\n")
		case "Z":
			return []byte("Z A\r\n")
		}
		return []byte("ES\r\n")
	case "sma":
		if cmd == "W" {
			return Encode("sma", w)
		}
		return []byte("\n?\r")
	case "nci":
		switch cmd {
		case "W":
			return Encode("nci", w)
		case "S", "Z":
			e := Encode("nci", w)
			return append([]byte("\n"), e[bytes.Index(e, []byte("\r\n"))+2:]...)
		}
		return []byte("\n?\r\x03")
	case "ohaus":
		switch cmd {
		case "IP", "P":
			return Encode("ohaus", w)
		case "CP":
			s.setStreaming(true)
		case "0P":
			s.setStreaming(false)
		}
	}
	return nil
}

func (s *Scale) setStreaming(on bool) {
	s.mu.Lock()
	s.streaming = on
	s.mu.Unlock()
}
