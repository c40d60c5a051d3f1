package config_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
)

// mergeBomb is a "billion laughs" of merge keys: each level merges the
// previous one ten times, so the last of levels levels expands to
// 10^(levels-1) entries.
// use is the scanner's value, referring to the last level, a%d.
func mergeBomb(levels int, use string) string {
	var b strings.Builder
	b.WriteString("agent: {id: a, site: b}\nstations:\n  - id: s\n    x0: &a0 {baud: 9600}\n")
	for i := 1; i < levels; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "    x%d: &a%d {<<: [%s]}\n", i, i, refs)
	}
	fmt.Fprintf(&b, "    scanner: "+use+"\n", levels-1)
	return b.String()
}

// parseWithin parses text, failing the test if that takes longer than a
// generous bound (the bombs below ran for minutes before expansion was
// bounded).
func parseWithin(t *testing.T, text string) []string {
	t.Helper()
	done := make(chan []string, 1)
	go func() { done <- messages(t, text) }()
	select {
	case got := <-done:
		return got
	case <-time.After(30 * time.Second):
		t.Fatalf("Parse still running after 30s on a %d-byte document", len(text))
		return nil
	}
}

// TestExpansionBombs: aliases and merge keys that multiply are refused with
// one error at the merge key or alias that starts the expansion, and
// quickly; a config that shares one block among many stations is not.
func TestExpansionBombs(t *testing.T) {
	bomb := mergeBomb(10, "{<<: *a%d, port: /dev/ttyS0}")
	if len(bomb) > 1024 {
		t.Fatalf("the bomb is %d bytes; it is meant to be small", len(bomb))
	}
	tests := []struct {
		name, text string
		want       string
	}{
		{"merge key, 10 levels of 10", bomb,
			`14:15: stations[0].scanner: aliases and merge keys (<<) here expand to more than 100000 entries`},
		{"alias, 10 levels of 10", mergeBomb(10, "*a%d"),
			`14:14: stations[0].scanner: aliases and merge keys (<<) here expand to more than 100000 entries`},
		{"merge key, 6 levels of 10", mergeBomb(6, "{<<: *a%d, port: /dev/ttyS0}"),
			`10:15: stations[0].scanner: aliases and merge keys (<<) here expand`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got := parseWithin(t, tc.text)
			t.Logf("%d bytes refused in %v", len(tc.text), time.Since(start).Round(time.Millisecond))
			var found bool
			for _, g := range got {
				pos, msg, _ := strings.Cut(tc.want, " ")
				if strings.HasPrefix(g, pos+" ") && strings.Contains(g, msg) {
					found = true
				}
			}
			if !found {
				t.Fatalf("errors:\n%s\nwant %q", strings.Join(got, "\n"), tc.want)
			}
		})
	}

	// Legitimate sharing: 500 stations merging one scanner block.
	var b strings.Builder
	b.WriteString("agent: {id: a, site: b}\nstations:\n  - id: s0\n    scanner: &usb {port: /dev/p0, baud: 115200, terminator: cr, max_length: 128}\n")
	for i := 1; i < 500; i++ {
		fmt.Fprintf(&b, "  - {id: s%d, scanner: {<<: *usb, port: /dev/p%d}}\n", i, i)
	}
	cfg, err := config.Parse("test.yaml", []byte(b.String()), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if sc := cfg.Stations[499].Scanner; sc.Port != "/dev/p499" || sc.Baud != 115200 || sc.Terminator != "cr" || sc.MaxLength != 128 {
		t.Fatalf("merged scanner %+v", sc)
	}
}

