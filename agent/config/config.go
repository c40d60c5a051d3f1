// Package config owns the scanagent configuration file: the Config types,
// their defaults, and strict loading and validation of the YAML described in
// packaging/scanagent.example.yaml and docs/OPERATIONS.md.
//
// Every problem in a file (unknown or duplicate keys, wrong types, missing
// or invalid values) is reported in one pass as an Errors list of
// "file:line:col: message" entries sorted by position, so that
// "scanagent check" can print them all at once. Callers get either a fully
// defaulted, validated *Config or no Config at all.
//
// Secrets never come from the YAML itself: an inline mqtt.password is
// rejected. The MQTT password is read from mqtt.password_file when that is
// set (it wins), otherwise from the environment variable
// SCANAGENT_MQTT_PASSWORD. Relative paths in mqtt.password_file and
// mqtt.tls.* are resolved against the directory of the config file.
//
// It is imported by cmd/scanagent and by the agent packages, which take the
// parts of a validated *Config they need and never parse YAML themselves.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

// EnvMQTTPassword names the environment variable that supplies the MQTT
// password when mqtt.password_file is not set.
const EnvMQTTPassword = "SCANAGENT_MQTT_PASSWORD"

// EnvHTTPToken names the environment variable that supplies the HTTP
// bearer token when http.token_file is not set.
const EnvHTTPToken = "SCANAGENT_HTTP_TOKEN"

// Config is a loaded and validated configuration file.
type Config struct {
	Agent    Agent     `yaml:"agent"`
	MQTT     MQTT      `yaml:"mqtt"`
	Buffer   Buffer    `yaml:"buffer"`
	Stations []Station `yaml:"stations"`
	HTTP     HTTP      `yaml:"http"`
	Log      Log       `yaml:"log"`
	// Dispatches configures the site's dispatch completeness tracking
	// (docs/WORKFLOWS.md).
	Dispatches Dispatches `yaml:"dispatches"`
	File       string     `yaml:"-"` // path it was loaded from

	// Warnings are problems that do not stop the agent: files the uplink
	// needs (password, TLS) that are missing, unreadable, invalid or
	// expired. Scanning must go on; the uplink reports and retries.
	// "scanagent check" treats them as errors.
	Warnings Errors `yaml:"-"`
}

