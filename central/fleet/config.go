package fleet

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

// EnvMQTTPassword supplies the broker password when mqtt.password_file is
// not set (the agent's SCANAGENT_MQTT_PASSWORD is the same variable, so a
// technician's shell that runs the agent runs the view too).
const EnvMQTTPassword = "SCANAGENT_MQTT_PASSWORD"

// Config is the fleet view's file (scanagent fleet -c FILE), strict YAML
// in the agent's style: every problem is reported at once with
// file:line:col.
//
//	mqtt: {brokers: [ssl://central:8883], username: fleet, password_file: pw, tls: {ca_file: ca.pem}}
//	fleet: {prefix: scanagent/+/+, listen: 127.0.0.1:9182, max_offline: 5m, max_backlog_age: 10m, forget: 24h}
type Config struct {
	MQTT  MQTT    `yaml:"mqtt"`
	Fleet Options `yaml:"fleet"`
	File  string  `yaml:"-"`
}

// MQTT is the connection to the central broker (the agent's options).
type MQTT struct {
	Brokers        []string         `yaml:"brokers"`
	ClientID       string           `yaml:"client_id"` // default scanagent-fleet-<host>-<pid>
	Username       string           `yaml:"username"`
	PasswordFile   string           `yaml:"password_file"`
	Password       string           `yaml:"-"`
	TLS            yamlcfg.TLS      `yaml:"tls"`
	ConnectTimeout yamlcfg.Duration `yaml:"connect_timeout"` // default 10s
	KeepAlive      yamlcfg.Duration `yaml:"keepalive"`       // default 30s
}

// Options are the view's own settings.
type Options struct {
	Prefix        string           `yaml:"prefix"`          // default scanagent/+/+
	Listen        string           `yaml:"listen"`          // /metrics; "" off
	MaxOffline    yamlcfg.Duration `yaml:"max_offline"`     // --check; default 5m, 0 off
	MaxBacklogAge yamlcfg.Duration `yaml:"max_backlog_age"` // --check; default 10m, 0 off
	Forget        yamlcfg.Duration `yaml:"forget"`          // drop hubs offline and unseen this long; default 24h, 0 never
}

// Defaults returns the configuration with its defaults.
func Defaults() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	return Config{
		MQTT: MQTT{Brokers: []string{"tcp://127.0.0.1:1883"}, ClientID: fmt.Sprintf("scanagent-fleet-%s-%d", host, os.Getpid()),
			ConnectTimeout: yamlcfg.Duration(10 * time.Second), KeepAlive: yamlcfg.Duration(30 * time.Second)},
		Fleet: Options{Prefix: "scanagent/+/+", MaxOffline: yamlcfg.Duration(5 * time.Minute),
			MaxBacklogAge: yamlcfg.Duration(10 * time.Minute), Forget: yamlcfg.Duration(24 * time.Hour)},
	}
}

// Load reads the file at path over the defaults.
func Load(path string) (*Config, error) {
	data, err := yamlcfg.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes and validates a file's contents; nil lookupEnv means
// os.LookupEnv.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	c := yamlcfg.New(name)
	c.Refused = map[string]string{"mqtt.password": "passwords are not read from the config file; put it in the file named by mqtt.password_file or in the " + EnvMQTTPassword + " environment variable"}
	cfg := Defaults()
	cfg.File = name
	if c.Decode(data, &cfg) {
		validate(c, &cfg, lookupEnv)
	}
	if err := c.Err(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func validate(c *yamlcfg.Checker, cfg *Config, lookupEnv func(string) (string, bool)) {
	m := &cfg.MQTT
	if len(m.Brokers) == 0 {
		c.Errorf("mqtt.brokers", "at least one broker is required")
	}
	for i, b := range m.Brokers {
		c.Broker(fmt.Sprintf("mqtt.brokers[%d]", i), b)
	}
	if i, _, _ := yamlcfg.BadTopicRune(m.ClientID); i >= 0 || m.ClientID == "" || len(m.ClientID) > 256 {
		c.Errorf("mqtt.client_id", "must be 1 to 256 characters without whitespace or control characters, got %q", m.ClientID)
	}
	yamlcfg.Positive(c, "mqtt.connect_timeout", m.ConnectTimeout)
	yamlcfg.Between(c, "mqtt.keepalive", m.KeepAlive, yamlcfg.Duration(time.Second), yamlcfg.Duration(65535*time.Second))
	if m.PasswordFile != "" {
		m.PasswordFile = c.Resolve(m.PasswordFile)
		b, err := os.ReadFile(m.PasswordFile)
		switch pw := strings.TrimRight(string(b), "\r\n"); {
		case err != nil:
			c.Errorf("mqtt.password_file", "cannot read password file: %v", err)
		case pw == "":
			c.Errorf("mqtt.password_file", "password file %s is empty", m.PasswordFile)
		default:
			m.Password = pw
		}
	} else if pw, ok := lookupEnv(EnvMQTTPassword); ok {
		m.Password = pw
	}
	for _, f := range []struct {
		key  string
		path *string
	}{{"ca_file", &m.TLS.CAFile}, {"cert_file", &m.TLS.CertFile}, {"key_file", &m.TLS.KeyFile}} {
		if *f.path == "" {
			continue
		}
		*f.path = c.Resolve(*f.path)
		if err := yamlcfg.Readable(*f.path); err != nil {
			c.Errorf("mqtt.tls."+f.key, "%v", err)
		}
	}
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		c.Errorf("mqtt.tls.cert_file", "cert_file and key_file must be set together")
	}
	if m.TLS.CAFile != "" && !c.Failed("mqtt.tls.ca_file") {
		if err := yamlcfg.CheckCA(m.TLS.CAFile); err != nil {
			c.Errorf("mqtt.tls.ca_file", "%v", err)
		}
	}
	f := &cfg.Fleet
	if err := CheckPrefixFilter(f.Prefix); err != nil {
		c.Errorf("fleet.prefix", "%v", err)
	}
	if f.Listen != "" && !yamlcfg.IsHostPort(f.Listen, true) {
		c.Errorf("fleet.listen", "must be host:port with a numeric port, e.g. 127.0.0.1:9182, got %q", f.Listen)
	}
	yamlcfg.AtLeast(c, "fleet.max_offline", f.MaxOffline, 0)
	yamlcfg.AtLeast(c, "fleet.max_backlog_age", f.MaxBacklogAge, 0)
	yamlcfg.AtLeast(c, "fleet.forget", f.Forget, 0)
}
