package devices

import (
	"bytes"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// TestCoalescingReaderOverPTY reads a real pseudo-terminal through the
// scanner's read gather on a test clock: a source writes its bytes to the
// master as the clock moves (a step before each read, and the gathers),
// and each read finds them in the line buffer. It counts the gathers and
// the bytes per read, not wall time.
func TestCoalescingReaderOverPTY(t *testing.T) {
	const step = time.Millisecond // before each read (the framer's work)
	for _, tc := range []struct {
		name string
		rate int // bytes the source writes per millisecond
	}{
		{"fast", 2000}, // a pty fed without pause
		{"at the gather size", gatherBytes},
		{"trickle", 5}, // a device streaming a few bytes at a time
		{"medium", 128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave, err := pty.Open()
			if err != nil {
				t.Skip("no pseudo-terminal:", err)
			}
			defer master.Close()
			defer slave.Close()
			port, err := OpenPort(PortConfig{Path: slave.Name(), Baud: 115200}, 100*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer port.Close()
			clock := time.Unix(1e9, 0)
			var sent, got []byte
			// advance moves the clock by d, the source writing meanwhile,
			// and returns once its bytes are in the slave's line buffer
			// (they get there through the kernel's flip work).
			advance := func(d time.Duration) {
				clock = clock.Add(d)
				piece := bytes.Repeat([]byte{byte('a' + len(sent)%26)}, tc.rate*int(d/time.Microsecond)/1000)
				if _, err := master.Write(piece); err != nil {
					t.Fatal(err)
				}
				sent = append(sent, piece...)
				for {
					n, err := unix.IoctlGetInt(int(slave.Fd()), unix.TIOCINQ)
					if err != nil {
						t.Fatal(err)
					}
					if n >= len(sent)-len(got) {
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
			var waits []time.Duration
			c := &coalescingReader{r: port, d: scannerCoalesce,
				now:   func() time.Time { return clock },
				sleep: func(d time.Duration) { waits = append(waits, d); advance(d) }}
			buf := make([]byte, 4096)
			var sizes []int
			const reads = 12
			for range reads {
				advance(step)
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, n)
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, sent) {
				t.Fatalf("read %d bytes, not the %d written", len(got), len(sent))
			}
			t.Logf("bytes per read %v; gathers %v", sizes, waits)
			switch {
			case tc.rate*int(step/time.Millisecond) >= gatherBytes:
				// gatherBytes or more came in the step: the next read
				// follows at once.
				if len(waits) != 0 {
					t.Fatalf("%d gathers over %d reads of %v bytes: %v", len(waits), reads, sizes, waits)
				}
			case tc.rate*int(scannerCoalesce/time.Millisecond) < gatherBytes:
				// Even the whole gather brings less than gatherBytes: it
				// lasts scannerCoalesce (the step counted in), before
				// every read after the first two of the streak.
				if len(waits) != reads-2 {
					t.Fatalf("%d gathers over %d reads, want %d: %v", len(waits), reads, reads-2, waits)
				}
				for _, w := range waits {
					if w != scannerCoalesce-step {
						t.Fatalf("gathers %v, want %v each", waits, scannerCoalesce-step)
					}
				}
				for _, n := range sizes[2:] {
					if n != tc.rate*int(scannerCoalesce/time.Millisecond) {
						t.Fatalf("bytes per read %v", sizes)
					}
				}
			default:
				// In between: a gather before every read after the first
				// two, shorter than scannerCoalesce, each read then
				// bringing gatherBytes.
				if len(waits) != reads-2 {
					t.Fatalf("%d gathers over %d reads, want %d: %v", len(waits), reads, reads-2, waits)
				}
				for _, w := range waits {
					if w >= scannerCoalesce-step {
						t.Fatalf("gathers %v", waits)
					}
				}
				for _, n := range sizes[2:] {
					if n != gatherBytes {
						t.Fatalf("bytes per read %v", sizes)
					}
				}
			}
		})
	}
}
