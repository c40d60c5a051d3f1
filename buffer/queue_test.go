package buffer

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func openT(t testing.TB, dir string) *Queue {
	t.Helper()
	q, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// val makes the record "<seq>:s".
func val(s string) Value { return Value{Tail: []byte(":" + s)} }

func TestAppendReadAckOrder(t *testing.T) {
	q := openT(t, t.TempDir())
	defer q.Close()
	for i := range 10 {
		seq, err := q.Append(val(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) {
			t.Fatalf("append %d got seq %d", i, seq)
		}
	}
	recs, err := q.Read(0, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[0].Seq != 1 || recs[3].Seq != 4 || string(recs[2].Value) != "3:2" {
		t.Fatalf("read(0,4) = %+v", recs)
	}
	// Cursor: continue after the last one read.
	more, _ := q.Read(recs[3].Seq, 100)
	if len(more) != 6 || more[0].Seq != 5 || more[5].Seq != 10 {
		t.Fatalf("read(4,100) = %+v", more)
	}
	// Acks out of order; acked records vanish from reads at once.
	q.Ack(recs[2], recs[0])
	got, _ := q.Read(0, 100)
	if seqs(got) != "2,4,5,6,7,8,9,10" {
		t.Fatalf("after ack: %s", seqs(got))
	}
	if st := q.Stats(); st.LastSeq != 10 || st.Appended != 10 {
		t.Fatalf("stats %+v", st)
	}
	waitFor(t, func() bool { return q.Stats().Depth == 8 })
}

func TestReopenKeepsBacklogAndSeq(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir)
	for range 5 {
		if _, err := q.Append(val("x")); err != nil {
			t.Fatal(err)
		}
	}
	recs, _ := q.Read(0, 2)
	q.Ack(recs...)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = openT(t, dir)
	got, _ := q.Read(0, 100)
	if seqs(got) != "3,4,5" {
		t.Fatalf("backlog after reopen: %s", seqs(got))
	}
	if st := q.Stats(); st.Depth != 3 || st.Bytes != int64(3*(len("3:x")+valueHeaderLen+keyLen)) || st.LastSeq != 5 {
		t.Fatalf("stats after reopen: %+v", st)
	}
	// Drain completely: the sequence must still continue after a reopen.
	q.Ack(got...)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openT(t, dir)
	defer q.Close()
	if got, _ := q.Read(0, 100); len(got) != 0 {
		t.Fatalf("drained queue returned %s", seqs(got))
	}
	seq, err := q.Append(val("y"))
	if err != nil || seq != 6 {
		t.Fatalf("append after drain+reopen: seq %d err %v", seq, err)
	}
}

func TestConcurrentAppendsShareCommits(t *testing.T) {
	q := openT(t, t.TempDir())
	defer q.Close()
	const workers, each = 16, 200
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				seq, err := q.Append(val(fmt.Sprintf("w%d-%d", w, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[seq] {
					t.Errorf("seq %d assigned twice", seq)
				}
				seen[seq] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := q.Stats()
	if st.Appended != workers*each || len(seen) != workers*each {
		t.Fatalf("appended %d, distinct seqs %d", st.Appended, len(seen))
	}
	if st.Commits >= st.Appended {
		t.Fatalf("no group commit: %d commits for %d appends", st.Commits, st.Appended)
	}
	// Every record is readable and the values match their keys.
	recs, _ := q.Read(0, workers*each+1)
	for i, r := range recs {
		if r.Seq != uint64(i+1) || !strings.HasPrefix(string(r.Value), strconv.FormatUint(r.Seq, 10)+":") {
			t.Fatalf("record %d: seq %d value %q", i, r.Seq, r.Value)
		}
	}
}

func TestTooLongFailsOnlyThatAppend(t *testing.T) {
	q := openT(t, t.TempDir())
	defer q.Close()
	if _, err := q.Append(Value{Head: []byte("abc"), Max: 3}); !errors.Is(err, ErrRefused) {
		t.Fatalf("a 4-byte record with Max 3: %v, want ErrRefused", err)
	}
	if seq, err := q.Append(Value{Head: []byte("ab"), Max: 3}); err != nil || seq != 1 {
		t.Fatalf("a 3-byte record with Max 3: seq %d, %v", seq, err)
	}
	if st := q.Stats(); st.Rejected[ReasonRefused] != 1 {
		t.Fatalf("rejected %v, want one refused", st.Rejected)
	}
	seq, err := q.Append(val("ok"))
	if err != nil || seq != 2 {
		t.Fatalf("seq %d err %v", seq, err)
	}
}

func TestClosedQueue(t *testing.T) {
	q := openT(t, t.TempDir())
	q.Close()
	if _, err := q.Append(val("x")); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

func TestDirectoryLockedByAnotherOpen(t *testing.T) {
	dir := t.TempDir()
	q := openT(t, dir)
	defer q.Close()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second open: %v", err)
	}
}

// TestKillNineLosesNothingSynced runs appenders in a child process, kills it
// with SIGKILL at a random moment while it is writing, and checks that
// every append the child reported as durable is in the reopened queue, with
// each producer's records in the order it appended them. Ten rounds on the
// same directory, so recovery after recovery is exercised too.
//
// In "journal only", the kill comes before any record waited SpillAfter
// (1s): what was reported durable is in the journal alone, and only the
// replay at open brings it back. In "spilling, some acknowledged", the
// child spills after 5ms and a consumer reads with a cursor and
// acknowledges the records of one producer, as the uplink does: the kill
// lands among spills, deletes and records acknowledged before their
// spill. In "sleeping store", the consumer acknowledges every record and
// the producers pause now and then, so the emptied store closes and opens
// again for the next spill (sleep.go), around the kill. Acknowledged
// records may come back (at least once); every other durable one must.
func TestKillNineLosesNothingSynced(t *testing.T) {
	if dir := os.Getenv("SCANAGENT_BUFFER_CHILD"); dir != "" {
		crashChild(dir, os.Getenv("SCANAGENT_BUFFER_MODE"))
		return
	}
	for _, mode := range []string{"journal only", "spilling, some acknowledged", "sleeping store"} {
		t.Run(mode, func(t *testing.T) { killNine(t, mode) })
	}
}

func killNine(t *testing.T, mode string) {
	dir := t.TempDir()
	acked := map[uint64]string{}  // reported durable
	consumed := map[uint64]bool{} // acknowledged by the child's consumer
	wakes := 0                    // the most store wake-ups a child reported
	for round := range 10 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKillNineLosesNothingSynced$")
		cmd.Env = append(os.Environ(), "SCANAGENT_BUFFER_CHILD="+dir, "SCANAGENT_BUFFER_MODE="+mode)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// The kill comes at a random moment after the child started
		// appending (its start-up time varies, under -race especially).
		var kill <-chan time.Time
		first := time.After(30 * time.Second)
		n := 0
	collect:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break collect
				}
				if f := strings.Fields(l); len(f) == 2 && f[0] == "w" {
					w, _ := strconv.Atoi(f[1])
					wakes = max(wakes, w)
				} else if len(f) == 2 && f[0] == "a" {
					seq, _ := strconv.ParseUint(f[1], 10, 64)
					consumed[seq] = true
				} else if len(f) == 2 {
					seq, _ := strconv.ParseUint(f[0], 10, 64)
					acked[seq] = f[1]
					if n++; n == 1 {
						kill, first = time.After(time.Duration(100+rand.IntN(500))*time.Millisecond), nil
					}
				}
			case <-first:
				cmd.Process.Kill()
				t.Fatalf("round %d: child reported nothing in 30s", round)
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			}
		}
		cmd.Wait()
		if n == 0 {
			t.Fatalf("round %d: child reported no appends", round)
		}

		q := openT(t, dir)
		recs, err := q.Read(0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		have := map[uint64]string{}
		last := map[string]int{} // producer -> last index seen, in seq order
		for _, r := range recs {
			v := string(r.Value)
			have[r.Seq] = v
			var g string
			var i int
			if _, err := fmt.Sscanf(strings.Replace(v, "-", " ", 1), "%s %d", &g, &i); err != nil {
				t.Fatalf("record %d: %q", r.Seq, v)
			}
			if p, ok := last[g]; ok && i <= p {
				t.Fatalf("round %d: producer %s record %d after %d: order broken", round, g, i, p)
			}
			last[g] = i
		}
		for seq, v := range acked {
			if consumed[seq] {
				continue // acknowledged by the consumer: may be gone
			}
			if have[seq] != v {
				t.Fatalf("round %d: durable seq %d (%q) missing after kill -9 (have %q)", round, seq, v, have[seq])
			}
		}
		t.Logf("round %d: %d appends reported durable, %d records on disk after kill -9", round, n, len(recs))
		q.Close()
	}
	if mode == "sleeping store" {
		if wakes == 0 {
			t.Fatal("the children's stores never slept and woke: the mode tests nothing")
		}
		t.Logf("a child's store woke up to %d times", wakes)
	}
}

// crashChild appends from 4 blocking producers and one pipelined one
// (Submit), each value named after its producer and index, printing
// "seq value" once durable. Values carry the round's start time so that
// rounds do not collide.
func crashChild(dir, mode string) {
	opts := Options{}
	switch mode {
	case "spilling, some acknowledged":
		opts.SpillAfter = 5 * time.Millisecond
	case "sleeping store":
		opts.SpillAfter = 5 * time.Millisecond
		opts.StoreIdle = 10 * time.Millisecond
		opts.MaintInterval = 5 * time.Millisecond
	}
	q, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	report := func(seq uint64, v string) {
		mu.Lock()
		fmt.Fprintf(w, "%d %s\n", seq, v)
		w.Flush()
		mu.Unlock()
	}
	run := time.Now().UnixNano()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				v := fmt.Sprintf("b%d.%d-%d", g, run, i)
				seq, err := q.Append(Value{Head: []byte(v + "#")})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				report(seq, v+"#"+strconv.FormatUint(seq, 10))
				if mode == "sleeping store" && i%100 == 99 {
					time.Sleep(30 * time.Millisecond) // a pause: the emptied store closes
				}
			}
		})
	}
	if mode != "journal only" {
		// The consumer: producer 0's records (or all) are acknowledged
		// as they come, and reported.
		wg.Go(func() {
			var after uint64
			for {
				recs, err := q.Read(after, 256)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				for _, r := range recs {
					after = r.Seq
					if mode == "sleeping store" || strings.HasPrefix(string(r.Value), "b0.") {
						// Reported before it is acknowledged: a kill in
						// between leaves it unchecked, never falsely missing.
						mu.Lock()
						fmt.Fprintf(w, "a %d\n", r.Seq)
						w.Flush()
						mu.Unlock()
						q.Ack(r)
					}
				}
				if len(recs) == 0 {
					if mode == "sleeping store" {
						mu.Lock()
						fmt.Fprintf(w, "w %d\n", q.Stats().StoreWakes)
						w.Flush()
						mu.Unlock()
					}
					<-q.Notify()
				}
			}
		})
	}
	wg.Go(func() {
		out := make(chan Outcome, 32)
		for i := 0; ; i++ {
			if i >= cap(out) { // keep 32 in flight
				o := <-out
				if o.Err != nil {
					fmt.Fprintln(os.Stderr, o.Err)
					os.Exit(3)
				}
				report(o.Seq, o.Tag.(string)+"#"+strconv.FormatUint(o.Seq, 10))
			}
			v := fmt.Sprintf("s.%d-%d", run, i)
			q.Submit(Value{Head: []byte(v + "#")}, v, out)
			if mode == "sleeping store" && i%100 == 99 {
				time.Sleep(30 * time.Millisecond)
			}
		}
	})
	wg.Wait()
}

