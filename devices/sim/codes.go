// Package sim provides simulated devices for the demo, tests and
// benchmarks: a generator of realistic parcel identifiers and (on Unix)
// scanners behind real pseudo-terminals, so the agent reads them through the
// same serial code path as hardware.
//
// Imported by cmd/scanagent (demo) and tests; never by the daemon's data path.
package sim

import (
	"fmt"
	"math/rand/v2"
)

// Codes generates parcel identifiers as a sorting line sees them: mostly
// UPU S10 items of the e-commerce flows, some Russian Post 14-digit codes,
// and a configurable share with a wrong check digit.
type Codes struct {
	rng *rand.Rand
	// BadRatio is the share of codes with a deliberately wrong check digit.
	BadRatio float64
}

// NewCodes returns a generator seeded with seed (same seed, same codes).
func NewCodes(seed uint64, badRatio float64) *Codes {
	return &Codes{rng: rand.New(rand.NewPCG(seed, seed^0x5ca9)), BadRatio: badRatio}
}

var (
	services  = []string{"RR", "RB", "CP", "CA", "EE", "EA", "LA", "LZ", "UA", "UX", "VV", "HA", "HB", "AV"}
	countries = []string{"CN", "GB", "DE", "US", "FR", "RU", "KZ", "TR", "IN", "JP", "NL", "PL"}
)

// Next returns the next code and the AIM identifier a scanner would send.
func (c *Codes) Next() (code, aim string) {
	bad := c.rng.Float64() < c.BadRatio
	if c.rng.IntN(5) == 0 {
		return c.ru14(bad), "]C0"
	}
	return c.s10(bad), "]C0"
}

func (c *Codes) s10(bad bool) string {
	serial := fmt.Sprintf("%08d", c.rng.IntN(100_000_000))
	d := s10CheckDigit(serial)
	if bad {
		d = (d + 1 + c.rng.IntN(8)) % 10
		if d == s10CheckDigit(serial) {
			d = (d + 1) % 10
		}
	}
	return services[c.rng.IntN(len(services))] + serial + fmt.Sprint(d) + countries[c.rng.IntN(len(countries))]
}

func (c *Codes) ru14(bad bool) string {
	// Posting office index, month counter, item number.
	body := fmt.Sprintf("%06d%02d%05d", 101000+c.rng.IntN(600000), 1+c.rng.IntN(99), c.rng.IntN(100000))
	d := mod10CheckDigit(body)
	if bad {
		d = (d + 1 + c.rng.IntN(9)) % 10
	}
	return body + fmt.Sprint(d)
}

// The check digits are computed here rather than by agent/parcel, which
// validates them: the simulator stays below the agent in the layers, and a
// test (codes_test.go) holds the two to the same rules.

// s10CheckDigit is the UPU S10 check digit of an 8-digit serial number:
// weights 8 6 4 2 3 5 9 7, then 11 - sum mod 11, where 10 gives 0 and 11
// gives 5.
func s10CheckDigit(serial8 string) int {
	sum := 0
	for i, w := range [8]int{8, 6, 4, 2, 3, 5, 9, 7} {
		sum += w * int(serial8[i]-'0')
	}
	switch c := 11 - sum%11; c {
	case 10:
		return 0
	case 11:
		return 5
	default:
		return c
	}
}

// mod10CheckDigit is the GS1 mod-10 check digit of digits, which the
// Russian Post 14-digit code uses too: from the right, weights 3, 1, 3, ...;
// then (10 - sum mod 10) mod 10.
func mod10CheckDigit(digits string) int {
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 0 {
			d *= 3
		}
		sum += d
	}
	return (10 - sum%10) % 10
}

// Intn returns a number in [0, n) from the generator's stream.
func (c *Codes) Intn(n int) int { return c.rng.IntN(n) }
