package devices

import (
	"bytes"
	"fmt"
	"testing"
	"testing/iotest"
	"time"
)

// TestTapScanner: the tap keeps each frame raw (terminator and AIM
// prefix included) with its code or its reject reason, whatever pieces
// the bytes arrive in.
func TestTapScanner(t *testing.T) {
	stream := []byte("]C0RR473124829GB\r\n\x01\x02bad\r\n\r\n" + "]C010100024010003\r\n")
	for _, piece := range []int{1, 3, len(stream)} {
		tap := NewTap(8)
		var codes []string
		f := NewFramer(FramerConfig{Terminator: []byte("\r\n")}, func(fr Frame) { codes = append(codes, fr.Data) }, nil)
		f.tap = tap
		r := iotest.HalfReader(bytes.NewReader(stream))
		buf := make([]byte, piece)
		for {
			n, err := r.Read(buf)
			f.Write(buf[:n], time.Now())
			if err != nil {
				break
			}
		}
		got := tap.Since(0)
		want := []TapFrame{
			{Seq: 1, Len: 18, Text: "]C0RR473124829GB<CR><LF>", Code: "RR473124829GB", AIM: "]C0"},
			{Seq: 2, Len: 7, Text: "<01><STX>bad<CR><LF>", Reject: RejectControl},
			{Seq: 3, Len: 2, Text: "<CR><LF>", Reject: RejectEmpty},
			{Seq: 4, Len: 19, Text: "]C010100024010003<CR><LF>", Code: "10100024010003", AIM: "]C0"},
		}
		if len(got) != len(want) {
			t.Fatalf("pieces of %d: %d frames, want %d: %+v", piece, len(got), len(want), got)
		}
		for i, w := range want {
			g := got[i]
			if g.Seq != w.Seq || g.Len != w.Len || g.Text != w.Text || g.Code != w.Code || g.AIM != w.AIM || g.Reject != w.Reject {
				t.Errorf("pieces of %d: frame %d = %+v, want %+v", piece, i, g, w)
			}
		}
		if got[0].Hex[:8] != "5d 43 30" {
			t.Errorf("hex %q", got[0].Hex)
		}
		if len(codes) != 2 {
			t.Errorf("codes %v", codes)
		}
	}
}

// TestTapRing: the ring keeps the last n frames, Since skips what was
// seen, and an overlong frame is kept truncated with its length.
func TestTapRing(t *testing.T) {
	tap := NewTap(4)
	if tap.Last() != 0 || len(tap.Since(0)) != 0 {
		t.Fatal("a new tap is not empty")
	}
	for i := range 10 {
		tap.Code(fmt.Appendf(nil, "code-%d\r", i), time.Now(), fmt.Sprint("code-", i), "")
	}
	got := tap.Since(0)
	if len(got) != 4 || got[0].Seq != 7 || got[3].Seq != 10 || got[3].Code != "code-9" || tap.Last() != 10 {
		t.Fatalf("ring: %+v", got)
	}
	if got := tap.Since(9); len(got) != 1 || got[0].Code != "code-9" {
		t.Fatalf("since 9: %+v", got)
	}
	if got := tap.Since(10); len(got) != 0 {
		t.Fatalf("since 10: %+v", got)
	}
	long := bytes.Repeat([]byte("A"), TapFrameBytes+50)
	tap.Reject(long, time.Now(), RejectOverlong)
	f := tap.Since(10)[0]
	if !f.Truncated || f.Len != TapFrameBytes+50 || len(f.Text) != TapFrameBytes || f.Reject != RejectOverlong {
		t.Fatalf("overlong: len %d truncated %v text %d", f.Len, f.Truncated, len(f.Text))
	}
	var none *Tap
	none.Code([]byte("x"), time.Now(), "x", "") // a nil tap records nothing
	if none.Since(0) != nil || none.Last() != 0 {
		t.Fatal("nil tap")
	}
}

// TestTapScale: a scale frame is kept with its weight, a bad one with its
// reason.
func TestTapScale(t *testing.T) {
	tap := NewTap(8)
	sr := NewScaleReader(LookupProtocol("mt-sics"), func(Reading) {}, nil)
	sr.tap = tap
	sr.Write([]byte("S S      1.234 kg\r\nS S   xx kg\r\n"), time.Now())
	got := tap.Since(0)
	if len(got) != 2 {
		t.Fatalf("%+v", got)
	}
	if got[0].Weight != "1.234 kg" || got[0].Grams == nil || *got[0].Grams != 1234 || !*got[0].Stable || got[0].Text != "S S      1.234 kg" {
		t.Errorf("weight frame %+v", got[0])
	}
	if got[1].Reject != ErrFormat.Reason || got[1].Weight != "" {
		t.Errorf("bad frame %+v", got[1])
	}
}

// BenchmarkTapRecord is what the tap adds to each scan when nobody
// watches: one frame recorded (compare with BenchmarkStationProcess in
// agent/station, the station's own work per scan).
func BenchmarkTapRecord(b *testing.B) {
	tap := NewTap(DefaultTapFrames)
	raw := []byte("]C0RR473124829GB\r\n")
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		tap.Code(raw, at, "RR473124829GB", "]C0")
	}
}

// BenchmarkFramerTap is BenchmarkFramer with a tap: the difference is the
// tap's cost per frame.
func BenchmarkFramerTap(b *testing.B) {
	for _, withTap := range []bool{false, true} {
		b.Run(fmt.Sprintf("tap=%v", withTap), func(b *testing.B) {
			stream := bytes.Repeat([]byte("]C0RR473124829GB\r\n]C010100024010003\r\n"), 2000)
			got := 0
			f := NewFramer(FramerConfig{Terminator: []byte("\r\n")}, func(Frame) { got++ }, nil)
			if withTap {
				f.tap = NewTap(DefaultTapFrames)
			}
			at := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				for off := 0; off < len(stream); off += 256 {
					f.Write(stream[off:min(off+256, len(stream))], at)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(got), "ns/frame")
		})
	}
}
