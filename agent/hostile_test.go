//go:build unix

package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
