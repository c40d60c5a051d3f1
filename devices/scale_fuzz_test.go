package devices

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fuzzProtocol checks one protocol on arbitrary bytes: parsing never
// panics, a reading is self-consistent, and the readings and rejects do not
// depend on how the stream was fragmented.
func fuzzProtocol(f *testing.F, name string) {
	p := LookupProtocol(name)
	traces, _ := filepath.Glob(filepath.Join("testdata", name, "*.trace"))
	for _, tr := range traces {
		data, err := os.ReadFile(tr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := p.Parse(data); err == nil {
			checkReading(t, r)
		}
		whole := feed(p, data, len(data)+1)
		for _, step := range []int{1, 2, 7} {
			if got := feed(p, data, step); got != whole {
				t.Fatalf("fragments of %d bytes: %s\nwhole: %s", step, got, whole)
			}
		}
	})
}

func checkReading(t *testing.T, r Reading) {
	t.Helper()
	if r.Overload || r.Underload {
		if !r.Value.IsZero() || r.Grams != 0 {
			t.Fatalf("over/underload with a weight: %+v", r)
		}
		return
	}
	if r.Value.IsZero() || r.Unit == "" {
		t.Fatalf("reading without value or unit: %+v", r)
	}
	if _, ok := unitOf([]byte(r.Unit)); !ok {
		t.Fatalf("unknown unit %q", r.Unit)
	}
	var back Reading
	u, _ := unitOf([]byte(r.Unit))
	if err := setWeight(&back, []byte(r.Value.String()), u); err != nil || back.Grams != r.Grams || back.Value != r.Value {
		t.Fatalf("value %q does not parse back to %d g: %+v %v", r.Value, r.Grams, back, err)
	}
}

func feed(p *Protocol, data []byte, step int) string {
	var out []byte
	sr := NewScaleReader(p, func(r Reading) {
		out = fmt.Appendf(out, "%s %d %s %v %v %v %s|", r.Value, r.Grams, r.Unit, r.Stable, r.Overload, r.Underload, r.Basis)
	}, func(reason string) { out = append(out, reason+"|"...) })
	at := time.Unix(0, 0)
	for len(data) > 0 {
		n := min(step, len(data))
		sr.Write(data[:n], at)
		data = data[n:]
	}
	sr.End()
	return string(out)
}

func FuzzMTSICS(f *testing.F) { fuzzProtocol(f, "mt-sics") }
func FuzzToledo(f *testing.F) { fuzzProtocol(f, "toledo") }
func FuzzSMA(f *testing.F)    { fuzzProtocol(f, "sma") }
func FuzzNCI(f *testing.F)    { fuzzProtocol(f, "nci") }
func FuzzCAS(f *testing.F)    { fuzzProtocol(f, "cas") }
func FuzzOhaus(f *testing.F)  { fuzzProtocol(f, "ohaus") }
