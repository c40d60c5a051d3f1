// Package config owns the scanreceiver configuration file: its types,
// defaults, and strict loading in the agent's style (agent/config): every
// problem (unknown or duplicate keys, wrong types, missing or invalid
// values) is reported in one pass as "file:line:col: message" entries
// sorted by position, so that "scanreceiver check" prints them all at
// once. Callers get either a fully defaulted, validated *Config or none.
//
// Secrets never come from the YAML: the MQTT password comes from
// mqtt.password_file or SCANRECEIVER_MQTT_PASSWORD, the PostgreSQL one
// from postgres.password_file or SCANRECEIVER_POSTGRES_PASSWORD (or
// PostgreSQL's own PGPASSWORD and .pgpass). Relative paths are resolved
// against the config file's directory.
//
// It does not import agent/config, which brings the serial port and
// device code with it, but shares its decoder and common checks through
// the leaf package agent/config/yamlcfg (without merge keys here).
//
// It is imported by cmd/scanreceiver, which hands the parts to
// central/receiver and central/store.
package config

import (
	"os"
	"time"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

// Environment variables that supply the passwords when no password file
// is set.
const (
	EnvMQTTPassword     = "SCANRECEIVER_MQTT_PASSWORD"
	EnvPostgresPassword = "SCANRECEIVER_POSTGRES_PASSWORD"
)

// Config is a loaded and validated configuration file.
type Config struct {
	MQTT     MQTT     `yaml:"mqtt"`
	Postgres Postgres `yaml:"postgres"`
	Receiver Receiver `yaml:"receiver"`
	HTTP     HTTP     `yaml:"http"`
	Log      Log      `yaml:"log"`
	File     string   `yaml:"-"` // path it was loaded from
}

// MQTT is the connection to the broker (the same options as the agent's).
type MQTT struct {
	Brokers        []string `yaml:"brokers"`         // tried in order at each connect
	ClientID       string   `yaml:"client_id"`       // default scanreceiver-<receiver.name>; must stay stable
	Username       string   `yaml:"username"`        //
	PasswordFile   string   `yaml:"password_file"`   //
	Password       string   `yaml:"-"`               // from password_file, else SCANRECEIVER_MQTT_PASSWORD
	TLS            TLS      `yaml:"tls"`             //
	KeepAlive      Duration `yaml:"keepalive"`       // default 30s, 1s..65535s
	ConnectTimeout Duration `yaml:"connect_timeout"` // default 10s, > 0
	ReconnectMin   Duration `yaml:"reconnect_min"`   // default 500ms, > 0
	ReconnectMax   Duration `yaml:"reconnect_max"`   // default 30s, >= reconnect_min
}

// TLS holds optional client TLS files.
type TLS = yamlcfg.TLS

// Postgres is the database the scans are stored in.
type Postgres struct {
	// URL is a postgres:// URL or a key=value DSN (libpq's two forms),
	// without a password.
	URL          string `yaml:"url"`
	PasswordFile string `yaml:"password_file"`
	Password     string `yaml:"-"`         // from password_file, else SCANRECEIVER_POSTGRES_PASSWORD
	MaxConns     int    `yaml:"max_conns"` // default 4, 1..100
}

// Receiver names this receiver and sizes its batches.
type Receiver struct {
	Name         string   `yaml:"name"`          // required; in receipts and rejected rows
	Group        string   `yaml:"group"`         // shared subscription group, default scanreceiver
	PrefixFilter string   `yaml:"prefix_filter"` // the agents' topic prefixes, default scanagent/+/+
	BatchSize    int      `yaml:"batch_size"`    // default 500, 1..10000
	BatchWait    Duration `yaml:"batch_wait"`    // default 50ms, 0..10s
	// Writers is how many batches are written at once, each on its own
	// database connection (acknowledged in order). Default 2, 1..16.
	Writers int `yaml:"writers"`
}

// HTTP serves /metrics and /healthz.
type HTTP struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:9181; "" turns it off
}

// Log configures the logger.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text (default) | json
}

func (c *Config) setDefaults() {
	c.MQTT = MQTT{
		Brokers:        []string{"tcp://127.0.0.1:1883"},
		KeepAlive:      Duration(30 * time.Second),
		ConnectTimeout: Duration(10 * time.Second),
		ReconnectMin:   Duration(500 * time.Millisecond),
		ReconnectMax:   Duration(30 * time.Second),
	}
	c.Postgres.MaxConns = 4
	c.Receiver = Receiver{Group: "scanreceiver", PrefixFilter: "scanagent/+/+", BatchSize: 500, BatchWait: Duration(50 * time.Millisecond), Writers: 2}
	c.HTTP.Listen = "127.0.0.1:9181"
	c.Log = Log{Level: "info", Format: "text"}
}

// MaxFileSize caps a configuration file.
const MaxFileSize = yamlcfg.MaxFileSize

// Load reads and parses the file at path, taking passwords from the
// process environment when no password file is set.
func Load(path string) (*Config, error) {
	data, err := yamlcfg.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes and validates a configuration file's contents; name is
// used in error positions and to resolve relative paths. A nil lookupEnv
// means os.LookupEnv.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	c := newChecker(name)
	cfg := &Config{File: name}
	cfg.setDefaults()
	if c.Decode(data, cfg) {
		c.validate(cfg, lookupEnv)
	}
	if err := c.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}
