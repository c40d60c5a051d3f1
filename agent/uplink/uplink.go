// Package uplink forwards the buffer to MQTT and publishes the agent's
// status, health and device states: one session at a time, each a new
// paho client, a window of QoS 1 publishes, acknowledgements handed to the
// buffer in order, failures classified with a hint, and a record the
// broker will not take parked after it ended several sessions.
package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/time/rate"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/buffer"
)

// readPage is how many records the uplink reads from the buffer at once.
const readPage = 256

// Queue is what the uplink needs of the buffer.
type Queue interface {
	Read(after uint64, limit int) ([]buffer.Record, error)
	Ack(recs ...buffer.Record)
	Park(rec buffer.Record, reason string)
	Durable() uint64
	Notify() <-chan struct{}
	Stats() buffer.Stats
}

// Reporter is what the uplink publishes besides scans: P/health and the
// device states.
type Reporter interface {
	Status() status.Status
	Devices() []status.DeviceReport
}

// Config is the uplink's configuration.
type Config struct {
	MQTT    config.MQTT
	Agent   config.Agent
	Version string
	// SessionFile keeps the session number across restarts (the agent
	// puts it in agent.data_dir); empty: numbers from memory and the clock.
	SessionFile string
}

// Deps are what the uplink takes from the agent.
type Deps struct {
	Queue    Queue
	Reporter Reporter
	Log      *slog.Logger
	// DevicesChanged gets a value when a device state changed: the states
	// are published again.
	DevicesChanged <-chan struct{}
	// AckLatency, if set, observes each publish-to-PUBACK time (seconds).
	AckLatency prometheus.Observer
	// Retained, if set, gives retained messages to publish besides the
	// device states (the dispatches, docs/WORKFLOWS.md).
	Retained Retained
	// Delivery, if set, is told of each scan published and receipted
	// (delivery.go).
	Delivery Delivery
}

type uplinkState struct {
	state, lastErr, hint, since string
}

// Uplink forwards buffered records to MQTT and publishes status, health
// and device states. Paho's auto-reconnect is off (its resumed tokens
// complete without a PUBACK, docs/MQTT.md): every session is a new client,
// and a record is acknowledged in the buffer only when its publish token
// of that same session completed without error. New starts nothing; Run
// does the work; Stats and Connected are safe for concurrent use.
type Uplink struct {
	cfg      config.MQTT
	agent    config.Agent
	prefix   string
	version  string
	q        Queue
	log      *slog.Logger
	reporter Reporter
	devKick  <-chan struct{}
	retained Retained // nil: none

	st                  atomic.Pointer[uplinkState]
	connected           atomic.Bool
	broker              atomic.Value // string
	published, acked    atomic.Uint64
	ackLatency          prometheus.Observer // nil: not measured
	sessions, malformed atomic.Uint64
	poisoned            atomic.Uint64 // records parked because the broker would not take them
	lastPoison          atomic.Value  // string: the last one parked
	backlogInflight     atomic.Int64  // live_first: backlog publishes not yet acked
	rc                  *receipts     // nil: receipts off, a PUBACK deletes
	delivery            Delivery      // nil: nobody to tell
	sessionNo           atomic.Uint64 // the number of the current or last session
	numbers             sessionNumbers
}

// New makes the uplink.
func New(c Config, d Deps) *Uplink {
	cfg := c.MQTT
	cfg.Window = min(max(cfg.Window, 1), 65000) // paho has 65535 message ids
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Uplink{cfg: cfg, agent: c.Agent, prefix: cfg.TopicPrefix, version: c.Version, q: d.Queue,
		log: log.With("component", "mqtt"), reporter: d.Reporter, devKick: d.DevicesChanged, ackLatency: d.AckLatency,
		retained: d.Retained, delivery: d.Delivery}
	u.broker.Store("")
	u.numbers = sessionNumbers{file: c.SessionFile, log: u.log}
	u.setState(status.UplinkStarting, nil, "")
	if cfg.Receipts.Enabled {
		u.rc = newReceipts(c.Agent.ID, cfg.Receipts.Timeout.D(), receiptedQueue(d.Queue, d.Delivery), u.log)
	}
	return u
}

