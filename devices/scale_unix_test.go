//go:build unix

package devices_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scanagent/scanagent/devices"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestSimEncodersMatchParsers runs the simulators' frames through the
// agent's parsers.
func TestSimEncodersMatchParsers(t *testing.T) {
	weights := []struct {
		w     sim.Weight
		grams int64
	}{
		{sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 1234},
		{sim.Weight{Value: "0.512", Unit: "kg"}, 512},
		{sim.Weight{Value: "5.025", Unit: "lb", Stable: true, Net: true}, 2279},
		{sim.Weight{Value: "-0.20", Unit: "kg", Stable: true}, -200},
		{sim.Weight{Overload: true, Unit: "kg"}, 0},
		{sim.Weight{Underload: true, Unit: "kg", Value: "0.00"}, 0},
	}
	for _, p := range devices.Protocols() {
		for _, tc := range weights {
			frame := sim.Encode(p.Name, tc.w)
			var got []devices.Reading
			var rejects []string
			sr := devices.NewScaleReader(p, func(r devices.Reading) { got = append(got, r) },
				func(reason string) { rejects = append(rejects, reason) })
			sr.Write(frame, time.Now())
			if len(got) != 1 || len(rejects) > 0 {
				t.Errorf("%s %+v: %q gave %+v, rejects %v", p.Name, tc.w, frame, got, rejects)
				continue
			}
			r := got[0]
			if r.Overload != tc.w.Overload || r.Underload != tc.w.Underload || r.Grams != tc.grams ||
				(r.Valid() && (r.Stable != tc.w.Stable || r.Value.String() != tc.w.Value)) {
				t.Errorf("%s %+v: %q gave %+v (%s)", p.Name, tc.w, frame, r, r.Value)
			}
			if r.Valid() && tc.w.Net && r.Basis != devices.BasisNet && p.Name != "mt-sics" && p.Name != "ohaus" {
				t.Errorf("%s %+v: basis %q", p.Name, tc.w, r.Basis)
			}
		}
	}
}

type scaleRecorder struct {
	mu       sync.Mutex
	readings chan devices.Reading
	results  map[string]int
	states   []string
}

func newScaleRecorder() *scaleRecorder {
	return &scaleRecorder{readings: make(chan devices.Reading, 1000), results: map[string]int{}}
}

func (r *scaleRecorder) reading(rd devices.Reading) {
	select {
	case r.readings <- rd:
	default:
	}
}
func (r *scaleRecorder) result(s string) { r.mu.Lock(); r.results[s]++; r.mu.Unlock() }
func (r *scaleRecorder) state(s devices.DeviceState, reason string) {
	r.mu.Lock()
	r.states = append(r.states, string(s)+":"+reason)
	r.mu.Unlock()
}
func (r *scaleRecorder) count(s string) int { r.mu.Lock(); defer r.mu.Unlock(); return r.results[s] }
func (r *scaleRecorder) stateLog() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.states, " | ")
}

// waitGrams waits for a reading of grams (older readings are skipped).
func (r *scaleRecorder) waitGrams(t *testing.T, grams int64, stable bool) devices.Reading {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case rd := <-r.readings:
			if rd.Grams == grams && rd.Stable == stable && rd.Valid() {
				return rd
			}
		case <-deadline:
			r.mu.Lock()
			results := fmt.Sprint(r.results)
			r.mu.Unlock()
			t.Fatalf("no reading of %d g (stable %v) within 10s; results %v", grams, stable, results)
		}
	}
}

// waitFor waits until cond holds, for at most 10s. What the tests wait for
// (a state reported, bytes read from a pseudo-terminal) sends no signal the
// test could select on, so cond is polled.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) { // the poll interval
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func runScale(t *testing.T, o devices.ScaleOptions) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o.BackoffMin, o.BackoffMax = 20*time.Millisecond, 100*time.Millisecond
	o.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	go func() { done <- devices.RunScale(ctx, o) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("RunScale: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("RunScale did not stop on cancel")
		}
	}
}

