package uplink

import (
	"net"
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