// Connected reports whether a session is up.
func (u *Uplink) Connected() bool { return u.connected.Load() }

func (u *Uplink) setState(state string, err error, hint string) {
	s := &uplinkState{state: state, hint: hint, since: record.Timestamp(time.Now())}
	if err != nil {
		s.lastErr = err.Error()
	}
	if old := u.st.Load(); old != nil && old.state == state && old.lastErr == s.lastErr {
		s.since = old.since
	}
	u.st.Store(s)
}

// errTLSClosed marks a connection that the broker closed while TLS was
// being set up.
var errTLSClosed = errors.New("connection closed during the TLS handshake")

// errStalled marks a session that the acker ended because PUBACKs stopped
// coming while the connection looked up; classify reports it as stalled.
var errStalled = errors.New("connected, but the broker stopped acknowledging publishes")

// classify turns a connection error into a state and a hint that names the
// cause and the fix.
func classify(err error) (state, hint string) {
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	var header tls.RecordHeaderError
	var netErr net.Error
	msg := err.Error()
	switch {
	case errors.Is(err, errStalled):
		return status.UplinkStalled, "the broker took the publishes but sent no PUBACK within 2 × mqtt.keepalive + mqtt.connect_timeout: " +
			"an overloaded or stuck broker, or a network path that lets traffic through one way only; the agent reconnects and re-sends from the oldest unacknowledged scan"
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return status.UplinkAuthRefused, "the broker refused the user name or password: check mqtt.username and mqtt.password_file / SCANAGENT_MQTT_PASSWORD"
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return status.UplinkAuthRefused, "the broker refused this client (not authorised): check mqtt.username and the password (mqtt.password_file or SCANAGENT_MQTT_PASSWORD), and the broker's ACL"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return status.UplinkRefused, "the broker rejected the client id: check mqtt.client_id"
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return status.UplinkRefused, "the broker says it is unavailable"
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return status.UplinkRefused, "the broker does not speak MQTT 3.1.1"
	case strings.HasPrefix(msg, "mqtt.tls."):
		return status.UplinkTLSError, "fix the TLS file named here; it is read again at every connection attempt"
	case errors.As(err, &unknownCA):
		return status.UplinkTLSError, "the broker's certificate is not signed by mqtt.tls.ca_file (wrong CA?)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return status.UplinkTLSError, "the broker's certificate is expired or not yet valid (check this PC's clock too)"
	case errors.As(err, &invalid):
		return status.UplinkTLSError, "the broker's certificate is not valid for this use: " + invalid.Error()
	case errors.As(err, &hostname):
		return status.UplinkTLSError, "the broker's certificate does not name this host: set mqtt.tls.server_name or use the name in the certificate"
	case errors.As(err, &header):
		return status.UplinkTLSError, "the broker did not answer TLS: is this a plain tcp:// port?"
	case errors.Is(err, errTLSClosed):
		return status.UplinkTLSError, "the broker did not answer TLS (a plain tcp:// port?) or dropped our handshake (does it require a client certificate?)"
	case strings.Contains(msg, "remote error: tls:") || strings.Contains(msg, "tls: "):
		return status.UplinkTLSError, "the broker rejected the TLS handshake: does it need a client certificate (mqtt.tls.cert_file/key_file), and does it trust ours?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return status.UplinkUnreachable, "nothing listens at the broker address (broker down, or wrong port)"
	case errors.As(err, &netErr) && netErr.Timeout():
		return status.UplinkUnreachable, "the broker did not answer in time (network or firewall)"
	case strings.Contains(msg, "no such host"):
		return status.UplinkUnreachable, "the broker's host name does not resolve (DNS)"
	}
	return status.UplinkUnreachable, ""
}

