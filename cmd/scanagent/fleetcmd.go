package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
	"github.com/scanagent/scanagent/central/fleet"
)

// exitFleetProblem is the exit code of "fleet --check" when a hub has been
// offline or its backlog waiting for too long.
const exitFleetProblem = 3

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func cmdFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("fleet", help{
		usage:   "scanagent fleet [-c FILE] [--broker URL]... [--prefix FILTER] [--once [--json] | --check | --listen ADDR]",
		summary: "Show every hub of the fleet from the central broker: the retained status, health and device topics.",
		more: `One row per hub: site, agent, online or offline and since when, version,
uplink state, backlog and its oldest scan's age, unreceipted scans,
devices in error, clock quality, last seen. Live by default (redrawn
every --interval); --once prints it once (--json: a JSON array); --check
exits 3 when a hub has been offline longer than --max-offline or has a
backlog older than --max-backlog-age, 0 otherwise, 1 when the broker
cannot be reached. --listen serves /metrics for every hub, labelled
site and agent (docs/FLEET.md). -c FILE takes the broker, TLS, auth and
these settings from a strict YAML file; flags win over it.
`,
		example: "scanagent fleet --broker ssl://central:8883 --ca-file ca.pem --username fleet --password-file pw --once --json\n" +
			"scanagent fleet -c /etc/scanagent/fleet.yaml --check --max-offline 10m",
	}, stdout, stderr)
	path := fs.String("c", "", "config `FILE` (mqtt: brokers, client_id, username, password_file, tls; fleet: prefix, listen, max_offline, max_backlog_age, forget)")
	var brokers listFlag
	fs.Var(&brokers, "broker", "central broker `URL` (tcp:// ssl:// ws:// wss://); repeat for failover (default tcp://127.0.0.1:1883)")
	prefix := fs.String("prefix", "", "the agents' topic prefixes, a `FILTER` with + for whole levels (default scanagent/+/+)")
	username := fs.String("username", "", "broker user `name`")
	passwordFile := fs.String("password-file", "", "broker password `FILE` (default $"+fleet.EnvMQTTPassword+")")
	caFile := fs.String("ca-file", "", "CA bundle `FILE` (PEM) for ssl:// brokers")
	certFile := fs.String("cert-file", "", "client certificate `FILE` (PEM)")
	keyFile := fs.String("key-file", "", "client key `FILE` (PEM)")
	serverName := fs.String("server-name", "", "`name` checked in the broker's certificate")
	clientID := fs.String("client-id", "", "MQTT client id (default scanagent-fleet-<host>-<pid>)")
	once := fs.Bool("once", false, "print the table once and exit")
	asJSON := fs.Bool("json", false, "with --once or --check: print the hubs as a JSON array")
	check := fs.Bool("check", false, "exit 3 when a hub is offline longer than --max-offline or has a backlog older than --max-backlog-age")
	maxOffline := fs.Duration("max-offline", 0, "--check: longest a hub may be offline (default 5m; 0 in -c turns it off)")
	maxBacklogAge := fs.Duration("max-backlog-age", 0, "--check: oldest a hub's waiting scan may be (default 10m)")
	listen := fs.String("listen", "", "serve /metrics for every hub at this `address` (host:port)")
	forget := fs.Duration("forget", 0, "drop hubs offline and not seen for this long (default 24h)")
	interval := fs.Duration("interval", 2*time.Second, "live table: redraw period")
	wait := fs.Duration("wait", 5*time.Second, "--once, --check: longest wait for the retained messages")
	if err := fs.parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *once && *check {
		return usagef("--once and --check do not go together")
	}
	if *asJSON && !*once && !*check {
		return usagef("--json needs --once or --check")
	}
	if (*once || *check) && *listen != "" {
		return usagef("--listen serves the live view; it does not go with --once or --check")
	}

	cfg := fleet.Defaults()
	if *path != "" {
		c, err := fleet.Load(*path)
		if err != nil {
			var es yamlcfg.Errors
			if errors.As(err, &es) {
				for _, e := range es {
					fmt.Fprintln(stderr, e)
				}
				return errSilent{Code: 2}
			}
			return usagef("%v", err)
		}
		cfg = *c
	}
	m, o := &cfg.MQTT, &cfg.Fleet
	if len(brokers) > 0 {
		m.Brokers = brokers
	}
	for _, f := range []struct {
		name string
		dst  *string
		v    string
	}{{"prefix", &o.Prefix, *prefix}, {"username", &m.Username, *username}, {"client-id", &m.ClientID, *clientID},
		{"ca-file", &m.TLS.CAFile, *caFile}, {"cert-file", &m.TLS.CertFile, *certFile}, {"key-file", &m.TLS.KeyFile, *keyFile},
		{"server-name", &m.TLS.ServerName, *serverName}, {"listen", &o.Listen, *listen}} {
		if set[f.name] {
			*f.dst = f.v
		}
	}
	for _, f := range []struct {
		name string
		dst  *yamlcfg.Duration
		v    time.Duration
	}{{"max-offline", &o.MaxOffline, *maxOffline}, {"max-backlog-age", &o.MaxBacklogAge, *maxBacklogAge}, {"forget", &o.Forget, *forget}} {
		if set[f.name] {
			*f.dst = yamlcfg.Duration(f.v)
		}
	}
	if set["password-file"] {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return usagef("--password-file: %v", err)
		}
		m.Password = strings.TrimRight(string(b), "\r\n")
	} else if *path == "" {
		m.Password = os.Getenv(fleet.EnvMQTTPassword)
	}
	if err := fleet.CheckPrefixFilter(o.Prefix); err != nil {
		return usagef("--prefix: %v", err)
	}
	for _, b := range m.Brokers {
		c := yamlcfg.New("--broker")
		c.Broker("broker", b)
		if es := c.Errors(); len(es) > 0 {
			return usagef("--broker: %s", es[0].Msg)
		}
	}
	if o.Listen != "" && !yamlcfg.IsHostPort(o.Listen, true) {
		return usagef("--listen must be host:port with a numeric port, e.g. 127.0.0.1:9182, got %q", o.Listen)
	}
	if *interval < 100*time.Millisecond {
		return usagef("--interval must be at least 100ms")
	}
	tlsCfg, err := m.TLS.Load(time.Time{})
	if err != nil {
		return usagef("%v", err)
	}
	view, err := fleet.NewView(o.Prefix, o.Forget.D())
	if err != nil {
		return usagef("%v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	w, err := fleet.Watch(ctx, fleet.Conn{Brokers: m.Brokers, ClientID: m.ClientID, Username: m.Username, Password: m.Password,
		TLS: tlsCfg, ConnectTimeout: m.ConnectTimeout.D(), KeepAlive: m.KeepAlive.D(), Log: log}, o.Prefix, view)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("fleet: %w (check --broker, the TLS files and the credentials)", err)
	}
	defer w.Close()

	if *once || *check {
		fleet.Settle(ctx, view, 500*time.Millisecond, *wait)
		now := time.Now()
		hubs := view.Snapshot(now)
		if *asJSON {
			b, _ := json.MarshalIndent(hubs, "", "  ")
			fmt.Fprintf(stdout, "%s\n", b)
		} else if *once {
			fleet.WriteTable(stdout, hubs, now)
		}
		if *check {
			problems := fleet.Check(hubs, now, o.MaxOffline.D(), o.MaxBacklogAge.D())
			if !*asJSON {
				for _, p := range problems {
					fmt.Fprintf(stdout, "%s %s: %s\n", p.Hub.Site, p.Hub.Agent, p.Reason)
				}
				if len(problems) == 0 {
					fmt.Fprintf(stdout, "ok: %d hubs\n", len(hubs))
				}
			}
			if len(problems) > 0 {
				return errSilent{Code: exitFleetProblem}
			}
		}
		return nil
	}

	if o.Listen != "" {
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return fmt.Errorf("fleet: listen %s: %w", o.Listen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", fleet.MetricsHandler(view, w.Connected))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(stderr, "fleet: serving /metrics at http://%s/metrics\n", ln.Addr())
	}
	terminal := isTerminal(stdout)
	draw := !(o.Listen != "" && !terminal) // a metrics service logs no tables
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		if draw {
			if terminal {
				fmt.Fprint(stdout, "\x1b[H\x1b[2J")
			}
			now := time.Now()
			conn := "connected"
			if !w.Connected() {
				conn = "NOT connected, reconnecting"
			}
			fmt.Fprintf(stdout, "fleet %s at %s (%s)\n", o.Prefix, now.Format(time.TimeOnly), conn)
			fleet.WriteTable(stdout, view.Snapshot(now), now)
			if !terminal {
				fmt.Fprintln(stdout)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
