package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/devices"
)

// validate checks the decoded cfg, fills in the defaults that depend on
// other keys and resolves the MQTT password.
func (c *checker) validate(cfg *Config, lookupEnv func(string) (string, bool)) {
	a := &cfg.Agent
	c.name("agent.id", a.ID)
	c.name("agent.site", a.Site)
	if a.DataDir == "" {
		a.DataDir = defaultDataDir()
	}

	c.mqtt(cfg, lookupEnv)

	atLeast(c, "buffer.max_bytes", cfg.Buffer.MaxBytes, MiB)
	c.oneOf("buffer.when_full", cfg.Buffer.WhenFull, "drop_oldest", "reject_new")
	between(c, "buffer.commit_window", cfg.Buffer.CommitWindow, 0, Duration(10*time.Millisecond))
	between(c, "buffer.spill_after", cfg.Buffer.SpillAfter, 0, Duration(time.Minute))
	atLeast(c, "buffer.min_free_disk", cfg.Buffer.MinFreeDisk, 0)
	if l := cfg.Agent.MemoryLimit; l != 0 {
		atLeast(c, "agent.memory_limit", l, 16*MiB)
	}

	c.stations(cfg.Stations)
	between(c, "dispatches.expire_days", cfg.Dispatches.ExpireDays, 1, 3650)

	if cfg.HTTP.Listen != "" {
		c.listen("http.listen", cfg.HTTP.Listen)
	}
	c.oneOf("log.level", cfg.Log.Level, LogLevels...)
	c.oneOf("log.format", cfg.Log.Format, "text", "json")
}

