package sim_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/devices/sim"
)

// TestCheckDigitsMatchParcel holds the simulator's check digits to the
// agent's: every S10 serial of a sample (with the edge cases of the mod-11
// rule) and every 13-digit Russian Post body of a sample.
func TestCheckDigitsMatchParcel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	serials := []string{"00000000", "99999999", "47312482", "12345678"}
	for range 20000 {
		serials = append(serials, fmt.Sprintf("%08d", rng.IntN(100_000_000)))
	}
	remainders := map[int]bool{}
	for _, s := range serials {
		want, ok := parcel.S10CheckDigit(s)
		if !ok {
			t.Fatalf("parcel rejects serial %s", s)
		}
		if got := sim.S10CheckDigit(s); got != want {
			t.Fatalf("S10 serial %s: sim %d, parcel %d", s, got, want)
		}
		remainders[want] = true
	}
	if len(remainders) != 10 {
		t.Errorf("the sample reached only check digits %v", remainders)
	}

	bodies := []string{"0000000000000", "9999999999999", "1010000100001"}
	for range 20000 {
		bodies = append(bodies, fmt.Sprintf("%013d", rng.Int64N(10_000_000_000_000)))
	}
	for _, b := range bodies {
		want, ok := parcel.Mod10CheckDigit(b)
		if !ok {
			t.Fatalf("parcel rejects body %s", b)
		}
		if got := sim.Mod10CheckDigit(b); got != want {
			t.Fatalf("RU14 body %s: sim %d, parcel %d", b, got, want)
		}
	}
}

// TestCodesClassify: the generator's codes are what the agent reads them
// as: S10 or RU14, valid unless made bad, and a bad one fails on its check
// digit.
func TestCodesClassify(t *testing.T) {
	for _, bad := range []float64{0, 1} {
		c := sim.NewCodes(42, bad)
		kinds := map[parcel.Kind]int{}
		for range 5000 {
			code, aim := c.Next()
			r := parcel.Classify(code, aim)
			kinds[r.Kind]++
			switch {
			case r.Kind != parcel.KindS10 && r.Kind != parcel.KindRU14:
				t.Fatalf("%s: kind %s", code, r.Kind)
			case bad == 0 && !r.Valid:
				t.Fatalf("%s: invalid (%s), want valid", code, r.Reason)
			case bad == 1 && (r.Valid || r.Reason != parcel.ReasonCheckDigit):
				t.Fatalf("%s: valid %v reason %q, want a check digit failure", code, r.Valid, r.Reason)
			}
		}
		if kinds[parcel.KindS10] == 0 || kinds[parcel.KindRU14] == 0 {
			t.Errorf("bad ratio %v: kinds %v", bad, kinds)
		}
	}
}