// Stats returns the uplink's state and counters.
func (u *Uplink) Stats() status.Uplink {
	s := u.st.Load()
	st := status.Uplink{
		State:     s.state,
		Since:     s.since,
		Connected: u.connected.Load(),
		Broker:    u.broker.Load().(string),
		LastError: s.lastErr,
		Hint:      s.hint,
		Published: u.published.Load(),
		Acked:     u.acked.Load(),
		Sessions:  u.sessions.Load(),
		Malformed: u.malformed.Load(),
		Parked:    u.poisoned.Load(),
		Session:   u.sessionNo.Load(),
	}
	if v, ok := u.lastPoison.Load().(string); ok {
		st.LastParked = v
	}
	if u.rc != nil {
		st.Receipts = u.rc.stats(time.Now())
	}
	return st
}

// run keeps sessions going until ctx is cancelled; then the current session
// flushes what is in flight (bounded), publishes the offline status and
// disconnects. The first connect after start waits a random time within
// connect_spread. Between rounds (each round tries every broker in order)
// it waits as retryDelay says: first a random time within the ceiling
// (full jitter), then between half the ceiling and the ceiling, the
// ceiling doubling from connect_spread (or reconnect_min, when larger) up
// to reconnect_max; a session that lasted a minute starts it over
// (docs/FLEET.md).
func (u *Uplink) Run(ctx context.Context) error {
	if u.rc != nil {
		loopCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); u.receiptLoop(loopCtx) }()
		defer func() { stop(); <-done }()
	}
	bo := retryDelay{min: u.cfg.ReconnectMin.D(), spread: u.cfg.ConnectSpread.D(), max: u.cfg.ReconnectMax.D()}
	if d := spread(u.cfg.ConnectSpread.D()); d > 0 {
		u.log.Debug("mqtt first connect spread", "in", d.Round(time.Millisecond))
		sleep(ctx, d)
	}
	var lastLogged string
	var poison poisonWatch
	for ctx.Err() == nil {
		start := time.Now()
		s := &suspect{seq: poison.seq}
		err := u.session(ctx, s)
		u.connected.Store(false)
		if ctx.Err() != nil {
			break
		}
		if s.cleared.Load() {
			poison = poisonWatch{} // sent alone, it was acknowledged
		}
		if err != nil {
			state, hint := classify(err)
			if h := u.sessionEnded(&poison, err); h != "" {
				hint = h
			}
			u.setState(state, err, hint)
			// The same failure again and again is logged once (the
			// state in /status and P/health stays current).
			if msg := state + err.Error(); msg != lastLogged {
				u.log.Warn("mqtt not connected; scans stay buffered", "state", state, "err", err, "hint", hint)
				lastLogged = msg
			}
		}
		if time.Since(start) > time.Minute {
			bo.reset()
		}
		d := bo.next()
		u.log.Debug("mqtt reconnecting", "in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	u.setState(status.UplinkStopped, nil, "")
	return nil
}

type statusMsg struct {
	State   string `json:"state"`
	Agent   string `json:"agent"`
	Site    string `json:"site"`
	Version string `json:"version,omitempty"`
	Since   string `json:"since"`
	Session uint64 `json:"session"`
}

func (u *Uplink) statusPayload(state string, session uint64) []byte {
	b, _ := json.Marshal(statusMsg{State: state, Agent: u.agent.ID, Site: u.agent.Site, Version: u.version, Since: record.Timestamp(time.Now()), Session: session})
	return b
}

type inflight struct {
	rec     buffer.Record
	tok     mqtt.Token
	backlog bool      // live_first: counted in backlogInflight
	sent    time.Time // for the acknowledgement latency
	alone   bool      // the suspect, published with nothing else in flight
	// barrier, when not nil, is no publish: the acker closes it once every
	// publish before it is acknowledged.
	barrier chan struct{}
}

// suspect is the record that ended the last session unacknowledged: this
// session publishes it alone (everything before it acknowledged, nothing
// after it until its own PUBACK), so that a session that ends while it
// waits is surely its doing, and a good record clears itself.
type suspect struct {
	seq     uint64      // 0: none
	cleared atomic.Bool // it was acknowledged in this session
}

// liveFirstBacklogWindow caps the backlog publishes in flight in live_first
// mode, so that a new scan does not queue behind a full window of backlog
// at the broker.
const liveFirstBacklogWindow = 64

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

// session runs one MQTT connection: connect, announce online and the
// device states, then publish the buffer with a window of QoS 1 publishes
// in flight, and health periodically.
func (u *Uplink) session(ctx context.Context, s *suspect) error {
	// The TLS files are read anew for every session, so a technician can
	// fix them without restarting the agent; the client certificate must
	// be valid now.
	tlsCfg, err := u.cfg.TLS.Load(time.Now())
	if err != nil {
		return err
	}
	lost := &lostSignal{ch: make(chan struct{})}
	// Every attempt gets a new number: its Will and its online status
	// carry it.
	session := u.numbers.next(time.Now())
	var attempted atomic.Value // the broker of the last connection attempt
	attempted.Store("")
	opts := mqtt.NewClientOptions().
		SetClientID(u.cfg.ClientID).
		SetUsername(u.cfg.Username).
		SetPassword(u.cfg.Password).
		// With receipts, the session persists at the broker, so that
		// receipts published while the agent is away are kept for it.
		SetCleanSession(u.rc == nil).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(u.cfg.KeepAlive.D()).
		SetConnectTimeout(u.cfg.ConnectTimeout.D()).
		SetWriteTimeout(u.cfg.ConnectTimeout.D()).
		SetBinaryWill(u.prefix+"/status", u.statusPayload("offline", session), 1, true).
		SetTLSConfig(tlsCfg).
		SetCustomOpenConnectionFn(openConn). // conn.go: buffered reads
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost.fire(err) }).
		SetConnectionAttemptHandler(func(broker *url.URL, t *tls.Config) *tls.Config {
			attempted.Store(broker.Redacted())
			return t
		}).
		SetConnectionNotificationHandler(func(_ mqtt.Client, n mqtt.ConnectionNotification) {
			if f, ok := n.(mqtt.ConnectionNotificationBrokerFailed); ok && len(u.cfg.Brokers) > 1 {
				_, hint := classify(f.Reason)
				u.log.Info("mqtt broker failed; trying the next", "broker", f.Broker.Redacted(), "err", f.Reason, "hint", hint)
			}
		})
	for _, b := range u.cfg.Brokers {
		opts.AddBroker(b)
	}
	if u.rc != nil {
		// Receipts kept for the persistent session arrive right after the
		// CONNACK, before the subscription below is made again.
		opts.SetDefaultPublishHandler(u.receiptHandler)
	}
	c := mqtt.NewClient(opts)
	u.sessions.Add(1)
	if err := waitToken(ctx, c.Connect(), u.cfg.ConnectTimeout.D()*time.Duration(len(u.cfg.Brokers))+time.Second); err != nil {
		c.Disconnect(0)
		if tlsBroker(attempted.Load().(string)) && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)) {
			err = fmt.Errorf("%w: %w", errTLSClosed, err)
		}
		return fmt.Errorf("connect %s: %w", strings.Join(u.cfg.Brokers, ", "), err)
	}
	u.broker.Store(attempted.Load().(string))
	defer func() {
		if ctx.Err() != nil {
			// A clean DISCONNECT suppresses the Will: say offline ourselves.
			if err := waitToken(context.Background(), c.Publish(u.prefix+"/status", 1, true, u.statusPayload("offline", session)), 2*time.Second); err != nil {
				u.log.Warn("shutdown: offline status not published", "err", err)
			}
		}
		c.Disconnect(250)
	}()
	if u.rc != nil {
		if err := u.subscribeReceipts(ctx, c); err != nil {
			return err
		}
	}
	if err := waitToken(ctx, c.Publish(u.prefix+"/status", 1, true, u.statusPayload("online", session)), u.cfg.ConnectTimeout.D()); err != nil {
		return fmt.Errorf("publish online status: %w", err)
	}
	u.sessionNo.Store(session)
	u.connected.Store(true)
	u.setState(status.UplinkConnected, nil, "")
	u.log.Info("mqtt connected", "broker", u.broker.Load(), "client_id", u.cfg.ClientID, "session", session, "backlog", u.q.Stats().Depth)

	sideCtx, stopSide := context.WithCancel(ctx)
	sideDone := make(chan struct{})
	go func() {
		defer close(sideDone)
		u.side(sideCtx, c)
	}()
	defer func() { stopSide(); <-sideDone }()

	window := make(chan inflight, u.cfg.Window)
	u.backlogInflight.Store(0)
	ackErr := make(chan error, 1)
	ackerExit := make(chan struct{})
	go func() {
		ackErr <- u.acker(window, lost, s)
		close(ackerExit)
	}()

	if u.rc != nil {
		defer u.rc.sessionEnded()
	}
	err = u.pump(ctx, c, window, lost, ackerExit, s)
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
	aerr := <-ackErr
	var ue *unackedError
	switch {
	case err == nil:
		err = aerr
	case errors.As(aerr, &ue) && !errors.As(err, new(*unackedError)):
		err = &unackedError{rec: ue.rec, alone: ue.alone, err: err} // the session's end, and the record it left unacknowledged
	}
	return err
}

