package agent

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
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/devices"
)

// readPage is how many records the uplink reads from the buffer at once.
const readPage = 256

// Uplink states, as reported in /status and P/health.
const (
	UplinkStarting    = "starting"
	UplinkConnected   = "connected"
	UplinkUnreachable = "unreachable"  // network: refused, timeout, DNS, lost
	UplinkTLSError    = "tls_error"    // certificates, CA, handshake
	UplinkAuthRefused = "auth_refused" // bad user name or password, not authorised
	UplinkRefused     = "refused"      // other CONNACK refusals
	UplinkStalled     = "stalled"      // connected, but PUBACKs stopped coming
	UplinkStopped     = "stopped"
)

// UplinkStats are the uplink's state and counters.
type UplinkStats struct {
	State     string `json:"state"`
	Since     string `json:"since"`
	Connected bool   `json:"connected"`
	Broker    string `json:"broker,omitempty"`
	LastError string `json:"last_error,omitempty"`
	Hint      string `json:"hint,omitempty"`
	Published uint64 `json:"published"`
	Acked     uint64 `json:"acked"`
	Sessions  uint64 `json:"sessions"`
	Malformed uint64 `json:"malformed"`
	// Parked counts scans parked because the broker ended every session
	// that carried them (buffer export --parked lists them).
	Parked     uint64 `json:"parked"`
	LastParked string `json:"last_parked,omitempty"`
}

// DeviceReport is one device's state for P/devices/<station>/<kind>.
type DeviceReport struct {
	Station string
	Kind    string // scanner | scale
	DeviceStatus
}

type uplinkState struct {
	state, lastErr, hint, since string
}

// uplink forwards buffered records to MQTT and publishes status, health
// and device states. Paho's auto-reconnect is off (its resumed tokens
// complete without a PUBACK, LIBRARY-NOTES.md): every session is a new
// client, and a record is acknowledged in the buffer only when its publish
// token of that same session completed without error.
type uplink struct {
	cfg     config.MQTT
	agent   config.Agent
	prefix  string
	version string
	q       *buffer.Queue
	log     *slog.Logger
	health  func() any            // the P/health payload
	devices func() []DeviceReport // current device states
	devKick chan struct{}

	st                  atomic.Pointer[uplinkState]
	connected           atomic.Bool
	broker              atomic.Value // string
	published, acked    atomic.Uint64
	ackLatency          prometheus.Histogram // nil: not measured
	sessions, malformed atomic.Uint64
	poisoned            atomic.Uint64 // records parked because the broker would not take them
	lastPoison          atomic.Value  // string: the last one parked
	backlogInflight     atomic.Int64  // live_first: backlog publishes not yet acked
}

func newUplink(cfg config.MQTT, agent config.Agent, version string, q *buffer.Queue, log *slog.Logger) *uplink {
	cfg.Window = min(max(cfg.Window, 1), 65000) // paho has 65535 message ids
	u := &uplink{cfg: cfg, agent: agent, prefix: cfg.TopicPrefix, version: version, q: q,
		log: log.With("component", "mqtt"), devKick: make(chan struct{}, 1)}
	u.broker.Store("")
	u.setState(UplinkStarting, nil, "")
	u.health = func() any { return nil }
	u.devices = func() []DeviceReport { return nil }
	return u
}

func (u *uplink) setState(state string, err error, hint string) {
	s := &uplinkState{state: state, hint: hint, since: Timestamp(time.Now())}
	if err != nil {
		s.lastErr = err.Error()
	}
	if old := u.st.Load(); old != nil && old.state == state && old.lastErr == s.lastErr {
		s.since = old.since
	}
	u.st.Store(s)
}

// deviceChanged tells the uplink to publish device states (non-blocking).
func (u *uplink) deviceChanged() {
	select {
	case u.devKick <- struct{}{}:
	default:
	}
}

