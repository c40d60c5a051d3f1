package agent_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent"
)

// serverConns counts the TCP connections to port on 127.0.0.1 that this
// process has accepted (they have a socket inode; those still in the
// kernel's accept queue have none), from /proc/net/tcp.
func serverConns(t *testing.T, port int) int {
	t.Helper()
	// The sockets this process holds, from its descriptor table (read in
	// a few fast calls: close to a snapshot), then which of them are the
	// server's side, from /proc/net/tcp (long, and read while connections
	// come and go: alone it can show a batch being closed and the next one
	// accepted at once).
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			held[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
		if len(fields) < 10 || fields[1] != local || fields[3] == "0A" { // 0A: the listener
			continue
		}
		if held[fields[9]] {
			n++
		}
	}
	return n
}

// TestHTTPHostileClients: a thousand connections that send nothing, stop in
// the middle of their headers or body, or stay idle after a request are
// closed by the server's timeouts, the connections it holds stay near its
// cap, an oversized header is refused, and ordinary requests are answered
// during and after the flood.
func TestHTTPHostileClients(t *testing.T) {
	const timeout, maxConns, flood = 200 * time.Millisecond, 32, 1000
	base, _ := startHTTPAgent(t, "s3cret", func(a *agent.Agent) { agent.SetHTTPLimits(a, timeout, 4<<10, maxConns) })
	host := strings.TrimPrefix(base, "http://")
	_, p, _ := net.SplitHostPort(host)
	port, _ := strconv.Atoi(p)

	// Watch what the server holds for the whole test.
	var peak int
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			peak = max(peak, serverConns(t, port))
			select {
			case <-stopWatch:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	// Four kinds of clients that hold a connection: silent; stopped in the
	// middle of the headers; a finished request kept alive and idle; a
	// body announced and not sent (the handler waits for it).
	hold := []string{
		"",
		"GET /status HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer s3",
		"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
		"PUT /loglevel HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer s3cret\r\nContent-Length: 5\r\n\r\nde",
	}
	start := time.Now()
	var conns []net.Conn
	for i := range flood {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Write([]byte(hold[i%len(hold)]))
		conns = append(conns, c)
	}
	t.Logf("%d connections open (silent, half-sent headers, kept alive, half-sent body); server holds %d", flood, serverConns(t, port))

	// An ordinary request is answered meanwhile (it waits its turn).
	healthz := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		healthz <- err
	}()

	// Every flood connection is closed by the server (a kept-alive one
	// after its response, a half-sent body after a 400).
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := flood
	for _, c := range conns {
		wg.Go(func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(time.Minute))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return // still open: counted below
			}
			mu.Lock()
			open--
			mu.Unlock()
		})
	}
	wg.Wait()
	if open > 0 {
		t.Fatalf("%d of %d connections still open after a minute", open, flood)
	}
	t.Logf("all %d closed by the server %v after the first was opened", flood, time.Since(start).Round(time.Millisecond))
	if err := <-healthz; err != nil {
		t.Fatalf("/healthz during the flood: %v", err)
	}

	// A header over the cap is refused.
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /status HTTP/1.1\r\nHost: agent\r\nX-Big: %s\r\n\r\n", strings.Repeat("x", 64<<10))
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB header: %v %v, want 431", resp, err)
	}

	close(stopWatch)
	<-watched
	// Without the cap the server would hold all thousand. A reading of
	// /proc/net/tcp is not atomic: it may see a batch being closed and
	// the next one accepted, hence twice the cap as the bound.
	if peak > 2*maxConns {
		t.Fatalf("the server held %d connections at once, cap %d", peak, maxConns)
	}
	t.Logf("at most %d connections held at once (cap %d)", peak, maxConns)

	// And afterwards the agent answers as usual.
	for _, path := range []string{"/healthz", "/status"} {
		if code, body := httpGet(t, base+path, "s3cret"); code != 200 {
			t.Errorf("%s after the flood: %d %s", path, code, body)
		}
	}
}
