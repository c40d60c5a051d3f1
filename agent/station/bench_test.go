package station

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/devices"
)

// BenchmarkStationProcess measures what a station does per scan before the
// buffer: the double-read check, validation, pairing with a current stable
// weight, the UUIDv7 and the JSON record encoding.
func BenchmarkStationProcess(b *testing.B) {
	s := testStationB(b)
	s.weigher.setOnline(true)
	at := time.Now()
	s.weigher.reading(readingB(at))
	ctx := context.Background()
	codes := []string{"RR473124829GB", "10100024010003", "RR287043775IN", "CA262246684JP"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f := devices.Frame{Data: codes[i%len(codes)], AIM: "]C0", At: at.Add(time.Duration(i) * 2 * time.Second)}
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
}

// BenchmarkStationProcessWorkflow is BenchmarkStationProcess at a station
// with a receptacle open and an operator signed in: the control codes and
// the badge pattern are checked, and each scan is placed in the open
// receptacle.
func BenchmarkStationProcessWorkflow(b *testing.B) {
	s := testStationB(b, func(c *config.Station) {
		c.Accept = append(c.Accept, "s9")
		c.Workflow, c.OperatorPattern = config.WorkflowOpen, "^OP[0-9]{4}$"
		c.Controls = config.Controls{Close: "CTL-CLOSE", Cancel: "CTL-CANCEL", Logout: "CTL-LOGOUT"}
		c.ReceptacleIdle, c.WeightTolerance = config.Duration(10*time.Minute), 5
	})
	s.weigher.setOnline(true)
	at := time.Now()
	s.weigher.reading(readingB(at))
	s.flow.st.Operator = "OP0042"
	s.flow.st.Open = &openCtx{Receptacle: "BEBRUABOLPBBAEN60073003000227", OpenedAt: at}
	ctx := context.Background()
	codes := []string{"RR473124829GB", "10100024010003", "RR287043775IN", "CA262246684JP"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f := devices.Frame{Data: codes[i%len(codes)], AIM: "]C0", At: at.Add(time.Duration(i) * 2 * time.Second)}
		i++
		if s.flowCode(f) || s.double(f) {
			b.Fatal("double or control")
		}
		sc := s.scan(f)
		sc.Weight, sc.HasWeight, sc.WeightStatus = s.weigher.pair(ctx, at)
		p := &pending{barcode: sc.Barcode, at: sc.At, valid: sc.Valid, kind: sc.Kind, reason: sc.Reason, id: sc.ID}
		s.place(sc, p)
		if sc.Receptacle == "" || sc.Operator == "" || !p.item {
			b.Fatalf("not placed: %+v", sc)
		}
		s.value(sc)
	}
}

func testStationB(b *testing.B, edit ...func(*config.Station)) *Station {
	cfg := config.Station{ID: "induct-3", Event: "EDD", Accept: []string{"s10", "ru14"}, DedupWindow: config.Duration(time.Second),
		Scale: &config.Scale{MaxAge: config.Duration(time.Hour), WaitStable: config.Duration(500 * time.Millisecond), ShareReading: true}}
	for _, e := range edit {
		e(&cfg)
	}
	return New(Config{Station: cfg, Agent: config.Agent{ID: "hub-msk-01", Site: "MSK-VNUKOVO"}}, Deps{Log: discardLog()})
}

func readingB(at time.Time) devices.Reading {
	var r devices.Reading
	sr := devices.NewScaleReader(devices.LookupProtocol("toledo"), func(rd devices.Reading) { r = rd }, nil)
	frame := []byte("\x02\x2c\x30\x20001234000000\r")
	var sum byte
	for _, c := range frame {
		sum += c & 0x7F
	}
	sr.Write(append(frame, (-sum)&0x7F), at)
	return r
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkFlowAccepted measures what the outcome goroutine does per item
// accepted in an open receptacle: the count, and the items written to the
// state file (without a sync) once per group of outcomes: every item at
// low rates (group=1), a group commit's worth at high rates (group=16).
func BenchmarkFlowAccepted(b *testing.B) {
	for _, group := range []int{1, 16} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			s := testStationB(b, func(c *config.Station) {
				c.Accept = append(c.Accept, "s9")
				c.Workflow = config.WorkflowOpen
			})
			s.flow.path = StatePath(b.TempDir(), "induct-3")
			s.flow.open(s.n)
			defer s.flow.close()
			o := &openCtx{Receptacle: "BEBRUABOLPBBAEN60073003000227", OpenedAt: time.Now()}
			s.flow.st.Open = o
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				seq++
				s.flowAccepted(&pending{barcode: "RR473124829GB", ctx: o, item: true, grams: 1234}, seq)
				if seq%uint64(group) == 0 {
					s.flowFlush()
				}
			}
			if o.Items != int(seq) {
				b.Fatalf("%d items counted of %d", o.Items, seq)
			}
		})
	}
}
