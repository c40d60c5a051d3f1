package station

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/devices"
)

// fakeClock moves the time of a synctest bubble: the pairing reads
// time.Now and waits on timers, which the bubble fakes.
type fakeClock struct{}

func newFakeClock() *fakeClock { return &fakeClock{} }

func (*fakeClock) Now() time.Time { return time.Now() }

// Advance lets d pass in the bubble; the timers due fire, and what they
// woke runs until it blocks again.
func (*fakeClock) Advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// bubble runs a test in a synctest bubble.
func bubble(f func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) { synctest.Test(t, f) }
}

// reading makes a scale reading of grams (kg value) at time at.
func reading(at time.Time, grams int64, stable bool) devices.Reading {
	var r devices.Reading
	sr := devices.NewScaleReader(devices.LookupProtocol("mt-sics"), func(rd devices.Reading) { r = rd }, nil)
	st := "D"
	if stable {
		st = "S"
	}
	neg := ""
	if grams < 0 {
		neg, grams = "-", -grams
	}
	sr.Write(fmt.Appendf(nil, "S %s %s%d.%03d kg\r\n", st, neg, grams/1000, grams%1000), at)
	return r
}

// pairWeight is pair with the reading as the event's weight (nil for none).
func pairWeight(w *weigher, ctx context.Context, at time.Time) (*record.Weight, string) {
	r, ok, status := w.pair(ctx, at)
	if !ok {
		return nil, status
	}
	return record.WeightOf(r), status
}

type pairResult struct {
	w      *record.Weight
	status string
}

// startPair pairs a scan read now in the background.
func startPair(w *weigher, c *fakeClock) chan pairResult {
	out := make(chan pairResult, 1)
	at := c.Now()
	go func() {
		wt, st := pairWeight(w, context.Background(), at)
		out <- pairResult{wt, st}
	}()
	return out
}

// waitBlocked waits until the pairing goroutine waits (on a reading or
// its timer).
func waitBlocked(t *testing.T, _ *fakeClock) {
	t.Helper()
	synctest.Wait()
}

func get(t *testing.T, ch chan pairResult) pairResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("pairing did not return")
		return pairResult{}
	}
}

