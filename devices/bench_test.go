package devices

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// benchStream repeats the valid frames of a protocol's traces to about
// 64 KiB: what a port delivers, fed in 256-byte reads.
func benchStream(b *testing.B, p *Protocol) ([]byte, int) {
	var frames [][]byte
	traces, _ := filepath.Glob(filepath.Join("testdata", p.Name, "*.trace"))
	for _, tr := range traces {
		data, err := os.ReadFile(tr)
		if err != nil {
			b.Fatal(err)
		}
		// Keep only the bytes of frames that give readings.
		data = append([]byte(nil), data...)
		for len(data) > 0 {
			adv, tok, err := p.Split(data, true)
			if err != nil || adv == 0 {
				break
			}
			if _, err := p.Parse(tok); err == nil {
				frames = append(frames, data[:adv])
			}
			data = data[adv:]
		}
	}
	var stream []byte
	n := 0
	for len(stream) < 64<<10 {
		for _, f := range frames {
			stream = append(stream, f...)
			n++
		}
	}
	return stream, n
}

// BenchmarkScaleReader measures frame + parse per protocol: MB/s, frames
// per second and allocations (per 64 KiB of frames).
func BenchmarkScaleReader(b *testing.B) {
	for _, p := range Protocols() {
		b.Run(p.Name, func(b *testing.B) {
			stream, frames := benchStream(b, p)
			got := 0
			sr := NewScaleReader(p, func(Reading) { got++ }, func(reason string) { b.Fatalf("reject %s", reason) })
			at := time.Now()
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				for off := 0; off < len(stream); off += 256 {
					sr.Write(stream[off:min(off+256, len(stream))], at)
				}
			}
			if got != frames*b.N {
				b.Fatalf("%d readings, want %d", got, frames*b.N)
			}
			b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "frames/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(got), "ns/frame")
		})
	}
}

// BenchmarkFramer measures scanner framing: one allocation per frame (the
// code as a string).
func BenchmarkFramer(b *testing.B) {
	stream := bytes.Repeat([]byte("]C0RR473124829GB\r\n]C010100024010003\r\n"), 2000)
	got := 0
	f := NewFramer(FramerConfig{Terminator: []byte("\r\n")}, func(Frame) { got++ }, nil)
	at := time.Now()
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for off := 0; off < len(stream); off += 256 {
			f.Write(stream[off:min(off+256, len(stream))], at)
		}
	}
	b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "frames/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(got), "ns/frame")
}
