//go:build unix

package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
)

// startHTTPAgent runs an agent with no reachable broker and no scanner,
// for its HTTP server alone; token "" serves without one. tune runs
// before Run. It returns the base URL and the agent's log level.
func startHTTPAgent(t *testing.T, token string, tune func(*agent.Agent)) (string, *slog.LevelVar) {
	t.Helper()
	dir := t.TempDir()
	httpYAML := `http: {listen: "127.0.0.1:0"}`
	if token != "" {
		tokenFile := filepath.Join(dir, "token")
		os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
		httpYAML = fmt.Sprintf(`http: {listen: "127.0.0.1:0", token_file: %q}`, tokenFile)
	}
	text := fmt.Sprintf("agent: {id: hub-1, site: LAB, data_dir: %q}\nmqtt: {brokers: [\"tcp://127.0.0.1:1\"]}\n%s\nstations:\n  - id: s1\n    scanner: {port: /nonexistent/tty}\n",
		filepath.Join(dir, "data"), httpYAML)
	cfg, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte(text), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	addr := make(chan string, 1)
	a, err := agent.New(cfg, agent.Deps{Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level})), Level: level,
		Ready: func(s string) { addr <- s }})
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(a)
	}
	runAgent(t, a)
	return "http://" + <-addr, level
}

// runAgent runs a until the test ends.
func runAgent(t *testing.T, a *agent.Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("agent did not stop")
		}
	})
}

// TestBearerSchemeCaseInsensitive: the auth scheme is matched without
// regard to case (RFC 7235), spaces after it are allowed, and the token
// itself must match exactly.
func TestBearerSchemeCaseInsensitive(t *testing.T) {
	base, _ := startHTTPAgent(t, "s3cret", nil)
	for header, want := range map[string]int{
		"Bearer s3cret":   200,
		"bearer s3cret":   200,
		"BEARER s3cret":   200,
		"bEaReR s3cret":   200,
		"Bearer   s3cret": 200,
		"Bearer S3CRET":   401,
		"Bearer s3cre":    401,
		"Bearer s3cret2":  401,
		"Bearers3cret":    401,
		"Basic s3cret":    401,
		"s3cret":          401,
		"Bearer":          401,
		"":                401,
	} {
		req, _ := http.NewRequest("GET", base+"/status", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization %q: %d, want %d", header, resp.StatusCode, want)
		}
	}
}

// TestLogLevelOnlyFourNames: PUT /loglevel takes debug, info, warn or error
// and nothing else; slog's offsets such as "error+100" (which would hide
// even "scan NOT accepted") are refused and leave the level alone.
func TestLogLevelOnlyFourNames(t *testing.T) {
	base, level := startHTTPAgent(t, "", nil)
	put := func(body string) int {
		req, _ := http.NewRequest("PUT", base+"/loglevel", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("warn\n"); code != 200 || level.Level() != slog.LevelWarn {
		t.Fatalf("PUT warn: %d, level %v", code, level.Level())
	}
	for _, bad := range []string{"error+100", "error+1", "warn-4", "debug-8", "INFO", "Error", "12", "-4", "warning", ""} {
		if code := put(bad); code != 400 || level.Level() != slog.LevelWarn {
			t.Errorf("PUT %q: %d, level %v; want 400 and warn", bad, code, level.Level())
		}
	}
	for _, name := range []string{"debug", "info", "error"} {
		if code := put(name); code != 200 || strings.ToLower(level.Level().String()) != name {
			t.Errorf("PUT %q: %d, level %v", name, code, level.Level())
		}
	}
}
