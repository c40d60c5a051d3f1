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
// paho writes every packet with its own write(2) and reads every packet
// with three read(2)s (the type byte, the length, the body): at tens of
// thousands of messages a second these system calls were the largest
// single cost of the uplink (docs/BENCHMARKS.md). batchConn reads
// through a buffer and hands writes to a goroutine that writes everything
// queued since its last write in one call: one publish alone goes out at
// once, a burst goes out together. A write that fails is reported by the
// next Write and closes the connection, so paho sees the session end (its
// reader fails) and every publish not yet acknowledged stays in the
// buffer, as when any connection is lost.

// openConn opens the network connection as paho does (netconn.go
// openConnection, the same schemes and proxies) and wraps it.
func openConn(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	conn, err := dial(uri, o)
	if err != nil {
		return nil, err
	}
	return newBatchConn(conn, o.WriteTimeout), nil
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

// maxPending is how many bytes Write queues before it waits for the
// writer goroutine.
const maxPending = 256 << 10

// closeFlush is how long Close waits for queued bytes (the DISCONNECT)
// to be written.
const closeFlush = time.Second

type batchConn struct {
	net.Conn
	r       *bufio.Reader
	timeout time.Duration // per write, when > 0

	mu      sync.Mutex
	cond    *sync.Cond // the writer took the queue, or stopped
	pending []byte
	spare   []byte
	err     error // the first write error
	closed  bool
	kick    chan struct{}
	done    chan struct{} // the writer returned
	once    sync.Once
}

func newBatchConn(conn net.Conn, timeout time.Duration) *batchConn {
	c := &batchConn{
		Conn:    conn,
		r:       bufio.NewReaderSize(conn, 32<<10),
		timeout: timeout,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	go c.writer()
	return c
}

func (c *batchConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write queues p for the writer goroutine.
func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closed && len(c.pending) >= maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closed {
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

// writer writes what is queued, all of it in one call, until Close.
func (c *batchConn) writer() {
	defer close(c.done)
	for range c.kick {
		c.mu.Lock()
		for len(c.pending) > 0 && c.err == nil {
			buf := c.pending
			c.pending = c.spare[:0]
			c.cond.Broadcast()
			c.mu.Unlock()
			var err error
			if c.timeout > 0 {
				err = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
			}
			if err == nil {
				_, err = c.Conn.Write(buf)
			}
			c.mu.Lock()
			if cap(buf) <= maxPending*2 {
				c.spare = buf[:0]
			}
			if err != nil {
				c.err = err
				c.cond.Broadcast()
				// paho learns of the end from its reader.
				c.Conn.Close()
			}
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return
		}
	}
}

// Close writes what is queued (for at most closeFlush) and closes the
// connection.
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	c.once.Do(func() { close(c.kick) })
	t := time.NewTimer(closeFlush)
	select {
	case <-c.done:
	case <-t.C:
	}
	t.Stop()
	err := c.Conn.Close()
	<-c.done
	return err
}

// Writes are queued: a deadline applies to the writer's own writes
// (timeout), not to Write.
func (c *batchConn) SetWriteDeadline(time.Time) error { return nil }

func (c *batchConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }
