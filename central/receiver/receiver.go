// Package receiver is the reference central receiver: it takes the
// agents' scans from MQTT through a shared subscription, stores them in
// PostgreSQL (central/store) in batches, and only after a batch's commit
// acknowledges its messages (PUBACK) and tells each agent, by a receipt
// on P/receipts, which of its scans are stored, so that the agent deletes
// them only then. The station workflows' receptacle and cancel events go
// the same way (into the receptacles and cancels tables). It also keeps
// the agents' status, health, device and dispatch messages in the agents,
// devices and dispatches tables.
//
// One MQTT session is one paho client (no paho auto-reconnect), with a
// persistent session and a stable client id, so that what the broker had
// sent and not had acknowledged comes back to this receiver when it
// reconnects or restarts. A message is acknowledged only in the session
// it came in; messages of an ended session are not (the broker sends them
// again). It is imported by cmd/scanreceiver.
package receiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/central/config"
	"github.com/scanagent/scanagent/central/store"
)

// Receiver stores the scans of the agents under its prefix filter.
type Receiver struct {
	cfg     *config.Config
	st      *store.Store
	log     *slog.Logger
	levels  int // topic levels of an agent's prefix
	in      chan delivery
	stopped chan struct{} // closed when the batcher has ended

	cur         atomic.Pointer[session]
	lastConnErr atomic.Pointer[string]
	migrated    atomic.Bool
	metrics     *metrics
	stats       stats
	receiptsWG  sync.WaitGroup
}

// delivery is one message and the session it came in.
type delivery struct {
	msg  mqtt.Message
	sess *session
	at   time.Time
}

// session is one MQTT connection.
type session struct {
	c        mqtt.Client
	lost     chan struct{}
	lostOnce sync.Once
	err      error
}