// unackedError ends a session that had connected (the broker acknowledged
// the online status) while rec was the oldest publish waiting for its
// PUBACK; alone when it was the suspect, published alone.
type unackedError struct {
	rec   buffer.Record
	alone bool
	err   error
}

func (e *unackedError) Error() string { return e.err.Error() }
func (e *unackedError) Unwrap() error { return e.err }

// poisonSessions is how many sessions in a row may end with the same
// record, published alone, waiting for its PUBACK before it is parked.
const poisonSessions = 3

// poisonWatch follows the record each failed session left unacknowledged:
// the suspect, published alone in the next session, and how many sessions
// in a row ended while it waited alone.
type poisonWatch struct {
	seq uint64
	n   int
}

// sessionEnded looks at how a connected session ended. A record that
// several sessions in a row leave unacknowledged, each closed by the broker
// right after it, while the broker took the online status in each, is one
// the broker will not take (larger than its max_packet_size, say): it is
// parked (buffer.Park), reported and exported with buffer export --parked,
// and the queue flows on. Only sessions in which it was published alone
// count: when the broker closes the connection over one publish, its reset
// can discard the PUBACKs of the publishes just before it, so the oldest
// unacknowledged record of a session with several in flight is only a
// suspect. It returns the hint for the state.
func (u *Uplink) sessionEnded(w *poisonWatch, err error) string {
	var ue *unackedError
	if !errors.As(err, &ue) || errors.Is(err, errStalled) {
		return ""
	}
	size := len(ue.rec.Value)
	station, _, derr := record.Split(ue.rec.Value)
	if derr == nil {
		size -= 1 + len(station)
	}
	if !ue.alone {
		*w = poisonWatch{seq: ue.rec.Seq}
		return fmt.Sprintf("the broker closed the session while seq %d (station %s, %d bytes) waited for its PUBACK; the next session publishes it alone, to tell whether the broker refuses that event (its max_packet_size?); it is parked after %d such sessions in a row",
			ue.rec.Seq, station, size, poisonSessions)
	}
	if ue.rec.Seq == w.seq {
		w.n++
	} else {
		*w = poisonWatch{seq: ue.rec.Seq, n: 1}
	}
	if w.n < poisonSessions {
		return fmt.Sprintf("the broker closed the session while seq %d (station %s, %d bytes), published alone, waited for its PUBACK (%d time(s) in a row); if it happens again, the broker refuses that event (its max_packet_size?); it is parked after %d",
			ue.rec.Seq, station, size, w.n, poisonSessions)
	}
	u.q.Park(ue.rec, buffer.ParkPoison)
	u.poisoned.Add(1)
	u.lastPoison.Store(fmt.Sprintf("seq %d, station %s, %d bytes", ue.rec.Seq, station, size))
	u.log.Error("scan parked: the broker ended every session in which it was published alone; the scans after it flow on",
		"seq", ue.rec.Seq, "station", station, "bytes", size, "sessions", w.n,
		"hint", "check the broker's maximum packet size against mqtt.max_event_bytes; export it with: scanagent buffer export --parked")
	*w = poisonWatch{}
	return fmt.Sprintf("seq %d (%d bytes) was parked: the broker closed %d sessions in a row over it (its max_packet_size?)", ue.rec.Seq, size, poisonSessions)
}

