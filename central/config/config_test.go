package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

func TestMinimalDefaults(t *testing.T) {
	cfg, err := Parse("r.yaml", []byte("receiver: {name: central-1}\npostgres: {url: \"postgres://scans@db:5432/scans\"}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Receiver
	if cfg.MQTT.ClientID != "scanreceiver-central-1" || r.Group != "scanreceiver" || r.PrefixFilter != "scanagent/+/+" ||
		r.BatchSize != 500 || r.BatchWait.D() != 50*time.Millisecond || cfg.HTTP.Listen != "127.0.0.1:9181" || cfg.Postgres.MaxConns != 4 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestPasswords(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pg"), []byte("s3cret\n"), 0o600)
	env := func(k string) (string, bool) {
		if k == EnvMQTTPassword {
			return "mq", true
		}
		return "", false
	}
	cfg, err := Parse(filepath.Join(dir, "r.yaml"), []byte("receiver: {name: c}\npostgres: {url: \"host=db dbname=scans\", password_file: pg}\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Postgres.Password != "s3cret" || cfg.MQTT.Password != "mq" || cfg.Postgres.PasswordFile != filepath.Join(dir, "pg") {
		t.Fatalf("passwords: %+v %+v", cfg.Postgres, cfg.MQTT)
	}
}

// TestErrors: every problem of a file in one pass, each at its position.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty file", "", []string{
			"r.yaml:1:1: missing required key receiver.name",
			"r.yaml:1:1: missing required key postgres.url",
		}},
		{"many at once", `mqtt:
  brokers: ["tcp://u:p@h:1883", "http://h:1", "tcp://h"]
  password: x
  keepalive: 5
postgres:
  url: "postgres://u:pw@db/scans"
  max_conns: many
receiver:
  name: "central 1"
  group: a/b
  prefix_filter: "scanagent/#"
  batch_size: 0
  batch_wait: 1h
  batchsize: 3
http: {listen: "nowhere"}
log: {level: verbose}
`, []string{
			"r.yaml:2:13: mqtt.brokers[0]: broker URL must not contain credentials; use mqtt.username and mqtt.password_file",
			`r.yaml:2:33: mqtt.brokers[1]: unsupported scheme "http" in "http://h:1"; want tcp|ssl|tls|mqtt|mqtts|ws|wss://host:port`,
			`r.yaml:2:47: mqtt.brokers[2]: broker "tcp://h" needs a host and a port, e.g. tcp://127.0.0.1:1883`,
			"r.yaml:3:3: mqtt.password: passwords are not read from the config file; put it in the file named by mqtt.password_file or in the SCANRECEIVER_MQTT_PASSWORD environment variable",
			`r.yaml:4:14: mqtt.keepalive: missing unit in duration 5 (write e.g. "5ms" or "5s")`,
			"r.yaml:6:8: postgres.url: must not contain the password; use postgres.password_file or SCANRECEIVER_POSTGRES_PASSWORD",
			`r.yaml:7:14: postgres.max_conns: expected an integer, got "many"`,
			`r.yaml:9:9: receiver.name: must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got "central 1"`,
			`r.yaml:10:10: receiver.group: must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got "a/b"`,
			`r.yaml:11:18: receiver.prefix_filter: must not contain '#': the receiver adds /scans/#, /status, /health and /devices/# to it, got "scanagent/#"`,
			"r.yaml:12:15: receiver.batch_size: must be between 1 and 10000, got 0",
			"r.yaml:13:15: receiver.batch_wait: must be between 0s and 10s, got 1h0m0s",
			`r.yaml:14:3: unknown key "batchsize" in receiver (did you mean "batch_size"?)`,
			`r.yaml:15:16: http.listen: must be host:port with a numeric port, e.g. 127.0.0.1:9181, got "nowhere"`,
			`r.yaml:16:14: log.level: must be one of debug, info, warn, error, got "verbose"`,
		}},
		{"types and duplicates", `receiver:
  name: c
  name: d
  prefix_filter: "a/b+/c"
postgres: [1]
mqtt: {brokers: "tcp://h:1", password_file: /nonexistent/pw, tls: {cert_file: /nonexistent/c}}
`, []string{
			`r.yaml:3:3: duplicate key "name" in receiver, first at line 2`,
			`r.yaml:4:18: receiver.prefix_filter: '+' must stand for a whole topic level, as in scanagent/+/+, got "a/b+/c"`,
			"r.yaml:5:11: postgres: expected a mapping, got a sequence",
			`r.yaml:6:17: mqtt.brokers: expected a sequence, got "tcp://h:1"`,
			"r.yaml:6:45: mqtt.password_file: cannot read password file: open /nonexistent/pw: no such file or directory",
			"r.yaml:6:79: mqtt.tls.cert_file: open /nonexistent/c: no such file or directory",
		}},
		{"syntax", "receiver: {name: c\n", []string{"r.yaml:1:1: invalid YAML: did not find expected ',' or '}'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("r.yaml", []byte(tc.yaml), noEnv)
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
