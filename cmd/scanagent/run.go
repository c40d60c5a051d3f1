package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/cmd/internal/exitcode"
)

// Stamped by scripts/build.sh with -ldflags -X; without them the Go
// toolchain's VCS information is used.
var (
	version   = "dev"
	commit    = ""
	buildDate = ""
)

// The exit codes: 0 ok, 1 runtime failure, 2 usage or configuration
// error (cmd/internal/exitcode).
type (
	usageError = exitcode.Usage
	errSilent  = exitcode.Silent
)

func usagef(format string, a ...any) error { return exitcode.Usagef(format, a...) }

func exitCode(err error, stderr io.Writer) int { return exitcode.Of(err, "scanagent", stderr) }

// run is the whole program: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		// Nothing asked: the command list, as a usage error (like the go
		// command), so that a script or a unit missing its arguments fails.
		fmt.Fprint(stderr, usageText)
		return errSilent{Code: 2}
	}
	// A flag first means run ("scanagent -c FILE"), except a help flag.
	cmd := "run"
	if !strings.HasPrefix(args[0], "-") || isHelpFlag(args[0]) {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(ctx, args, stdout, stderr)
	case "check":
		return interruptible(ctx, cmd, 0, func() error { return cmdCheck(args, stdout, stderr) })
	case "demo":
		return cmdDemo(ctx, args, stdout, stderr)
	case "buffer":
		// It watches ctx too, to close the buffer and say how far it got.
		name := cmd
		if len(args) > 0 {
			name += " " + args[0]
		}
		return interruptible(ctx, name, 2*time.Second, func() error { return cmdBuffer(ctx, args, stdout, stderr) })
	case "ports":
		return interruptible(ctx, cmd, 0, func() error { return cmdPorts(args, stdout, stderr) })
	case "status":
		return interruptible(ctx, cmd, 0, func() error { return cmdStatus(ctx, args, stdout, stderr) })
	case "fleet":
		return cmdFleet(ctx, args, stdout, stderr)
	case "service":
		return cmdService(ctx, args, stdout, stderr)
	case "monitor":
		return cmdMonitor(ctx, args, stdout, stderr)
	case "tap":
		return cmdTap(ctx, args, stdout, stderr)
	case "version":
		return cmdVersion(args, stdout, stderr)
	case "help", "-h", "--h", "-help", "--help":
		return cmdHelp(ctx, args, stdout, stderr)
	}
	fmt.Fprint(stderr, usageText)
	return usagef("unknown command %q", cmd)
}

// interruptible runs a command's work and returns as soon as ctx is
// cancelled (the first SIGINT or SIGTERM: main's signal.NotifyContext
// takes the signal's default action away, so a command that ignored ctx
// would swallow it). Work that watches ctx itself gets grace to stop
// cleanly; work blocked elsewhere (a pipe nobody reads, a FIFO nobody
// writes, a port or a peer that does not answer) is left behind, and the
// process exits right after with code 1.
func interruptible(ctx context.Context, name string, grace time.Duration, work func() error) error {
	done := make(chan error, 1)
	go func() { done <- work() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case err := <-done:
			if err != nil {
				return err
			}
		case <-t.C:
		}
	}
	return fmt.Errorf("%s interrupted by a signal; stopped before it finished", name)
}

