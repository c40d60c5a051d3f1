package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSystemdNotify runs the real binary as systemd would with Type=notify
// and WatchdogSec: it reports READY=1 once running, pings the watchdog with
// a status line, and reports STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	bin := buildAgent(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "agent: {id: sd-1, site: LAB, data_dir: %q}\nmqtt: {brokers: [\"tcp://127.0.0.1:1\"]}\nhttp: {listen: \"\"}\nstations:\n  - id: s1\n    scanner: {port: /nonexistent/tty}\n",
		filepath.Join(dir, "data")), 0o644)
	cmd := exec.Command(bin, "run", "-c", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	read := func(want string) string {
		t.Helper()
		buf := make([]byte, 4096)
		deadline := time.Now().Add(15 * time.Second)
		for {
			conn.SetReadDeadline(deadline)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("no %q from the agent: %v", want, err)
			}
			if msg := string(buf[:n]); strings.Contains(msg, want) {
				return msg
			}
		}
	}
	read("READY=1")
	msg := read("WATCHDOG=1")
	if !strings.Contains(msg, "STATUS=broker ") || !strings.Contains(msg, "1 stations") {
		t.Errorf("watchdog message %q", msg)
	}
	read("WATCHDOG=1") // and again
	cmd.Process.Signal(syscall.SIGTERM)
	read("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}