// TestScalesOverPTY runs every protocol against its simulator on a real
// pseudo-terminal, with the protocol's default mode, then unplugs and
// replugs the scale behind the same path.
func TestScalesOverPTY(t *testing.T) {
	for _, p := range devices.Protocols() {
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			line := sim.Line{Baud: 9600}
			port := devices.PortConfig{Baud: 9600}
			if p.Name == "nci" {
				port.DataBits, port.Parity = 7, "even" // NCI's usual 7E1
			}
			sc, err := sim.NewScale(p.Name, line, sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 30*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			link := filepath.Join(t.TempDir(), "scale")
			if err := sc.Link(link); err != nil {
				t.Fatal(err)
			}
			rec := newScaleRecorder()
			port.Path = link
			stop := runScale(t, devices.ScaleOptions{Port: port, Protocol: p, Poll: !p.Streams,
				PollInterval: 30 * time.Millisecond, Reading: rec.reading, Result: rec.result, State: rec.state})
			defer stop()

			rd := rec.waitGrams(t, 1234, true)
			if rd.Unit != "kg" || rd.Value.String() != "1.234" {
				t.Errorf("reading %+v", rd)
			}
			sc.Set(sim.Weight{Value: "2.50", Unit: "lb"})
			rec.waitGrams(t, 1134, false)
			sc.Set(sim.Weight{Overload: true, Unit: "kg"})
			waitFor(t, "an overload", func() bool {
				select {
				case rd := <-rec.readings:
					return rd.Overload
				default:
					return false
				}
			})

			sc.Unplug()
			waitFor(t, "disconnected", func() bool { return strings.HasPrefix(lastState(rec), "disconnected") })
			sc.Set(sim.Weight{Value: "0.750", Unit: "kg", Stable: true})
			if err := sc.Replug(); err != nil {
				t.Fatal(err)
			}
			rec.waitGrams(t, 750, true)
			if s := rec.stateLog(); !strings.HasPrefix(s, "connected:") || strings.Count(s, "connected:") < 2 {
				t.Errorf("states %s", s)
			}
			if p.Poll != nil && !p.Streams {
				if n := sc.Polls(); n < 3 {
					t.Errorf("scale saw %d polls", n)
				}
			}
		})
	}
}

func lastState(r *scaleRecorder) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return ""
	}
	return r.states[len(r.states)-1]
}

