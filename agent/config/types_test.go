package config_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/scanagent/scanagent/agent/config"
)

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want config.Size
		err  string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: config.MiB},
		{in: "1_000", want: 1000},
		{in: "512KiB", want: 512 * config.KiB},
		{in: "64MiB", want: 64 * config.MiB},
		{in: "4GiB", want: 4 * config.GiB},
		{in: "1TiB", want: config.TiB},
		{in: "64 MiB", want: 64 * config.MiB},
		{in: "'100'", want: 100},
		{in: "100B", want: 100},
		{in: "2KB", want: 2000},
		{in: "2kB", want: 2000},
		{in: "3MB", want: 3_000_000},
		{in: "5GB", want: 5_000_000_000},
		{in: "1TB", want: 1_000_000_000_000},
		{in: "4gib", err: `unknown unit "gib"`},
		{in: "1.5GiB", err: `unknown unit ".5GiB"`},
		{in: "GiB", err: `invalid size "GiB"`},
		{in: "-1MiB", err: `invalid size "-1MiB"`},
		{in: "''", err: `invalid size ""`},
		{in: "9999999999TiB", err: "too large"},
		{in: "99999999999999999999", err: "invalid size 99999999999999999999"},
		{in: "1.5", err: "invalid size 1.5"},
		{in: "[1]", err: "expected a size"},
	}
	for _, tt := range tests {
		var v struct{ S config.Size }
		err := yaml.Unmarshal([]byte("s: "+tt.in), &v)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.in, err)
		case tt.err == "" && v.S != tt.want:
			t.Errorf("%s = %d, want %d", tt.in, v.S, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want %q", tt.in, err, tt.err)
		}
	}
}

func TestSizeString(t *testing.T) {
	for s, want := range map[config.Size]string{0: "0B", 1000: "1000B", 4 * config.GiB: "4GiB", 1536 * config.KiB: "1536KiB", config.TiB: "1TiB"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "2s", want: 2 * time.Second},
		{in: "1m30s", want: 90 * time.Second},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "-1s", want: -time.Second},
		{in: "0", want: 0},
		{in: "'2s'", want: 2 * time.Second},
		{in: "2", err: "missing unit in duration 2"},
		{in: "'2'", err: "missing unit"},
		{in: "1.5", err: "missing unit"},
		{in: "2 s", err: `invalid duration "2 s"`},
		{in: "2sec", err: "invalid duration"},
		{in: "{}", err: "expected a duration"},
	}
	for _, tt := range tests {
		var v struct{ D config.Duration }
		err := yaml.Unmarshal([]byte("d: "+tt.in), &v)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.in, err)
		case tt.err == "" && v.D.D() != tt.want:
			t.Errorf("%s = %v, want %v", tt.in, v.D, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want %q", tt.in, err, tt.err)
		}
	}
}

func TestStopBits(t *testing.T) {
	for in, want := range map[string]config.StopBits{"1": "1", "1.5": "1.5", "2": "2", "'1.5'": "1.5", "2.0": "2"} {
		var v struct{ B config.StopBits }
		if err := yaml.Unmarshal([]byte("b: "+in), &v); err != nil || v.B != want {
			t.Errorf("%s = %q, %v; want %q", in, v.B, err, want)
		}
	}
	for _, in := range []string{"3", "0", "one", "[]"} {
		var v struct{ B config.StopBits }
		if err := yaml.Unmarshal([]byte("b: "+in), &v); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	in := struct {
		D config.Duration
		S config.Size
	}{config.Duration(1500 * time.Millisecond), 3 * config.MiB}
	b, err := yaml.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := in
	out.D, out.S = 0, 0
	if err := yaml.Unmarshal(b, &out); err != nil || out != in {
		t.Errorf("round trip of %s = %+v, %v", b, out, err)
	}
}
