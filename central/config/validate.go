package config

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

// validate checks the decoded cfg, fills in the defaults that depend on
// other keys and resolves the passwords.
func (c *checker) validate(cfg *Config, lookupEnv func(string) (string, bool)) {
	r := &cfg.Receiver
	if c.Name("receiver.name", r.Name) && cfg.MQTT.ClientID == "" {
		cfg.MQTT.ClientID = "scanreceiver-" + r.Name
	}
	if !ValidName(r.Group) {
		c.Errorf("receiver.group", "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got %q", r.Group)
	}
	c.prefixFilter("receiver.prefix_filter", r.PrefixFilter)
	yamlcfg.Between(c.Checker, "receiver.batch_size", r.BatchSize, 1, 10000)
	yamlcfg.Between(c.Checker, "receiver.batch_wait", r.BatchWait, 0, Duration(10*time.Second))
	yamlcfg.Between(c.Checker, "receiver.writers", r.Writers, 1, 16)

	m := &cfg.MQTT
	if len(m.Brokers) == 0 {
		c.Errorf("mqtt.brokers", "at least one broker is required")
	}
	for i, b := range m.Brokers {
		c.Broker(fmt.Sprintf("mqtt.brokers[%d]", i), b)
	}
	if i, _, _ := yamlcfg.BadTopicRune(m.ClientID); i >= 0 || len(m.ClientID) > 256 {
		c.Errorf("mqtt.client_id", "must be up to 256 characters without whitespace or control characters, got %q", m.ClientID)
	}
	yamlcfg.Between(c.Checker, "mqtt.keepalive", m.KeepAlive, Duration(time.Second), Duration(65535*time.Second))
	yamlcfg.Positive(c.Checker, "mqtt.connect_timeout", m.ConnectTimeout)
	yamlcfg.Positive(c.Checker, "mqtt.reconnect_min", m.ReconnectMin)
	if m.ReconnectMax < m.ReconnectMin {
		c.Errorf("mqtt.reconnect_max", "must not be less than reconnect_min (%s), got %s", m.ReconnectMin, m.ReconnectMax)
	}
	m.Password = c.secret("mqtt.password_file", &m.PasswordFile, EnvMQTTPassword, lookupEnv)
	c.tlsFiles(&m.TLS)

	p := &cfg.Postgres
	if !c.Present("postgres.url") {
		c.Missing("postgres.url")
	} else {
		c.postgresURL("postgres.url", p.URL)
	}
	yamlcfg.Between(c.Checker, "postgres.max_conns", p.MaxConns, 1, 100)
	if p.MaxConns < r.Writers && !c.Failed("receiver.writers") {
		c.Errorf("postgres.max_conns", "must be at least receiver.writers (%d), got %d", r.Writers, p.MaxConns)
	}
	p.Password = c.secret("postgres.password_file", &p.PasswordFile, EnvPostgresPassword, lookupEnv)

	if cfg.HTTP.Listen != "" && !yamlcfg.IsHostPort(cfg.HTTP.Listen, true) {
		c.Errorf("http.listen", "must be host:port with a numeric port, e.g. 127.0.0.1:9181, got %q", cfg.HTTP.Listen)
	}
	c.OneOf("log.level", cfg.Log.Level, "debug", "info", "warn", "error")
	c.OneOf("log.format", cfg.Log.Format, "text", "json")
}

// secret reads the password file at *file (made absolute), else the
// environment variable env.
func (c *checker) secret(path string, file *string, env string, lookupEnv func(string) (string, bool)) string {
	if *file == "" {
		pw, _ := lookupEnv(env)
		return pw
	}
	*file = c.Resolve(*file)
	b, err := os.ReadFile(*file)
	pw := strings.TrimRight(string(b), "\r\n")
	switch {
	case err != nil:
		c.Errorf(path, "cannot read password file: %v", err)
	case pw == "":
		c.Errorf(path, "password file %s is empty", *file)
	}
	return pw
}

func (c *checker) tlsFiles(t *TLS) {
	for _, f := range []struct {
		key  string
		path *string
	}{{"ca_file", &t.CAFile}, {"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		if *f.path == "" {
			continue
		}
		*f.path = c.Resolve(*f.path)
		if _, err := os.ReadFile(*f.path); err != nil {
			c.Errorf("mqtt.tls."+f.key, "%v", err)
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		c.Errorf("mqtt.tls.cert_file", "key_file must be set together with cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		c.Errorf("mqtt.tls.key_file", "cert_file must be set together with key_file")
	case c.Failed("mqtt.tls.cert_file") || c.Failed("mqtt.tls.key_file"):
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			c.Errorf("mqtt.tls.cert_file", "client certificate %s / key %s: %v", t.CertFile, t.KeyFile, err)
		}
	}
	if t.CAFile != "" && !c.Failed("mqtt.tls.ca_file") {
		if err := yamlcfg.CheckCA(t.CAFile); err != nil {
			c.Errorf("mqtt.tls.ca_file", "%v", err)
		}
	}
}

var dsnPassword = regexp.MustCompile(`(^|\s)password\s*=`)

func (c *checker) postgresURL(path, s string) {
	if u, err := url.Parse(s); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, set := u.User.Password(); set || u.Query().Has("password") {
			c.Errorf(path, "must not contain the password; use postgres.password_file or %s", EnvPostgresPassword)
			return
		}
	} else if dsnPassword.MatchString(s) {
		c.Errorf(path, "must not contain the password; use postgres.password_file or %s", EnvPostgresPassword)
		return
	}
	if _, err := pgconn.ParseConfig(s); err != nil {
		c.Errorf(path, "invalid PostgreSQL URL or DSN: %v", err)
	}
}

// prefixFilter checks an MQTT topic filter for the agents' prefixes: '+'
// may stand for whole levels; '#' is not allowed (the receiver appends
// /scans/#, /status, ...).
func (c *checker) prefixFilter(path, f string) {
	i, r, invalid := yamlcfg.BadTopicRune(f)
	switch {
	case f == "":
		c.Errorf(path, "must not be empty")
	case invalid:
		c.Errorf(path, "must be valid UTF-8, got %q with an invalid byte at offset %d", f, i)
	case i >= 0:
		c.Errorf(path, "must not contain whitespace or control characters, got %q (%U at byte %d)", f, r, i)
	case strings.Contains(f, "#"):
		c.Errorf(path, "must not contain '#': the receiver adds /scans/#, /status, /health and /devices/# to it, got %q", f)
	case strings.HasPrefix(f, "$"):
		c.Errorf(path, "must not start with '$' (reserved for broker topics), got %q", f)
	case strings.HasPrefix(f, "/") || strings.HasSuffix(f, "/"):
		c.Errorf(path, "must not start or end with '/', got %q", f)
	default:
		for _, level := range strings.Split(f, "/") {
			if strings.Contains(level, "+") && level != "+" {
				c.Errorf(path, "'+' must stand for a whole topic level, as in scanagent/+/+, got %q", f)
				return
			}
		}
	}
}

// ValidName reports whether s is 1 to 64 characters from A-Z a-z 0-9 . _ -
// (the agent's rule for ids; topic-safe).
func ValidName(s string) bool { return yamlcfg.ValidName(s) }
