package devices

import (
	"bytes"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

var readMakers = []struct {
	name string
	fn   func(io.Reader) io.Reader
}{
	{"full", func(r io.Reader) io.Reader { return r }},
	{"onebyte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
	{"dataerr", iotest.DataErrReader},
}

type result struct {
	frames  []string // AIM|data
	rejects []string
}

func frameAll(t *testing.T, cfg FramerConfig, input string, mk func(io.Reader) io.Reader) result {
	t.Helper()
	var res result
	f := NewFramer(cfg,
		func(fr Frame) { res.frames = append(res.frames, fr.AIM+"|"+fr.Data) },
		func(reason string) { res.rejects = append(res.rejects, reason) })
	err := ReadFrames(mk(strings.NewReader(input)), f, nil, time.Now)
	if err != io.EOF {
		t.Fatalf("ReadFrames: %v", err)
	}
	return res
}

func TestFramer(t *testing.T) {
	long := strings.Repeat("9", 300)
	tests := []struct {
		name    string
		term    string
		input   string
		frames  []string
		rejects []string
	}{
		{"crlf", "\r\n", "]C0RR473124829GB\r\n]C010100024010003\r\n",
			[]string{"]C0|RR473124829GB", "]C0|10100024010003"}, nil},
		{"cr", "\r", "RR473124829GB\rAB1\r", []string{"|RR473124829GB", "|AB1"}, nil},
		{"lf", "\n", "]E04006381333931\nX\n", []string{"]E0|4006381333931", "|X"}, nil},
		{"cr config tolerates crlf", "\r", "A1\r\nB2\r\n", []string{"|A1", "|B2"}, nil},
		{"lf config tolerates crlf", "\n", "A1\r\nB2\r\n", []string{"|A1", "|B2"}, nil},
		{"custom etx", "\x03", "\x02A1\x03\x02B2\x03", []string{"|A1", "|B2"}, nil},
		{"empty frames dropped", "\r\n", "\r\n\r\nA\r\n\r\n", []string{"|A"}, []string{"empty", "empty", "empty"}},
		{"aim only is empty", "\r\n", "]C0\r\nB\r\n", []string{"|B"}, []string{"empty"}},
		{"not an aim prefix", "\r\n", "]]]X\r\n]1\r\n", []string{"|]]]X", "|]1"}, nil},
		{"gs kept", "\r\n", "]C10012345\x1d10ABC\r\n", []string{"]C1|0012345\x1d10ABC"}, nil},
		{"overlong discarded to next terminator", "\r\n", "A\r\n" + long + "\r\nB\r\n",
			[]string{"|A", "|B"}, []string{"overlong"}},
		{"overlong without terminator then good", "\r\n", long + long + "\r\nOK\r\n",
			[]string{"|OK"}, []string{"overlong"}},
		{"exactly max", "\r\n", strings.Repeat("7", 256) + "\r\n", []string{"|" + strings.Repeat("7", 256)}, nil},
		{"partial at eof kept back", "\r\n", "A\r\nPARTIAL", []string{"|A"}, nil},
		{"none frames at end of input", "", "RR473124829GB", []string{"|RR473124829GB"}, nil},
		{"stx etx framing", "\x03", "\x02RR473124829GB\x03", []string{"|RR473124829GB"}, nil},
		{"control characters rejected", "\r\n", "RR47\x003124829GB\r\nA\x1bB\r\nOK\r\n", []string{"|OK"}, []string{"control", "control"}},
		{"invalid utf-8 rejected", "\r\n", "\xff\xfe\xfd\r\nOK\r\n", []string{"|OK"}, []string{"utf8"}},
		{"invalid utf-8 amid text", "\r\n", "RR47\xc3\x283124829GB\r\nOK\r\n", []string{"|OK"}, []string{"utf8"}},
		{"utf-8 kept", "\r\n", "Посылка-1\r\n", []string{"|Посылка-1"}, nil},
		{"max length with aim", "\r\n", "]C0" + strings.Repeat("7", 256) + "\r\n", []string{"]C0|" + strings.Repeat("7", 256)}, nil},
		{"max length plus one", "\r\n", strings.Repeat("7", 257) + "\r\nB\r\n", []string{"|B"}, []string{"overlong"}},
		{"cr config, crlf scanner, exact max", "\r", strings.Repeat("8", 256) + "\r\n" + strings.Repeat("8", 256) + "\r\n",
			[]string{"|" + strings.Repeat("8", 256), "|" + strings.Repeat("8", 256)}, nil},
		{"lf config, crlf scanner, exact max", "\n", strings.Repeat("8", 256) + "\r\n" + strings.Repeat("8", 256) + "\r\n",
			[]string{"|" + strings.Repeat("8", 256), "|" + strings.Repeat("8", 256)}, nil},
	}
	for _, tc := range tests {
		for _, rm := range readMakers {
			t.Run(tc.name+"/"+rm.name, func(t *testing.T) {
				got := frameAll(t, FramerConfig{Terminator: []byte(tc.term), MaxLength: 256}, tc.input, rm.fn)
				if len(got.frames) != len(tc.frames) || len(got.rejects) != len(tc.rejects) {
					t.Errorf("frames %q rejects %q, want %q %q", got.frames, got.rejects, tc.frames, tc.rejects)
					return
				}
				if !reflect.DeepEqual(got.frames, tc.frames) {
					t.Errorf("frames %q, want %q", got.frames, tc.frames)
				}
				if !reflect.DeepEqual(got.rejects, tc.rejects) {
					t.Errorf("rejects %q, want %q", got.rejects, tc.rejects)
				}
			})
		}
	}
}

// timeoutReader returns its chunks one per Read, with a (0, nil) read timeout
// between them as a serial port does, advancing a fake clock.
type timeoutReader struct {
	chunks []string
	now    *time.Time
	gap    bool
}

func (r *timeoutReader) Read(p []byte) (int, error) {
	*r.now = r.now.Add(30 * time.Millisecond)
	if r.gap {
		r.gap = false
		return 0, nil
	}
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	r.gap = true
	n := copy(p, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

func TestIdleGapFraming(t *testing.T) {
	now := time.Unix(0, 0)
	// "RR4731" and "24829GB" arrive 60ms apart: one gap of 30ms (below the
	// 50ms idle gap) separates them, so they form one frame; then 2 timeouts.
	r := &timeoutReader{chunks: []string{"]C0RR4731", "24829GB", "", "AB"}, now: &now}
	var frames []string
	var stamps []time.Time
	f := NewFramer(FramerConfig{MaxLength: 64, IdleGap: 50 * time.Millisecond}, func(fr Frame) {
		frames = append(frames, fr.AIM+"|"+fr.Data)
		stamps = append(stamps, fr.At)
	}, nil)
	if err := ReadFrames(r, f, nil, func() time.Time { return now }); err != io.EOF {
		t.Fatal(err)
	}
	want := []string{"]C0|RR473124829GB", "|AB"}
	if !reflect.DeepEqual(frames, want) {
		t.Fatalf("frames %q, want %q", frames, want)
	}
	// Stamped with the last byte's arrival (the second chunk, at 90ms),
	// not with the moment the gap was noticed.
	if got := stamps[0].Sub(time.Unix(0, 0)); got != 90*time.Millisecond {
		t.Fatalf("first frame stamped at +%v, want +90ms", got)
	}
}

func TestStalePartialDropped(t *testing.T) {
	now := time.Unix(0, 0)
	var frames, rejects []string
	f := NewFramer(FramerConfig{Terminator: []byte("\r\n"), StaleAfter: time.Second},
		func(fr Frame) { frames = append(frames, fr.Data) },
		func(r string) { rejects = append(rejects, r) })
	f.Write([]byte("NOISE"), now)
	f.Idle(now.Add(500 * time.Millisecond))
	f.Write([]byte("RR473124829GB\r\n"), now.Add(600*time.Millisecond))
	f.Write([]byte("XY"), now.Add(700*time.Millisecond))
	f.Idle(now.Add(1800 * time.Millisecond))
	f.Write([]byte("RR287043775IN\r\n"), now.Add(1900*time.Millisecond))
	if want := []string{"NOISERR473124829GB", "RR287043775IN"}; !reflect.DeepEqual(frames, want) {
		t.Fatalf("frames %q, want %q", frames, want)
	}
	if want := []string{"stale"}; !reflect.DeepEqual(rejects, want) {
		t.Fatalf("rejects %q, want %q", rejects, want)
	}
}

func TestOverlongNeverForwarded(t *testing.T) {
	// However the bytes are split, no emitted frame exceeds MaxLength.
	input := bytes.Repeat([]byte("1234567\r\n"+strings.Repeat("x", 40)+"\r\n"), 50)
	for _, rm := range readMakers {
		f := NewFramer(FramerConfig{Terminator: []byte("\r\n"), MaxLength: 16}, func(fr Frame) {
			if len(fr.Data) > 16 {
				t.Fatalf("%s: frame of %d bytes forwarded", rm.name, len(fr.Data))
			}
		}, nil)
		ReadFrames(rm.fn(bytes.NewReader(input)), f, nil, time.Now)
	}
}

func FuzzFramer(f *testing.F) {
	f.Add([]byte("]C0RR473124829GB\r\n"), []byte("\r\n"), 3)
	f.Add([]byte("abc\rdef\r\r\n\x00\xff"), []byte("\r"), 1)
	f.Add([]byte("\x02ab\x03"), []byte("\x03"), 7)
	f.Fuzz(func(t *testing.T, in, term []byte, split int) {
		if len(term) > 8 {
			term = term[:8]
		}
		fr := NewFramer(FramerConfig{Terminator: term, MaxLength: 32, StripPrefix: []byte("#"), StripSuffix: []byte("\t"),
			CodeID: CodeIDHoneywell, StripControl: split%2 == 0}, func(fr Frame) {
			if len(fr.Data) == 0 || len(fr.Data) > 32 || hasControl([]byte(fr.Data)) || !utf8.ValidString(fr.Data) {
				t.Fatalf("bad frame %q %q", fr.AIM, fr.Data)
			}
		}, nil)
		if split <= 0 {
			split = 1
		}
		for len(in) > 0 {
			n := min(split, len(in))
			fr.Write(in[:n], time.Time{})
			in = in[n:]
		}
		fr.Idle(time.Time{}.Add(time.Hour))
		fr.End()
	})
}

func TestFramerOptions(t *testing.T) {
	tests := []struct {
		name    string
		cfg     FramerConfig
		input   string
		frames  []string // CodeID|AIM|data
		rejects []string
	}{
		{"prefix and suffix stripped", FramerConfig{StripPrefix: []byte("#"), StripSuffix: []byte("\t")},
			"#RR473124829GB\t\r\nRR473124829GB\r\n", []string{"||RR473124829GB", "||RR473124829GB"}, nil},
		{"prefix before aim", FramerConfig{StripPrefix: []byte("<<")},
			"<<]C0RR473124829GB\r\n", []string{"|]C0|RR473124829GB"}, nil},
		{"honeywell code 128", FramerConfig{CodeID: CodeIDHoneywell},
			"jRR473124829GB\r\n", []string{"j|]C0|RR473124829GB"}, nil},
		{"honeywell gs1-128 keeps gs", FramerConfig{CodeID: CodeIDHoneywell},
			"I00340123450000000018\x1d400ABC\r\n", []string{"I|]C1|00340123450000000018\x1d400ABC"}, nil},
		{"honeywell data matrix and qr", FramerConfig{CodeID: CodeIDHoneywell},
			"wABC\r\nsHTTP\r\n", []string{"w|]d1|ABC", "s|]Q1|HTTP"}, nil},
		{"honeywell and aim both sent", FramerConfig{CodeID: CodeIDHoneywell},
			"I]C100340123450000000018\r\n", []string{"I|]C1|00340123450000000018"}, nil},
		{"unknown code id left in the data", FramerConfig{CodeID: CodeIDHoneywell},
			"RR473124829GB\r\n", []string{"||RR473124829GB"}, nil},
		{"a lone code id character is data", FramerConfig{CodeID: CodeIDHoneywell},
			"j\r\n", []string{"||j"}, nil},
		{"control characters stripped", FramerConfig{StripControl: true},
			"RR47\x003124829GB\x07\r\n\x1b\r\n", []string{"||RR473124829GB"}, []string{"empty"}},
		{"strip keeps gs", FramerConfig{StripControl: true},
			"]C1010\x1d10A\x00\r\n", []string{"|]C1|010\x1d10A"}, nil},
		{"strip does not rescue invalid utf-8", FramerConfig{StripControl: true},
			"\xff\x01\r\n", nil, []string{"utf8"}},
	}
	for _, tc := range tests {
		for _, rm := range readMakers {
			t.Run(tc.name+"/"+rm.name, func(t *testing.T) {
				tc.cfg.Terminator = []byte("\r\n")
				var frames, rejects []string
				f := NewFramer(tc.cfg,
					func(fr Frame) { frames = append(frames, fr.CodeID+"|"+fr.AIM+"|"+fr.Data) },
					func(reason string) { rejects = append(rejects, reason) })
				if err := ReadFrames(rm.fn(strings.NewReader(tc.input)), f, nil, time.Now); err != io.EOF {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(frames, tc.frames) || !reflect.DeepEqual(rejects, tc.rejects) {
					t.Errorf("frames %q rejects %q, want %q %q", frames, rejects, tc.frames, tc.rejects)
				}
			})
		}
	}
}