// loadConfig loads and validates; every problem is printed, one per line.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	if path == "" {
		return nil, usagef("-c FILE is required: the config file, e.g. -c /etc/scanagent/scanagent.yaml")
	}
	cfg, err := config.Load(path)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			fmt.Fprintln(stderr, err)
			return nil, errSilent{Code: 2}
		}
		return nil, usageError{Err: err}
	}
	return cfg, nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", help{
		usage:   "scanagent check -c FILE",
		summary: "Validate a config file: exit 0, or print every problem (file:line:col), exit 2.",
		example: "scanagent check -c /etc/scanagent/scanagent.yaml",
	}, stdout, stderr)
	path := fs.String("c", "", "config `FILE`")
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	if len(cfg.Warnings) > 0 {
		// The agent would run (and buffer), but could not deliver.
		fmt.Fprintln(stderr, cfg.Warnings)
		return errSilent{Code: 2}
	}
	fmt.Fprintf(stdout, "%s: ok (agent %s, site %s, %d stations, brokers %s)\n",
		*path, cfg.Agent.ID, cfg.Agent.Site, len(cfg.Stations), strings.Join(cfg.MQTT.Brokers, ","))
	return nil
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", help{
		usage:   "scanagent run -c FILE   (or: scanagent -c FILE)",
		summary: "Run the agent (scanners and scales -> disk buffer -> MQTT) until it is stopped.",
		more: `SIGINT or SIGTERM stops it; SIGHUP re-reads the config (stations and
log level; not on Windows). Logs go to stderr. Validate a config first
with scanagent check.
`,
		example: "scanagent run -c /etc/scanagent/scanagent.yaml",
	}, stdout, stderr)
	path := fs.String("c", "", "config `FILE`")
	if err := fs.parse(args); err != nil {
		return err
	}
	// Reading the config may block (a FIFO, a stuck network mount): the
	// agent is not started yet, so a signal ends it at once.
	var cfg *config.Config
	if err := interruptible(ctx, "run", 0, func() (err error) {
		cfg, err = loadConfig(*path, stderr)
		return err
	}); err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log, level, stderr)
	memLimit := "GOMEMLIMIT=" + os.Getenv("GOMEMLIMIT")
	if os.Getenv("GOMEMLIMIT") == "" {
		memLimit = "unset"
		if l := int64(cfg.Agent.MemoryLimit); l > 0 {
			debug.SetMemoryLimit(l)
			memLimit = cfg.Agent.MemoryLimit.String()
		}
	}
	log.Info("scanagent starting", "version", version, "config", *path, "agent", cfg.Agent.ID, "site", cfg.Agent.Site, "memory_limit", memLimit)
	logWarnings(log, cfg)
	n := serviceNotifier()
	ready := func(string) {}
	waiting := func(string, string) {}
	if n != nil {
		ready = func(string) {
			if err := n.notify("READY=1\nSTATUS=running"); err != nil {
				log.Warn("systemd notify failed", "err", err)
			}
		}
		// Started, though not scanning yet: systemd must not kill it for
		// a start that takes longer than its timeout (the buffer waits for
		// disk space, or for another agent to let go of it).
		waiting = func(_, reason string) {
			if err := n.notify("READY=1\nSTATUS=waiting for the buffer: " + firstLine(reason)); err != nil {
				log.Warn("systemd notify failed", "err", err)
			}
		}
	}
	a, err := agent.New(cfg, agent.Deps{Log: log, Level: level, Version: version, Ready: ready, Waiting: waiting, ConfigPath: *path})
	if err != nil {
		return usageError{Err: err}
	}
	watchReload(ctx, *path, a, log)
	if n != nil {
		go runWatchdog(ctx, n, a, log)
		context.AfterFunc(ctx, func() { n.notify("STOPPING=1\nSTATUS=stopping: devices first, then in-flight publishes") })
	}
	return a.Run(ctx)
}

// logWarnings logs the config's problems that let the agent run but not
// deliver (TLS and password files).
func logWarnings(log *slog.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config problem: scans are buffered but cannot be delivered until it is fixed", "problem", w.Error())
	}
}

// newLogger makes the agent's logger; level is set from the config and
// can be changed later (HTTP, reload).
func newLogger(c config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	l, _ := config.ParseLevel(c.Level) // validated by config.Parse; info otherwise
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", help{
		usage:   "scanagent version",
		summary: "Print the version, the commit, the build date, the Go version and the platform.",
		example: "scanagent version",
	}, stdout, stderr)
	if err := fs.parse(args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, versionString())
	return nil
}

func versionString() string {
	c, date := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				c = s.Value
			case "vcs.time":
				date = s.Value
			}
		}
	}
	if commit != "" {
		c = commit
	}
	if buildDate != "" {
		date = buildDate
	}
	return fmt.Sprintf("scanagent %s (commit %s, built %s, %s %s/%s)", version, c, date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
