package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Conn is how the view reaches the central broker: the agent's options.
type Conn struct {
	Brokers        []string // tried in order at each connect
	ClientID       string
	Username       string
	Password       string
	TLS            *tls.Config // nil: the system roots
	ConnectTimeout time.Duration
	KeepAlive      time.Duration
	Log            *slog.Logger
}

// Watcher keeps the view fed from the broker.
type Watcher struct {
	c         mqtt.Client
	connected atomic.Bool
}

// ErrUnreachable marks a first connection that failed.
var ErrUnreachable = errors.New("broker unreachable")

// Watch connects to the broker and subscribes to the prefix filter's
// status, health and device topics, handing every message to v. It
// returns once subscribed (the retained messages follow), or an error
// wrapping ErrUnreachable. The view only subscribes, so paho's own
// reconnect is safe here (it resubscribes at every connect); Close ends
// it.
func Watch(ctx context.Context, conn Conn, prefixFilter string, v *View) (*Watcher, error) {
	log := conn.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if conn.ConnectTimeout <= 0 {
		conn.ConnectTimeout = 10 * time.Second
	}
	if conn.KeepAlive <= 0 {
		conn.KeepAlive = 30 * time.Second
	}
	w := &Watcher{}
	filters := map[string]byte{}
	for _, f := range Filters(prefixFilter) {
		filters[f] = 1
	}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		v.Handle(m.Topic(), m.Payload(), m.Retained(), time.Now())
	}
	subscribed := make(chan error, 1)
	opts := mqtt.NewClientOptions().
		SetClientID(conn.ClientID).
		SetUsername(conn.Username).
		SetPassword(conn.Password).
		SetCleanSession(true).
		SetAutoReconnect(true).
		// One client (or a few): it may come back quickly, and a fleet
		// view should show the fleet's return within seconds.
		SetMaxReconnectInterval(2 * time.Second).
		SetConnectRetry(false).
		SetKeepAlive(conn.KeepAlive).
		SetConnectTimeout(conn.ConnectTimeout).
		SetTLSConfig(conn.TLS).
		SetOrderMatters(false).
		SetOnConnectHandler(func(c mqtt.Client) {
			w.connected.Store(true)
			// Not in the handler's goroutine: paho must go on reading.
			go func() {
				tok := c.SubscribeMultiple(filters, handler)
				err := errors.New("subscribe timed out")
				if tok.WaitTimeout(conn.ConnectTimeout) {
					err = tok.Error()
				}
				if err != nil {
					log.Warn("fleet: subscribe failed", "err", err)
				}
				select {
				case subscribed <- err:
				default:
				}
			}()
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			w.connected.Store(false)
			log.Warn("fleet: broker connection lost; reconnecting", "err", err)
		})
	for _, b := range conn.Brokers {
		opts.AddBroker(b)
	}
	w.c = mqtt.NewClient(opts)
	tok := w.c.Connect()
	deadline := conn.ConnectTimeout*time.Duration(max(1, len(conn.Brokers))) + time.Second
	select {
	case <-tok.Done():
	case <-ctx.Done():
		w.c.Disconnect(0)
		return nil, ctx.Err()
	case <-time.After(deadline):
		w.c.Disconnect(0)
		return nil, fmt.Errorf("%w: connect %s: timed out", ErrUnreachable, strings.Join(conn.Brokers, ", "))
	}
	if err := tok.Error(); err != nil {
		w.c.Disconnect(0)
		return nil, fmt.Errorf("%w: connect %s: %w", ErrUnreachable, strings.Join(conn.Brokers, ", "), err)
	}
	select {
	case err := <-subscribed:
		if err != nil {
			w.c.Disconnect(0)
			return nil, fmt.Errorf("subscribe %s: %w", strings.Join(Filters(prefixFilter), ", "), err)
		}
	case <-ctx.Done():
		w.c.Disconnect(0)
		return nil, ctx.Err()
	}
	return w, nil
}

// Connected reports whether the view is connected to the broker now.
func (w *Watcher) Connected() bool { return w.connected.Load() }

// Close disconnects.
func (w *Watcher) Close() { w.c.Disconnect(250) }

// Settle waits until the retained messages have come: no message for
// quiet, at most limit.
func Settle(ctx context.Context, v *View, quiet, limit time.Duration) {
	end := time.Now().Add(limit)
	last, lastAt := v.Counts().Received, time.Now()
	t := time.NewTicker(quiet / 5)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n := v.Counts().Received; n != last {
				last, lastAt = n, now
			}
			if now.Sub(lastAt) >= quiet || now.After(end) {
				return
			}
		}
	}
}
