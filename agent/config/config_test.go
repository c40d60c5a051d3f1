package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
)

// noEnv is a lookupEnv with an empty environment.
func noEnv(string) (string, bool) { return "", false }

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

// head is a valid config's required part; cases append sections to it, so
// their positions start at line 8.
const head = `agent:
  id: hub-1
  site: SITE
stations:
  - id: s1
    scanner:
      port: /dev/ttyS0
`

// messages parses text and returns its errors as "line:col: msg" strings.
func messages(t *testing.T, text string) []string {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(text), noEnv)
	if err == nil {
		return nil
	}
	if cfg != nil {
		t.Errorf("Parse returned a Config along with errors")
	}
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse error is %T, want config.Errors: %v", err, err)
	}
	var out []string
	for _, e := range errs {
		if e.File != "test.yaml" {
			t.Errorf("error file = %q, want test.yaml", e.File)
		}
		out = append(out, strings.TrimPrefix(e.Error(), "test.yaml:"))
	}
	return out
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // "line:col: message substring", in order
	}{
		{"unknown top-level key", head + "bogus: 1\n",
			[]string{`8:1: unknown key "bogus"`}},
		{"unknown nested key", head + "mqtt:\n  bad_key: 1\n",
			[]string{`9:3: unknown key "bad_key" in mqtt`}},
		{"unknown key with suggestion", head + "      buad: 9600\n",
			[]string{`8:7: unknown key "buad" in stations[0].scanner (did you mean "baud"?)`}},
		{"wrong scalar type", head + "      baud: fast\n",
			[]string{`8:13: stations[0].scanner.baud: expected an integer, got "fast"`}},
		{"quoted integer", head + "      baud: \"9600\"\n",
			[]string{`8:13: stations[0].scanner.baud: expected an integer, got "9600"`}},
		{"stations is a mapping", "agent: {id: a, site: b}\nstations: {}\n",
			[]string{`2:11: stations: expected a sequence, got a mapping`}},
		{"section is a string", "agent: hub\nstations: [{id: s, scanner: {port: p}}]\n",
			[]string{`1:8: agent: expected a mapping, got "hub"`}},
		{"root is a sequence", "- a\n",
			[]string{`1:1: top level: expected a mapping, got a sequence`}},
		{"missing agent.id", "stations:\n  - id: s1\n    scanner: {port: p}\nagent:\n  site: SITE\n",
			[]string{`4:1: missing required key agent.id`}},
		{"null agent.id", "agent:\n  id:\n  site: SITE\nstations: [{id: s, scanner: {port: p}}]\n",
			[]string{`2:3: missing required key agent.id`}},
		{"missing agent section", "stations: [{id: s, scanner: {port: p}}]\n",
			[]string{`1:1: missing required key agent.id`, `1:1: missing required key agent.site`}},
		{"bad id characters", strings.Replace(head, "id: hub-1", `id: "hub 1"`, 1),
			[]string{`2:7: agent.id: must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got "hub 1"`}},
		{"id too long", strings.Replace(head, "site: SITE", "site: "+strings.Repeat("x", 65), 1),
			[]string{`3:9: agent.site: must be 1 to 64 characters`}},
		{"duplicate station id", head + "  - id: s1\n    scanner: {port: /dev/ttyS1}\n",
			[]string{`8:9: stations[1].id: duplicate station id "s1", first used at line 5`}},
		{"bad event", head + "    event: edd\n",
			[]string{`8:12: stations[0].event: must be three upper-case letters such as EDD, got "edd"`}},
		{"bad baud", head + "  - id: s2\n    scanner:\n      port: /dev/ttyS1\n      baud: 0\n",
			[]string{`11:13: stations[1].scanner.baud: must be between 50 and 4000000, got 0`}},
		{"bad data bits", head + "      data_bits: 9\n",
			[]string{`8:18: stations[0].scanner.data_bits: must be between 5 and 8, got 9`}},
		{"bad parity", head + "      parity: weird\n",
			[]string{`8:15: stations[0].scanner.parity: must be one of none, odd, even, mark, space, got "weird"`}},
		{"stop bits 3", head + "      stop_bits: 3\n",
			[]string{`8:18: stations[0].scanner.stop_bits: must be 1, 1.5 or 2, got 3`}},
		{"terminator typo", head + "      terminator: crfl\n",
			[]string{`8:19: stations[0].scanner.terminator: unknown terminator "crfl": use crlf, cr, lf or none`}},
		{"terminator too long", head + "      terminator: \"<<<<>>>>!\"\n",
			[]string{`8:19: stations[0].scanner.terminator: custom terminator "<<<<>>>>!" is longer than 8 bytes`}},
		{"empty terminator", head + "      terminator: ''\n",
			[]string{`8:19: stations[0].scanner.terminator: must be crlf, cr, lf or none`}},
		{"max length", head + "      max_length: 0\n",
			[]string{`8:19: stations[0].scanner.max_length: must be between 1 and 65536, got 0`}},
		{"duration without unit", head + "      idle_gap: 50\n",
			[]string{`8:17: stations[0].scanner.idle_gap: missing unit in duration 50`}},
		{"bad duration", head + "      idle_gap: soon\n",
			[]string{`8:17: stations[0].scanner.idle_gap: invalid duration "soon"`}},
		{"zero idle gap", head + "      idle_gap: 0s\n",
			[]string{`8:17: stations[0].scanner.idle_gap: must be greater than 0, got 0s`}},
		{"port used twice", head + "    scale: {port: /dev/ttyS0, protocol: cas}\n",
			[]string{`8:19: stations[0].scale.port: port "/dev/ttyS0" is already used by stations[0].scanner at line 7`}},
		{"scanner missing", "agent: {id: a, site: b}\nstations:\n  - id: s1\n    event: EDD\n",
			[]string{`3:5: missing required key stations[0].scanner`}},
		{"scanner port missing", "agent: {id: a, site: b}\nstations:\n  - id: s1\n    scanner:\n      baud: 9600\n",
			[]string{`4:5: missing required key stations[0].scanner.port`}},
		{"scale bad protocol", head + "    scale:\n      port: /dev/ttyS1\n      protocol: foo\n",
			[]string{`10:17: stations[0].scale.protocol: must be one of mt-sics, toledo, sma, nci, cas, ohaus, got "foo"`}},
		{"scale mode poll on a streaming protocol", head + "    scale: {port: /dev/ttyS1, protocol: toledo, mode: poll}\n",
			[]string{`8:55: stations[0].scale.mode: protocol toledo only streams: use mode continuous`}},
		{"scale mode continuous on a poll protocol", head + "    scale: {port: /dev/ttyS1, protocol: nci, mode: continuous}\n",
			[]string{`8:52: stations[0].scale.mode: protocol nci only answers polls: use mode poll`}},
		{"scale bad mode and poll times", head + "    scale: {port: /dev/ttyS1, protocol: sma, mode: often, poll_interval: 1ms, poll_timeout: 0s}\n",
			[]string{`8:52: stations[0].scale.mode: must be one of poll, continuous, got "often"`,
				`8:74: stations[0].scale.poll_interval: must be at least 20ms, got 1ms`,
				`8:93: stations[0].scale.poll_timeout: must be greater than 0, got 0s`}},
		{"unknown event code", head + "    event: XYZ\n",
			[]string{`8:12: stations[0].event: unknown tracking event code "XYZ" (known: EMA EMB`}},
		{"accept kinds and dedup window", head + "    accept: [s10, upc]\n    dedup_window: -1s\n",
			[]string{`8:19: stations[0].accept[1]: must be one of s10, s9, ru14, gs1, other, got "upc"`,
				`9:19: stations[0].dedup_window: must be at least 0s, got -1s`}},
		{"feedback", head + "    feedback: {protocol: honeywell, group: 12}\n",
			[]string{`8:44: stations[0].feedback.group: must be between 0 and 9, got 12`}},
		{"feedback without protocol", head + "    feedback: {good_read: true}\n",
			[]string{`8:5: missing required key stations[0].feedback.protocol`}},
		{"feedback line and custom", head + "    feedback: {protocol: line, line: cts, pulse: 0s}\n",
			[]string{`8:38: stations[0].feedback.line: must be one of dtr, rts, got "cts"`,
				`8:50: stations[0].feedback.pulse: must be greater than 0, got 0s`}},
		{"scanner options", head + "      code_id: zebra\n      control_chars: drop\n      strip_prefix: '123456789'\n      dtr: yes please\n",
			[]string{`8:16: stations[0].scanner.code_id: must be one of none, honeywell, got "zebra"`,
				`9:22: stations[0].scanner.control_chars: must be one of reject, strip, got "drop"`,
				`10:21: stations[0].scanner.strip_prefix: "123456789" is longer than 8 bytes`,
				`11:12: stations[0].scanner.dtr: expected true or false, got "yes please"`}},
		{"scale missing protocol and port", head + "    scale:\n      baud: 2400\n",
			[]string{`8:5: missing required key stations[0].scale.port`, `8:5: missing required key stations[0].scale.protocol`}},
		{"negative wait_stable", head + "    scale: {port: /dev/ttyS1, protocol: cas, wait_stable: -1s}\n",
			[]string{`8:59: stations[0].scale.wait_stable: must be at least 0s, got -1s`}},
		{"empty stations", "agent: {id: a, site: b}\nstations: []\n",
			[]string{`2:11: stations: at least one station is required`}},
		{"missing stations", "agent: {id: a, site: b}\n",
			[]string{`1:1: missing required key stations`}},
		{"bad size unit", head + "buffer:\n  max_bytes: 4XB\n",
			[]string{`9:14: buffer.max_bytes: unknown unit "XB" in size "4XB"`}},
		{"size too small", head + "buffer:\n  max_bytes: 512KiB\n",
			[]string{`9:14: buffer.max_bytes: must be at least 1MiB, got 512KiB`}},
		{"bad when_full", head + "buffer: {when_full: block}\n",
			[]string{`8:21: buffer.when_full: must be one of drop_oldest, reject_new, got "block"`}},
		{"bad log level", head + "log:\n  level: verbose\n",
			[]string{`9:10: log.level: must be one of debug, info, warn, error, got "verbose"`}},
		{"bad log format", head + "log: {format: xml}\n",
			[]string{`8:15: log.format: must be one of text, json`}},
		{"listen without port", head + "http:\n  listen: localhost\n",
			[]string{`9:11: http.listen: must be host:port with a numeric port`}},
		{"listen with named port", head + "http:\n  listen: \"127.0.0.1:http\"\n",
			[]string{`9:11: http.listen: must be host:port with a numeric port`}},
		{"inline password", head + "mqtt:\n  password: hunter2\n",
			[]string{`9:3: mqtt.password: passwords are not read from the config file; put it in the file named by mqtt.password_file or in the SCANAGENT_MQTT_PASSWORD environment variable`}},
		{"cert without key", head + "mqtt:\n  tls:\n    cert_file: config_test.go\n",
			[]string{`10:16: mqtt.tls.cert_file: key_file must be set together with cert_file`}},
		{"key without cert", head + "mqtt:\n  tls:\n    key_file: config_test.go\n",
			[]string{`10:15: mqtt.tls.key_file: cert_file must be set together with key_file`}},
		{"broker bad scheme", head + "mqtt:\n  brokers: [\"http://broker:1883\"]\n",
			[]string{`9:13: mqtt.brokers[0]: unsupported scheme "http"`}},
		{"broker without port", head + "mqtt:\n  brokers:\n    - tcp://a:1883\n    - ssl://broker\n",
			[]string{`11:7: mqtt.brokers[1]: broker "ssl://broker" needs a host and a port`}},
		{"broker credentials", head + "mqtt:\n  brokers: [\"tcp://user:s3cret@broker:1883\"]\n",
			[]string{`9:13: mqtt.brokers[0]: broker URL must not contain credentials`}},
		{"no brokers", head + "mqtt:\n  brokers: []\n",
			[]string{`9:12: mqtt.brokers: at least one broker is required`}},
		{"topic prefix wildcard", head + "mqtt:\n  topic_prefix: site/#\n",
			[]string{`9:17: mqtt.topic_prefix: must not contain the MQTT wildcards '+' or '#', got "site/#"`}},
		{"topic prefix slash", head + "mqtt:\n  topic_prefix: /site\n",
			[]string{`9:17: mqtt.topic_prefix: must not start or end with '/'`}},
		{"commit window too long", head + "buffer:\n  commit_window: 50ms\n",
			[]string{`9:18: buffer.commit_window: must be between 0s and 10ms, got 50ms`}},
		{"spill after too long", head + "buffer:\n  spill_after: 2m\n",
			[]string{`9:16: buffer.spill_after: must be between 0s and 1m0s, got 2m0s`}},
		{"min free disk negative", head + "buffer:\n  min_free_disk: -1\n",
			[]string{`9:18: buffer.min_free_disk: must be at least 0B, got -1B`}},
		{"memory limit too small", strings.Replace(head, "site: SITE", "site: SITE\n  memory_limit: 1MiB", 1),
			[]string{`4:17: agent.memory_limit: must be at least 16MiB, got 1MiB`}},
		{"window", head + "mqtt:\n  window: 0\n",
			[]string{`9:11: mqtt.window: must be between 1 and 65000, got 0`}},
		{"max event bytes too small", head + "mqtt:\n  max_event_bytes: 100\n",
			[]string{`9:20: mqtt.max_event_bytes: must be between 512B and 256KiB, got 100B`}},
		{"max event bytes too large", head + "mqtt:\n  max_event_bytes: 1MiB\n",
			[]string{`9:20: mqtt.max_event_bytes: must be between 512B and 256KiB, got 1MiB`}},
		{"receipt timeout", head + "mqtt:\n  receipts: {enabled: true, timeout: 10ms}\n",
			[]string{`9:38: mqtt.receipts.timeout: must be at least 1s, got 10ms`}},
		{"receipt topic wildcard", head + "mqtt:\n  receipts: {topic: \"scanagent/+/receipts\"}\n",
			[]string{`9:21: mqtt.receipts.topic: must not contain the MQTT wildcards '+' or '#', got "scanagent/+/receipts": receipts come on one topic per agent`}},
		{"receipt key unknown", head + "mqtt:\n  receipts: {enable: true}\n",
			[]string{`9:14: unknown key "enable" in mqtt.receipts (did you mean "enabled"?)`}},
		{"keepalive", head + "mqtt:\n  keepalive: 500ms\n",
			[]string{`9:14: mqtt.keepalive: must be between 1s and 18h12m15s, got 500ms`}},
		{"connect spread", head + "mqtt:\n  connect_spread: 1h\n",
			[]string{`9:19: mqtt.connect_spread: must be between 0s and 10m0s, got 1h0m0s`}},
		{"drain rate", head + "mqtt:\n  drain_rate: -1\n",
			[]string{`9:15: mqtt.drain_rate: must be between 0 and 1000000, got -1`}},
		{"reconnect order", head + "mqtt:\n  reconnect_min: 10s\n  reconnect_max: 5s\n",
			[]string{`10:18: mqtt.reconnect_max: must not be less than reconnect_min (10s), got 5s`}},
		{"yaml syntax error", "agent:\n  id: a\n site: b\n",
			[]string{`2:1: invalid YAML: did not find expected key`}},
		{"yaml tab", "agent:\n\tid: a\n",
			[]string{`2:1: invalid YAML: found character that cannot start any token`}},
		{"duplicate yaml key", "agent:\n  id: a\n  site: b\n  id: c\nstations: [{id: s, scanner: {port: p}}]\n",
			[]string{`4:3: duplicate key "id" in agent, first at line 2`}},
		{"duplicate top-level key", head + "agent: {id: x, site: y}\n",
			[]string{`8:1: duplicate key "agent", first at line 1`}},
		{"two documents", head + "---\nagent: {}\n",
			[]string{`9:1: only one YAML document is allowed`}},
		{"empty file", "",
			[]string{`1:1: missing required key agent.id`, `1:1: missing required key agent.site`, `1:1: missing required key stations`}},
		{"only comments", "# nothing here\n\n# yet\n",
			[]string{`1:1: missing required key agent.id`, `1:1: missing required key agent.site`, `1:1: missing required key stations`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := messages(t, tt.text)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), strings.Join(got, "\n"))
			}
			for i, w := range tt.want {
				pos, msg, _ := strings.Cut(w, " ")
				if !strings.HasPrefix(got[i], pos+" ") || !strings.Contains(got[i], msg) {
					t.Errorf("error %d = %q\nwant at %s containing %q", i, got[i], pos, msg)
				}
			}
		})
	}
}

func TestSecretsNotInErrors(t *testing.T) {
	text := head + "mqtt:\n  password: hunter2\n  brokers: [\"tcp://u:s3cret@b:1\", \"tcp://u:s3cret@[::1\"]\n"
	_, err := config.Parse("test.yaml", []byte(text), noEnv)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	for _, secret := range []string{"hunter2", "s3cret"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error mentions %q:\n%v", secret, err)
		}
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	text := `agent:
  id: hub-1
  site: SITE
  colour: blue
stations:
  - id: s1
    scanner:
      port: /dev/ttyS0
      baud: fast
  - id: s1
    scanner:
      port: /dev/ttyS1
log:
  level: loud
`
	got := messages(t, text)
	want := []string{
		`4:3: unknown key "colour" in agent`,
		`9:13: stations[0].scanner.baud: expected an integer, got "fast"`,
		`10:9: stations[1].id: duplicate station id "s1", first used at line 6`,
		`14:10: log.level: must be one of debug, info, warn, error, got "loud"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := config.Parse("min.yaml", []byte(head), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := "/var/lib/scanagent"
	if runtime.GOOS == "windows" {
		dataDir = filepath.Join(os.Getenv("ProgramData"), "scanagent")
	}
	want := &config.Config{
		Agent: config.Agent{ID: "hub-1", Site: "SITE", DataDir: dataDir, MemoryLimit: 128 * config.MiB},
		MQTT: config.MQTT{
			Brokers:        []string{"tcp://127.0.0.1:1883"},
			ClientID:       "scanagent-hub-1",
			TopicPrefix:    "scanagent/SITE/hub-1",
			Window:         256,
			MaxEventBytes:  16 * config.KiB,
			KeepAlive:      config.Duration(30 * time.Second),
			ConnectTimeout: config.Duration(10 * time.Second),
			ReconnectMin:   config.Duration(500 * time.Millisecond),
			ReconnectMax:   config.Duration(30 * time.Second),
			HealthInterval: config.Duration(30 * time.Second),
			Order:          "seq",
			ConnectSpread:  config.Duration(5 * time.Second),
			DrainRate:      500,
			Receipts:       config.Receipts{Topic: "scanagent/SITE/hub-1/receipts", Timeout: config.Duration(5 * time.Minute)},
		},
		Buffer: config.Buffer{MaxBytes: 4 * config.GiB, WhenFull: "drop_oldest", MinFreeDisk: 64 * config.MiB, SpillAfter: config.Duration(time.Second)},
		Stations: []config.Station{{
			ID:              "s1",
			DedupWindow:     config.Duration(time.Second),
			Workflow:        config.WorkflowItems,
			ReceptacleIdle:  config.Duration(10 * time.Minute),
			WeightTolerance: 5,
			Scanner: config.Scanner{
				Serial:       config.Serial{Port: "/dev/ttyS0", Baud: 9600, DataBits: 8, Parity: "none", StopBits: config.StopBits1},
				Terminator:   "crlf",
				MaxLength:    256,
				IdleGap:      config.Duration(50 * time.Millisecond),
				CodeID:       "none",
				ControlChars: "reject",
			},
		}},
		HTTP:       config.HTTP{Listen: "127.0.0.1:9180"},
		Log:        config.Log{Level: "info", Format: "text"},
		Dispatches: config.Dispatches{ExpireDays: 14},
		File:       "min.yaml",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}

	// Scale defaults, and empty free-form strings meaning "default".
	text := head + "    scale: {port: /dev/ttyS1, protocol: ohaus}\nmqtt: {client_id: '', topic_prefix: ''}\n"
	cfg, err = config.Parse("min.yaml", []byte(text), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	wantScale := &config.Scale{
		Serial:       config.Serial{Port: "/dev/ttyS1", Baud: 9600, DataBits: 8, Parity: "none", StopBits: config.StopBits1},
		Protocol:     "ohaus",
		MaxAge:       config.Duration(2 * time.Second),
		WaitStable:   config.Duration(500 * time.Millisecond),
		Mode:         "continuous",
		PollInterval: config.Duration(200 * time.Millisecond),
		PollTimeout:  config.Duration(time.Second),
	}
	if got := cfg.Stations[0].Scale; !reflect.DeepEqual(got, wantScale) {
		t.Errorf("scale = %+v, want %+v", got, wantScale)
	}
	if cfg.MQTT.ClientID != "scanagent-hub-1" || cfg.MQTT.TopicPrefix != "scanagent/SITE/hub-1" {
		t.Errorf("client_id, topic_prefix = %q, %q", cfg.MQTT.ClientID, cfg.MQTT.TopicPrefix)
	}
}

func TestValues(t *testing.T) {
	text := head + `      baud: 115200
      data_bits: 7
      parity: even
      stop_bits: "1.5"
      terminator: "\x03"
      max_length: 4096
      idle_gap: 20ms
    event: EDD
    scale:
      port: COM4
      stop_bits: 2
      protocol: mt-sics
      max_age: 1s
      wait_stable: 0
mqtt:
  brokers: [ssl://a.example:8883, "wss://b.example:443/mqtt"]
  client_id: hub
  topic_prefix: t/x
  keepalive: 1m
buffer: {max_bytes: 64 MiB, when_full: reject_new}
http: {listen: "127.0.0.1:0"}
log: {level: debug, format: json}
`
	cfg, err := config.Parse("test.yaml", []byte(text), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.StationByID("s1")
	if st == nil {
		t.Fatal("StationByID(s1) = nil")
	}
	sc := st.Scanner
	if sc.Baud != 115200 || sc.DataBits != 7 || sc.Parity != "even" || sc.StopBits != config.StopBits15 ||
		string(sc.TerminatorBytes()) != "\x03" || sc.MaxLength != 4096 || sc.IdleGap.D() != 20*time.Millisecond {
		t.Errorf("scanner = %+v", sc)
	}
	if st.Event != "EDD" || st.Scale == nil || st.Scale.Port != "COM4" || st.Scale.StopBits != config.StopBits2 ||
		st.Scale.WaitStable != 0 || st.Scale.MaxAge.D() != time.Second {
		t.Errorf("station = %+v, scale = %+v", st, st.Scale)
	}
	if m := cfg.MQTT; len(m.Brokers) != 2 || m.ClientID != "hub" || m.TopicPrefix != "t/x" || m.KeepAlive.D() != time.Minute {
		t.Errorf("mqtt = %+v", m)
	}
	if cfg.Buffer.MaxBytes != 64*config.MiB || cfg.Buffer.WhenFull != "reject_new" || cfg.HTTP.Listen != "127.0.0.1:0" ||
		cfg.Log != (config.Log{Level: "debug", Format: "json"}) {
		t.Errorf("buffer, http, log = %+v, %+v, %+v", cfg.Buffer, cfg.HTTP, cfg.Log)
	}
	if cfg.StationByID("nope") != nil {
		t.Error("StationByID(nope) != nil")
	}
}

func TestTerminatorBytes(t *testing.T) {
	for term, want := range map[string]string{"crlf": "\r\n", "cr": "\r", "lf": "\n", "": "\r\n", "\x02\x03": "\x02\x03"} {
		if got := (config.Scanner{Terminator: term}).TerminatorBytes(); string(got) != want {
			t.Errorf("TerminatorBytes(%q) = %q, want %q", term, got, want)
		}
	}
	if got := (config.Scanner{Terminator: "none"}).TerminatorBytes(); got != nil {
		t.Errorf("TerminatorBytes(none) = %q, want nil", got)
	}
}

func TestMergeKeys(t *testing.T) {
	text := `agent: {id: a, site: b}
stations:
  - id: s1
    scanner: &usb
      port: /dev/ttyACM0
      baud: 115200
      terminator: cr
  - id: s2
    scanner:
      <<: *usb
      port: /dev/ttyACM1
`
	cfg, err := config.Parse("test.yaml", []byte(text), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Stations[1].Scanner
	if sc.Port != "/dev/ttyACM1" || sc.Baud != 115200 || sc.Terminator != "cr" {
		t.Errorf("merged scanner = %+v", sc)
	}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withEnv := env(map[string]string{config.EnvMQTTPassword: "from-env"})
	tests := []struct {
		name, mqtt string
		lookupEnv  func(string) (string, bool)
		want       string
	}{
		{"file", "mqtt: {password_file: pw}", noEnv, "from-file"},
		{"file wins over env", "mqtt: {password_file: pw}", withEnv, "from-file"},
		{"env", "mqtt: {username: u}", withEnv, "from-env"},
		{"none", "mqtt: {username: u}", noEnv, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A relative password_file is relative to the config file.
			name := filepath.Join(dir, "scanagent.yaml")
			cfg, err := config.Parse(name, []byte(head+tt.mqtt+"\n"), tt.lookupEnv)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MQTT.Password != tt.want {
				t.Errorf("password = %q, want %q", cfg.MQTT.Password, tt.want)
			}
		})
	}

	cfg, err := config.Parse(filepath.Join(dir, "c.yaml"), []byte(head+"mqtt: {password_file: empty}\n"), noEnv)
	if err != nil || !strings.Contains(cfg.Warnings.Error(), "8:23: mqtt.password_file: password file "+filepath.Join(dir, "empty")+" is empty") {
		t.Errorf("empty password file: %v %v", err, cfg.Warnings)
	}
}

func TestLoad(t *testing.T) {
	cfg, err := config.Load("../../packaging/scanagent.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.ID != "hub-msk-01" || len(cfg.Stations) != 3 || cfg.Stations[0].Scale == nil || cfg.Stations[2].Workflow != config.WorkflowOpen ||
		cfg.File != "../../packaging/scanagent.example.yaml" {
		t.Errorf("example config = %+v", cfg)
	}

	_, err = config.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

// TestParseWarnings: files the uplink needs do not stop the agent (scanning
// must go on); they are reported as warnings with their position.
func TestParseWarnings(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"missing password file", head + "mqtt:\n  password_file: /nonexistent/mqtt-password\n",
			`9:18: mqtt.password_file: cannot read password file: open /nonexistent/mqtt-password`},
		{"missing tls file", head + "mqtt:\n  tls:\n    ca_file: /nonexistent/ca.pem\n",
			`10:14: mqtt.tls.ca_file: open /nonexistent/ca.pem`},
		{"tls file is a directory", head + "mqtt:\n  tls: {ca_file: ../config}\n",
			`9:18: mqtt.tls.ca_file: ` + filepath.Join("..", "config") + ` is a directory`},
		{"ca file without a certificate", head + "mqtt:\n  tls: {ca_file: config_test.go}\n",
			`9:18: mqtt.tls.ca_file: no PEM certificate found in config_test.go`},
		{"cert and key not PEM", head + "mqtt:\n  tls: {cert_file: config_test.go, key_file: config.go}\n",
			`9:20: mqtt.tls.cert_file: client certificate config_test.go / key config.go:`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("test.yaml", []byte(tc.text), noEnv)
			if err != nil {
				t.Fatalf("warnings must not be errors: %v", err)
			}
			if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Error(), tc.want) {
				t.Fatalf("warnings %v, want %q", cfg.Warnings, tc.want)
			}
		})
	}
}

func TestCustomEventAllowed(t *testing.T) {
	cfg, err := config.Parse("x.yaml", []byte(head+"    event: XYZ\n    allow_custom_events: true\n    accept: [s10, ru14]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if st := cfg.Stations[0]; st.Event != "XYZ" || len(st.Accept) != 2 {
		t.Errorf("station %+v", st)
	}
}

func TestHTTPListenNeedsTokenBeyondLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:9180", ":9180", "10.1.2.3:9180", "hub.example:9180"} {
		_, err := config.Parse("x.yaml", []byte(head+"http: {listen: \""+listen+"\"}\n"), noEnv)
		if err == nil || !strings.Contains(err.Error(), "http.listen") || !strings.Contains(err.Error(), "token_file") {
			t.Errorf("%s: %v", listen, err)
		}
	}
	for _, listen := range []string{"127.0.0.1:9180", "[::1]:9180", "localhost:9180"} {
		if _, err := config.Parse("x.yaml", []byte(head+"http: {listen: \""+listen+"\"}\n"), noEnv); err != nil {
			t.Errorf("%s: %v", listen, err)
		}
	}
	withToken := func(name string) (string, bool) {
		if name == config.EnvHTTPToken {
			return "tok", true
		}
		return "", false
	}
	cfg, err := config.Parse("x.yaml", []byte(head+"http: {listen: \"0.0.0.0:9180\"}\n"), withToken)
	if err != nil || cfg.HTTP.Token != "tok" {
		t.Errorf("token from the environment: %v", err)
	}
	_, err = config.Parse("x.yaml", []byte(head+"http: {listen: \"0.0.0.0:9180\", token_file: /nonexistent/token}\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), "http.token_file: cannot read token file") {
		t.Errorf("missing token file: %v", err)
	}
}

// TestWorkflowKeys: the workflow keys' defaults, and a clear error for
// each misuse.
func TestWorkflowKeys(t *testing.T) {
	cfg, err := config.Parse("w.yaml", []byte(head+`    workflow: open_receptacles
    operator_pattern: "^OP[0-9]{4}$"
    require_operator: true
    operator_idle: 30m
    controls: {close: CTL-CLOSE, cancel: CTL-CANCEL, logout: CTL-LOGOUT}
    receptacle_idle: 5m
    weight_tolerance: 2.5%
dispatches: {expire_days: 30}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Stations[0]
	if s.Workflow != config.WorkflowOpen || !s.Receptacles() || s.OperatorPattern != "^OP[0-9]{4}$" || !s.RequireOperator ||
		s.OperatorIdle.D() != 30*time.Minute || s.Controls != (config.Controls{Close: "CTL-CLOSE", Cancel: "CTL-CANCEL", Logout: "CTL-LOGOUT"}) ||
		s.ReceptacleIdle.D() != 5*time.Minute || s.WeightTolerance != 2.5 || cfg.Dispatches.ExpireDays != 30 {
		t.Fatalf("decoded %+v, dispatches %+v", s, cfg.Dispatches)
	}
	for _, tc := range []struct{ text, want string }{
		{"    workflow: bags\n", "8:15: stations[0].workflow: must be one of"},
		{"    operator_pattern: \"(\"\n", "stations[0].operator_pattern: is not a valid regular expression"},
		{"    operator_pattern: \"[0-9]*\"\n", "stations[0].operator_pattern: \"[0-9]*\" matches an empty code"},
		{"    require_operator: true\n", "stations[0].require_operator: needs operator_pattern"},
		{"    controls: {logout: X}\n", "stations[0].controls.logout: needs operator_pattern"},
		{"    controls: {close: X}\n", "stations[0].controls.close: is for workflows open_receptacles and fill_receptacles"},
		{"    receptacle_idle: 5m\n", "stations[0].receptacle_idle: is for workflows"},
		{"    workflow: fill_receptacles\n    controls: {close: X, cancel: X}\n", "stations[0].controls.cancel: is the same code as controls.close"},
		{"    workflow: fill_receptacles\n    controls: {close: \"\"}\n", "stations[0].controls.close: must not be empty"},
		{"    operator_pattern: \"^OP\"\n    controls: {cancel: OP-CANCEL}\n", "controls.cancel: \"OP-CANCEL\" matches operator_pattern"},
		{"    workflow: open_receptacles\n    weight_tolerance: 5\n", "stations[0].weight_tolerance: must be a percentage with its sign"},
		{"    workflow: open_receptacles\n    weight_tolerance: 101%\n", "stations[0].weight_tolerance: must be a percentage from 0% to 100%"},
		{"    workflow: open_receptacles\n    accept: [s10]\n", "stations[0].accept: must include s9 for workflow open_receptacles"},
		{"    workflow: open_receptacles\n    receptacle_idle: -1s\n", "stations[0].receptacle_idle"},
		{"dispatches: {expire_days: 0}\n", "dispatches.expire_days"},
		{"    operator_pattern: \"[A-Z]{2}[0-9]{4}\"\n", "matches parcel codes such as RR473124829GB"},
	} {
		got := strings.Join(messages(t, head+tc.text), "\n")
		if !strings.Contains(got, tc.want) {
			t.Errorf("%q:\ngot  %s\nwant %s", tc.text, got, tc.want)
		}
	}
}
