package clock

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadLinux: read judges what adjtimex(2) reports.
func TestReadLinux(t *testing.T) {
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != nil {
		if q := read(); q != Unknown {
			t.Fatalf("adjtimex fails (%v), read() = %s", err, q)
		}
		t.Skipf("adjtimex: %v", err)
	}
	want := quality(int64(tx.Maxerror))
	if q := read(); q != want {
		t.Fatalf("read() = %s, maxerror %d µs: want %s", q, tx.Maxerror, want)
	}
	t.Logf("maxerror %d µs, status %#x: %s", tx.Maxerror, tx.Status, want)
}
