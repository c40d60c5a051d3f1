//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.bug.st/serial/enumerator"

	"github.com/scanagent/scanagent/devices/sim"
)

// TestPortsByIDAlias joins enumerated ports with /dev/serial/by-id style
// links, including a link to a device the enumerator did not list.
func TestPortsByIDAlias(t *testing.T) {
	a, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	os.Symlink(a.Path(), filepath.Join(dir, "usb-Honeywell_Imaging___Mobility_1900-if00"))
	os.Symlink(b.Path(), filepath.Join(dir, "usb-FTDI_FT232R_USB_UART_A10KZ3B1-if00-port0"))
	os.Symlink("/nonexistent/tty", filepath.Join(dir, "usb-gone"))
	list := []*enumerator.PortDetails{{Name: a.Path(), IsUSB: true, VID: "0C2E", PID: "0B81", SerialNumber: "17012B1234",
		Manufacturer: "Honeywell Imaging & Mobility", Product: "1900"}, {Name: "/dev/ttyS0"}}
	got := listPorts(list, dir)
	if len(got) != 3 {
		t.Fatalf("ports %+v", got)
	}
	byPort := map[string]portInfo{}
	for _, p := range got {
		byPort[p.Port] = p
	}
	if p := byPort[a.Path()]; p.ByID != filepath.Join(dir, "usb-Honeywell_Imaging___Mobility_1900-if00") || p.VID != "0C2E" || p.Product != "1900" {
		t.Errorf("honeywell %+v", p)
	}
	if p := byPort[b.Path()]; !strings.HasSuffix(p.ByID, "A10KZ3B1-if00-port0") || !p.USB {
		t.Errorf("link-only device %+v", p)
	}
	if p := byPort["/dev/ttyS0"]; p.ByID != "" || p.USB {
		t.Errorf("ttyS0 %+v", p)
	}
}

// TestPortsCommand runs the real enumerator of this machine.
func TestPortsCommand(t *testing.T) {
	code, out, errs := runCmd(t, "ports", "--json")
	var ports []portInfo
	if code != 0 || json.Unmarshal([]byte(out), &ports) != nil {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	code, out, _ = runCmd(t, "ports")
	if code != 0 || !(strings.HasPrefix(out, "PORT") || strings.HasPrefix(out, "no serial ports found")) {
		t.Fatalf("exit %d, table:\n%s", code, out)
	}
}

// syncBuf is a bytes.Buffer safe for a writer and a reader.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// monitor runs "scanagent monitor" until it returns, with stdout and
// stderr readable while it runs.
func monitor(t *testing.T, args ...string) (out *syncBuf, wait func() int) {
	t.Helper()
	out = &syncBuf{}
	errb := &syncBuf{}
	done := make(chan int, 1)
	go func() {
		err := run(context.Background(), append([]string{"monitor"}, args...), out, errb)
		done <- exitCode(err, errb)
	}()
	return out, func() int {
		select {
		case code := <-done:
			if code != 0 {
				t.Logf("stderr: %s", errb.String())
			}
			return code
		case <-time.After(60 * time.Second):
			t.Fatal("monitor did not stop")
			return -1
		}
	}
}

func waitOutput(t *testing.T, out *syncBuf, want string) {
	t.Helper()
	if !poll(10*time.Second, func() bool { return strings.Contains(out.String(), want) }) {
		t.Fatalf("no %q in output:\n%s", want, out.String())
	}
}

func TestMonitorScanner(t *testing.T) {
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	out, wait := monitor(t, sc.Path(), "--baud", "115200", "--raw", "--duration", "3s")
	waitOutput(t, out, "monitoring "+sc.Path()+" as a scanner at 115200 8N1")
	sc.Send("]C0", "RR473124829GB")
	sc.Send("]C0", "RR473124828GB")
	sc.Write([]byte("bad\x07frame\r\n"))
	waitOutput(t, out, "rejected  control")
	if code := wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	text := out.String()
	for _, want := range []string{
		`scan      ]C0  "RR473124829GB"          s10 valid`,
		`scan      ]C0  "RR473124828GB"          s10 INVALID check_digit`,
		"raw       5d433052523437333132343832394742",
		"port      connected",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
}

func TestMonitorScalePollJSON(t *testing.T) {
	sc, err := sim.NewScale("sma", sim.Line{Baud: 9600}, sim.Weight{Value: "5.025", Unit: "lb", Stable: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	out, wait := monitor(t, sc.Path(), "--protocol", "sma", "--poll-interval", "50ms", "--json", "--duration", "1s")
	if code := wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	weights := 0
	sc2 := bufio.NewScanner(strings.NewReader(out.String()))
	for sc2.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc2.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc2.Text())
		}
		if m["type"] == "weight" {
			weights++
			if m["grams"] != 2279.0 || m["unit"] != "lb" || m["value"] != "5.025" || m["stable"] != true {
				t.Errorf("weight %v", m)
			}
		}
	}
	if weights < 5 || sc.Polls() < 5 {
		t.Errorf("%d weights for %d polls:\n%s", weights, sc.Polls(), out.String())
	}
}

// TestMonitorProbe finds the baud rate of a scale that streams at 19200,
// with its protocol given and with every decoder.
func TestMonitorProbe(t *testing.T) {
	sc, err := sim.NewScale("toledo", sim.Line{Baud: 19200}, sim.Weight{Value: "12.34", Unit: "kg", Stable: true}, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	for _, args := range [][]string{{"--protocol", "toledo"}, nil} {
		out, wait := monitor(t, append([]string{sc.Path(), "--probe", "--bauds", "9600,19200,38400", "--window", "250ms"}, args...)...)
		if code := wait(); code != 0 {
			t.Fatalf("exit %d:\n%s", code, out.String())
		}
		text := out.String()
		t.Logf("probe %v:\n%s", args, text)
		if !strings.Contains(text, "best: 19200 8N1 (") || !strings.Contains(text, "toledo frames). In the config:") ||
			!strings.Contains(text, "  baud: 19200\n") || !strings.Contains(text, "  protocol: toledo\n") {
			t.Errorf("probe %v:\n%s", args, text)
		}
		if !strings.Contains(text, "9600 8N1") || !strings.Contains(text, "garbage") {
			t.Errorf("probe %v does not show the failing settings:\n%s", args, text)
		}
	}
}

func TestMonitorUsage(t *testing.T) {
	for _, args := range [][]string{{"monitor"}, {"monitor", "/dev/x", "--protocol", "nope"}, {"monitor", "/dev/x", "--protocol", "toledo", "--mode", "poll"},
		{"monitor", "/dev/x", "--parity", "sideways"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	code, _, errs := runCmd(t, "monitor", "/nonexistent/ttyUSB3")
	if code != 1 || !strings.Contains(errs, "/nonexistent/ttyUSB3: port not found") {
		t.Errorf("missing port: exit %d, %s", code, errs)
	}
}
