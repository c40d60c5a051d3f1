package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/scanagent/scanagent/central/config"
	"github.com/scanagent/scanagent/central/receiver"
	"github.com/scanagent/scanagent/central/store"
	"github.com/scanagent/scanagent/cmd/internal/exitcode"
)

// Stamped with -ldflags -X; without it the toolchain's VCS information is used.
var version = "dev"

const usageText = `scanreceiver: the reference central receiver (docs/CENTRAL.md)

  scanreceiver run -c FILE     receive: MQTT -> PostgreSQL, receipts to the agents (also: scanreceiver -c FILE)
  scanreceiver check -c FILE   validate a config: exit 0, or print every error as file:line:col and exit 2
  scanreceiver version         the version
  scanreceiver help            this list
`

// The exit codes: 0 ok, 1 runtime failure, 2 usage or configuration
// error (cmd/internal/exitcode).
type (
	usageError = exitcode.Usage
	errSilent  = exitcode.Silent
)

func exitCode(err error, stderr io.Writer) int { return exitcode.Of(err, "scanreceiver", stderr) }

// run is the whole program: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return errSilent{Code: 2}
	}
	cmd := "run"
	if args[0] == "" || args[0][0] != '-' || args[0] == "-h" || args[0] == "--help" {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return cmdRun(ctx, args, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "scanreceiver", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return usageError{Err: fmt.Errorf("unknown command %q", cmd)}
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "dev-" + s.Value
			}
		}
	}
	return version
}

func configFlag(name string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet("scanreceiver "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "/etc/scanreceiver/scanreceiver.yaml", "the configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", errSilent{Code: 0}
		}
		return "", usageError{Err: err}
	}
	if fs.NArg() > 0 {
		return "", usageError{Err: fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))}
	}
	return *file, nil
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	file, err := configFlag("check", args, stderr)
	if err != nil {
		return err
	}
	if _, err := config.Load(file); err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			fmt.Fprintln(stderr, err)
			return errSilent{Code: 2}
		}
		return usageError{Err: err}
	}
	fmt.Fprintf(stdout, "%s: ok\n", file)
	return nil
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	file, err := configFlag("run", args, stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(file)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			fmt.Fprintln(stderr, err)
			return errSilent{Code: 2}
		}
		return usageError{Err: err}
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Log.Level)) // checked by config
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h).With("receiver", cfg.Receiver.Name)

	st, err := store.Open(store.Options{URL: cfg.Postgres.URL, Password: cfg.Postgres.Password, MaxConns: int32(cfg.Postgres.MaxConns), Log: log,
		AppName: "scanreceiver " + cfg.Receiver.Name})
	if err != nil {
		return usageError{Err: err}
	}
	defer st.Close()
	r, err := receiver.New(cfg, st, log)
	if err != nil {
		return err
	}
	if cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		log.Info("http listening", "addr", ln.Addr().String())
	}
	log.Info("scanreceiver starting", "version", buildVersion(), "client_id", cfg.MQTT.ClientID, "group", cfg.Receiver.Group)
	err = r.Run(ctx)
	s := r.Stats()
	log.Info("scanreceiver stopped", "stored", s.Stored, "duplicates", s.Duplicates, "rejected", s.Rejected, "batches", s.Batches, "receipts", s.Receipts)
	return err
}
