package devices

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// scaleResult is one line of a golden file: a reading or the reason a frame
// gave none.
type scaleResult struct {
	Value     string `json:"value,omitempty"`
	Grams     int64  `json:"grams,omitempty"`
	Unit      string `json:"unit,omitempty"`
	Stable    bool   `json:"stable,omitempty"`
	Overload  bool   `json:"overload,omitempty"`
	Underload bool   `json:"underload,omitempty"`
	Basis     string `json:"basis,omitempty"`
	Reject    string `json:"reject,omitempty"`
}

func (r scaleResult) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// runTrace feeds a trace through a ScaleReader via r and returns the
// results.
func runTrace(t *testing.T, p *Protocol, r io.Reader) []scaleResult {
	t.Helper()
	var out []scaleResult
	sr := NewScaleReader(p, func(rd Reading) {
		if rd.At.IsZero() {
			t.Errorf("reading without a time: %+v", rd)
		}
		out = append(out, scaleResult{Value: rd.Value.String(), Grams: rd.Grams, Unit: rd.Unit, Stable: rd.Stable,
			Overload: rd.Overload, Underload: rd.Underload, Basis: rd.Basis})
	}, func(reason string) { out = append(out, scaleResult{Reject: reason}) })
	buf := make([]byte, 64)
	at := time.Unix(1700000000, 0)
	for {
		n, err := r.Read(buf)
		sr.Write(buf[:n], at)
		if err == iotest.ErrTimeout {
			continue
		}
		if err != nil {
			break
		}
	}
	sr.End()
	return out
}

func TestScaleTraces(t *testing.T) {
	for _, p := range Protocols() {
		traces, _ := filepath.Glob(filepath.Join("testdata", p.Name, "*.trace"))
		if len(traces) < 4 {
			t.Errorf("%s: only %d traces", p.Name, len(traces))
		}
		for _, trace := range traces {
			name := p.Name + "/" + strings.TrimSuffix(filepath.Base(trace), ".trace")
			t.Run(name, func(t *testing.T) {
				data, err := os.ReadFile(trace)
				if err != nil {
					t.Fatal(err)
				}
				golden := strings.TrimSuffix(trace, ".trace") + ".golden"
				want := runTrace(t, p, bytes.NewReader(data))
				var text strings.Builder
				for _, r := range want {
					fmt.Fprintln(&text, r)
				}
				if *update {
					if err := os.WriteFile(golden, []byte(text.String()), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				expected, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./devices -run TestScaleTraces -update)", err)
				}
				if got := text.String(); got != string(expected) {
					t.Errorf("results differ from %s:\ngot:\n%s\nwant:\n%s", golden, got, expected)
				}
				for _, rm := range append(readMakers, struct {
					name string
					fn   func(io.Reader) io.Reader
				}{"timeout", iotest.TimeoutReader}) {
					got := runTrace(t, p, rm.fn(bytes.NewReader(data)))
					if fmt.Sprint(got) != fmt.Sprint(want) {
						t.Errorf("%s reader: got\n%v\nwant\n%v", rm.name, got, want)
					}
				}
			})
		}
	}
}

// TestGarbageBoundedMemory feeds 4 MiB of noise (what a wrong baud rate
// gives) to every protocol's reader and the scanner framer: all of it is
// counted as rejects, none becomes a reading, and the buffers never grow.
func TestGarbageBoundedMemory(t *testing.T) {
	noise := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	at := time.Unix(0, 0)
	for _, p := range Protocols() {
		rejects, readings := 0, 0
		sr := NewScaleReader(p, func(Reading) { readings++ }, func(string) { rejects++ })
		c := cap(sr.buf)
		for off := 0; off < len(noise); off += 300 {
			sr.Write(noise[off:min(off+300, len(noise))], at)
			if cap(sr.buf) != c {
				t.Fatalf("%s: buffer grew from %d to %d", p.Name, c, cap(sr.buf))
			}
		}
		if readings > 0 || rejects < 1000 {
			t.Errorf("%s: %d readings, %d rejects from noise", p.Name, readings, rejects)
		}
	}
	frames, rejects := 0, 0
	f := NewFramer(FramerConfig{Terminator: []byte("\r\n"), MaxLength: 256}, func(Frame) { frames++ }, func(string) { rejects++ })
	// The framer may hold one frame plus one read (300 bytes here).
	limit := cap(f.buf) + 300 + 64
	for off := 0; off < len(noise); off += 300 {
		f.Write(noise[off:min(off+300, len(noise))], at)
		if cap(f.buf) > 2*limit {
			t.Fatalf("framer buffer grew to %d", cap(f.buf))
		}
	}
	// Noise holds a CR LF about every 64 KiB: one overlong reject each.
	if frames > 0 || rejects < 20 {
		t.Errorf("framer: %d frames, %d rejects from noise", frames, rejects)
	}
}