// side publishes the retained device states (all at connect, then each
// change) and P/health (at connect, then every health_interval).
func (u *Uplink) side(ctx context.Context, c mqtt.Client) {
	sent := map[string]string{} // topic -> payload last published
	publishDevices := func() {
		current := map[string]bool{}
		for _, d := range u.reporter.Devices() {
			topic := u.prefix + "/devices/" + d.Station + "/" + d.Kind
			current[topic] = true
			b, _ := json.Marshal(d.Device)
			if sent[topic] == string(b) {
				continue
			}
			if err := waitToken(ctx, c.Publish(topic, 1, true, b), u.cfg.ConnectTimeout.D()); err != nil {
				return // the session is ending; the next one publishes all
			}
			sent[topic] = string(b)
		}
		// A device removed by a reload: clear its retained state.
		for topic := range sent {
			if !current[topic] {
				if err := waitToken(ctx, c.Publish(topic, 1, true, []byte{}), u.cfg.ConnectTimeout.D()); err != nil {
					return
				}
				delete(sent, topic)
			}
		}
	}
	publishHealth := func() {
		b, err := json.Marshal(u.reporter.Status())
		if err == nil {
			waitToken(ctx, c.Publish(u.prefix+"/health", 1, true, b), u.cfg.ConnectTimeout.D())
		}
	}
	publishDevices()
	publishHealth()
	var retainedKick <-chan struct{}
	if u.retained != nil {
		retainedKick = u.retained.RetainedChanged()
		u.publishRetained(ctx, c, true)
	}
	t := time.NewTicker(u.cfg.HealthInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.devKick:
			publishDevices()
		case <-retainedKick:
			u.publishRetained(ctx, c, false)
		case <-t.C:
			publishHealth()
		}
	}
}