// Agent identifies this agent; ID and Site appear in topics and events.
type Agent struct {
	ID      string `yaml:"id"`
	Site    string `yaml:"site"`
	DataDir string `yaml:"data_dir"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT), default
	// 128MiB; 0 leaves it unset. The GOMEMLIMIT environment variable wins.
	MemoryLimit Size `yaml:"memory_limit"`
}

// MQTT configures the uplink.
type MQTT struct {
	Brokers        []string `yaml:"brokers"`
	ClientID       string   `yaml:"client_id"`
	Username       string   `yaml:"username"`
	PasswordFile   string   `yaml:"password_file"`
	Password       string   `yaml:"-"` // resolved from password_file, else env SCANAGENT_MQTT_PASSWORD
	TLS            TLS      `yaml:"tls"`
	TopicPrefix    string   `yaml:"topic_prefix"`
	Window         int      `yaml:"window"`          // QoS1 publishes in flight, default 256, 1..65535
	KeepAlive      Duration `yaml:"keepalive"`       // default 30s, >= 1s
	ConnectTimeout Duration `yaml:"connect_timeout"` // default 10s, > 0
	ReconnectMin   Duration `yaml:"reconnect_min"`   // default 500ms, > 0
	ReconnectMax   Duration `yaml:"reconnect_max"`   // default 30s, >= reconnect_min
	HealthInterval Duration `yaml:"health_interval"` // default 30s, >= 1s: period of P/health
	MaxRate        int      `yaml:"max_rate"`        // scans/s published at most, 0 = as fast as the broker allows
	Order          string   `yaml:"order"`           // seq (default) | live_first
	// ConnectSpread: the first connect after start, and the first
	// reconnect after a session is lost, wait a random time within it, so
	// that the hubs of a fleet do not all come at once after a power cut or
	// a broker outage; the reconnect backoff then doubles from it. Default
	// 5s, 0 (connect at once) .. 10m (docs/FLEET.md).
	ConnectSpread Duration `yaml:"connect_spread"`
	// DrainRate caps the publishing of the backlog (the scans buffered when
	// a session starts) in scans/s, so that a fleet draining after an
	// outage leaves room at the broker for live scans; scans made during
	// the session are not held to it. Default 500, 0 = no cap.
	DrainRate int `yaml:"drain_rate"`
	// MaxEventBytes caps a scan event's JSON: a larger one is refused at
	// the station (reason too_large) instead of being buffered to be
	// refused by the broker. Default 16KiB, 512B..256KiB.
	MaxEventBytes Size `yaml:"max_event_bytes"`
	// Receipts, when enabled, delete a scan only once a receiver says it
	// stored it (docs/MQTT.md, "Receipts").
	Receipts Receipts `yaml:"receipts"`
}

// Receipts configures end-to-end receipts. With them on, a PUBACK marks a
// scan published; it is deleted when a receipt on Topic names its seq,
// and published again when none came within Timeout.
type Receipts struct {
	Enabled bool     `yaml:"enabled"`
	Topic   string   `yaml:"topic"`   // default P/receipts
	Timeout Duration `yaml:"timeout"` // default 5m, >= 1s
}

// TLS holds optional client TLS files; each set file exists and is readable.
type TLS = yamlcfg.TLS

// Buffer configures the durable scan buffer.
type Buffer struct {
	MaxBytes     Size     `yaml:"max_bytes"`     // default 4GiB, >= 1MiB
	WhenFull     string   `yaml:"when_full"`     // drop_oldest (default) | reject_new
	CommitWindow Duration `yaml:"commit_window"` // default 0 (commit at once); 0..10ms
	MinFreeDisk  Size     `yaml:"min_free_disk"` // default 64MiB; 0 disables the check
	// SpillAfter is how long a scan waiting for its acknowledgement stays
	// in the journal alone before it is copied into the store (default
	// 1s, 0..1m; 0: every scan is written to both at once).
	SpillAfter Duration `yaml:"spill_after"`
}

// Station is one scanning place: a scanner and optionally a scale.
type Station struct {
	ID    string `yaml:"id"`
	Event string `yaml:"event"` // optional; a known tracking event code (parcel.EventCodes)
	// AllowCustomEvents accepts an event code outside the known list
	// (three upper-case letters).
	AllowCustomEvents bool `yaml:"allow_custom_events"`
	// Accept lists the identifier kinds expected here (s10, s9, ru14,
	// gs1, other); a code of another kind is delivered with valid false and
	// reason unexpected_kind. Empty accepts every kind.
	Accept []string `yaml:"accept"`
	// DedupWindow suppresses the same code read again at this station
	// within this time of its previous read (default 1s; 0 disables).
	DedupWindow Duration  `yaml:"dedup_window"`
	Feedback    *Feedback `yaml:"feedback"` // nil: no operator feedback
	Scanner     Scanner   `yaml:"scanner"`
	Scale       *Scale    `yaml:"scale"` // nil when the station has no scale

	// Workflow is what the station does with receptacles
	// (docs/WORKFLOWS.md): items (default: every scan an item),
	// open_receptacles (an S9 label opens the receptacle the next items
	// come out of) or fill_receptacles (items go into a bag session that
	// the S9 label, printed when the bag is closed, closes).
	Workflow string `yaml:"workflow"`
	// OperatorPattern is a regular expression (Go syntax, RE2): a code it
	// matches is an operator's badge, which signs that operator in at the
	// station instead of being published as a scan.
	OperatorPattern string `yaml:"operator_pattern"`
	// RequireOperator: a scan made while nobody is signed in is accepted
	// and published, but gets the bad-read signal and is counted.
	RequireOperator bool `yaml:"require_operator"`
	// OperatorIdle signs the operator out after this long without a scan
	// (default 0: never).
	OperatorIdle Duration `yaml:"operator_idle"`
	// Controls are the station's control barcodes, never published as
	// scans.
	Controls Controls `yaml:"controls"`
	// ReceptacleIdle closes an open receptacle or bag session after this
	// long without a scan (receptacle workflows; default 10m for
	// open_receptacles, 0 (never) for fill_receptacles; 0: never).
	ReceptacleIdle Duration `yaml:"receptacle_idle"`
	// WeightTolerance is how far a receptacle's measured weight may be
	// from its label's before weight_mismatch is set (receptacle
	// workflows; default 5%).
	WeightTolerance Percent `yaml:"weight_tolerance"`
}

// Controls are control barcodes: Close closes the open receptacle or bag
// session, Cancel withdraws the station's last scan, Logout signs the
// operator out. Empty: that control is not used.
type Controls struct {
	Close  string `yaml:"close"`
	Cancel string `yaml:"cancel"`
	Logout string `yaml:"logout"`
}

// Workflows.
const (
	WorkflowItems = "items"
	WorkflowOpen  = "open_receptacles"
	WorkflowFill  = "fill_receptacles"
)

// Receptacles reports whether the station's workflow handles receptacles.
func (s *Station) Receptacles() bool { return s.Workflow == WorkflowOpen || s.Workflow == WorkflowFill }

// Dispatches configures dispatch completeness: how long a dispatch is
// kept after its last receptacle was seen.
type Dispatches struct {
	ExpireDays int `yaml:"expire_days"` // default 14, 1..3650
}

// Feedback is what the agent sends back to the scanner, or drives on a
// modem line of its port, to tell the operator about a read.
type Feedback struct {
	// Protocol: honeywell (Host ACK escape commands), zebra (SSI BEEP),
	// custom (the Good and Bad bytes) or line (pulse DTR or RTS).
	Protocol string `yaml:"protocol"`
	// GoodRead sends the good-read signal after each accepted scan too
	// (needed when the scanner waits for a Host ACK). Default false: only
	// bad reads are signalled.
	GoodRead bool     `yaml:"good_read"`
	Group    int      `yaml:"group"`     // honeywell: application work group 0..9 (default 0)
	BeepGood int      `yaml:"beep_good"` // zebra: beep code of a good read (default 0: one short high)
	BeepBad  int      `yaml:"beep_bad"`  // zebra: beep code of a bad read (default 6: two short low)
	Good     string   `yaml:"good"`      // custom: bytes for a good read
	Bad      string   `yaml:"bad"`       // custom: bytes for a bad read
	Line     string   `yaml:"line"`      // line: dtr or rts
	Pulse    Duration `yaml:"pulse"`     // line: how long a bad read holds the line (default 500ms)
}

// Serial holds the port settings shared by Scanner and Scale.
type Serial struct {
	Port     string   `yaml:"port"`      // required
	Baud     int      `yaml:"baud"`      // default 9600; 50..4000000
	DataBits int      `yaml:"data_bits"` // default 8; 5..8
	Parity   string   `yaml:"parity"`    // default "none"; none|odd|even|mark|space
	StopBits StopBits `yaml:"stop_bits"` // default 1
	// DTR and RTS set the modem control lines after opening; unset leaves
	// them alone. An adapter without them is not an error.
	DTR *bool `yaml:"dtr"`
	RTS *bool `yaml:"rts"`
}

// Scanner is a barcode scanner on a serial port.
type Scanner struct {
	Serial     `yaml:",inline"`
	Terminator string   `yaml:"terminator"` // crlf (default) | cr | lf | none | custom string of up to 8 bytes
	MaxLength  int      `yaml:"max_length"` // default 256; 1..65536
	IdleGap    Duration `yaml:"idle_gap"`   // default 50ms; > 0; ends a frame when terminator is none
	// StripPrefix and StripSuffix are removed from each code when present
	// (characters the scanner is set up to add), up to 8 bytes each.
	StripPrefix string `yaml:"strip_prefix"`
	StripSuffix string `yaml:"strip_suffix"`
	// CodeID "honeywell" reads a leading Honeywell Code ID character;
	// "none" (default) does not. AIM identifiers are always recognised.
	CodeID string `yaml:"code_id"`
	// ControlChars: "reject" (default) discards a code holding control
	// characters other than GS; "strip" removes them.
	ControlChars string `yaml:"control_chars"`
}

// Scale is a weighing scale on a serial port.
type Scale struct {
	Serial     `yaml:",inline"`
	Protocol   string   `yaml:"protocol"`    // required: mt-sics|toledo|sma|nci|cas|ohaus
	MaxAge     Duration `yaml:"max_age"`     // default 2s, > 0
	WaitStable Duration `yaml:"wait_stable"` // default 500ms, >= 0
	// ShareReading lets one stable reading (one stay of a parcel on the
	// scale) be attached to every scan made during it, for parcels with
	// two labels. Default false: only the first scan gets it.
	ShareReading bool `yaml:"share_reading"`
	// Mode: "poll" asks for each reading, "continuous" reads what the
	// scale streams. Default per protocol: poll for mt-sics, sma and nci;
	// continuous for toledo, cas and ohaus.
	Mode         string   `yaml:"mode"`
	PollInterval Duration `yaml:"poll_interval"` // default 200ms, >= 20ms
	PollTimeout  Duration `yaml:"poll_timeout"`  // default 1s, > 0: an unanswered poll is counted
}

// HTTP configures the local status endpoint.
type HTTP struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:9180; "" turns the server off
	// TokenFile holds the bearer token every request but /healthz must
	// carry. Required when Listen is not a loopback address.
	TokenFile string `yaml:"token_file"`
	Token     string `yaml:"-"` // resolved from token_file, else env SCANAGENT_HTTP_TOKEN
}

// Log configures the logger.
type Log struct {
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Format string `yaml:"format"` // text (default) | json
}

// MaxFileSize caps a configuration file. A real one is a few KiB; the cap
// keeps a wrong path (a log, a disk image, /dev/zero) from being read into
// memory whole.
const MaxFileSize = yamlcfg.MaxFileSize

// Load reads the file at path and parses it with Parse, taking the MQTT
// password from the process environment if no password file is set. A file
// over MaxFileSize is refused without being read whole: a regular file by
// its size, anything else (a pipe) after MaxFileSize+1 bytes.
func Load(path string) (*Config, error) {
	data, err := yamlcfg.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes and validates a configuration file's contents; name is used
// in error positions and to resolve relative paths. A nil lookupEnv means
// os.LookupEnv. On any problem it returns a nil Config and an Errors value
// listing every problem found.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	c := newChecker(name)
	cfg := &Config{File: name}
	cfg.setDefaults()
	if c.Decode(data, cfg) { // else what was decoded is partial: no validation
		c.validate(cfg, lookupEnv)
	}
	if err := c.Err(); err != nil {
		return nil, err
	}
	cfg.Warnings = c.Warnings()
	return cfg, nil
}

// LogLevels are the names log.level, PUT /loglevel and a reload accept.
var LogLevels = []string{"debug", "info", "warn", "error"}

// ParseLevel maps one of LogLevels to its slog level. Anything else is an
// error: slog's own parser also takes offsets such as "error+100", which
// would silence every line the agent logs, "scan NOT accepted" included.
func ParseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level must be one of %s, got %q", strings.Join(LogLevels, ", "), s)
}

// StationByID returns the station with the given id, or nil.
func (c *Config) StationByID(id string) *Station {
	for i := range c.Stations {
		if c.Stations[i].ID == id {
			return &c.Stations[i]
		}
	}
	return nil
}

// TerminatorBytes returns the byte sequence that ends a frame; nil for "none".
func (s Scanner) TerminatorBytes() []byte {
	switch s.Terminator {
	case "crlf", "":
		return []byte("\r\n")
	case "cr":
		return []byte("\r")
	case "lf":
		return []byte("\n")
	case "none":
		return nil
	}
	return []byte(s.Terminator)
}

// Defaults. Free-form strings that are empty after decoding (data_dir,
// client_id, topic_prefix) get theirs in validate, since they depend on
// other keys.

func (c *Config) setDefaults() {
	c.MQTT = MQTT{
		Brokers:        []string{"tcp://127.0.0.1:1883"},
		Window:         256,
		MaxEventBytes:  16 * KiB,
		KeepAlive:      Duration(30 * time.Second),
		ConnectTimeout: Duration(10 * time.Second),
		ReconnectMin:   Duration(500 * time.Millisecond),
		ReconnectMax:   Duration(30 * time.Second),
		HealthInterval: Duration(30 * time.Second),
		Order:          "seq",
		ConnectSpread:  Duration(5 * time.Second),
		DrainRate:      500,
		Receipts:       Receipts{Timeout: Duration(5 * time.Minute)},
	}
	c.Buffer = Buffer{MaxBytes: 4 * GiB, WhenFull: "drop_oldest", MinFreeDisk: 64 * MiB, SpillAfter: Duration(time.Second)}
	c.Agent.MemoryLimit = 128 * MiB
	c.HTTP = HTTP{Listen: "127.0.0.1:9180"}
	c.Log = Log{Level: "info", Format: "text"}
	c.Dispatches = Dispatches{ExpireDays: 14}
}

func (s *Station) setDefaults() {
	s.Scanner.setDefaults()
	s.DedupWindow = Duration(time.Second)
	s.Workflow = WorkflowItems
	s.ReceptacleIdle = Duration(10 * time.Minute)
	s.WeightTolerance = 5
}

func (f *Feedback) setDefaults() {
	f.BeepBad = 6
	f.Pulse = Duration(500 * time.Millisecond)
}

func (s *Scanner) setDefaults() {
	s.Serial.setDefaults()
	s.Terminator = "crlf"
	s.MaxLength = 256
	s.IdleGap = Duration(50 * time.Millisecond)
	s.CodeID = "none"
	s.ControlChars = "reject"
}

func (s *Scale) setDefaults() {
	s.Serial.setDefaults()
	s.MaxAge = Duration(2 * time.Second)
	s.WaitStable = Duration(500 * time.Millisecond)
	s.PollInterval = Duration(200 * time.Millisecond)
	s.PollTimeout = Duration(time.Second)
}

func (s *Serial) setDefaults() {
	s.Baud = 9600
	s.DataBits = 8
	s.Parity = "none"
	s.StopBits = StopBits1
}

func defaultDataDir() string {
	if runtime.GOOS == "windows" {
		dir := os.Getenv("ProgramData")
		if dir == "" {
			dir = `C:\ProgramData`
		}
		return filepath.Join(dir, "scanagent")
	}
	return "/var/lib/scanagent"
}
