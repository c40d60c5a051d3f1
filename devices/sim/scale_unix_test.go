//go:build unix

package sim_test

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/scanagent/scanagent/devices"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestScaleBeforeOpen: what a scale streams before any program has opened
// its port is lost, as on a real line; the first bytes the agent reads are
// whole frames at the right baud rate, never garbage. (A pseudo-terminal
// would keep them, garbled at its default speed, for the first reader.)
func TestScaleBeforeOpen(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the line settings are read back on Linux only")
	}
	w := sim.Weight{Value: "1.234", Unit: "kg", Stable: true}
	sc, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, w, time.Hour) // no stream of its own
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	for range 10 {
		if err := sc.Write(sim.Encode("toledo", w)); err != nil {
			t.Fatal(err)
		}
	}

	port, err := devices.OpenPort(devices.PortConfig{Path: sc.Path(), Baud: 9600}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	var results []string
	readings := 0
	reader := devices.NewScaleReader(devices.LookupProtocol("toledo"),
		func(r devices.Reading) {
			readings++
			results = append(results, devices.ResultOK)
			if r.Grams != 1234 {
				t.Errorf("reading %+v", r)
			}
		},
		func(reason string) { results = append(results, reason) })
	buf := make([]byte, 256)
	for deadline := time.Now().Add(10 * time.Second); readings < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%d readings; results %v", readings, results)
		}
		// Frames sent once the port is open arrive.
		if err := sc.Write(sim.Encode("toledo", w)); err != nil {
			t.Fatal(err)
		}
		n, err := port.Read(buf)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		reader.Write(buf[:n], time.Now())
	}
	for _, r := range results {
		if r != devices.ResultOK {
			t.Fatalf("results %v: the frames sent before the port was opened were read", results)
		}
	}
}

// TestScannerBeforeOpen: a device that accepts any line setting keeps what
// it sends before the port is opened, for the first reader (tests send
// scans before the agent has opened the port).
func TestScannerBeforeOpen(t *testing.T) {
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Send("]C0", "RR473124829GB"); err != nil {
		t.Fatal(err)
	}
	port, err := devices.OpenPort(devices.PortConfig{Path: sc.Path(), Baud: 115200}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []byte
	buf := make([]byte, 64)
	for !bytes.Contains(got, []byte("\r\n")) {
		if ctx.Err() != nil {
			t.Fatalf("read %q", got)
		}
		n, err := port.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "]C0RR473124829GB\r\n" {
		t.Fatalf("read %q", got)
	}
}
