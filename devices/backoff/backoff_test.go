package backoff

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for i := range 20 {
		d := b.Next()
		if d < 50*time.Millisecond || d > time.Second {
			t.Fatalf("step %d: %v out of [50ms,1s]", i, d)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

func TestFullJitter(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, FullJitter: true}
	var low bool
	for range 200 {
		d := b.Next()
		if d < 0 || d > time.Second {
			t.Fatalf("%v out of [0,1s]", d)
		}
		low = low || d < 50*time.Millisecond
	}
	if !low {
		t.Fatal("full jitter never drew below Min/2 in 200 draws")
	}
}
