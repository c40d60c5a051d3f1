//go:build unix

package devices

import (
	"bytes"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.bug.st/serial"
)

// openPty opens a pseudo-terminal and the agent's port on its slave side.
func openPty(t *testing.T, timeout time.Duration) (master *os.File, port serial.Port) {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	p, err := OpenPort(PortConfig{Path: s.Name(), Baud: 115200}, timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return m, p
}

// TestPolledPortReadsAndWrites: a port opened by OpenPort is read and
// written through the poller: a read timeout returns nothing and no
// error, data comes and goes both ways, Close ends a read that waits
// without a timeout, and a hang-up of the other side is an error.
func TestPolledPortReadsAndWrites(t *testing.T) {
	m, p := openPty(t, 20*time.Millisecond)
	if _, ok := p.(*polledPort); !ok {
		t.Fatalf("OpenPort returned %T, not a polled port", p)
	}
	buf := make([]byte, 64)
	if n, err := p.Read(buf); n != 0 || err != nil {
		t.Fatalf("read with nothing sent: %d, %v", n, err)
	}
	if _, err := m.Write([]byte("RR473124829GB\r")); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < 14 {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "RR473124829GB\r" {
		t.Fatalf("read %q", got)
	}
	if _, err := p.Write([]byte("\x16M\r")); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, 3)
	if _, err := m.Read(back); err != nil || !bytes.Equal(back, []byte("\x16M\r")) {
		t.Fatalf("the device received %q, %v", back, err)
	}

	// Close releases a read waiting without a timeout.
	if err := p.SetReadTimeout(serial.NoTimeout); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Read(buf)
		done <- err
	}()
	p.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a read ended by Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the waiting read")
	}

	// The other side hangs up (an unplugged adapter): an error, and the
	// port is classified as disconnected.
	m2, p2 := openPty(t, time.Second)
	m2.Close()
	var err error
	for range 100 {
		if _, err = p2.Read(buf); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("no error after the other side hung up")
	}
	if st, reason := Classify(err); st != StateDisconnected {
		t.Fatalf("hang-up classified %s (%s): %v", st, reason, err)
	}
}

// TestPolledPortsHoldNoThreads: reads waiting on many quiet ports park in
// the poller, not in a system call each: the process does not grow a
// thread per port (with the library's blocking reads it grew one per
// waiting read, and the runtime's monitor polled at 20 µs behind them).
func TestPolledPortsHoldNoThreads(t *testing.T) {
	threads := pprof.Lookup("threadcreate")
	before := threads.Count()
	const ports = 24
	buf := make([]byte, 16)
	for range ports {
		_, p := openPty(t, 2*time.Second)
		go p.Read(buf) // ends at the timeout or when the port closes
	}
	time.Sleep(300 * time.Millisecond) // the reads are waiting, well past the runtime's 10 ms retake
	if grown := threads.Count() - before; grown >= ports/2 {
		t.Fatalf("%d threads created while %d reads waited", grown, ports)
	}
}
