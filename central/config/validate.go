package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"
)

// validate checks the decoded cfg, fills in the defaults that depend on
// other keys and resolves the passwords.
func (c *checker) validate(cfg *Config, lookupEnv func(string) (string, bool)) {
	dir := filepath.Dir(c.file)
	r := &cfg.Receiver
	if c.name("receiver.name", r.Name) && cfg.MQTT.ClientID == "" {
		cfg.MQTT.ClientID = "scanreceiver-" + r.Name
	}
	if !ValidName(r.Group) {
		c.errorf("receiver.group", "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got %q", r.Group)
	}
	c.prefixFilter("receiver.prefix_filter", r.PrefixFilter)
	between(c, "receiver.batch_size", r.BatchSize, 1, 10000)
	between(c, "receiver.batch_wait", r.BatchWait, 0, Duration(10*time.Second))
	between(c, "receiver.writers", r.Writers, 1, 16)

	m := &cfg.MQTT
	if len(m.Brokers) == 0 {
		c.errorf("mqtt.brokers", "at least one broker is required")
	}
	for i, b := range m.Brokers {
		c.broker(fmt.Sprintf("mqtt.brokers[%d]", i), b)
	}
	if i, _, _ := badTopicRune(m.ClientID); i >= 0 || len(m.ClientID) > 256 {
		c.errorf("mqtt.client_id", "must be up to 256 characters without whitespace or control characters, got %q", m.ClientID)
	}
	between(c, "mqtt.keepalive", m.KeepAlive, Duration(time.Second), Duration(65535*time.Second))
	positive(c, "mqtt.connect_timeout", m.ConnectTimeout)
	positive(c, "mqtt.reconnect_min", m.ReconnectMin)
	if m.ReconnectMax < m.ReconnectMin {
		c.errorf("mqtt.reconnect_max", "must not be less than reconnect_min (%s), got %s", m.ReconnectMin, m.ReconnectMax)
	}
	m.Password = c.secret("mqtt.password_file", &m.PasswordFile, EnvMQTTPassword, dir, lookupEnv)
	c.tlsFiles(dir, &m.TLS)

	p := &cfg.Postgres
	if !c.present("postgres.url") {
		c.missing("postgres.url")
	} else {
		c.postgresURL("postgres.url", p.URL)
	}
	between(c, "postgres.max_conns", p.MaxConns, 1, 100)
	if p.MaxConns < r.Writers && !c.failed("receiver.writers") {
		c.errorf("postgres.max_conns", "must be at least receiver.writers (%d), got %d", r.Writers, p.MaxConns)
	}
	p.Password = c.secret("postgres.password_file", &p.PasswordFile, EnvPostgresPassword, dir, lookupEnv)

	if cfg.HTTP.Listen != "" && !isHostPort(cfg.HTTP.Listen, true) {
		c.errorf("http.listen", "must be host:port with a numeric port, e.g. 127.0.0.1:9181, got %q", cfg.HTTP.Listen)
	}
	c.oneOf("log.level", cfg.Log.Level, "debug", "info", "warn", "error")
	c.oneOf("log.format", cfg.Log.Format, "text", "json")
}

// secret reads the password file at *file (made absolute), else the
// environment variable env.
func (c *checker) secret(path string, file *string, env, dir string, lookupEnv func(string) (string, bool)) string {
	if *file == "" {
		pw, _ := lookupEnv(env)
		return pw
	}
	*file = resolve(dir, *file)
	b, err := os.ReadFile(*file)
	pw := strings.TrimRight(string(b), "\r\n")
	switch {
	case err != nil:
		c.errorf(path, "cannot read password file: %v", err)
	case pw == "":
		c.errorf(path, "password file %s is empty", *file)
	}
	return pw
}

func (c *checker) tlsFiles(dir string, t *TLS) {
	for _, f := range []struct {
		key  string
		path *string
	}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		if *f.path == "" {
			continue
		}
		*f.path = resolve(dir, *f.path)
		if _, err := os.ReadFile(*f.path); err != nil {
			c.errorf("mqtt.tls."+f.key, "%v", err)
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		c.errorf("mqtt.tls.cert_file", "key_file must be set together with cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		c.errorf("mqtt.tls.key_file", "cert_file must be set together with key_file")
	case c.failed("mqtt.tls.cert_file") || c.failed("mqtt.tls.key_file"):
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			c.errorf("mqtt.tls.cert_file", "client certificate %s / key %s: %v", t.CertFile, t.KeyFile, err)
		}
	}
	if t.CAFile != "" && !c.failed("mqtt.tls.ca_file") {
		pem, _ := os.ReadFile(t.CAFile)
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			c.errorf("mqtt.tls.ca_file", "no PEM certificate found in %s", t.CAFile)
		}
	}
}

