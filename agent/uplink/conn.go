package uplink

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// The connection to the broker, with fewer system calls per message.
//
// paho reads every packet with three read(2)s (the type byte, the length,
// the body): at tens of thousands of PUBACKs a second these system calls
// were a large share of the uplink's cost (docs/BENCHMARKS.md). The
// connection is read through a buffer.
//
// paho also writes every packet with its own write(2), from one goroutine
// through which every publish passes: in a drain that goroutine and its
// system calls were a fifth of the agent's CPU. A write that comes within
// burstGap of the one before (a burst: a drain, a flood) is queued, and a
// goroutine started for the burst writes everything queued since its last
// write in one call, while paho goes on; a write on a quiet connection
// (live scans arriving one by one) is written at once, in the caller, with
// no goroutine hand-off. A queued write that fails closes the connection
// (paho's reader sees the end) and is reported by the next Write; every
// publish not acknowledged stays in the buffer, as when any connection is
// lost. A batch that carries a publish the broker refuses (and closes the
// connection for) can lose, in the broker's reset, the PUBACKs of the
// publishes before it: the poison watch publishes a suspect alone before
// it counts against it (uplink.go), so that costs a duplicate, never a
// wrong park.
//
// paho also sets the write deadline (mqtt.connect_timeout from now) before
// each publish it writes, and clears it after: two timer updates in the
// runtime per publish, 11 % of paho's writer in a drain's profile, and
// that writer is the one goroutine every publish passes through. The
// connection keeps a deadline it was given for up to writeDeadlineSlack
// longer instead, and arms a new one only when asked for a later deadline
// than that, or, for a write after a deadline was cleared, clears it then:
// every write still has a deadline at least as late as the one paho asked
// for, and at most writeDeadlineSlack later; a write paho made with none
// has none.

// openConn opens the network connection as paho does (netconn.go
// openConnection, the same schemes and proxies) and reads it through a
// buffer.
func openConn(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	conn, err := dial(uri, o)
	if err != nil {
		return nil, err
	}
	c := newReadConn(conn)
	c.batch = true
	c.timeout = o.WriteTimeout
	c.cond = sync.NewCond(&c.qmu)
	return c, nil
}

func dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: 30 * time.Second}
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri // gorilla/websocket refuses URLs with user info (paho #623)
		u.User = nil
		var tlsc *tls.Config
		if uri.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		return mqtt.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "mqtt", "tcp":
		return proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	case "unix":
		if uri.Host != "" {
			return dialer.Dial("unix", uri.Host)
		}
		return dialer.Dial("unix", uri.Path)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		if os.Getenv("all_proxy") == "" {
			return tls.DialWithDialer(dialer, "tcp", uri.Host, o.TLSConfig)
		}
		conn, err := proxy.FromEnvironment().Dial("tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(conn, o.TLSConfig)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return nil, errors.New("unknown protocol")
}

// writeDeadlineSlack is how much later than paho asked a write deadline
// may fall (see above).
const writeDeadlineSlack = time.Second

// readConn reads through a buffer; paho reads from one goroutine at a
// time (the handshake, then its reader). Its write deadline is set lazily
// (see above).
type readConn struct {
	net.Conn
	r *bufio.Reader

	mu    sync.Mutex
	want  time.Time // the write deadline paho set last (zero: none)
	armed time.Time // the write deadline set on the connection (zero: none)

	// Bursts of writes (openConn sets batch; see above).
	batch     bool
	timeout   time.Duration // the deadline of queued writes, when > 0
	qmu       sync.Mutex
	cond      *sync.Cond // the queue was taken, or the flush ended
	pending   []byte
	spare     []byte
	flushing  bool      // a flush goroutine owns the connection's writes
	lastWrite time.Time // when the last Write returned
	werr      error     // a queued write failed
	closed    bool
}

