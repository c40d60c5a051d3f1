//go:build unix

package buffer

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAppendLatency2k paces appends at 2,000 per second (the load of
// a busy hub) and reports the latency from the append call to durable.
// Run with -benchtime 20000x for a 10-second sample.
func BenchmarkAppendLatency2k(b *testing.B) {
	q := openT(b, b.TempDir())
	defer q.Close()
	payload := make([]byte, 200)
	enc := Value{Head: payload}
	lat := make([]time.Duration, b.N)
	starts := make([]time.Time, b.N)
	out := make(chan Outcome, 1024)
	var wg sync.WaitGroup
	wg.Add(b.N)
	go func() {
		for o := range out {
			if o.Err != nil {
				b.Error(o.Err)
			}
			i := o.Tag.(int)
			lat[i] = time.Since(starts[i])
			wg.Done()
		}
	}()
	defer close(out)
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		starts[i] = time.Now()
		q.Submit(enc, i, out)
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}

// BenchmarkBacklog1M builds a backlog of 1,000,000 scans (200-byte
// payloads), reports the disk used per buffered scan, then drains it with
// read + ack and reports the drain rate and the process's peak RSS over
// both phases. The agent's default memory limit (128 MiB) is set. Run with
// -benchtime 1x.
func BenchmarkBacklog1M(b *testing.B) {
	const n = 1_000_000
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(benchMemLimit()))
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		q := openT(b, dir)
		fillStart := time.Now()
		fillBench(b, q, n)
		fill := time.Since(fillStart)
		if st, err := os.ReadFile("/proc/self/status"); err == nil {
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "Rss") || strings.HasPrefix(l, "VmHWM") {
					b.Log("after fill: ", l)
				}
			}
		}
		// Let Badger's flushes and compactions finish and the disk
		// reserve grow to what the store's size calls for (a step per
		// free-space check, at most 500ms apart).
		waitForWithin(b, time.Minute, steady(time.Second, func() int64 { return duBytes(b, dir) + q.Stats().ReserveBytes }))
		disk := duBytes(b, dir)
		reserve := q.Stats().ReserveBytes

		if p := os.Getenv("HEAP_PROFILE"); p != "" {
			f, _ := os.Create(p)
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		if p := os.Getenv("DRAIN_PROFILE"); p != "" {
			f, _ := os.Create(p)
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
		b.StartTimer()
		start := time.Now()
		var cursor uint64
		drained := 0
		for drained < n {
			recs, err := q.Read(cursor, 1000)
			if err != nil || len(recs) == 0 {
				b.Fatalf("read after %d: %v", drained, err)
			}
			q.Ack(recs...)
			cursor = recs[len(recs)-1].Seq
			drained += len(recs)
		}
		readDone := time.Since(start)
		waitForWithin(b, time.Minute, func() bool { return q.Stats().Depth == 0 })
		el := time.Since(start)
		b.Logf("read+ack loop %v, until deleted %v", readDone, el)
		b.StopTimer()
		q.Close()

		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		b.ReportMetric(float64(n)/fill.Seconds(), "fill-scans/s")
		b.ReportMetric(float64(n)/el.Seconds(), "drain-scans/s")
		b.ReportMetric(float64(disk)/n, "disk-B/scan")
		b.ReportMetric(float64(reserve)/(1<<20), "reserve-MiB")
		b.ReportMetric(float64(ru.Maxrss)/1024, "peak-RSS-MiB")
		if st, err := os.ReadFile("/proc/self/status"); err == nil {
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "Rss") || strings.HasPrefix(l, "VmHWM") {
					b.Log(l)
				}
			}
		}
	}
}

// benchMemLimit is the agent's default soft memory limit (128 MiB), or
// BENCH_MEMLIMIT_MIB to see how the figures depend on it.
func benchMemLimit() int64 {
	if v, err := strconv.Atoi(os.Getenv("BENCH_MEMLIMIT_MIB")); err == nil {
		return int64(v) << 20
	}
	return 128 << 20
}

// BenchmarkOpen1M measures opening a buffer with a 1,000,000-scan backlog
// (200-byte payloads): as it is (its tables verified, the journal checked
// above the checkpoint), and with its store lost, rebuilt from the
// journal. Run with -benchtime 1x.
func BenchmarkOpen1M(b *testing.B) {
	const n = 1_000_000
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(benchMemLimit()))
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		q := openT(b, dir)
		fillBench(b, q, n)
		q.Close()
		start := time.Now()
		q = openT(b, dir)
		open := time.Since(start)
		if st := q.Stats(); st.Depth != n {
			b.Fatalf("depth %d after reopen", st.Depth)
		}
		q.Close()
		if err := os.RemoveAll(filepath.Join(dir, "store")); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		q = openT(b, dir)
		rebuild := time.Since(start)
		if st := q.Stats(); st.Depth != n || st.Replayed != n {
			b.Fatalf("after the rebuild: depth %d, replayed %d", st.Depth, st.Replayed)
		}
		q.Close()
		b.ReportMetric(open.Seconds(), "open-s")
		b.ReportMetric(rebuild.Seconds(), "rebuild-s")
	}
}

// fillBench appends n records of 200 bytes with appends in flight, as
// stations do.
func fillBench(b *testing.B, q *Queue, n int) {
	payload := make([]byte, 200)
	enc := Value{Head: payload}
	out := make(chan Outcome, 4096)
	go func() {
		for range n {
			q.Submit(enc, nil, out)
		}
	}()
	for range n {
		if o := <-out; o.Err != nil {
			b.Error(o.Err)
		}
	}
}

// steady returns a condition that holds once probe has returned the same
// value for d.
func steady(d time.Duration, probe func() int64) func() bool {
	last, since := probe(), time.Now()
	return func() bool {
		if v := probe(); v != last {
			last, since = v, time.Now()
		}
		return time.Since(since) >= d
	}
}
