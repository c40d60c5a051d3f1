package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/scanagent/scanagent/agent/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type source struct {
	mu sync.Mutex
	s  status.Status
}

func (s *source) Status() status.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.s
}

func get(t *testing.T, h http.Handler, path, token string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

// TestReadyz: ready means scans are accepted (the buffer is open); the
// broker's state is reported, not required.
func TestReadyz(t *testing.T) {
	src := &source{s: status.Status{BufferError: "disk full: free space below buffer.min_free_disk"}}
	h := New(Config{}, Deps{Source: src}).Handler()
	if code, body := get(t, h, "/readyz", ""); code != 503 || !strings.Contains(body, "disk full") {
		t.Fatalf("buffer not open: %d %q", code, body)
	}
	src.s = status.Status{}
	if code, body := get(t, h, "/readyz", ""); code != 503 || !strings.Contains(body, "opening") {
		t.Fatalf("buffer opening: %d %q", code, body)
	}
	src.s = status.Status{BufferOpen: true}
	if code, body := get(t, h, "/readyz", ""); code != 200 || !strings.Contains(body, "broker disconnected") {
		t.Fatalf("open, broker down: %d %q", code, body)
	}
	src.s.MQTT.Connected = true
	if code, body := get(t, h, "/readyz", ""); code != 200 || !strings.Contains(body, "broker connected") {
		t.Fatalf("open, broker up: %d %q", code, body)
	}
}

// TestToken: every path but /healthz needs the token.
func TestToken(t *testing.T) {
	h := New(Config{Token: "s3cret"}, Deps{Source: &source{s: status.Status{BufferOpen: true}}, Level: new(slog.LevelVar)}).Handler()
	for _, p := range []string{"/readyz", "/status", "/metrics", "/loglevel"} {
		if code, _ := get(t, h, p, ""); code != 401 {
			t.Errorf("%s without token: %d", p, code)
		}
		if code, _ := get(t, h, p, "wrong"); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
		if code, _ := get(t, h, p, "s3cret"); code != 200 {
			t.Errorf("%s with the token: %d", p, code)
		}
	}
	if code, _ := get(t, h, "/healthz", ""); code != 200 {
		t.Errorf("/healthz without token: %d", code)
	}
}

// TestServeStops: Serve returns once ctx is done, leaving no goroutine.
func TestServeStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := New(Config{}, Deps{Source: &source{}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
