package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

// readPage is how many records the uplink reads from the buffer at once.
const readPage = 256

// UplinkStats are the uplink's counters.
type UplinkStats struct {
	Connected  bool   `json:"connected"`
	Broker     string `json:"broker,omitempty"`
	Published  uint64 `json:"published"`
	Acked      uint64 `json:"acked"`
	Sessions   uint64 `json:"sessions"`
	LastError  string `json:"last_error,omitempty"`
	Malformed  uint64 `json:"malformed"`
	StatusTime string `json:"since,omitempty"`
}

// uplink forwards buffered records to MQTT. Paho's auto-reconnect is off
// (its resumed tokens complete without a PUBACK, LIBRARY-NOTES.md): every
// session is a new client, and a record is acknowledged in the buffer only
// when its publish token of that same session completed without error.
type uplink struct {
	cfg     config.MQTT
	agent   config.Agent
	prefix  string
	version string
	q       *buffer.Queue
	log     *slog.Logger
	tls     *tls.Config

	connected           atomic.Bool
	broker              atomic.Value // string
	lastErr             atomic.Value // string
	published, acked    atomic.Uint64
	sessions, malformed atomic.Uint64
}

func newUplink(cfg config.MQTT, agent config.Agent, version string, q *buffer.Queue, log *slog.Logger) (*uplink, error) {
	cfg.Window = min(max(cfg.Window, 1), 65000) // paho has 65535 message ids
	u := &uplink{cfg: cfg, agent: agent, prefix: cfg.TopicPrefix, version: version, q: q, log: log.With("component", "mqtt")}
	u.broker.Store("")
	u.lastErr.Store("")
	t, err := tlsConfig(cfg.TLS)
	if err != nil {
		return nil, err
	}
	u.tls = t
	return u, nil
}

// tlsConfig builds the client TLS settings from the configured files.
func tlsConfig(c config.TLS) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca_file %s: no PEM certificate found", c.CAFile)
		}
		t.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file/key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

func (u *uplink) stats() UplinkStats {
	return UplinkStats{
		Connected: u.connected.Load(),
		Broker:    u.broker.Load().(string),
		Published: u.published.Load(),
		Acked:     u.acked.Load(),
		Sessions:  u.sessions.Load(),
		LastError: u.lastErr.Load().(string),
		Malformed: u.malformed.Load(),
	}
}

// run keeps sessions going until ctx is cancelled; then the current session
// flushes what is in flight (bounded), publishes the offline status and
// disconnects.
func (u *uplink) run(ctx context.Context) error {
	bo := devices.Backoff{Min: u.cfg.ReconnectMin.D(), Max: u.cfg.ReconnectMax.D()}
	for ctx.Err() == nil {
		start := time.Now()
		err := u.session(ctx)
		u.connected.Store(false)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			u.lastErr.Store(err.Error())
			u.log.Warn("mqtt session ended; scans stay buffered", "err", err)
		}
		if time.Since(start) > time.Minute {
			bo.Reset()
		}
		d := bo.Next()
		u.log.Info("mqtt reconnecting", "in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return nil
}

type statusMsg struct {
	State   string `json:"state"`
	Agent   string `json:"agent"`
	Site    string `json:"site"`
	Version string `json:"version,omitempty"`
	Since   string `json:"since"`
}

func (u *uplink) statusPayload(state string) []byte {
	b, _ := json.Marshal(statusMsg{State: state, Agent: u.agent.ID, Site: u.agent.Site, Version: u.version, Since: Timestamp(time.Now())})
	return b
}

type inflight struct {
	rec buffer.Record
	tok mqtt.Token
}

// lostSignal is closed when paho reports the connection lost; every
// goroutine of the session watches it.
type lostSignal struct {
	once sync.Once
	ch   chan struct{}
	err  error
}

func (l *lostSignal) fire(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.ch)
	})
}

func (l *lostSignal) error() error { return fmt.Errorf("connection lost: %w", l.err) }

