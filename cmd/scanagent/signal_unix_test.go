//go:build unix

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
)

// TestCommandsStopOnFirstSIGTERM runs the real binary on inputs that block
// (a config that is a FIFO nobody writes, an export to a pipe nobody
// reads, an agent address that accepts and never answers), sends one
// SIGTERM once the command is surely past installing its signal handler,
// and wants it to exit promptly with code 1 and a message saying so. The
// commands used to swallow the first signal and stay blocked.
func TestCommandsStopOnFirstSIGTERM(t *testing.T) {
	bin := buildAgent(t)

	// start runs bin with args; ready blocks until the command is at its
	// slow part (so the handler is installed); then SIGTERM.
	stop := func(t *testing.T, cmd *exec.Cmd, ready func()) {
		t.Helper()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if cmd.Stdout == nil {
			cmd.Stdout = new(bytes.Buffer)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		ready()
		sent := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("%v: still running 15 s after SIGTERM\n%s", cmd.Args[1:], stderr.String())
		}
		took := time.Since(sent)
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "interrupted by a signal") {
			t.Fatalf("%v: exit code %d, want 1 with a message\n%s", cmd.Args[1:], code, stderr.String())
		}
		t.Logf("%v: exit 1 %v after SIGTERM: %s", cmd.Args[1:], took.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	}

	// A FIFO as the config: reading it blocks until someone writes. The
	// test opens the writing end, which returns once the command has
	// opened the reading end (so it is past main's signal setup), and
	// never writes.
	fifoCommand := func(t *testing.T, args ...string) {
		fifo := filepath.Join(t.TempDir(), "scanagent.yaml")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		var w *os.File
		defer func() {
			if w != nil {
				w.Close()
			}
		}()
		stop(t, exec.Command(bin, append(args, "-c", fifo)...), func() {
			opened := make(chan error, 1)
			go func() {
				var err error
				w, err = os.OpenFile(fifo, os.O_WRONLY, 0)
				opened <- err
			}()
			select {
			case err := <-opened:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the command never opened its config")
			}
		})
	}
	t.Run("check", func(t *testing.T) { fifoCommand(t, "check") })
	t.Run("run", func(t *testing.T) { fifoCommand(t, "run") })

	t.Run("buffer export", func(t *testing.T) {
		cfgPath, _ := writeConfig(t)
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		q, err := buffer.Open(agent.BufferDir(cfg), agent.BufferOptions(cfg, nil))
		if err != nil {
			t.Fatal(err)
		}
		const n = 2000 // about 500 KB of JSON lines, far more than a pipe holds
		outcomes := make(chan buffer.Outcome, n)
		for i := range n {
			ev := record.Event{Schema: record.Schema, ID: fmt.Sprintf("id-%d", i), Agent: "hub-1", Site: "LAB", Station: "induct-1",
				ScannedAt: "2026-11-22T01:31:44.781Z", Barcode: s10(i), Kind: "s10", Valid: true}
			v, err := record.EventValue("induct-1", &ev)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Submit(v, nil, outcomes); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			if o := <-outcomes; o.Err != nil {
				t.Error(o.Err)
			}
		}
		q.Close()
		cmd := exec.Command(bin, "buffer", "export", "-c", cfgPath)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		stop(t, cmd, func() {
			// The first line proves the export runs; nothing more is read,
			// so it blocks once the pipe is full.
			if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		})
	})

	t.Run("status", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		stop(t, exec.Command(bin, "status", "--addr", ln.Addr().String(), "--timeout", "1h"), func() {
			c, err := ln.Accept() // the request arrives; no answer ever comes
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		})
	})
}
