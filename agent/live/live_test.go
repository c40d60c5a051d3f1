package live

import (
	"errors"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/devices"
)

func scan(code string) *record.Scan {
	return &record.Scan{Origin: &record.Origin{Station: "induct-1"}, At: time.Now(), Barcode: code, Kind: "s10", Valid: true}
}

// TestBus: events reach every client in order, delivery states come as
// ranges, a full queue drops and counts instead of blocking, and with no
// client nothing is queued.
func TestBus(t *testing.T) {
	b := New(4)
	b.Scan(1, scan("RR473124829GB"), nil) // nobody listens: nothing kept
	c1, c2 := b.Subscribe(), b.Subscribe()
	if b.Clients() != 2 {
		t.Fatalf("clients %d", b.Clients())
	}
	sc := scan("RR287043775IN")
	sc.HasWeight, sc.WeightStatus = true, "ok"
	sc.Weight = devices.Reading{Grams: 1234, Unit: "kg"}
	b.Scan(2, sc, nil)
	b.Scan(0, scan("RR473124828GB"), errors.New("buffer full"))
	b.Published(2)
	b.Published(3)
	b.Receipted(2) // the queue of 4 is full now
	for _, c := range []*Client{c1, c2} {
		got := c.Take(100)
		if len(got.Scans) != 2 || got.Scans[0].Seq != 2 || got.Scans[0].Grams == nil || *got.Scans[0].Grams != 1234 ||
			got.Scans[0].State != Accepted || got.Scans[1].State != NotAccepted || got.Scans[1].Error != "buffer full" {
			t.Fatalf("scans %+v", got.Scans)
		}
		if len(got.Published) != 1 || got.Published[0] != [2]uint64{2, 3} || len(got.Receipted) != 0 || got.Dropped != 1 {
			t.Fatalf("batch %+v", got)
		}
	}
	if b.Dropped() != 2 {
		t.Fatalf("dropped %d", b.Dropped())
	}
	c1.Close()
	c2.Close()
	if b.Clients() != 0 {
		t.Fatal("clients left")
	}
	if got := c1.Take(10); !got.Empty() {
		t.Fatalf("after close %+v", got)
	}
}

// BenchmarkBusIdle is what a scan costs the bus when no console is open.
func BenchmarkBusIdle(b *testing.B) {
	bus := New(0)
	sc := scan("RR473124829GB")
	for b.Loop() {
		bus.Scan(1, sc, nil)
		bus.Published(1)
	}
}
