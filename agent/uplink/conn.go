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
// connection is read through a buffer. Writes are not batched: paho's
// write per packet is kept, because a batch that carries a publish the
// broker refuses (and closes the connection for) with the publishes before
// it lets the broker's reset discard their PUBACKs, and the poison watch
// (a record that ends every session it is in) then blames the wrong one.
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
	return newReadConn(conn), nil
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
}

func newReadConn(conn net.Conn) *readConn {
	return &readConn{Conn: conn, r: bufio.NewReaderSize(conn, 32<<10)}
}

func (c *readConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *readConn) Write(p []byte) (int, error) {
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