// TestScaleMTSICSContinuous sends SIR and reads the stream.
func TestScaleMTSICSContinuous(t *testing.T) {
	sc, err := sim.NewScale("mt-sics", sim.Line{}, sim.Weight{Value: "3.000", Unit: "kg", Stable: true}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec := newScaleRecorder()
	stop := runScale(t, devices.ScaleOptions{Port: devices.PortConfig{Path: sc.Path()}, Protocol: devices.LookupProtocol("mt-sics"),
		Reading: rec.reading, Result: rec.result})
	defer stop()
	rec.waitGrams(t, 3000, true)
	if got := sc.Received(); !bytes.Equal(got, []byte("SIR\r\n")) {
		t.Errorf("scale received %q, want only SIR", got)
	}
}

// TestScalePollTimeout: a scale that stops answering is counted, and its
// readings come back when it answers again.
func TestScalePollTimeout(t *testing.T) {
	sc, err := sim.NewScale("sma", sim.Line{}, sim.Weight{Value: "1.000", Unit: "kg", Stable: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec := newScaleRecorder()
	stop := runScale(t, devices.ScaleOptions{Port: devices.PortConfig{Path: sc.Path()}, Protocol: devices.LookupProtocol("sma"),
		Poll: true, PollInterval: 20 * time.Millisecond, PollTimeout: 50 * time.Millisecond, Reading: rec.reading, Result: rec.result})
	defer stop()
	rec.waitGrams(t, 1000, true)
	sc.Mute(true)
	waitFor(t, "3 poll timeouts", func() bool { return rec.count(devices.ResultTimeout) >= 3 })
	sc.Set(sim.Weight{Value: "2.000", Unit: "kg", Stable: true})
	sc.Mute(false)
	rec.waitGrams(t, 2000, true)
}

// TestScalePollNow: a poll asked for by a waiting scan goes out at once,
// long before the next periodic poll.
func TestScalePollNow(t *testing.T) {
	sc, err := sim.NewScale("nci", sim.Line{}, sim.Weight{Value: "4.00", Unit: "kg", Stable: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec := newScaleRecorder()
	now := make(chan struct{}, 1)
	stop := runScale(t, devices.ScaleOptions{Port: devices.PortConfig{Path: sc.Path()}, Protocol: devices.LookupProtocol("nci"),
		Poll: true, PollInterval: time.Hour, PollNow: now, Reading: rec.reading, Result: rec.result})
	defer stop()
	rec.waitGrams(t, 4000, true) // the first poll at open
	sc.Set(sim.Weight{Value: "5.00", Unit: "kg", Stable: true})
	now <- struct{}{}
	rec.waitGrams(t, 5000, true)
}

// TestScaleWrongBaud: a scale read at the wrong baud rate gives garbage,
// which is counted and never becomes a weight; the agent keeps reading.
func TestScaleWrongBaud(t *testing.T) {
	sc, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, sim.Weight{Value: "12.34", Unit: "kg", Stable: true}, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec := newScaleRecorder()
	stop := runScale(t, devices.ScaleOptions{Port: devices.PortConfig{Path: sc.Path(), Baud: 19200}, Protocol: devices.LookupProtocol("toledo"),
		Reading: rec.reading, Result: rec.result, State: rec.state})
	waitFor(t, "garbage counted", func() bool { return rec.count("garbage") >= 50 })
	stop()
	if n := rec.count(devices.ResultOK); n != 0 || len(rec.readings) != 0 {
		t.Fatalf("%d readings from garbage", n)
	}
	if s := rec.stateLog(); !strings.HasPrefix(s, "connected:") {
		t.Errorf("states %s", s)
	}
}

// TestPortBusyAndPermission: a port another program holds, and a port the
// agent's user may not open, are error states naming the fix. TIOCEXCL and
// file modes do not stop root, so as root the open is tried by a copy of
// the test binary running as nobody.
func TestPortBusyAndPermission(t *testing.T) {
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	path := sc.Path()

	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	holder, err := devices.OpenPort(devices.PortConfig{Path: path}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := openAsOther(t, path)
	holder.Close()
	if !strings.HasPrefix(got, "error: port busy") {
		t.Errorf("busy port: %q", got)
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		got = openAsOther(t, path)
		if !strings.HasPrefix(got, "error: permission denied") || !strings.Contains(got, "dialout") {
			t.Errorf("permission: %q", got)
		}
	}
}

// openAsOther opens path as another user would and returns the state and
// reason the supervisor would publish.
func openAsOther(t *testing.T, path string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return openAndClassify(path)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "scanagent-open-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "devices.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cmd := exec.Command(bin, "-test.run=^TestHelperOpenPort$")
	cmd.Env = append(os.Environ(), "SCANAGENT_OPEN_PORT="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(l, "RESULT "); ok {
			return s
		}
	}
	t.Fatalf("helper printed no result:\n%s", out)
	return ""
}

func openAndClassify(path string) string {
	p, err := devices.OpenPort(devices.PortConfig{Path: path}, time.Second)
	if err != nil {
		st, reason := devices.Classify(err)
		return string(st) + ": " + reason
	}
	p.Close()
	return "opened"
}

// TestHelperOpenPort is run by openAsOther in a child process.
func TestHelperOpenPort(t *testing.T) {
	path := os.Getenv("SCANAGENT_OPEN_PORT")
	if path == "" {
		t.Skip("helper for TestPortBusyAndPermission, run in a child process")
	}
	fmt.Println("RESULT " + openAndClassify(path))
}

// TestModemLinesNotFatal: DTR and RTS fail on a pseudo-terminal as on
// adapters without them; that is logged and the scale is read.
func TestModemLinesNotFatal(t *testing.T) {
	sc, err := sim.NewScale("cas", sim.Line{}, sim.Weight{Value: "1.000", Unit: "kg", Stable: true}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	rec := newScaleRecorder()
	on := true
	stop := runScale(t, devices.ScaleOptions{Port: devices.PortConfig{Path: sc.Path(), DTR: &on, RTS: &on},
		Protocol: devices.LookupProtocol("cas"), Reading: rec.reading, Result: rec.result, State: rec.state})
	defer stop()
	rec.waitGrams(t, 1000, true)
}
