package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

// StationCounters are one station's totals since start.
type StationCounters struct {
	Scans        uint64            `json:"scans"`         // accepted (durable)
	Invalid      uint64            `json:"invalid"`       // accepted with valid=false
	AppendFailed uint64            `json:"append_failed"` // read but not made durable
	Rejected     map[string]uint64 `json:"rejected"`      // frames discarded, by reason
}

// DeviceStatus is a device's last known state.
type DeviceStatus struct {
	Port   string `json:"port"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Since  string `json:"since"`
}

// station turns one scanner's frames into durable scan events.
type station struct {
	cfg   config.Station
	agent config.Agent
	q     *buffer.Queue
	log   *slog.Logger
	now   func() time.Time

	scans, invalid, appendFailed atomic.Uint64

	mu       sync.Mutex
	rejected map[string]uint64
	scanner  DeviceStatus
}

func newStation(cfg config.Station, agent config.Agent, q *buffer.Queue, log *slog.Logger) *station {
	return &station{
		cfg:      cfg,
		agent:    agent,
		q:        q,
		log:      log.With("station", cfg.ID),
		now:      time.Now,
		rejected: map[string]uint64{},
		scanner:  DeviceStatus{Port: cfg.Scanner.Port, State: string(devices.StateDisconnected), Since: Timestamp(time.Now())},
	}
}

func (s *station) run(ctx context.Context) error {
	sc := s.cfg.Scanner
	return devices.RunScanner(ctx, devices.ScannerOptions{
		Port: devices.PortConfig{
			Path:     sc.Port,
			Baud:     sc.Baud,
			DataBits: sc.DataBits,
			Parity:   sc.Parity,
			StopBits: string(sc.StopBits),
		},
		Framer:  devices.FramerConfig{Terminator: sc.TerminatorBytes(), MaxLength: sc.MaxLength},
		IdleGap: sc.IdleGap.D(),
		Log:     s.log.With("device", "scanner"),
		Frame:   s.accept,
		Reject:  s.reject,
		State:   s.setState,
	})
}

// accept makes one frame a durable scan event. It returns once the event is
// synced to disk (or failed to be).
func (s *station) accept(f devices.Frame) {
	res := parcel.Classify(f.Data, f.AIM)
	ev := Event{
		Schema:    Schema,
		Agent:     s.agent.ID,
		Site:      s.agent.Site,
		Station:   s.cfg.ID,
		Event:     s.cfg.Event,
		ScannedAt: Timestamp(f.At),
		Barcode:   f.Data,
		AIM:       f.AIM,
		Kind:      string(res.Kind),
		Valid:     res.Valid,
		Reason:    res.Reason,
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New() // only when the system's random source fails
	}
	ev.ID = id.String()
	seq, err := s.q.Append(func(seq uint64) ([]byte, error) {
		ev.Seq = seq
		payload, err := json.Marshal(&ev)
		if err != nil {
			return nil, err
		}
		return encodeRecord(make([]byte, 0, len(payload)+1+len(s.cfg.ID)), s.cfg.ID, payload), nil
	})
	if err != nil {
		s.appendFailed.Add(1)
		s.log.Error("scan NOT accepted: buffer append failed", "barcode", f.Data, "err", err)
		return
	}
	s.scans.Add(1)
	if !res.Valid {
		s.invalid.Add(1)
	}
	s.log.Debug("scan accepted", "seq", seq, "barcode", f.Data, "kind", res.Kind, "valid", res.Valid, "reason", res.Reason)
}

func (s *station) reject(reason string) {
	s.mu.Lock()
	s.rejected[reason]++
	s.mu.Unlock()
	s.log.Debug("scanner frame rejected", "reason", reason)
}

func (s *station) setState(st devices.DeviceState, reason string) {
	s.mu.Lock()
	s.scanner.State, s.scanner.Reason, s.scanner.Since = string(st), reason, Timestamp(s.now())
	s.mu.Unlock()
}

func (s *station) counters() (StationCounters, DeviceStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rej := make(map[string]uint64, len(s.rejected))
	for k, v := range s.rejected {
		rej[k] = v
	}
	return StationCounters{
		Scans:        s.scans.Load(),
		Invalid:      s.invalid.Load(),
		AppendFailed: s.appendFailed.Load(),
		Rejected:     rej,
	}, s.scanner
}