func (s *session) lose(err error) {
	s.lostOnce.Do(func() { s.err = err; close(s.lost) })
}

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// New checks cfg; it starts nothing.
func New(cfg *config.Config, st *store.Store, log *slog.Logger) (*Receiver, error) {
	if cfg.Receiver.Name == "" || cfg.MQTT.ClientID == "" || len(cfg.MQTT.Brokers) == 0 {
		return nil, errors.New("receiver: the config needs receiver.name, mqtt.client_id and mqtt.brokers (use config.Parse)")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{
		cfg:     cfg,
		st:      st,
		log:     log,
		levels:  len(strings.Split(cfg.Receiver.PrefixFilter, "/")),
		in:      make(chan delivery, 2*cfg.Receiver.BatchSize),
		stopped: make(chan struct{}),
		metrics: newMetrics(),
	}, nil
}

// Filters are the subscriptions: the buffered events (scans, cancels on
// the scans topics, receptacles) shared by the group, and the agents'
// status, health, devices and dispatches for this receiver alone (every
// receiver keeps the tables; the writes are idempotent).
func (r *Receiver) Filters() []string {
	p := r.cfg.Receiver.PrefixFilter
	return []string{
		"$share/" + r.cfg.Receiver.Group + "/" + p + "/scans/#",
		"$share/" + r.cfg.Receiver.Group + "/" + p + "/receptacles/#",
		p + "/status", p + "/health", p + "/devices/#", p + "/dispatches/#",
	}
}

// Run migrates the schema (retrying while the database is unreachable),
// then receives until ctx ends. The batch being written then gets up to
// 5 s to commit and be acknowledged; what is left unacknowledged is sent
// again by the broker at the next start. A cancelled ctx is a clean
// return.
func (r *Receiver) Run(ctx context.Context) error {
	if err := r.migrate(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	batchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopWrites := context.AfterFunc(ctx, func() { time.AfterFunc(5*time.Second, cancel) })
	defer stopWrites()
	go func() {
		defer close(r.stopped)
		r.batcher(ctx, batchCtx)
	}()
	r.connectLoop(ctx)
	<-r.stopped
	if s := r.cur.Swap(nil); s != nil {
		s.c.Disconnect(250)
		s.lose(errors.New("receiver stopped"))
	}
	r.metrics.connected.Set(0)
	r.receiptsWG.Wait()
	return nil
}

func (r *Receiver) migrate(ctx context.Context) error {
	backoff := r.backoff()
	for {
		applied, err := r.st.Migrate(ctx)
		if err == nil {
			r.migrated.Store(true)
			if len(applied) > 0 {
				r.log.Info("database schema migrated", "versions", applied)
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		r.metrics.dbErrors.Inc()
		r.log.Warn("database not ready; retrying", "err", err)
		if !sleep(ctx, backoff()) {
			return nil
		}
	}
}

// backoff returns a function giving the next wait: full jitter over a
// bound doubling from reconnect_min to reconnect_max.
func (r *Receiver) backoff() func() time.Duration {
	lo, hi := r.cfg.MQTT.ReconnectMin.D(), r.cfg.MQTT.ReconnectMax.D()
	bound := lo
	return func() time.Duration {
		d := lo/2 + rand.N(bound)
		bound = min(2*bound, hi)
		return d
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connectLoop keeps one session up until ctx ends; the last session is
// left current, for the batcher's last acknowledgements.
func (r *Receiver) connectLoop(ctx context.Context) {
	next := r.backoff()
	var lastErr string
	for ctx.Err() == nil {
		s, err := r.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			msg := err.Error()
			r.lastConnErr.Store(&msg)
			if msg != lastErr {
				r.log.Warn("mqtt connect failed; retrying", "err", err)
				lastErr = msg
			}
			sleep(ctx, next())
			continue
		}
		lastErr = ""
		r.lastConnErr.Store(nil)
		started := time.Now()
		r.cur.Store(s)
		r.metrics.connected.Set(1)
		r.metrics.sessions.Inc()
		r.log.Info("mqtt connected", "client_id", r.cfg.MQTT.ClientID, "filters", r.Filters())
		select {
		case <-ctx.Done():
			return
		case <-s.lost:
		}
		r.cur.CompareAndSwap(s, nil)
		r.metrics.connected.Set(0)
		s.c.Disconnect(0)
		msg := fmt.Sprintf("connection lost: %v", s.err)
		r.lastConnErr.Store(&msg)
		r.log.Warn("mqtt connection lost; reconnecting", "err", s.err)
		if time.Since(started) > time.Minute {
			next = r.backoff()
		}
		sleep(ctx, next())
	}
}

func (r *Receiver) connect(ctx context.Context) (*session, error) {
	m := &r.cfg.MQTT
	s := &session{lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		SetClientID(m.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetKeepAlive(m.KeepAlive.D()).
		SetConnectTimeout(m.ConnectTimeout.D()).
		SetWriteTimeout(5 * time.Second).
		SetUsername(m.Username).
		SetPassword(m.Password).
		SetDefaultPublishHandler(r.handler(s)).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { s.lose(err) })
	for _, b := range m.Brokers {
		opts.AddBroker(b)
	}
	// The TLS files are read at each connection, so renewed ones are
	// picked up without a restart.
	if t, err := m.TLS.Load(time.Time{}); err != nil {
		return nil, err
	} else {
		opts.SetTLSConfig(t)
	}
	s.c = mqtt.NewClient(opts)
	wait := m.ConnectTimeout.D()*time.Duration(len(m.Brokers)) + time.Second
	if err := waitToken(ctx, s.c.Connect(), wait); err != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("connect %s: %w", strings.Join(m.Brokers, ", "), err)
	}
	subs := map[string]byte{}
	for _, f := range r.Filters() {
		subs[f] = 1
	}
	// Without a callback: messages go to the default handler, as those
	// the broker sends from the persistent session before this returns.
	tok := s.c.SubscribeMultiple(subs, nil)
	if err := waitToken(ctx, tok, wait); err != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	for f, q := range tok.(*mqtt.SubscribeToken).Result() {
		if q != 1 {
			s.c.Disconnect(0)
			return nil, fmt.Errorf("subscribe %s: the broker refused it (granted %#x): check its ACL for this user", f, q)
		}
	}
	return s, nil
}

func waitToken(ctx context.Context, t mqtt.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-timer.C:
		return fmt.Errorf("no answer within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handler hands a session's messages to the batcher; it waits while the
// batcher is full (the broker then holds the rest), and drops what
// arrives once its session has ended (the broker sends it again).
func (r *Receiver) handler(s *session) mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) {
		select {
		case r.in <- delivery{msg: m, sess: s, at: time.Now()}:
		case <-s.lost:
		case <-r.stopped:
		}
	}
}