// session runs one MQTT connection: connect, announce online, then publish
// the buffer in seq order with a window of QoS 1 publishes in flight.
func (u *uplink) session(ctx context.Context) error {
	lost := &lostSignal{ch: make(chan struct{})}
	var attempted atomic.Value // the broker of the last connection attempt
	attempted.Store("")
	opts := mqtt.NewClientOptions().
		SetClientID(u.cfg.ClientID).
		SetUsername(u.cfg.Username).
		SetPassword(u.cfg.Password).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(u.cfg.KeepAlive.D()).
		SetConnectTimeout(u.cfg.ConnectTimeout.D()).
		SetWriteTimeout(u.cfg.ConnectTimeout.D()).
		SetBinaryWill(u.prefix+"/status", u.statusPayload("offline"), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost.fire(err) }).
		SetConnectionAttemptHandler(func(broker *url.URL, t *tls.Config) *tls.Config {
			attempted.Store(broker.Redacted())
			return t
		})
	for _, b := range u.cfg.Brokers {
		opts.AddBroker(b)
	}
	opts.SetTLSConfig(u.tls)
	c := mqtt.NewClient(opts)
	u.sessions.Add(1)
	if err := waitToken(ctx, c.Connect(), u.cfg.ConnectTimeout.D()*time.Duration(len(u.cfg.Brokers))+time.Second); err != nil {
		c.Disconnect(0)
		return fmt.Errorf("connect %v: %w", u.cfg.Brokers, err)
	}
	u.broker.Store(attempted.Load().(string))
	defer func() {
		if ctx.Err() != nil {
			// A clean DISCONNECT suppresses the Will: say offline ourselves.
			if err := waitToken(context.Background(), c.Publish(u.prefix+"/status", 1, true, u.statusPayload("offline")), 2*time.Second); err != nil {
				u.log.Warn("shutdown: offline status not published", "err", err)
			}
		}
		c.Disconnect(250)
	}()
	if err := waitToken(ctx, c.Publish(u.prefix+"/status", 1, true, u.statusPayload("online")), u.cfg.ConnectTimeout.D()); err != nil {
		return fmt.Errorf("publish online status: %w", err)
	}
	u.connected.Store(true)
	u.lastErr.Store("")
	u.log.Info("mqtt connected", "broker", u.broker.Load(), "client_id", u.cfg.ClientID, "backlog", u.q.Stats().Depth)

	window := make(chan inflight, u.cfg.Window)
	ackErr := make(chan error, 1)
	ackerExit := make(chan struct{})
	go func() {
		ackErr <- u.acker(window, lost)
		close(ackerExit)
	}()

	err := u.pump(ctx, c, window, lost, ackerExit)
	close(window)
	if ctx.Err() != nil {
		// Shutdown: give in-flight publishes a bounded time to be acked.
		select {
		case <-ackerExit:
		case <-time.After(5 * time.Second):
			u.log.Warn("shutdown: in-flight publishes not acknowledged in 5s; they stay buffered")
		}
		return nil
	}
	<-ackerExit
	if aerr := <-ackErr; err == nil {
		err = aerr
	}
	return err
}

// pump reads the buffer from the start (everything still there is
// unacknowledged) and publishes in seq order until the session fails or ctx
// is done. It stops at the first failed publish, so nothing after a failed
// record goes out in this session (the next one re-sends from it, in order).
func (u *uplink) pump(ctx context.Context, c mqtt.Client, window chan<- inflight, lost *lostSignal, ackerExit <-chan struct{}) error {
	var cursor uint64
	for {
		recs, err := u.q.Read(cursor, readPage)
		if err != nil {
			return fmt.Errorf("read buffer: %w", err)
		}
		if len(recs) == 0 {
			select {
			case <-u.q.Notify():
				continue
			case <-ctx.Done():
				return nil
			case <-lost.ch:
				return lost.error()
			case <-ackerExit:
				return nil
			}
		}
		for _, rec := range recs {
			// The acker may have failed: check first, deterministically.
			select {
			case <-ackerExit:
				return nil
			case <-lost.ch:
				return lost.error()
			case <-ctx.Done():
				return nil
			default:
			}
			cursor = rec.Seq
			station, payload, err := decodeRecord(rec.Value)
			if err != nil {
				// Cannot be published; keep it out of the stream but say so.
				u.malformed.Add(1)
				u.log.Error("dropping malformed buffer record", "seq", rec.Seq, "err", err)
				u.q.Ack(rec)
				continue
			}
			tok := c.Publish(u.prefix+"/scans/"+station, 1, false, payload)
			if isDone(tok) && tok.Error() != nil {
				return fmt.Errorf("publish seq %d: %w", rec.Seq, tok.Error())
			}
			u.published.Add(1)
			select {
			case window <- inflight{rec: rec, tok: tok}:
			case <-ctx.Done():
				return nil
			case <-lost.ch:
				return lost.error()
			case <-ackerExit:
				return nil
			}
		}
	}
}

// acker waits for the publish tokens in order and acknowledges each record
// whose PUBACK arrived in this session. On the first failure it stops: the
// records not acknowledged stay in the buffer and the next session re-sends
// them in seq order. A PUBACK that does not come within the ack timeout
// (the broker or the link stalled while the connection looks up) ends the
// session too.
func (u *uplink) acker(window <-chan inflight, lost *lostSignal) error {
	timeout := 2*u.cfg.KeepAlive.D() + u.cfg.ConnectTimeout.D()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for p := range window {
		timer.Reset(timeout)
		select {
		case <-p.tok.Done():
		case <-lost.ch:
			if !isDone(p.tok) {
				return lost.error()
			}
		case <-timer.C:
			return fmt.Errorf("no PUBACK for seq %d within %v", p.rec.Seq, timeout)
		}
		if err := p.tok.Error(); err != nil {
			return fmt.Errorf("publish seq %d: %w", p.rec.Seq, err)
		}
		u.q.Ack(p.rec)
		u.acked.Add(1)
	}
	return nil
}

func isDone(t mqtt.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

var errTimeout = errors.New("timed out")

func waitToken(ctx context.Context, t mqtt.Token, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return errTimeout
	}
}