func seqs(recs []Record) string {
	s := make([]string, len(recs))
	for i, r := range recs {
		s[i] = strconv.FormatUint(r.Seq, 10)
	}
	return strings.Join(s, ",")
}

// waitFor waits until cond holds, for at most 5s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	waitForWithin(t, 5*time.Second, cond)
}

// waitForWithin waits until cond holds, for at most limit. What the tests
// wait for (Badger's flushes, the commit and maintenance goroutines, files)
// sends no signal, so cond is polled.
func waitForWithin(t testing.TB, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached in %v", limit)
		}
		time.Sleep(5 * time.Millisecond) // the poll interval
	}
}

// BenchmarkAppendParallel measures synced appends from many producers (the
// group commit path): 16 goroutines per core, 200-byte values.
func BenchmarkAppendParallel(b *testing.B) {
	q := openT(b, b.TempDir())
	defer q.Close()
	payload := make([]byte, 200)
	enc := Value{Head: payload}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.Append(enc); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := q.Stats()
	b.ReportMetric(float64(st.Appended)/float64(st.Commits), "appends/commit")
}

// BenchmarkAppendSerial is one producer: one sync per append.
func BenchmarkAppendSerial(b *testing.B) {
	q := openT(b, b.TempDir())
	defer q.Close()
	payload := make([]byte, 200)
	enc := Value{Head: payload}
	for b.Loop() {
		if _, err := q.Append(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadAck measures draining: read in pages, acknowledge each page.
func BenchmarkReadAck(b *testing.B) {
	q := openT(b, b.TempDir())
	defer q.Close()
	payload := make([]byte, 200)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range b.N/32 + 1 {
				q.Append(Value{Head: payload})
			}
		})
	}
	wg.Wait()
	b.ResetTimer()
	var cursor uint64
	n := 0
	for n < b.N {
		recs, err := q.Read(cursor, 500)
		if err != nil || len(recs) == 0 {
			b.Fatal(err, len(recs))
		}
		q.Ack(recs...)
		cursor = recs[len(recs)-1].Seq
		n += len(recs)
	}
}