// loadTLS reads the TLS files anew for every session, so a technician can
// fix them without restarting the agent. TLS 1.2 is the minimum.
func loadTLS(c config.TLS) (*tls.Config, error) {
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
		if err := config.CheckKeyPair(c.CertFile, c.KeyFile, time.Now()); err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file: %w", err)
		}
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file/key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
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
		return UplinkStalled, "the broker took the publishes but sent no PUBACK within 2 × mqtt.keepalive + mqtt.connect_timeout: " +
			"an overloaded or stuck broker, or a network path that lets traffic through one way only; the agent reconnects and re-sends from the oldest unacknowledged scan"
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return UplinkAuthRefused, "the broker refused the user name or password: check mqtt.username and mqtt.password_file / SCANAGENT_MQTT_PASSWORD"
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return UplinkAuthRefused, "the broker refused this client (not authorised): check mqtt.username and the password (mqtt.password_file or SCANAGENT_MQTT_PASSWORD), and the broker's ACL"
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return UplinkRefused, "the broker rejected the client id: check mqtt.client_id"
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return UplinkRefused, "the broker says it is unavailable"
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return UplinkRefused, "the broker does not speak MQTT 3.1.1"
	case strings.HasPrefix(msg, "mqtt.tls."):
		return UplinkTLSError, "fix the TLS file named here; it is read again at every connection attempt"
	case errors.As(err, &unknownCA):
		return UplinkTLSError, "the broker's certificate is not signed by mqtt.tls.ca_file (wrong CA?)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return UplinkTLSError, "the broker's certificate is expired or not yet valid (check this PC's clock too)"
	case errors.As(err, &invalid):
		return UplinkTLSError, "the broker's certificate is not valid for this use: " + invalid.Error()
	case errors.As(err, &hostname):
		return UplinkTLSError, "the broker's certificate does not name this host: set mqtt.tls.server_name or use the name in the certificate"
	case errors.As(err, &header):
		return UplinkTLSError, "the broker did not answer TLS: is this a plain tcp:// port?"
	case errors.Is(err, errTLSClosed):
		return UplinkTLSError, "the broker did not answer TLS (a plain tcp:// port?) or dropped our handshake (does it require a client certificate?)"
	case strings.Contains(msg, "remote error: tls:") || strings.Contains(msg, "tls: "):
		return UplinkTLSError, "the broker rejected the TLS handshake: does it need a client certificate (mqtt.tls.cert_file/key_file), and does it trust ours?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return UplinkUnreachable, "nothing listens at the broker address (broker down, or wrong port)"
	case errors.As(err, &netErr) && netErr.Timeout():
		return UplinkUnreachable, "the broker did not answer in time (network or firewall)"
	case strings.Contains(msg, "no such host"):
		return UplinkUnreachable, "the broker's host name does not resolve (DNS)"
	}
	return UplinkUnreachable, ""
}

func (u *uplink) stats() UplinkStats {
	s := u.st.Load()
	st := UplinkStats{
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
	}
	if v, ok := u.lastPoison.Load().(string); ok {
		st.LastParked = v
	}
	return st
}