// pump publishes buffered records until the session fails or ctx is done.
// Default order: everything in the buffer from the oldest, in seq order.
// With order live_first, records appended after the session started go
// ahead of the backlog. It stops at the first failed publish, so nothing
// after a failed record goes out in this session (the next one re-sends
// from it). With max_rate it paces publishes.
func (u *Uplink) pump(ctx context.Context, c mqtt.Client, window chan<- inflight, lost *lostSignal, ackerExit <-chan struct{}, s *suspect) error {
	var backlog, live uint64 // cursors
	liveFirst := u.cfg.Order == "live_first"
	split := u.q.Durable() // live_first: records above this are live
	live = split
	lim := newPacers(u.cfg.MaxRate, u.cfg.DrainRate, split)
	pages := newPager(u.q, readPage) // order seq: the next page read ahead (readahead.go)
	defer pages.close()
	for {
		var recs []buffer.Record
		var err error
		if liveFirst {
			recs, err = u.q.Read(live, readPage)
			if err == nil && len(recs) == 0 && backlog < split && u.backlogInflight.Load() >= liveFirstBacklogWindow {
				// Enough backlog in flight: wait a moment for acks or a
				// new scan.
				t := time.NewTimer(time.Millisecond)
				select {
				case <-t.C:
				case <-u.q.Notify():
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-lost.ch:
					t.Stop()
					return lost.error()
				case <-ackerExit:
					t.Stop()
					return nil
				}
				t.Stop()
				continue
			}
			if err == nil && len(recs) == 0 && backlog < split {
				// Small pages, so that a new scan waits for at most a
				// few backlog publishes.
				recs, err = u.q.Read(backlog, 16)
				for i, r := range recs {
					if r.Seq > split {
						recs = recs[:i]
						break
					}
				}
				if len(recs) == 0 {
					backlog = split // the backlog is done
				}
			}
		} else {
			recs, err = pages.read(backlog)
		}
		if err != nil {
			return fmt.Errorf("read buffer: %w", err)
		}
		var due []buffer.Record
		var next time.Time
		if u.rc != nil {
			// Scans whose receipt is overdue go again first; while the cap
			// of unreceipted scans is reached, nothing new goes.
			due, next = u.rc.due(time.Now(), readPage)
			if u.rc.full() {
				recs = nil
			}
		}
		for _, rec := range due {
			if stop, err := u.send(ctx, c, window, lost, ackerExit, s, lim, rec, false, true); stop || err != nil {
				return err
			}
		}
		if len(due) > 0 {
			continue
		}
		if len(recs) == 0 {
			var wake <-chan time.Time
			var changed <-chan struct{}
			var t *time.Timer
			if u.rc != nil {
				changed = u.rc.changed
				if !next.IsZero() {
					t = time.NewTimer(time.Until(next))
					wake = t.C
				}
			}
			var end bool
			select {
			case <-u.q.Notify():
			case <-changed:
			case <-wake:
			case <-ctx.Done():
				end = true
			case <-lost.ch:
				err, end = lost.error(), true
			case <-ackerExit:
				end = true
			}
			if t != nil {
				t.Stop()
			}
			if end {
				return err
			}
			continue
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
			if liveFirst && rec.Seq > split {
				live = rec.Seq
			} else {
				backlog = rec.Seq
			}
			if u.rc != nil && u.rc.skip(rec.Seq) {
				continue // published, waiting for its receipt
			}
			if stop, err := u.send(ctx, c, window, lost, ackerExit, s, lim, rec, liveFirst && rec.Seq <= split, false); stop || err != nil {
				return err
			}
		}
	}
}