// burstGap: a write that comes sooner than this after the last one is
// queued (a burst); maxPending bytes queued make Write wait; Close waits
// up to closeFlush for what is queued (the DISCONNECT).
const (
	burstGap   = 50 * time.Microsecond
	maxPending = 256 << 10
	closeFlush = time.Second
)

func newReadConn(conn net.Conn) *readConn {
	return &readConn{Conn: conn, r: bufio.NewReaderSize(conn, 32<<10)}
}

func (c *readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *readConn) Write(p []byte) (int, error) {
	if !c.batch {
		return c.writeNow(p)
	}
	c.qmu.Lock()
	if c.werr != nil || c.closed {
		err := c.werr
		c.qmu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	if !c.flushing && time.Since(c.lastWrite) >= burstGap {
		// A quiet connection: write in the caller. Nothing is queued and
		// no flush runs (both need the flushing flag, and paho writes
		// from one goroutine).
		c.qmu.Unlock()
		n, err := c.writeNow(p)
		c.qmu.Lock()
		c.lastWrite = time.Now()
		c.qmu.Unlock()
		return n, err
	}
	for c.werr == nil && !c.closed && len(c.pending) >= maxPending {
		c.cond.Wait()
	}
	if c.werr != nil || c.closed {
		err := c.werr
		c.qmu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	c.pending = append(c.pending, p...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.lastWrite = time.Now()
	c.qmu.Unlock()
	return len(p), nil
}

// flush writes what is queued, all of it in one call, until the queue is
// empty.
func (c *readConn) flush() {
	c.qmu.Lock()
	for len(c.pending) > 0 && c.werr == nil {
		buf := c.pending
		c.pending = c.spare[:0]
		c.cond.Broadcast()
		c.qmu.Unlock()
		err := c.writeQueued(buf)
		c.qmu.Lock()
		if cap(buf) <= 2*maxPending {
			c.spare = buf[:0]
		}
		if err != nil {
			c.werr = err
			c.Conn.Close() // paho learns of the end from its reader
		}
	}
	c.flushing = false
	c.cond.Broadcast()
	c.qmu.Unlock()
}

// writeQueued writes a batch with a deadline of its own (the one paho set
// was for the write it queued, and is cleared by now).
func (c *readConn) writeQueued(buf []byte) error {
	c.mu.Lock()
	if c.timeout > 0 {
		t := time.Now().Add(c.timeout)
		if c.armed.IsZero() || c.armed.Before(t) || c.armed.Sub(t) > writeDeadlineSlack {
			if err := c.arm(t.Add(writeDeadlineSlack)); err != nil {
				c.mu.Unlock()
				return err
			}
		}
	} else if !c.armed.IsZero() {
		if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
			c.mu.Unlock()
			return err
		}
		c.armed = time.Time{}
	}
	c.mu.Unlock()
	_, err := c.Conn.Write(buf)
	return err
}

// Close writes what is queued (for at most closeFlush) and closes the
// connection.
func (c *readConn) Close() error {
	if c.batch {
		c.qmu.Lock()
		c.closed = true
		c.cond.Broadcast()
		deadline := time.Now().Add(closeFlush)
		for c.flushing && time.Now().Before(deadline) {
			c.qmu.Unlock()
			time.Sleep(time.Millisecond)
			c.qmu.Lock()
		}
		c.qmu.Unlock()
	}
	return c.Conn.Close()
}

// writeNow writes p in the caller, with paho's deadline (lazily: above).
func (c *readConn) writeNow(p []byte) (int, error) {
	c.mu.Lock()
	if c.want.IsZero() && !c.armed.IsZero() {
		if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		c.armed = time.Time{}
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *readConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.want = t
	if t.IsZero() || (!c.armed.Before(t) && c.armed.Sub(t) <= writeDeadlineSlack) {
		return nil // cleared at the next write, or the one armed will do
	}
	return c.arm(t.Add(writeDeadlineSlack))
}

func (c *readConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	c.want = t
	return c.arm(t)
}

// arm sets the connection's write deadline; c.mu is held.
func (c *readConn) arm(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	c.armed = t
	return nil
}
