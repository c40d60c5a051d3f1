//go:build unix

package devices_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scanagent/scanagent/devices"
	"github.com/scanagent/scanagent/devices/sim"
)

type recorder struct {
	mu     sync.Mutex
	frames []string
	states []string
	raw    []byte // everything read from the port
	ch     chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 100)} }

func (r *recorder) frame(f devices.Frame) {
	r.mu.Lock()
	r.frames = append(r.frames, f.AIM+"|"+f.Data)
	r.mu.Unlock()
	r.ch <- f.AIM + "|" + f.Data
}

func (r *recorder) state(s devices.DeviceState, reason string) {
	r.mu.Lock()
	r.states = append(r.states, string(s))
	r.mu.Unlock()
}

func (r *recorder) rawRead(p []byte, _ time.Time) {
	r.mu.Lock()
	r.raw = append(r.raw, p...)
	r.mu.Unlock()
}

// stateCount is how many times the state s was reported.
func (r *recorder) stateCount(s devices.DeviceState) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, st := range r.states {
		if st == string(s) {
			n++
		}
	}
	return n
}

// hasRead reports whether what was read from the port ends with p.
func (r *recorder) hasRead(p string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.HasSuffix(string(r.raw), p)
}

func (r *recorder) expect(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-r.ch:
		if got != want {
			t.Fatalf("frame %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no frame %q within 10s", want)
	}
}

// TestScannerOverPTY runs the port supervisor on a real pseudo-terminal:
// the port is missing at start, appears, is unplugged and replugged behind
// the same path; frames are read throughout.
func TestScannerOverPTY(t *testing.T) {
	link := filepath.Join(t.TempDir(), "usb-scanner")
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- devices.RunScanner(ctx, devices.ScannerOptions{
			Port:       devices.PortConfig{Path: link, Baud: 115200},
			Framer:     devices.FramerConfig{Terminator: []byte("\r\n"), MaxLength: 256},
			BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
			Frame: rec.frame, State: rec.state, Raw: rec.rawRead, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()

	// The port is missing: the open fails, and the supervisor retries.
	waitFor(t, "the missing port reported", func() bool { return rec.stateCount(devices.StateDisconnected) >= 1 })
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Link(link); err != nil {
		t.Fatal(err)
	}
	// Resend until the supervisor has opened the port (writes before that
	// sit in the pty and are read at open, so one send is enough; the loop
	// only guards against a slow open).
	sc.Send("]C0", "RR473124829GB")
	rec.expect(t, "]C0|RR473124829GB")
	// Fragmented on the wire: each piece is read before the next is sent.
	for _, piece := range []string{"]C01010002", "4010003\r", "\n"} {
		sc.Write([]byte(piece))
		waitFor(t, fmt.Sprintf("%q read", piece), func() bool { return rec.hasRead(piece) })
	}
	rec.expect(t, "]C0|10100024010003")

	sc.Unplug()
	waitFor(t, "the unplug noticed", func() bool { return rec.stateCount(devices.StateDisconnected) >= 2 })
	if err := sc.Replug(); err != nil {
		t.Fatal(err)
	}
	sc.Send("]C0", "RR287043775IN")
	rec.expect(t, "]C0|RR287043775IN")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunScanner returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RunScanner did not stop on cancel")
	}
	rec.mu.Lock()
	states := strings.Join(rec.states, ",")
	rec.mu.Unlock()
	// missing at start, connected, lost on unplug, connected again, stopped.
	if !strings.HasPrefix(states, "disconnected,connected,disconnected") || !strings.Contains(states[len("disconnected,connected,disconnected"):], "connected") || !strings.HasSuffix(states, "disconnected") {
		t.Fatalf("states %s", states)
	}
}

func TestOpenPortErrorsNameThePort(t *testing.T) {
	_, err := devices.OpenPort(devices.PortConfig{Path: "/nonexistent/ttyUSB9"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ttyUSB9") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v", err)
	}
	_, err = devices.OpenPort(devices.PortConfig{Path: "/dev/null"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "not a serial port") {
		t.Fatalf("/dev/null: err = %v", err)
	}
}

// TestScannerWrongBaud: a scanner read at the wrong baud rate gives
// garbage, which is rejected and counted by reason; never a frame.
func TestScannerWrongBaud(t *testing.T) {
	sc, err := sim.NewScannerLine("\r\n", sim.Line{Baud: 9600})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec := newRecorder()
	var mu sync.Mutex
	rejects := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- devices.RunScanner(ctx, devices.ScannerOptions{
			Port:   devices.PortConfig{Path: sc.Path(), Baud: 115200},
			Framer: devices.FramerConfig{Terminator: []byte("\r\n"), MaxLength: 64, StaleAfter: 30 * time.Millisecond},
			Frame:  rec.frame, State: rec.state,
			Reject: func(r string) { mu.Lock(); rejects[r]++; mu.Unlock() },
		})
	}()
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, v := range rejects {
			n += v
		}
		return n
	}
	// Garbled scans, each sent once the one before was rejected: each is a
	// partial frame that never gets its terminator, rejected once the line
	// is quiet. The port is open first: what a device sends before then is
	// lost, as on a real line.
	waitFor(t, "the port open", func() bool { return rec.stateCount(devices.StateConnected) > 0 })
	for total() < 10 {
		n := total()
		sc.Send("]C0", "RR473124829GB")
		waitFor(t, "a reject", func() bool { return total() > n })
	}
	cancel()
	<-done
	if len(rec.frames) != 0 {
		t.Fatalf("frames from a wrong baud rate: %q", rec.frames)
	}
	t.Logf("rejects by reason: %v", rejects)
}