func (c *checker) mqtt(cfg *Config, lookupEnv func(string) (string, bool)) {
	m := &cfg.MQTT
	if len(m.Brokers) == 0 {
		c.errorf("mqtt.brokers", "at least one broker is required")
	}
	for i, b := range m.Brokers {
		c.Broker(fmt.Sprintf("mqtt.brokers[%d]", i), b)
	}
	if m.ClientID == "" {
		m.ClientID = "scanagent-" + cfg.Agent.ID
	}
	if m.TopicPrefix == "" {
		m.TopicPrefix = "scanagent/" + cfg.Agent.Site + "/" + cfg.Agent.ID
	} else {
		c.topicPrefix("mqtt.topic_prefix", m.TopicPrefix)
	}
	between(c, "mqtt.window", m.Window, 1, 65000) // paho has 65535 message ids
	between(c, "mqtt.keepalive", m.KeepAlive, Duration(time.Second), Duration(65535*time.Second))
	positive(c, "mqtt.connect_timeout", m.ConnectTimeout)
	positive(c, "mqtt.reconnect_min", m.ReconnectMin)
	atLeast(c, "mqtt.health_interval", m.HealthInterval, Duration(time.Second))
	between(c, "mqtt.max_rate", m.MaxRate, 0, 1_000_000)
	between(c, "mqtt.max_event_bytes", m.MaxEventBytes, 512, 256*KiB) // buffer values stay inline in Badger
	c.oneOf("mqtt.order", m.Order, "seq", "live_first")
	between(c, "mqtt.connect_spread", m.ConnectSpread, 0, Duration(10*time.Minute))
	between(c, "mqtt.drain_rate", m.DrainRate, 0, 1_000_000)
	if m.Receipts.Topic == "" {
		m.Receipts.Topic = m.TopicPrefix + "/receipts"
	} else {
		c.topicName("mqtt.receipts.topic", m.Receipts.Topic)
	}
	atLeast(c, "mqtt.receipts.timeout", m.Receipts.Timeout, Duration(time.Second))
	if m.ReconnectMax < m.ReconnectMin {
		c.errorf("mqtt.reconnect_max", "must not be less than reconnect_min (%s), got %s", m.ReconnectMin, m.ReconnectMax)
	}

	if m.PasswordFile != "" {
		m.PasswordFile = c.Resolve(m.PasswordFile)
		b, err := os.ReadFile(m.PasswordFile)
		pw := strings.TrimRight(string(b), "\r\n")
		switch {
		case err != nil:
			c.warnf("mqtt.password_file", "cannot read password file: %v", err)
		case pw == "":
			c.warnf("mqtt.password_file", "password file %s is empty", m.PasswordFile)
		default:
			m.Password = pw
		}
	} else if pw, ok := lookupEnv(EnvMQTTPassword); ok {
		m.Password = pw
	}

	h := &cfg.HTTP
	if h.TokenFile != "" {
		h.TokenFile = c.Resolve(h.TokenFile)
		b, err := os.ReadFile(h.TokenFile)
		tok := strings.TrimSpace(string(b))
		switch {
		case err != nil:
			c.errorf("http.token_file", "cannot read token file: %v", err)
		case tok == "":
			c.errorf("http.token_file", "token file %s is empty", h.TokenFile)
		default:
			h.Token = tok
		}
	} else if tok, ok := lookupEnv(EnvHTTPToken); ok {
		h.Token = strings.TrimSpace(tok)
	}
	if h.Listen != "" && isHostPort(h.Listen, true) && !loopback(h.Listen) && h.Token == "" && h.TokenFile == "" {
		c.errorf("http.listen", "%q is reachable from other machines: set http.token_file (or %s) so requests need a bearer token, or listen on 127.0.0.1", h.Listen, EnvHTTPToken)
	}

	t := &m.TLS
	for _, f := range []struct {
		key  string
		path *string
	}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		if *f.path == "" {
			continue
		}
		*f.path = c.Resolve(*f.path)
		if err := yamlcfg.Readable(*f.path); err != nil {
			c.warnf("mqtt.tls."+f.key, "%v", err)
		}
	}
	if t.CAFile != "" && !c.Warned("mqtt.tls.ca_file") {
		if err := CheckCA(t.CAFile); err != nil {
			c.warnf("mqtt.tls.ca_file", "%v", err)
		}
	}
	if t.CertFile != "" && t.KeyFile != "" && !c.Warned("mqtt.tls.cert_file") && !c.Warned("mqtt.tls.key_file") {
		if err := CheckKeyPair(t.CertFile, t.KeyFile, time.Now()); err != nil {
			c.warnf("mqtt.tls.cert_file", "%v", err)
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		c.errorf("mqtt.tls.cert_file", "key_file must be set together with cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		c.errorf("mqtt.tls.key_file", "cert_file must be set together with key_file")
	}
}

// MaxTopicSuffix is the longest topic level suffix the agent publishes
// under mqtt.topic_prefix: "/devices/<station>/scanner" with a station id
// of the longest allowed length (64). The others are shorter:
// "/scans/<station>", "/devices/<station>/scale", "/status", "/health".
const MaxTopicSuffix = len("/devices/") + 64 + len("/scanner")

// maxTopicLen is MQTT's limit on a topic name: a UTF-8 string of at most
// 65,535 bytes (MQTT 3.1.1, section 1.5.3).
const maxTopicLen = 65535

func (c *checker) topicPrefix(path, p string) {
	i, r, invalid := badTopicRune(p)
	switch {
	case invalid:
		c.errorf(path, "must be valid UTF-8 (MQTT topics are UTF-8 strings), got %q with an invalid byte at offset %d", p, i)
	case i >= 0:
		c.errorf(path, "must not contain whitespace or control characters, got %q (%U at byte %d): a broker refuses the connection or the topic", p, r, i)
	case strings.ContainsAny(p, "+#"):
		c.errorf(path, "must not contain the MQTT wildcards '+' or '#', got %q", p)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		c.errorf(path, "must not start or end with '/', got %q", p)
	case strings.HasPrefix(p, "$"):
		c.errorf(path, "must not start with '$' (reserved for broker topics), got %q", p)
	case len(p)+MaxTopicSuffix > maxTopicLen:
		c.errorf(path, "is %d bytes, too long: the longest topic the agent publishes adds %d bytes to it "+
			"(/devices/<station id of up to 64>/scanner) and MQTT topics are at most %d bytes, so the prefix can have %d",
			len(p), MaxTopicSuffix, maxTopicLen, maxTopicLen-MaxTopicSuffix)
	}
}

// topicName checks a whole topic the agent subscribes to.
func (c *checker) topicName(path, p string) {
	i, r, invalid := badTopicRune(p)
	switch {
	case invalid:
		c.errorf(path, "must be valid UTF-8 (MQTT topics are UTF-8 strings), got %q with an invalid byte at offset %d", p, i)
	case i >= 0:
		c.errorf(path, "must not contain whitespace or control characters, got %q (%U at byte %d)", p, r, i)
	case strings.ContainsAny(p, "+#"):
		c.errorf(path, "must not contain the MQTT wildcards '+' or '#', got %q: receipts come on one topic per agent", p)
	case strings.HasPrefix(p, "$"):
		c.errorf(path, "must not start with '$' (reserved for broker topics), got %q", p)
	case len(p) > maxTopicLen:
		c.errorf(path, "is %d bytes; MQTT topics are at most %d", len(p), maxTopicLen)
	}
}

func (c *checker) stations(ss []Station) {
	if len(ss) == 0 {
		if c.present("stations") {
			c.errorf("stations", "at least one station is required")
		} else {
			c.missing("stations")
		}
		return
	}
	ids := map[string]string{}    // station id -> path of its first use
	ports := map[string]portUse{} // device (portKey) -> its first use
	for i := range ss {
		s := &ss[i]
		p := fmt.Sprintf("stations[%d]", i)
		if c.name(p+".id", s.ID) {
			if first, dup := ids[s.ID]; dup {
				c.errorf(p+".id", "duplicate station id %q, first used at line %d", s.ID, c.pos(first, false).Line)
			} else {
				ids[s.ID] = p + ".id"
			}
		}
		switch _, known := parcel.EventMeaning(s.Event); {
		case s.Event == "" || known:
		case !validEvent(s.Event):
			c.errorf(p+".event", "must be three upper-case letters such as EDD, got %q", s.Event)
		case !s.AllowCustomEvents:
			c.errorf(p+".event", "unknown tracking event code %q (known: %s); set allow_custom_events: true to use it anyway",
				s.Event, strings.Join(parcel.EventCodes(), " "))
		}
		for j, k := range s.Accept {
			c.oneOf(fmt.Sprintf("%s.accept[%d]", p, j), k, "s10", "s9", "ru14", "gs1", "other")
		}
		atLeast(c, p+".dedup_window", s.DedupWindow, 0)
		if f := s.Feedback; f != nil {
			c.feedback(p+".feedback", f)
		}
		c.workflow(p, s)

		sc := p + ".scanner"
		if !c.present(sc) {
			c.missing(sc)
		} else {
			c.serial(sc, &s.Scanner.Serial, ports)
			c.terminator(sc+".terminator", s.Scanner.Terminator)
			between(c, sc+".max_length", s.Scanner.MaxLength, 1, 65536)
			positive(c, sc+".idle_gap", s.Scanner.IdleGap)
			c.maxLen(sc+".strip_prefix", s.Scanner.StripPrefix, 8)
			c.maxLen(sc+".strip_suffix", s.Scanner.StripSuffix, 8)
			c.oneOf(sc+".code_id", s.Scanner.CodeID, "none", devices.CodeIDHoneywell)
			c.oneOf(sc+".control_chars", s.Scanner.ControlChars, "reject", "strip")
		}

		if s.Scale != nil {
			sp := p + ".scale"
			c.serial(sp, &s.Scale.Serial, ports)
			if !c.present(sp + ".protocol") {
				c.missing(sp + ".protocol")
			} else {
				c.oneOf(sp+".protocol", s.Scale.Protocol, devices.ProtocolNames()...)
			}
			if p := devices.LookupProtocol(s.Scale.Protocol); p != nil {
				switch s.Scale.Mode {
				case "":
					s.Scale.Mode = "continuous"
					if !p.Streams {
						s.Scale.Mode = "poll"
					}
				case "poll":
					if p.Poll == nil {
						c.errorf(sp+".mode", "protocol %s only streams: use mode continuous", p.Name)
					}
				case "continuous":
					if !p.Streams && p.Continuous == nil {
						c.errorf(sp+".mode", "protocol %s only answers polls: use mode poll", p.Name)
					}
				default:
					c.oneOf(sp+".mode", s.Scale.Mode, "poll", "continuous")
				}
			}
			atLeast(c, sp+".poll_interval", s.Scale.PollInterval, Duration(20*time.Millisecond))
			positive(c, sp+".poll_timeout", s.Scale.PollTimeout)
			positive(c, sp+".max_age", s.Scale.MaxAge)
			atLeast(c, sp+".wait_stable", s.Scale.WaitStable, 0)
		}
	}
}

// portUse is where a serial device is first used in the config.
type portUse struct{ path, port string }

func (c *checker) serial(path string, s *Serial, ports map[string]portUse) {
	port := path + ".port"
	dev := portKey(runtime.GOOS, s.Port)
	switch first, dup := ports[dev]; {
	case !c.present(port):
		c.missing(port)
	case s.Port == "":
		c.errorf(port, "must not be empty")
	case dup && first.port == s.Port:
		c.errorf(port, "port %q is already used by %s at line %d", s.Port, parent(first.path), c.pos(first.path, false).Line)
	case dup:
		c.errorf(port, "port %q is the device %s, already used by %s at line %d as %q: one device can serve one scanner or scale",
			s.Port, dev, parent(first.path), c.pos(first.path, false).Line, first.port)
	default:
		ports[dev] = portUse{port, s.Port}
	}
	between(c, path+".baud", s.Baud, 50, 4000000)
	between(c, path+".data_bits", s.DataBits, 5, 8)
	c.oneOf(path+".parity", s.Parity, "none", "odd", "even", "mark", "space")
}

// portKey names the device behind a serial port path, so that two names
// of one device (a /dev/serial/by-id link and its /dev/ttyUSB0 target, or
// a relative path) compare equal: the path with symbolic links resolved
// when it exists (the device may be unplugged while the config is
// checked), else the cleaned path. Windows port names (COM3, \\.\COM3)
// are case-insensitive.
func portKey(goos, p string) string {
	if goos == "windows" {
		return strings.ToUpper(strings.TrimPrefix(strings.TrimPrefix(p, `\\.\`), `\\?\`))
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return filepath.Clean(p)
}

func (c *checker) feedback(path string, f *Feedback) {
	switch f.Protocol {
	case "honeywell":
		between(c, path+".group", f.Group, 0, 9)
	case "zebra":
		between(c, path+".beep_good", f.BeepGood, 0, 255)
		between(c, path+".beep_bad", f.BeepBad, 0, 255)
	case "custom":
		if f.Bad == "" && f.Good == "" {
			c.errorf(path, "protocol custom needs good or bad bytes")
		}
		c.maxLen(path+".good", f.Good, 64)
		c.maxLen(path+".bad", f.Bad, 64)
	case "line":
		c.oneOf(path+".line", f.Line, "dtr", "rts")
		positive(c, path+".pulse", f.Pulse)
	default:
		if !c.present(path + ".protocol") {
			c.missing(path + ".protocol")
		} else {
			c.oneOf(path+".protocol", f.Protocol, "honeywell", "zebra", "custom", "line")
		}
	}
}

func (c *checker) maxLen(path, v string, n int) {
	if len(v) > n {
		c.errorf(path, "%q is longer than %d bytes", v, n)
	}
}

func (c *checker) terminator(path, t string) {
	keywords := "crlf, cr, lf or none"
	switch {
	case t == "crlf" || t == "cr" || t == "lf" || t == "none":
	case t == "":
		c.errorf(path, "must be %s, or a custom string", keywords)
	case len(t) > 8:
		c.errorf(path, "custom terminator %q is longer than 8 bytes", t)
	case strings.Trim(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") == "":
		c.errorf(path, "unknown terminator %q: use %s, or a custom string that is not only letters and digits, such as \"\\x03\"", t, keywords)
	}
}

func (c *checker) listen(path, addr string) {
	if !isHostPort(addr, true) {
		c.errorf(path, "must be host:port with a numeric port, e.g. 127.0.0.1:9180, got %q", addr)
	}
}

// loopback reports whether a listen address only accepts local
// connections: 127.0.0.0/8, ::1 or localhost.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validEvent(s string) bool {
	return len(s) == 3 && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == ""
}

// workflow checks a station's workflow keys (docs/WORKFLOWS.md).
func (c *checker) workflow(p string, s *Station) {
	c.oneOf(p+".workflow", s.Workflow, WorkflowItems, WorkflowOpen, WorkflowFill)
	var badge *regexp.Regexp
	if s.OperatorPattern != "" {
		re, err := regexp.Compile(s.OperatorPattern)
		if err != nil {
			c.errorf(p+".operator_pattern", "is not a valid regular expression: %v", err)
		} else if re.MatchString("") {
			c.errorf(p+".operator_pattern", "%q matches an empty code; anchor it, such as \"^OP[0-9]{4}$\"", s.OperatorPattern)
		} else if code := parcelExample(re); code != "" {
			c.errorf(p+".operator_pattern", "%q matches parcel codes such as %s: every such scan would sign an operator in; anchor it, such as \"^OP[0-9]{4}$\"",
				s.OperatorPattern, code)
		} else {
			badge = re
		}
	} else {
		for _, k := range []string{"require_operator", "operator_idle", "controls.logout"} {
			if c.present(p + "." + k) {
				c.errorf(p+"."+k, "needs operator_pattern: without it nobody signs in at the station")
			}
		}
	}
	atLeast(c, p+".operator_idle", s.OperatorIdle, 0)
	seen := map[string]string{}
	for _, ctl := range []struct{ name, code string }{{"close", s.Controls.Close}, {"cancel", s.Controls.Cancel}, {"logout", s.Controls.Logout}} {
		path := p + ".controls." + ctl.name
		if !c.present(path) {
			continue
		}
		switch {
		case ctl.code == "":
			c.errorf(path, "must not be empty (leave the key out to go without it)")
		case len(ctl.code) > 64 || strings.ContainsFunc(ctl.code, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			c.errorf(path, "must be 1 to 64 printable characters, got %q", ctl.code)
		case seen[ctl.code] != "":
			c.errorf(path, "is the same code as controls.%s", seen[ctl.code])
		case badge != nil && badge.MatchString(ctl.code):
			c.errorf(path, "%q matches operator_pattern: it would sign an operator in", ctl.code)
		default:
			seen[ctl.code] = ctl.name
		}
	}
	if s.Receptacles() {
		if len(s.Accept) > 0 && !slices.Contains(s.Accept, "s9") {
			c.errorf(p+".accept", "must include s9 for workflow %s: the receptacles' labels are S9 codes", s.Workflow)
		}
	} else {
		for _, k := range []string{"controls.close", "receptacle_idle", "weight_tolerance"} {
			if c.present(p + "." + k) {
				c.errorf(p+"."+k, "is for workflows %s and %s; this station's workflow is %s", WorkflowOpen, WorkflowFill, s.Workflow)
			}
		}
	}
	atLeast(c, p+".receptacle_idle", s.ReceptacleIdle, 0)
	if s.Workflow == WorkflowFill && !c.present(p+".receptacle_idle") {
		s.ReceptacleIdle = 0 // a bag may be filled across a break: closed by its label
	}
}

// parcelExample returns an identifier of each kind the badge pattern
// re matches ("" for none): a badge pattern must not take parcels.
func parcelExample(re *regexp.Regexp) string {
	for _, code := range []string{"RR473124829GB", "LA123456785RU", "BEBRUABOLPBBAEN60073003000227", "10100024010003", "0109506000134352"} {
		if re.MatchString(code) {
			return code
		}
	}
	return ""
}
