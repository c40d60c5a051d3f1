package station

import (
	"context"
	"testing"
	"time"

	"github.com/scanagent/scanagent/devices"
)

// BenchmarkStationProcessTap is BenchmarkStationProcess with and without
// the serial tap recording each scan's frame (what the scanner's port
// goroutine adds per scan when no console is open): the difference is
// the tap's cost per scan.
func BenchmarkStationProcessTap(b *testing.B) {
	for _, name := range []string{"tap=off", "tap=on"} {
		b.Run(name, func(b *testing.B) {
			var tap *devices.Tap // nil records nothing
			if name == "tap=on" {
				tap = devices.NewTap(devices.DefaultTapFrames)
			}
			s := testStationB(b)
			s.weigher.setOnline(true)
			at := time.Now()
			s.weigher.reading(readingB(at))
			ctx := context.Background()
			codes := []string{"RR473124829GB", "10100024010003", "RR287043775IN", "CA262246684JP"}
			raws := make([][]byte, len(codes))
			for i, c := range codes {
				raws[i] = []byte("]C0" + c + "\r\n")
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f := devices.Frame{Data: codes[i%len(codes)], AIM: "]C0", At: at.Add(time.Duration(i) * 2 * time.Second)}
				tap.Code(raws[i%len(codes)], f.At, f.Data, f.AIM)
				i++
				if s.double(f) {
					b.Fatal("double")
				}
				sc := s.scan(f)
				sc.Weight, sc.HasWeight, sc.WeightStatus = s.weigher.pair(ctx, at)
				if sc.WeightStatus != WeightOK {
					b.Fatal(sc.WeightStatus)
				}
				s.value(sc)
			}
		})
	}
}