func TestPairing(t *testing.T) {
	const maxAge, wait = 2 * time.Second, 500 * time.Millisecond
	setup := func(share bool) (*weigher, *fakeClock, *int) {
		c := newFakeClock()
		polls := 0
		w := newWeigher(maxAge, wait, share, func() { polls++ })
		w.setOnline(true)
		return w, c, &polls
	}

	t.Run("stable before the scan", bubble(func(t *testing.T) {
		w, c, polls := setup(false)
		w.reading(reading(c.Now(), 1234, true))
		c.Advance(300 * time.Millisecond)
		r := get(t, startPair(w, c))
		if r.status != WeightOK || r.w.Grams != 1234 || r.w.Value != "1.234" || r.w.Unit != "kg" || !r.w.Stable ||
			r.w.MeasuredAt != record.Timestamp(c.Now().Add(-300*time.Millisecond)) || *polls != 0 {
			t.Fatalf("%+v %s, polls %d", r.w, r.status, *polls)
		}
	}))

	t.Run("stable after the scan, within the wait", bubble(func(t *testing.T) {
		w, c, polls := setup(false)
		w.reading(reading(c.Now(), 800, false)) // the parcel is settling
		ch := startPair(w, c)
		waitBlocked(t, c)
		c.Advance(200 * time.Millisecond)
		w.reading(reading(c.Now(), 812, true))
		r := get(t, ch)
		if r.status != WeightOK || r.w.Grams != 812 || *polls != 1 {
			t.Fatalf("%+v %s, polls %d", r.w, r.status, *polls)
		}
	}))

	t.Run("motion only: accepted without weight after the wait, never later", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		w.reading(reading(c.Now(), 800, false))
		ch := startPair(w, c)
		waitBlocked(t, c)
		c.Advance(300 * time.Millisecond)
		w.reading(reading(c.Now(), 820, false))
		waitBlocked(t, c)
		c.Advance(200 * time.Millisecond)
		if r := get(t, ch); r.w != nil || r.status != WeightMotion {
			t.Fatalf("%+v %s", r.w, r.status)
		}
	}))

	t.Run("stale", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		w.reading(reading(c.Now(), 500, true))
		c.Advance(maxAge + time.Millisecond) // a poll scale that stopped answering
		ch := startPair(w, c)
		waitBlocked(t, c)
		c.Advance(wait)
		if r := get(t, ch); r.w != nil || r.status != WeightStale {
			t.Fatalf("%+v %s", r.w, r.status)
		}
	}))

	t.Run("overload and underload are never attached", bubble(func(t *testing.T) {
		for _, tc := range []struct {
			r    devices.Reading
			want string
		}{{devices.Reading{Overload: true}, WeightOverload}, {devices.Reading{Underload: true}, WeightUnderload}} {
			w, c, _ := setup(false)
			w.reading(reading(c.Now(), 500, true))
			tc.r.At = c.Now()
			w.reading(tc.r)
			ch := startPair(w, c)
			waitBlocked(t, c)
			c.Advance(wait)
			if r := get(t, ch); r.w != nil || r.status != tc.want {
				t.Fatalf("%+v %s, want %s", r.w, r.status, tc.want)
			}
		}
	}))

	t.Run("scale unplugged: no wait", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		w.reading(reading(c.Now(), 500, true))
		w.setOnline(false)
		if r := get(t, startPair(w, c)); r.w != nil || r.status != WeightScaleOffline {
			t.Fatalf("%+v %s", r.w, r.status)
		}
		w.setOnline(true) // replugged: the old reading is not current any more
		ch := startPair(w, c)
		waitBlocked(t, c)
		w.reading(reading(c.Now(), 640, true))
		if r := get(t, ch); r.status != WeightOK || r.w.Grams != 640 {
			t.Fatalf("%+v %s", r.w, r.status)
		}
	}))

	t.Run("no reading at all", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		ch := startPair(w, c)
		waitBlocked(t, c)
		c.Advance(wait)
		if r := get(t, ch); r.w != nil || r.status != WeightNone {
			t.Fatalf("%+v %s", r.w, r.status)
		}
	}))

	t.Run("empty scale", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		w.reading(reading(c.Now(), 0, true))
		ch := startPair(w, c)
		waitBlocked(t, c)
		c.Advance(wait)
		if r := get(t, ch); r.w != nil || r.status != WeightEmpty {
			t.Fatalf("%+v %s", r.w, r.status)
		}
	}))

	t.Run("one stay on the scale, one scan", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		w.reading(reading(c.Now(), 1500, true))
		if r := get(t, startPair(w, c)); r.status != WeightOK {
			t.Fatalf("first scan %s", r.status)
		}
		// A second label of the same parcel, same stay: no weight.
		c.Advance(100 * time.Millisecond)
		w.reading(reading(c.Now(), 1500, true))
		ch := startPair(w, c)
		waitBlocked(t, c)
		c.Advance(wait)
		if r := get(t, ch); r.w != nil || r.status != WeightAlreadyUsed {
			t.Fatalf("second scan %+v %s", r.w, r.status)
		}
		// The next parcel, even of the same weight, comes after motion.
		w.reading(reading(c.Now(), 300, false))
		w.reading(reading(c.Now(), 1500, true))
		if r := get(t, startPair(w, c)); r.status != WeightOK || r.w.Grams != 1500 {
			t.Fatalf("next parcel %+v %s", r.w, r.status)
		}
	}))

	t.Run("share_reading: both labels get the weight", bubble(func(t *testing.T) {
		w, c, _ := setup(true)
		w.reading(reading(c.Now(), 1500, true))
		for i := range 2 {
			if r := get(t, startPair(w, c)); r.status != WeightOK || r.w.Grams != 1500 {
				t.Fatalf("scan %d: %+v %s", i, r.w, r.status)
			}
		}
	}))

	t.Run("a queued scan waits only until its own deadline", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		scannedAt := c.Now()
		c.Advance(wait) // it sat behind another scan for the whole wait
		wt, st := pairWeight(w, context.Background(), scannedAt)
		if wt != nil || st != WeightNone {
			t.Fatalf("%+v %s", wt, st)
		}
	}))

	t.Run("shutdown cuts the wait", bubble(func(t *testing.T) {
		w, c, _ := setup(false)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if wt, st := pairWeight(w, ctx, c.Now()); wt != nil || st != WeightNone {
			t.Fatalf("%+v %s", wt, st)
		}
	}))
}
