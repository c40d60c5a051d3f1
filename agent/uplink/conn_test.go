package uplink

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	sets     int
	deadline time.Time
	writes   []time.Time // the deadline in force at each write
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error { c.sets++; c.deadline = t; return nil }
func (c *deadlineConn) SetReadDeadline(time.Time) error    { return nil }
func (c *deadlineConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, c.deadline)
	return len(p), nil
}

// TestWriteDeadlineLazy: paho's deadline before each publish and its
// clearing after cost one deadline on the connection per
// writeDeadlineSlack, not two per publish; each write still has a
// deadline no earlier than paho asked for and at most writeDeadlineSlack
// later, and a write paho makes with no deadline has none.
func TestWriteDeadlineLazy(t *testing.T) {
	fc := &deadlineConn{}
	c := newReadConn(fc)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const timeout = 10 * time.Second
	publish := func(now time.Time) {
		t.Helper()
		c.SetWriteDeadline(now.Add(timeout))
		c.Write([]byte("publish"))
		c.SetWriteDeadline(time.Time{})
		got := fc.writes[len(fc.writes)-1]
		if want := now.Add(timeout); got.Before(want) || got.Sub(want) > writeDeadlineSlack {
			t.Fatalf("a publish at %v written with deadline %v, want within [%v, +%v]", now, got, want, writeDeadlineSlack)
		}
	}
	for i := range 1000 { // 1,000 publishes over 2 s
		publish(base.Add(time.Duration(i) * 2 * time.Millisecond))
	}
	if fc.sets > 3 {
		t.Fatalf("%d deadlines set on the connection for 1,000 publishes over 2 s", fc.sets)
	}
	c.Write([]byte("ping")) // paho writes a PINGREQ with no deadline
	if d := fc.writes[len(fc.writes)-1]; !d.IsZero() {
		t.Fatalf("a write without a deadline had %v", d)
	}
	publish(base.Add(time.Hour)) // much later: armed anew
	c.SetDeadline(base)          // the handshake's deadline is set at once
	if !fc.deadline.Equal(base) {
		t.Fatalf("SetDeadline left %v", fc.deadline)
	}
	c.SetDeadline(time.Time{})
	c.Write([]byte("connack"))
	if d := fc.writes[len(fc.writes)-1]; !d.IsZero() {
		t.Fatalf("after SetDeadline(zero) a write had %v", d)
	}
}

// slowConn records what is written to it, each write taking a while (a
// busy socket), and can be made to fail.
type slowConn struct {
	net.Conn
	mu     sync.Mutex
	data   []byte
	writes int
	fail   error
	closed bool
}

func (c *slowConn) SetWriteDeadline(time.Time) error { return nil }
func (c *slowConn) SetReadDeadline(time.Time) error  { return nil }
func (c *slowConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}
func (c *slowConn) Write(p []byte) (int, error) {
	time.Sleep(500 * time.Microsecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.data = append(c.data, p...)
	c.writes++
	return len(p), nil
}

func (c *slowConn) snapshot() ([]byte, int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.data), c.writes, c.closed
}

func batchingConn(fc net.Conn) *readConn {
	c := newReadConn(fc)
	c.batch, c.timeout = true, time.Second
	c.cond = sync.NewCond(&c.qmu)
	return c
}

// TestConnBatchesBursts: a burst of writes goes out in few system calls,
// every byte in order; a write on a quiet connection is written before
// Write returns; Close writes what is queued.
func TestConnBatchesBursts(t *testing.T) {
	fc := &slowConn{}
	c := batchingConn(fc)
	var want []byte
	for i := range 2000 {
		p := []byte(fmt.Sprintf("publish %d;", i))
		want = append(want, p...)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Millisecond) // quiet: longer than burstGap, and the burst's flush ends
	for {
		c.qmu.Lock()
		busy := c.flushing
		c.qmu.Unlock()
		if !busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	_, before, _ := fc.snapshot()
	if _, err := c.Write([]byte("ping;")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "ping;"...)
	if _, after, _ := fc.snapshot(); after != before+1 {
		t.Fatalf("a write on a quiet connection was not written at once (%d writes, then %d)", before, after)
	}
	c.Write([]byte("a;")) // a burst again: queued
	c.Write([]byte("b;"))
	want = append(want, "a;b;"...)
	c.Close()
	got, writes, closed := fc.snapshot()
	if !bytes.Equal(got, want) || !closed {
		t.Fatalf("written %d bytes (want %d), in order: %v; closed %v", len(got), len(want), bytes.Equal(got, want), closed)
	}
	if writes > 200 {
		t.Fatalf("%d system calls for 2,004 writes", writes)
	}
	t.Logf("%d writes for 2,004 packets", writes)
}

// TestConnQueuedWriteFails: a queued write that fails closes the
// connection and the next Write reports it.
func TestConnQueuedWriteFails(t *testing.T) {
	fc := &slowConn{}
	c := batchingConn(fc)
	c.Write([]byte("first;"))
	fc.mu.Lock()
	fc.fail = errors.New("connection reset by peer")
	fc.mu.Unlock()
	var err error
	for i := 0; i < 5000 && err == nil; i++ { // until the flush has failed
		c.qmu.Lock()
		c.lastWrite = time.Now().Add(time.Hour) // a burst: queued, whatever the scheduling
		c.qmu.Unlock()
		_, err = c.Write([]byte("next;"))
		time.Sleep(time.Millisecond / 10)
	}
	if err == nil || err.Error() != "connection reset by peer" {
		t.Fatalf("after a failed write: %v", err)
	}
	if _, _, closed := fc.snapshot(); !closed {
		t.Fatal("the connection was not closed after a failed write")
	}
}
