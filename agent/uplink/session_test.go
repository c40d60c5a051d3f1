package uplink

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"
)

// TestSessionNumbers: every number is larger than the last, across a
// restart through the file, and still larger after the file is lost
// (from the clock); a number from a clock ahead survives the clock's
// return.
func TestSessionNumbers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "data", "mqtt-session")
	log := slog.New(slog.DiscardHandler)
	now := time.Unix(1_800_000_000, 0)
	s := sessionNumbers{file: file, log: log}
	a := s.next(now)
	b := s.next(now)
	if a != 1_800_000_000 || b != a+1 {
		t.Fatalf("numbers %d, %d", a, b)
	}
	// Restart with the clock stepped back an hour: it goes on from the file.
	s2 := sessionNumbers{file: file, log: log}
	if c := s2.next(now.Add(-time.Hour)); c != b+1 {
		t.Fatalf("after restart: %d, want %d", c, b+1)
	}
	// The data directory is wiped: the clock (later by now) numbers on.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	s3 := sessionNumbers{file: file, log: log}
	if d := s3.next(now.Add(time.Minute)); d <= b+1 {
		t.Fatalf("after the file was lost: %d, not above %d", d, b+1)
	}
	// An unwritable file: numbers go on from memory.
	s4 := sessionNumbers{file: filepath.Join(file, "not-a-dir", "x"), log: log}
	if e, f := s4.next(now), s4.next(now); f != e+1 {
		t.Fatalf("unwritable: %d then %d", e, f)
	}
}

// TestRetryDelay: the first wait is within the spread; later waits lie
// between half the ceiling and the ceiling, which doubles up to the max;
// a reset starts over.
func TestRetryDelay(t *testing.T) {
	r := retryDelay{min: 500 * time.Millisecond, spread: 10 * time.Second, max: 60 * time.Second}
	for range 100 {
		r.reset()
		if d := r.next(); d < 0 || d > 10*time.Second {
			t.Fatalf("first wait %v outside [0, 10s]", d)
		}
		for _, c := range []time.Duration{20 * time.Second, 40 * time.Second, 60 * time.Second, 60 * time.Second} {
			if d := r.next(); d < c/2 || d > c {
				t.Fatalf("wait %v outside [%v, %v]", d, c/2, c)
			}
		}
	}
	r = retryDelay{min: 50 * time.Millisecond, max: 200 * time.Millisecond} // no spread: from reconnect_min
	if d := r.next(); d > 50*time.Millisecond {
		t.Fatalf("first wait %v with no spread", d)
	}
}

// TestDrainPacing: records of the backlog (seq up to the split) are held
// to drain_rate; records after it are not.
func TestDrainPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacers(0, 10, 100) // 10/s over seq 1..100
		ctx := context.Background()
		start := time.Now()
		for seq := uint64(1); seq <= 21; seq++ {
			if !p.wait(ctx, seq, false, nil) {
				t.Fatal("wait failed")
			}
		}
		if el := time.Since(start); el < 1900*time.Millisecond || el > 2100*time.Millisecond {
			t.Fatalf("21 backlog records took %v, want about 2s at 10/s", el)
		}
		start = time.Now()
		for seq := uint64(101); seq <= 1000; seq++ {
			p.wait(ctx, seq, false, nil)
		}
		p.wait(ctx, 5, true, nil) // a republish is not held either
		if el := time.Since(start); el != 0 {
			t.Fatalf("live records waited %v", el)
		}
		if p.drain.Limit() != rate.Limit(10) {
			t.Fatal("limit")
		}
	})
}