// send publishes one record and hands it to the acker; stop is true when
// the session is over (err says why, nil for a stop or the acker's end).
// The suspect (see suspect) is published alone.
func (u *Uplink) send(ctx context.Context, c mqtt.Client, window chan<- inflight, lost *lostSignal, ackerExit <-chan struct{},
	s *suspect, lim *pacers, rec buffer.Record, isBacklog, again bool) (stop bool, err error) {
	topic, station, payload, err := record.SplitTopic(rec.Value)
	if err != nil {
		// Cannot be published; keep it out of the stream but say so.
		u.malformed.Add(1)
		u.log.Error("dropping malformed buffer record", "seq", rec.Seq, "err", err)
		u.q.Ack(rec)
		return false, nil
	}
	if !lim.wait(ctx, rec.Seq, again, lost.ch) {
		return true, nil
	}
	alone := rec.Seq == s.seq && !s.cleared.Load()
	if alone {
		// Everything published before it acknowledged first.
		barrier := make(chan struct{})
		if stop, err := u.handOver(ctx, window, lost, ackerExit, inflight{barrier: barrier}); stop {
			return stop, err
		}
		if stop, err := u.await(ctx, lost, ackerExit, barrier); stop {
			return stop, err
		}
	}
	if u.rc != nil && !u.rc.published(rec, time.Now()) {
		return false, nil // a receipt deleted it meanwhile
	}
	tok := c.Publish(u.prefix+"/"+topic.Name()+"/"+station, 1, false, payload)
	if isDone(tok) && tok.Error() != nil {
		return true, fmt.Errorf("publish seq %d: %w", rec.Seq, tok.Error())
	}
	u.published.Add(1)
	if again {
		u.rc.countRepublished()
	}
	if isBacklog {
		u.backlogInflight.Add(1)
	}
	if stop, err := u.handOver(ctx, window, lost, ackerExit, inflight{rec: rec, tok: tok, backlog: isBacklog, sent: time.Now(), alone: alone}); stop || !alone {
		return stop, err
	}
	// Nothing after it until its own PUBACK (the acker may end the session
	// over it meanwhile, or clear it).
	return u.await(ctx, lost, ackerExit, tok.Done())
}