func (c *checker) broker(path, b string) {
	schemes := []string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"}
	u, err := url.Parse(b)
	if err != nil {
		if ue, ok := err.(*url.Error); ok { // its message repeats the URL, which may hold credentials
			err = ue.Err
		}
		c.errorf(path, "invalid broker URL: %v", err)
		return
	}
	switch {
	case u.User != nil:
		c.errorf(path, "broker URL must not contain credentials; use mqtt.username and mqtt.password_file")
	case !slices.Contains(schemes, u.Scheme):
		c.errorf(path, "unsupported scheme %q in %q; want %s://host:port", u.Scheme, b, strings.Join(schemes, "|"))
	case !isHostPort(u.Host, false):
		c.errorf(path, "broker %q needs a host and a port, e.g. tcp://127.0.0.1:1883", b)
	}
}

var dsnPassword = regexp.MustCompile(`(^|\s)password\s*=`)

func (c *checker) postgresURL(path, s string) {
	if u, err := url.Parse(s); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, set := u.User.Password(); set || u.Query().Has("password") {
			c.errorf(path, "must not contain the password; use postgres.password_file or %s", EnvPostgresPassword)
			return
		}
	} else if dsnPassword.MatchString(s) {
		c.errorf(path, "must not contain the password; use postgres.password_file or %s", EnvPostgresPassword)
		return
	}
	if _, err := pgconn.ParseConfig(s); err != nil {
		c.errorf(path, "invalid PostgreSQL URL or DSN: %v", err)
	}
}

// prefixFilter checks an MQTT topic filter for the agents' prefixes: '+'
// may stand for whole levels; '#' is not allowed (the receiver appends
// /scans/#, /status, ...).
func (c *checker) prefixFilter(path, f string) {
	i, r, invalid := badTopicRune(f)
	switch {
	case f == "":
		c.errorf(path, "must not be empty")
	case invalid:
		c.errorf(path, "must be valid UTF-8, got %q with an invalid byte at offset %d", f, i)
	case i >= 0:
		c.errorf(path, "must not contain whitespace or control characters, got %q (%U at byte %d)", f, r, i)
	case strings.Contains(f, "#"):
		c.errorf(path, "must not contain '#': the receiver adds /scans/#, /status, /health and /devices/# to it, got %q", f)
	case strings.HasPrefix(f, "$"):
		c.errorf(path, "must not start with '$' (reserved for broker topics), got %q", f)
	case strings.HasPrefix(f, "/") || strings.HasSuffix(f, "/"):
		c.errorf(path, "must not start or end with '/', got %q", f)
	default:
		for _, level := range strings.Split(f, "/") {
			if strings.Contains(level, "+") && level != "+" {
				c.errorf(path, "'+' must stand for a whole topic level, as in scanagent/+/+, got %q", f)
				return
			}
		}
	}
}

// badTopicRune finds the first character of s that a topic must not hold.
func badTopicRune(s string) (i int, r rune, invalid bool) {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i, r, true
			}
		case unicode.IsControl(r) || unicode.IsSpace(r):
			return i, r, false
		}
	}
	return -1, 0, false
}

// name checks a required topic-safe identifier and reports whether it is valid.
func (c *checker) name(path, s string) bool {
	switch {
	case !c.present(path):
		c.missing(path)
	case !ValidName(s):
		c.errorf(path, "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got %q", s)
	default:
		return true
	}
	return false
}

// ValidName reports whether s is 1 to 64 characters from A-Z a-z 0-9 . _ -
// (the agent's rule for ids; topic-safe).
func ValidName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (c *checker) oneOf(path, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		c.errorf(path, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
}

func between[T ~int | ~int64](c *checker, path string, v, lo, hi T) {
	if v < lo || v > hi {
		c.errorf(path, "must be between %v and %v, got %v", lo, hi, v)
	}
}

func positive[T ~int64](c *checker, path string, v T) {
	if v <= 0 {
		c.errorf(path, "must be greater than 0, got %v", v)
	}
}

// isHostPort reports whether s is host:port with a numeric port. A listen
// address may have an empty host (all interfaces) and port 0.
func isHostPort(s string, listen bool) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" || strings.Trim(port, "0123456789") != "" || (host == "" && !listen) {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n <= 65535 && (n > 0 || listen)
}

// errorf reports a problem with the value at path, unless that value or
// one containing it already failed to decode.
func (c *checker) errorf(path, format string, args ...any) {
	if !c.failed(path) {
		c.bad[path] = true
		c.add(c.pos(path, false), "%s: %s", path, fmt.Sprintf(format, args...))
	}
}

// missing reports that the required key path is absent (or null).
func (c *checker) missing(path string) {
	if !c.failed(path) {
		c.add(c.pos(path, true), "missing required key %s", path)
	}
}

// present reports whether path has a non-null value in the file.
func (c *checker) present(path string) bool { return c.nodes[path] != nil }

func (c *checker) failed(path string) bool {
	for p := path; ; p = parent(p) {
		if c.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// pos finds where to report a problem with path: its value, else its key,
// else the nearest enclosing entry; nil (1:1) for an absent top-level
// section. For a missing key the enclosing entry's key is preferred.
func (c *checker) pos(path string, missing bool) *yaml.Node {
	for p := path; p != ""; p = parent(p) {
		k, v := c.keys[p], c.nodes[p]
		switch {
		case missing && k != nil:
			return k
		case v != nil:
			return v
		case k != nil:
			return k
		}
	}
	return nil
}

func resolve(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}