// TestLoadSizeCap: a file over config.MaxFileSize is refused at 1:1 with
// the limit named, without being read whole: a sparse 100 MB file by its
// size, an endless device after the cap.
func TestLoadSizeCap(t *testing.T) {
	huge := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(100 << 20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	paths := []string{huge}
	if _, err := os.Stat("/dev/zero"); err == nil {
		paths = append(paths, "/dev/zero")
	}
	for _, p := range paths {
		start := time.Now()
		_, err := config.Load(p)
		var errs config.Errors
		if !errors.As(err, &errs) || len(errs) != 1 {
			t.Fatalf("Load(%s) = %v, want one config error", p, err)
		}
		if e := errs[0]; e.File != p || e.Line != 1 || e.Col != 1 || !strings.Contains(e.Msg, "the 1MiB limit for a configuration file") {
			t.Errorf("Load(%s): %v", p, e)
		}
		t.Logf("%s refused in %v: %v", p, time.Since(start).Round(time.Microsecond), err)
	}
	if !strings.Contains(mustLoadErr(t, huge), "the file is 100.0 MiB") {
		t.Errorf("the size is not named")
	}

	// Exactly at the cap is read (and then judged as YAML).
	edge := filepath.Join(t.TempDir(), "edge.yaml")
	os.WriteFile(edge, []byte(head+"#"+strings.Repeat("x", config.MaxFileSize-len(head)-2)+"\n"), 0o644)
	if _, err := config.Load(edge); err != nil {
		t.Errorf("a file of exactly %d bytes: %v", config.MaxFileSize, err)
	}
}

func mustLoadErr(t *testing.T, path string) string {
	t.Helper()
	_, err := config.Load(path)
	if err == nil {
		t.Fatalf("Load(%s) succeeded", path)
	}
	return err.Error()
}

// TestTopicPrefix: a prefix the broker would refuse (whitespace, control
// characters) or that makes a topic longer than MQTT allows fails the
// check at its position; any other UTF-8 is fine.
func TestTopicPrefix(t *testing.T) {
	longest := 65535 - config.MaxTopicSuffix
	tests := []struct {
		name, prefix string
		want         string // "" accepts
	}{
		{"tab", `"scan\tagent/x"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "scan\tagent/x" (U+0009 at byte 4)`},
		{"space", `"scan agent/x"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "scan agent/x" (U+0020 at byte 4)`},
		{"newline", `"scan/x\n"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "scan/x\n" (U+000A at byte 6)`},
		{"NUL", `"scan\0x"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "scan\x00x" (U+0000 at byte 4)`},
		{"DEL", `"scan\x7fx"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "scan\x7fx" (U+007F at byte 4)`},
		{"C1 control (NEL)", `"scan/\x85x"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "scan/\u0085x" (U+0085 at byte 5)`},
		{"no-break space", `"склад\u00a01"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "склад\u00a01" (U+00A0 at byte 10)`},
		{"ideographic space", `"a\u3000b"`, `9:17: mqtt.topic_prefix: must not contain whitespace or control characters, got "a\u3000b" (U+3000 at byte 1)`},
		{"wildcard", `a/+/b`, `9:17: mqtt.topic_prefix: must not contain the MQTT wildcards '+' or '#', got "a/+/b"`},
		{"too long", strings.Repeat("a", longest+1), fmt.Sprintf(`9:17: mqtt.topic_prefix: is %d bytes, too long: the longest topic the agent publishes adds 81 bytes to it (/devices/<station id of up to 64>/scanner) and MQTT topics are at most 65535 bytes, so the prefix can have %d`, longest+1, longest)},
		{"too long in UTF-8 bytes", strings.Repeat("ж", longest/2+1), `9:17: mqtt.topic_prefix: is 65456 bytes, too long`},
		{"longest allowed", strings.Repeat("a", longest), ""},
		{"Cyrillic and levels", `склад-1/ворота`, ""},
		{"U+FFFD written out", `"a\uFFFDb"`, ""},
		{"empty levels", `a//b`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := messages(t, head+"mqtt:\n  topic_prefix: "+tc.prefix+"\n")
			switch {
			case tc.want == "" && len(got) > 0:
				t.Fatalf("refused: %v", got)
			case tc.want == "":
			case len(got) != 1:
				t.Fatalf("errors %q, want one", got)
			default:
				pos, msg, _ := strings.Cut(tc.want, " ")
				if !strings.HasPrefix(got[0], pos+" ") || !strings.Contains(got[0], msg) {
					t.Errorf("error %q\nwant at %s containing %q", got[0], pos, msg)
				}
			}
		})
	}
	if config.MaxTopicSuffix != len("/devices/"+strings.Repeat("s", 64)+"/scanner") {
		t.Errorf("MaxTopicSuffix = %d", config.MaxTopicSuffix)
	}
	// Invalid UTF-8 never gets as far: the YAML reader refuses it.
	if got := messages(t, head+"mqtt:\n  topic_prefix: \"a\xffb\"\n"); len(got) != 1 || !strings.Contains(got[0], "invalid YAML: invalid leading UTF-8 octet") {
		t.Errorf("invalid UTF-8: %q", got)
	}
}

