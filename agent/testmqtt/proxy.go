package testmqtt

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy between the agent and a broker that can cut
// connections and hold back the broker's replies (PUBACKs), to test what
// happens between a PUBLISH reaching the broker and its PUBACK reaching the
// agent.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu       sync.Mutex
	open     []net.Conn
	accepted int
	hold     bool
	cond     *sync.Cond
}

// Connections is how many connections the proxy accepted.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// NewProxy listens on a free loopback port and forwards to target.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

// URL is the proxy's address for paho.
func (p *Proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.open = append(p.open, c, b)
		p.accepted++
		p.mu.Unlock()
		go p.pipe(b, c, false) // agent -> broker
		go p.pipe(c, b, true)  // broker -> agent (can be held)
	}
}

func (p *Proxy) pipe(dst, src net.Conn, down bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && down {
			p.mu.Lock()
			for p.hold {
				p.cond.Wait()
			}
			p.mu.Unlock()
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// Hold stops forwarding the broker's bytes to the agent (PUBACKs pile up
// at the proxy); Release lets them through again.
func (p *Proxy) Hold() {
	p.mu.Lock()
	p.hold = true
	p.mu.Unlock()
}

// Release resumes forwarding held bytes.
func (p *Proxy) Release() {
	p.mu.Lock()
	p.hold = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Cut closes every connection at once (held bytes are lost) and releases
// the hold for new connections.
func (p *Proxy) Cut() {
	p.mu.Lock()
	for _, c := range p.open {
		c.Close()
	}
	p.open = nil
	p.hold = false
	p.cond.Broadcast()
	p.mu.Unlock()
}
