// Package httpapi is the agent's local HTTP interface: /healthz, /readyz,
// /status, /metrics and /loglevel, the technician console (a page at /,
// its event stream and the serial taps), the token in front of them, and
// the limits that keep hostile clients from holding the server. It reads
// the agent through the status document only.
package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/live"
	"github.com/scanagent/scanagent/agent/status"
)

// Source is what the HTTP interface reads of the agent.
type Source interface {
	Status() status.Status
}

// Config is the HTTP interface's configuration.
type Config struct {
	// Token, if set, is the bearer token every path but /healthz needs.
	Token   string
	Version string
	Limits  Limits
}

// Deps are what the HTTP interface takes from the agent.
type Deps struct {
	Source Source
	Log    *slog.Logger
	// Level, if set, is the level of the agent's log, read and changed
	// on /loglevel.
	Level *slog.LevelVar
	// AckLatency is registered with the other metrics (nil: none).
	AckLatency prometheus.Collector
	// Console, if set, serves the technician console's taps and actions
	// (console.go); without it the page shows the status only.
	Console Console
	// Live, if set, carries the scans to the console's event streams.
	Live *live.Bus
}

// Limits bound what clients can hold of the status server, which
// otherwise keeps every idle or half-sent connection (and its file
// descriptor and goroutine) for ever.
type Limits struct {
	ReadHeader time.Duration // request line and headers
	Read       time.Duration // the whole request, body included
	// Write runs from the end of the request headers to the end of the
	// response. A streaming endpoint (server-sent events) must lift it
	// for its own request: http.NewResponseController(w).SetWriteDeadline(time.Time{}).
	Write          time.Duration
	Idle           time.Duration // a kept-alive connection between requests
	MaxHeaderBytes int           // request line and headers (net/http allows 4 KiB more)
	// MaxConns caps open connections; more wait in the kernel's accept
	// queue, holding no descriptor of the agent's. 64 is ample for
	// Prometheus, health probes and technicians' status commands (a few
	// at a time), and bounds the worst case at 64 descriptors, goroutines
	// and buffers (a few MiB with full headers) of the 128 MiB memory limit.
	MaxConns int
}

// DefaultLimits are the limits of a running agent.
func DefaultLimits() Limits {
	return Limits{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second, Idle: 60 * time.Second,
		MaxHeaderBytes: 16 << 10, MaxConns: 64}
}

// API serves the agent's HTTP interface.
type API struct {
	cfg      Config
	src      Source
	log      *slog.Logger
	level    *slog.LevelVar
	registry *prometheus.Registry
	console  *console
	handler  http.Handler
}

// New builds the handlers; it starts nothing.
func New(c Config, d Deps) *API {
	if c.Limits == (Limits{}) {
		c.Limits = DefaultLimits()
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{cfg: c, src: d.Source, log: log, level: d.Level}
	a.registry = newRegistry(c.Version, d.Source, d.AckLatency)
	a.console = newConsole(a, d.Console, d.Live)
	a.handler = a.routes()
	return a
}

// Handler serves /healthz, /readyz, /status, /metrics, /loglevel and the
// technician console. With a token, every path but /healthz, the
// console's page and its login needs it.
func (a *API) Handler() http.Handler { return a.handler }

// Serve serves on ln within the limits until ctx is done, then shuts the
// server down (open requests get a second). The error is the server's,
// never the shutdown's.
func (a *API) Serve(ctx context.Context, ln net.Listener) error {
	l := a.cfg.Limits
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		WriteTimeout:      l.Write,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// net/http's own messages are mostly about what clients sent:
		// at debug, so a client cannot fill the log.
		ErrorLog: slog.NewLogLogger(a.log.With("component", "http").Handler(), slog.LevelDebug),
		// Requests end with ctx: the console's event streams too.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	hctx, stopHistory := context.WithCancel(ctx)
	historyDone := make(chan struct{})
	go func() { defer close(historyDone); a.console.runHistory(hctx) }()
	defer func() { stopHistory(); <-historyDone }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(netutil.LimitListener(ln, l.MaxConns)) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (a *API) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// Ready means scans are being accepted; a broker outage does not
		// make the agent unready (it buffers), it is only reported.
		s := a.src.Status()
		if !s.BufferOpen {
			why := s.BufferError
			if why == "" {
				why = "opening"
			}
			http.Error(w, "buffer not open: "+why, http.StatusServiceUnavailable)
			return
		}
		broker := "disconnected"
		if s.MQTT.Connected {
			broker = "connected"
		}
		fmt.Fprintf(w, "ready; broker %s\n", broker)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.src.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /loglevel", func(w http.ResponseWriter, r *http.Request) {
		if a.level == nil {
			http.Error(w, "log level is fixed", http.StatusNotImplemented)
			return
		}
		fmt.Fprintln(w, strings.ToLower(a.level.Level().String()))
	})
	mux.HandleFunc("PUT /loglevel", func(w http.ResponseWriter, r *http.Request) {
		if a.level == nil {
			http.Error(w, "log level is fixed", http.StatusNotImplemented)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64))
		l, err := config.ParseLevel(string(bytes.TrimSpace(body)))
		if err != nil {
			http.Error(w, "level must be debug, info, warn or error", http.StatusBadRequest)
			return
		}
		old := a.level.Level()
		a.level.Set(l)
		a.log.Info("log level changed over HTTP", "from", old, "to", l, "remote", r.RemoteAddr)
		fmt.Fprintln(w, strings.ToLower(l.String()))
	})
	a.console.register(mux, a.registry)
	// Requests that change state (PUT, POST) from a browser must come
	// from the console's own page: Sec-Fetch-Site or Origin is checked
	// against the Host (a page elsewhere cannot make a technician's
	// browser post here). Tools that send neither (curl, scanagent) pass.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "cross-origin request refused: use the console served by this agent", http.StatusForbidden)
	}))
	return headers(cop.Handler(authorize(a.cfg.Token, mux)))
}

// localOnly refuses requests that change state, without a token, unless
// they name the agent by an IP address or localhost: a web page whose
// name was made to resolve to 127.0.0.1 (DNS rebinding) is then the same
// origin as the console, and only its Host shows it.
func localOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = r.Host
			}
			host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
			if net.ParseIP(host) == nil && !strings.EqualFold(host, "localhost") {
				http.Error(w, "refused: without http.token_file, requests that change state must name the agent by its IP address or localhost", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// headers sets the security headers on every answer.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		next.ServeHTTP(w, r)
	})
}

// authorize requires the token on every path but /healthz (a liveness
// probe learns nothing from it) and the console's page, assets and login
// (they hold no data): as a bearer token, or as the console's session
// cookie. No token: no check.
func authorize(token string, next http.Handler) http.Handler {
	if token == "" {
		return localOnly(next)
	}
	want := sha256.Sum256([]byte(token))
	session := sha256.Sum256([]byte(sessionValue(token)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !openPath(r) && !bearer(r.Header.Get("Authorization"), want) && !cookie(r, session) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scanagent"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cookie reports whether the request carries the console's session
// cookie whose SHA-256 is want (compared in constant time).
func cookie(r *http.Request, want [sha256.Size]byte) bool {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return false
	}
	got := sha256.Sum256([]byte(c.Value))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// bearer reports whether an Authorization header value carries the bearer
// token whose SHA-256 is want. The scheme is case-insensitive (RFC 7235,
// section 2.1: "bearer", "BEARER") and one or more spaces may follow it.
// The token is compared in constant time, through its hash so that its
// length does not show either.
func bearer(header string, want [sha256.Size]byte) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimLeft(token, " ")))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