// TestDuplicatePortThroughLinks: two names of one device (a by-id style
// symbolic link and its target, a chain of links, an unclean path) are one
// port; the second use is reported where it is written.
func TestDuplicatePortThroughLinks(t *testing.T) {
	dir := t.TempDir()
	tty := filepath.Join(dir, "ttyUSB0")
	if err := os.WriteFile(tty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	byID := filepath.Join(dir, "by-id")
	os.Mkdir(byID, 0o755)
	link := filepath.Join(byID, "usb-Honeywell_1900-if00")
	if err := os.Symlink("../ttyUSB0", link); err != nil {
		t.Fatal(err)
	}
	link2 := filepath.Join(dir, "scanner-3")
	if err := os.Symlink(link, link2); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "ttyUSB1")
	os.WriteFile(other, nil, 0o644)
	text := func(port1, port2 string) string {
		return fmt.Sprintf("agent: {id: a, site: b}\nstations:\n  - id: s1\n    scanner: {port: %q}\n  - id: s2\n    scanner: {port: %q}\n", port1, port2)
	}
	tests := []struct {
		name, port1, port2 string
		want               string
	}{
		{"link then target", link, tty,
			fmt.Sprintf(`6:21: stations[1].scanner.port: port %q is the device %s, already used by stations[0].scanner at line 4 as %q`, tty, tty, link)},
		{"target then link", tty, link,
			fmt.Sprintf(`6:21: stations[1].scanner.port: port %q is the device %s, already used by stations[0].scanner at line 4 as %q`, link, tty, tty)},
		{"chain of links", link2, link, `6:21: stations[1].scanner.port: port`},
		{"unclean path", tty, dir + "/by-id/.././ttyUSB0", `6:21: stations[1].scanner.port: port "` + dir + `/by-id/.././ttyUSB0" is the device ` + tty},
		{"absent device, unclean path", "/dev/nonexistent-tty", "/dev//nonexistent-tty", `6:21: stations[1].scanner.port: port "/dev//nonexistent-tty" is the device /dev/nonexistent-tty`},
		{"same spelling", link, link, fmt.Sprintf(`6:21: stations[1].scanner.port: port %q is already used by stations[0].scanner at line 4`, link)},
		{"two devices", link, other, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := messages(t, text(tc.port1, tc.port2))
			if tc.want == "" {
				if len(got) > 0 {
					t.Fatalf("refused: %v", got)
				}
				return
			}
			pos, msg, _ := strings.Cut(tc.want, " ")
			if len(got) != 1 || !strings.HasPrefix(got[0], pos+" ") || !strings.Contains(got[0], msg) {
				t.Fatalf("errors %q\nwant at %s containing %q", got, pos, msg)
			}
		})
	}

	// A scanner and a scale of one station on one device.
	got := messages(t, fmt.Sprintf("agent: {id: a, site: b}\nstations:\n  - id: s1\n    scanner: {port: %q}\n    scale: {port: %q, protocol: cas}\n", link, tty))
	if len(got) != 1 || !strings.HasPrefix(got[0], "5:19: stations[0].scale.port: port") {
		t.Fatalf("scanner and scale on one device: %q", got)
	}
}

// TestParseLevel: the four names only; slog's offsets ("error+100", which
// would silence even "scan NOT accepted") and other spellings are refused,
// in the file as at runtime.
func TestParseLevel(t *testing.T) {
	for name, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError} {
		if l, err := config.ParseLevel(name); err != nil || l != want {
			t.Errorf("ParseLevel(%q) = %v, %v", name, l, err)
		}
	}
	for _, bad := range []string{"error+100", "warn-4", "info+1", "DEBUG", "Info", "warning", "", " info", "-4", "8"} {
		if l, err := config.ParseLevel(bad); err == nil {
			t.Errorf("ParseLevel(%q) = %v, want an error", bad, l)
		}
		got := messages(t, head+"log: {level: \""+bad+"\"}\n")
		if len(got) != 1 || !strings.HasPrefix(got[0], "8:14: log.level: must be one of debug, info, warn, error") {
			t.Errorf("log.level %q: %q", bad, got)
		}
	}
}
