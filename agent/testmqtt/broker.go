// Package testmqtt starts a real mosquitto broker on a free loopback port
// for tests and benchmarks, and can stop and restart it on the same port to
// simulate an outage. It is imported only by tests.
package testmqtt

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Broker is one mosquitto process (restartable).
type Broker struct {
	t       testing.TB
	Port    int // plain MQTT listener
	TLSPort int // TLS listener (with the TLS option)
	dir     string
	bin     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start runs mosquitto on a free 127.0.0.1 port with persistence in a
// temporary directory (so persistent subscriber sessions survive a
// restart), and provides a recording subscriber. It fails the test if mosquitto is not installed: the test suite
// script installs it (scripts/test.sh).
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Fatal("mosquitto not found: install it (apt-get install -y mosquitto) or run scripts/test.sh")
	}
	b := &Broker{t: t, Port: freePort(t), dir: t.TempDir()}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	conf := fmt.Sprintf("per_listener_settings false\npersistence true\npersistence_location %s/\nmax_queued_messages 0\nlog_dest none\n", b.dir)
	if o.passwordFile != "" {
		conf += "allow_anonymous false\npassword_file " + o.passwordFile + "\n"
	} else {
		conf += "allow_anonymous true\n"
	}
	conf += fmt.Sprintf("listener %d 127.0.0.1\n", b.Port)
	if o.tls != nil {
		b.TLSPort = freePort(t)
		conf += fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate %v\ntls_version tlsv1.2\n",
			b.TLSPort, o.tls.CAFile, o.tls.CertFile, o.tls.KeyFile, o.tls.RequireClientCert)
	}
	conf += o.extra
	if os.Geteuid() == 0 {
		// Otherwise mosquitto drops to its own user, which cannot write the
		// persistence file into the test's temporary directory.
		conf += "user root\n"
	}
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b.bin = bin
	b.Restart()
	t.Cleanup(b.Stop)
	return b
}

// Option configures Start.
type Option func(*options)

type options struct {
	tls          *TLSFiles
	passwordFile string
	extra        string
}

// WithConfig adds lines to the broker's configuration (such as
// "max_packet_size 600").
func WithConfig(lines string) Option { return func(o *options) { o.extra += lines + "\n" } }

// TLSFiles are the broker's TLS listener files.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
	RequireClientCert         bool
}

// WithTLS adds a TLS listener (TLSPort) next to the plain one.
func WithTLS(f TLSFiles) Option { return func(o *options) { o.tls = &f } }

// WithPasswords turns off anonymous access and uses a mosquitto password
// file made from user/password pairs.
func WithPasswords(t testing.TB, pairs ...string) Option {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		if out, err := exec.Command("mosquitto_passwd", "-b", path, pairs[i], pairs[i+1]).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
	}
	return func(o *options) { o.passwordFile = path }
}

// TLSURL is the TLS listener's address for paho.
func (b *Broker) TLSURL() string { return "ssl://127.0.0.1:" + strconv.Itoa(b.TLSPort) }

// URL is the broker address for paho.
func (b *Broker) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.Port) }

// Addr is host:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// Restart starts the broker if it is stopped and waits until it accepts
// connections.
func (b *Broker) Restart() {
	b.t.Helper()
	if b.cmd != nil {
		return
	}
	cmd := exec.Command(b.bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.cmd = cmd
	b.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(b.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto not accepting on %s after 10s: %v", b.Addr(), err)
		}
		select {
		case <-b.done:
			b.t.Fatalf("mosquitto exited at start (port %d): %s", b.Port, stderr.String())
		case <-time.After(20 * time.Millisecond): // then dial again
		}
	}
}

// Stop terminates the broker (SIGTERM, so it saves persistent sessions)
// and waits for it to exit.
func (b *Broker) Stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