// BenchmarkAppend16Writers is the figure: 16 concurrent writers,
// each waiting for its own append to be durable, 200-byte values.
func BenchmarkAppend16Writers(b *testing.B) {
	for _, w := range []time.Duration{0, 100 * time.Microsecond, 250 * time.Microsecond} {
		b.Run("window="+w.String(), func(b *testing.B) { benchWriters(b, w) })
	}
}

func benchWriters(b *testing.B, window time.Duration) {
	q, err := Open(b.TempDir(), Options{CommitWindow: window})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	payload := make([]byte, 200)
	enc := Value{Head: payload}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := q.Append(enc); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	st := q.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(st.Appended)/float64(st.Commits), "appends/commit")
	b.ReportMetric(st.Sync.Sum/float64(st.Sync.Count)*1e6, "µs/sync")
}

// BenchmarkSubmit16Writers: 16 writers, each keeping up to 64 appends in
// flight (Submit) instead of waiting for each one.
func BenchmarkSubmit16Writers(b *testing.B) {
	q := openT(b, b.TempDir())
	defer q.Close()
	payload := make([]byte, 200)
	enc := Value{Head: payload}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			out := make(chan Outcome, 64)
			inflight := 0
			for next.Add(1) <= int64(b.N) {
				if inflight == cap(out) {
					if o := <-out; o.Err != nil {
						b.Error(o.Err)
					}
					inflight--
				}
				q.Submit(enc, nil, out)
				inflight++
			}
			for ; inflight > 0; inflight-- {
				if o := <-out; o.Err != nil {
					b.Error(o.Err)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	st := q.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(st.Appended)/float64(st.Commits), "appends/commit")
	b.ReportMetric(st.Sync.Sum/float64(st.Sync.Count)*1e6, "µs/sync")
}
