// Package devices owns everything that touches a serial port: opening and
// supervising ports (reopen with backoff after unplug or failure), cutting a
// scanner's byte stream into barcode frames, and the simulators used by the
// demo and tests. Parsers here are pure; port I/O stays in the supervisor.
//
// Imported by agent (stations) and cmd/scanagent.
package devices

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"

	"go.bug.st/serial"
)

// PortConfig is a serial port path and its line settings.
type PortConfig struct {
	Path     string
	Baud     int    // default 9600
	DataBits int    // 5..8, default 8
	Parity   string // none|odd|even|mark|space
	StopBits string // "1" | "1.5" | "2"
	// DTR and RTS, when not nil, set the modem control lines after
	// opening. Adapters and pseudo-terminals without them only log it.
	DTR, RTS *bool
}

// Mode converts the settings to the serial library's mode.
func (c PortConfig) Mode() (*serial.Mode, error) {
	m := &serial.Mode{BaudRate: c.Baud, DataBits: c.DataBits}
	if m.BaudRate == 0 {
		m.BaudRate = 9600
	}
	if m.DataBits == 0 {
		m.DataBits = 8
	}
	switch c.Parity {
	case "", "none":
		m.Parity = serial.NoParity
	case "odd":
		m.Parity = serial.OddParity
	case "even":
		m.Parity = serial.EvenParity
	case "mark":
		m.Parity = serial.MarkParity
	case "space":
		m.Parity = serial.SpaceParity
	default:
		return nil, fmt.Errorf("unknown parity %q", c.Parity)
	}
	switch c.StopBits {
	case "", "1":
		m.StopBits = serial.OneStopBit
	case "1.5":
		m.StopBits = serial.OnePointFiveStopBits
	case "2":
		m.StopBits = serial.TwoStopBits
	default:
		return nil, fmt.Errorf("unknown stop bits %q", c.StopBits)
	}
	return m, nil
}

// String gives the line settings as technicians write them: "9600 8N1".
func (c PortConfig) String() string {
	m, err := c.Mode()
	if err != nil {
		return "invalid settings"
	}
	parity := map[serial.Parity]string{serial.NoParity: "N", serial.OddParity: "O", serial.EvenParity: "E",
		serial.MarkParity: "M", serial.SpaceParity: "S"}[m.Parity]
	stop := map[serial.StopBits]string{serial.OneStopBit: "1", serial.OnePointFiveStopBits: "1.5", serial.TwoStopBits: "2"}[m.StopBits]
	return fmt.Sprintf("%d %d%s%s", m.BaudRate, m.DataBits, parity, stop)
}

// DeviceState is a port's state as published on P/devices/...
type DeviceState string

const (
	StateConnected    DeviceState = "connected"
	StateDisconnected DeviceState = "disconnected"
	StateError        DeviceState = "error"
)

// OpenPort opens the port with its settings and a read timeout. Modem
// control lines are left alone: adapters and pseudo-terminals that lack them
// must not fail here.
func OpenPort(c PortConfig, readTimeout time.Duration) (serial.Port, error) {
	mode, err := c.Mode()
	if err != nil {
		return nil, fmt.Errorf("serial port %s: %w: %w", c.Path, errBadMode, err)
	}
	sp, err := serial.Open(c.Path, mode)
	if err != nil {
		return nil, &PortError{Path: c.Path, Err: err}
	}
	p := pollable(sp, c.Path) // reads wait in the poller (pollport_unix.go)
	if err := p.SetReadTimeout(readTimeout); err != nil {
		p.Close()
		return nil, fmt.Errorf("serial port %s: set read timeout: %w", c.Path, err)
	}
	return p, nil
}

// Classify tells whether a port error needs a technician (StateError:
// busy, permission, not a serial port, bad settings) or may pass by itself
// (StateDisconnected: missing or unplugged), with the explanation.
func Classify(err error) (DeviceState, string) {
	msg := Explain(err)
	var pe *serial.PortError
	if errors.As(err, &pe) {
		switch pe.Code() {
		case serial.PortBusy, serial.PermissionDenied, serial.InvalidSerialPort,
			serial.InvalidSpeed, serial.InvalidDataBits, serial.InvalidParity, serial.InvalidStopBits:
			return StateError, msg
		}
		return StateDisconnected, msg
	}
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EBUSY) || errors.Is(err, errBadMode) {
		return StateError, msg
	}
	return StateDisconnected, msg
}

var errBadMode = errors.New("invalid line settings")

// Explain turns a port error into a message a technician can act on.
func Explain(err error) string {
	var pe *serial.PortError
	if errors.As(err, &pe) {
		switch pe.Code() {
		case serial.PortBusy:
			return "port busy: another program has it open (stop it, or check for a second agent)"
		case serial.PermissionDenied:
			return "permission denied: add the agent's user to the dialout group (usermod -aG dialout USER)"
		case serial.PortNotFound:
			return "port not found: check the cable and the name (ls /dev/serial/by-id)"
		case serial.InvalidSerialPort:
			return "not a serial port: " + pe.Error()
		case serial.InvalidSpeed:
			return "baud rate not supported by this port: " + pe.Error()
		case serial.PortClosed:
			return "port closed (device unplugged?)"
		}
		return pe.Error()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "port not found: check the cable and the name (ls /dev/serial/by-id)"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied: add the agent's user to the dialout group (usermod -aG dialout USER)"
	case errors.Is(err, syscall.EIO):
		return "I/O error (device unplugged?)"
	case errors.Is(err, syscall.EBUSY):
		return "port busy: another program has it open (stop it, or check for a second agent)"
	}
	return err.Error()
}

// PortError is a failure to open a port, explained for a technician.
type PortError struct {
	Path string
	Err  error
}

func (e *PortError) Error() string { return "serial port " + e.Path + ": " + Explain(e.Err) }
func (e *PortError) Unwrap() error { return e.Err }