// handOver gives p to the acker; stop is true when the session is over.
func (u *Uplink) handOver(ctx context.Context, window chan<- inflight, lost *lostSignal, ackerExit <-chan struct{}, p inflight) (stop bool, err error) {
	select {
	case window <- p:
		return false, nil
	case <-ctx.Done():
	case <-lost.ch:
		return true, lost.error()
	case <-ackerExit:
	}
	return true, nil
}

// await waits for done; stop is true when the session ended meanwhile.
func (u *Uplink) await(ctx context.Context, lost *lostSignal, ackerExit <-chan struct{}, done <-chan struct{}) (stop bool, err error) {
	select {
	case <-done:
		return false, nil
	case <-ctx.Done():
	case <-lost.ch:
		return true, lost.error()
	case <-ackerExit:
	}
	return true, nil
}

// acker waits for the publish tokens in order and acknowledges each record
// whose PUBACK arrived in this session. On the first failure it stops: the
// records not acknowledged stay in the buffer and the next session re-sends
// them in seq order. A PUBACK that does not come within the ack timeout
// (the broker or the link stalled while the connection looks up) ends the
// session too.
func (u *Uplink) acker(window <-chan inflight, lost *lostSignal, s *suspect) error {
	timeout := 2*u.cfg.KeepAlive.D() + u.cfg.ConnectTimeout.D()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	// Acknowledged records are handed to the buffer in batches: whenever
	// the next token is not done yet, or 256 have gathered.
	batch := make([]buffer.Record, 0, 256)
	flush := func() {
		if len(batch) > 0 {
			u.q.Ack(batch...)
			u.acked.Add(uint64(len(batch)))
			batch = batch[:0]
		}
	}
	defer flush()
	for {
		var p inflight
		var ok bool
		select {
		case p, ok = <-window:
		default:
			flush() // nothing more right now: do not sit on acknowledged records
			p, ok = <-window
		}
		if !ok {
			return nil
		}
		if p.barrier != nil {
			close(p.barrier) // everything before it is acknowledged
			continue
		}
		if !isDone(p.tok) {
			flush()
			timer.Reset(timeout)
			select {
			case <-p.tok.Done():
			case <-lost.ch:
				if !isDone(p.tok) {
					return &unackedError{rec: p.rec, alone: p.alone, err: lost.error()}
				}
			case <-timer.C:
				return &unackedError{rec: p.rec, alone: p.alone, err: fmt.Errorf("%w: no PUBACK for seq %d within %v", errStalled, p.rec.Seq, timeout)}
			}
		}
		if err := p.tok.Error(); err != nil {
			return &unackedError{rec: p.rec, alone: p.alone, err: fmt.Errorf("publish seq %d: %w", p.rec.Seq, err)}
		}
		if p.alone {
			s.cleared.Store(true)
		}
		u.observeAck(p.sent)
		u.published1(p.rec.Seq)
		if p.backlog {
			u.backlogInflight.Add(-1)
		}
		if u.rc != nil {
			u.rc.pubacked(p.rec) // deleted when its receipt comes
			u.acked.Add(1)
			continue
		}
		if batch = append(batch, p.rec); len(batch) == cap(batch) {
			flush()
		}
	}
}

// newLimiter paces publishes to at most perSecond (0: no limit, nil). The
// burst is 2 ms worth, so that high rates are not held to the timer's
// resolution, and an idle uplink does not catch up in a burst.
func newLimiter(perSecond int) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(1, perSecond/500))
}

// pace waits for the limiter's next slot (lim nil: at once); false when
// ctx is done or the connection was lost meanwhile.
func pace(ctx context.Context, lim *rate.Limiter, lost <-chan struct{}) bool {
	if lim == nil {
		return true
	}
	d := lim.Reserve().Delay()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-lost:
	}
	return false
}

// tlsBroker reports whether a broker URL uses TLS.
func tlsBroker(u string) bool {
	for _, p := range []string{"ssl://", "tls://", "mqtts://", "wss://"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
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

// observeAck records one publish-to-PUBACK time.
func (u *Uplink) observeAck(sent time.Time) {
	if u.ackLatency != nil {
		u.ackLatency.Observe(time.Since(sent).Seconds())
	}
}