// run keeps sessions going until ctx is cancelled; then the current session
// flushes what is in flight (bounded), publishes the offline status and
// disconnects. Between rounds (each round tries every broker in order) it
// waits a random time in [0, backoff] (full jitter), the backoff doubling
// from reconnect_min up to reconnect_max.
func (u *uplink) run(ctx context.Context) error {
	bo := devices.Backoff{Min: u.cfg.ReconnectMin.D(), Max: u.cfg.ReconnectMax.D(), FullJitter: true}
	var lastLogged string
	var poison poisonWatch
	for ctx.Err() == nil {
		start := time.Now()
		err := u.session(ctx)
		u.connected.Store(false)
		if ctx.Err() != nil {
			break
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
			bo.Reset()
		}
		d := bo.Next()
		u.log.Debug("mqtt reconnecting", "in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	u.setState(UplinkStopped, nil, "")
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
	rec     buffer.Record
	tok     mqtt.Token
	backlog bool      // live_first: counted in backlogInflight
	sent    time.Time // for the acknowledgement latency
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
func (u *uplink) session(ctx context.Context) error {
	tlsCfg, err := loadTLS(u.cfg.TLS)
	if err != nil {
		return err
	}
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
		SetTLSConfig(tlsCfg).
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
	u.setState(UplinkConnected, nil, "")
	u.log.Info("mqtt connected", "broker", u.broker.Load(), "client_id", u.cfg.ClientID, "backlog", u.q.Stats().Depth)

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
		ackErr <- u.acker(window, lost)
		close(ackerExit)
	}()

	err = u.pump(ctx, c, window, lost, ackerExit)
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
		err = &unackedError{rec: ue.rec, err: err} // the session's end, and the record it left unacknowledged
	}
	return err
}

// unackedError ends a session that had connected (the broker acknowledged
// the online status) while rec was the oldest publish waiting for its
// PUBACK.
type unackedError struct {
	rec buffer.Record
	err error
}

func (e *unackedError) Error() string { return e.err.Error() }
func (e *unackedError) Unwrap() error { return e.err }

// poisonSessions is how many sessions in a row may end with the same
// record waiting for its PUBACK before it is parked.
const poisonSessions = 3

// poisonWatch follows the record each failed session left unacknowledged.
type poisonWatch struct {
	seq uint64
	n   int
}

// sessionEnded looks at how a connected session ended. A record that
// several sessions in a row leave unacknowledged, each closed by the broker
// right after it, while the broker took the online status in each, is one
// the broker will not take (larger than its max_packet_size, say): it is
// parked (buffer.Park), reported and exported with buffer export --parked,
// and the queue flows on. It returns the hint for the state.
func (u *uplink) sessionEnded(w *poisonWatch, err error) string {
	var ue *unackedError
	if !errors.As(err, &ue) || errors.Is(err, errStalled) {
		return ""
	}
	if ue.rec.Seq == w.seq {
		w.n++
	} else {
		*w = poisonWatch{seq: ue.rec.Seq, n: 1}
	}
	size := len(ue.rec.Value)
	station, _, derr := decodeRecord(ue.rec.Value)
	if derr == nil {
		size -= 1 + len(station)
	}
	if w.n < poisonSessions {
		return fmt.Sprintf("the broker closed the session while seq %d (station %s, %d bytes) waited for its PUBACK (%d time(s) in a row); if it happens again with the same seq, the broker refuses that event (its max_packet_size?); it is parked after %d",
			ue.rec.Seq, station, size, w.n, poisonSessions)
	}
	u.q.Park(ue.rec, buffer.ParkPoison)
	u.poisoned.Add(1)
	u.lastPoison.Store(fmt.Sprintf("seq %d, station %s, %d bytes", ue.rec.Seq, station, size))
	u.log.Error("scan parked: the broker ended every session that carried it; the scans after it flow on",
		"seq", ue.rec.Seq, "station", station, "bytes", size, "sessions", w.n,
		"hint", "check the broker's maximum packet size against mqtt.max_event_bytes; export it with: scanagent buffer export --parked")
	*w = poisonWatch{}
	return fmt.Sprintf("seq %d (%d bytes) was parked: the broker closed %d sessions in a row over it (its max_packet_size?)", ue.rec.Seq, size, poisonSessions)
}

// side publishes the retained device states (all at connect, then each
// change) and P/health (at connect, then every health_interval).
func (u *uplink) side(ctx context.Context, c mqtt.Client) {
	sent := map[string]string{} // topic -> payload last published
	publishDevices := func() {
		current := map[string]bool{}
		for _, d := range u.devices() {
			topic := u.prefix + "/devices/" + d.Station + "/" + d.Kind
			current[topic] = true
			b, _ := json.Marshal(d.DeviceStatus)
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
		b, err := json.Marshal(u.health())
		if err == nil {
			waitToken(ctx, c.Publish(u.prefix+"/health", 1, false, b), u.cfg.ConnectTimeout.D())
		}
	}
	publishDevices()
	publishHealth()
	t := time.NewTicker(u.cfg.HealthInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.devKick:
			publishDevices()
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
func (u *uplink) pump(ctx context.Context, c mqtt.Client, window chan<- inflight, lost *lostSignal, ackerExit <-chan struct{}) error {
	var backlog, live uint64 // cursors
	liveFirst := u.cfg.Order == "live_first"
	split := u.q.Durable() // live_first: records above this are live
	live = split
	pace := newPacer(u.cfg.MaxRate)
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
			recs, err = u.q.Read(backlog, readPage)
		}
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
			if liveFirst && rec.Seq > split {
				live = rec.Seq
			} else {
				backlog = rec.Seq
			}
			station, payload, err := decodeRecord(rec.Value)
			if err != nil {
				// Cannot be published; keep it out of the stream but say so.
				u.malformed.Add(1)
				u.log.Error("dropping malformed buffer record", "seq", rec.Seq, "err", err)
				u.q.Ack(rec)
				continue
			}
			if !pace.wait(ctx, lost.ch) {
				return nil
			}
			tok := c.Publish(u.prefix+"/scans/"+station, 1, false, payload)
			if isDone(tok) && tok.Error() != nil {
				return fmt.Errorf("publish seq %d: %w", rec.Seq, tok.Error())
			}
			u.published.Add(1)
			isBacklog := liveFirst && rec.Seq <= split
			if isBacklog {
				u.backlogInflight.Add(1)
			}
			select {
			case window <- inflight{rec: rec, tok: tok, backlog: isBacklog, sent: time.Now()}:
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
		if !isDone(p.tok) {
			flush()
			timer.Reset(timeout)
			select {
			case <-p.tok.Done():
			case <-lost.ch:
				if !isDone(p.tok) {
					return &unackedError{rec: p.rec, err: lost.error()}
				}
			case <-timer.C:
				return &unackedError{rec: p.rec, err: fmt.Errorf("%w: no PUBACK for seq %d within %v", errStalled, p.rec.Seq, timeout)}
			}
		}
		if err := p.tok.Error(); err != nil {
			return &unackedError{rec: p.rec, err: fmt.Errorf("publish seq %d: %w", p.rec.Seq, err)}
		}
		u.observeAck(p.sent)
		if p.backlog {
			u.backlogInflight.Add(-1)
		}
		if batch = append(batch, p.rec); len(batch) == cap(batch) {
			flush()
		}
	}
}

// pacer spaces publishes to at most rate per second (0: no limit). It
// sleeps in steps of at least 2ms, letting a short burst through, so high
// rates are paced accurately on average.
type pacer struct {
	interval time.Duration
	next     time.Time
}

func newPacer(rate int) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{interval: time.Second / time.Duration(rate)}
}

func (p *pacer) wait(ctx context.Context, lost <-chan struct{}) bool {
	if p.interval == 0 {
		return true
	}
	now := time.Now()
	if p.next.Before(now.Add(-time.Second)) {
		p.next = now // idle for a while: no catching up in a burst
	}
	if d := p.next.Sub(now); d > 2*time.Millisecond {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		case <-lost:
			return false
		}
	}
	p.next = p.next.Add(p.interval)
	return true
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
