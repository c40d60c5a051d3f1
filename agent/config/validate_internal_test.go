package config

import "testing"

// TestBadTopicRune: the offsets and kinds of characters a topic prefix
// must not hold, including invalid UTF-8 (which the YAML reader already
// refuses in a file).
func TestBadTopicRune(t *testing.T) {
	tests := []struct {
		s       string
		i       int
		r       rune
		invalid bool
	}{
		{"scanagent/LAB/hub-1", -1, 0, false},
		{"склад/ворота", -1, 0, false},
		{"a\uFFFDb", -1, 0, false},
		{"scan\tagent", 4, '\t', false},
		{"ab\xffc", 2, 0xFFFD, true},
		{"ab\xc3", 2, 0xFFFD, true},       // truncated sequence
		{"\xed\xa0\x80", 0, 0xFFFD, true}, // a UTF-16 surrogate, not allowed in UTF-8
		{"a\u2028b", 1, '\u2028', false},  // line separator
	}
	for _, tc := range tests {
		i, r, invalid := badTopicRune(tc.s)
		if i != tc.i || (i >= 0 && (r != tc.r || invalid != tc.invalid)) {
			t.Errorf("badTopicRune(%q) = %d %U %v, want %d %U %v", tc.s, i, r, invalid, tc.i, tc.r, tc.invalid)
		}
	}
	c := newChecker("x.yaml")
	c.topicPrefix("mqtt.topic_prefix", "ab\xffc")
	if len(c.Errors()) != 1 || c.Errors()[0].Msg != `mqtt.topic_prefix: must be valid UTF-8 (MQTT topics are UTF-8 strings), got "ab\xffc" with an invalid byte at offset 2` {
		t.Errorf("errors %v", c.Errors())
	}
}

// TestPortKeyWindows: COM port names compare case-insensitively, with or
// without the \\.\ device prefix.
func TestPortKeyWindows(t *testing.T) {
	for _, p := range []string{"COM3", "com3", `\\.\COM3`, `\\.\com3`, `\\?\Com3`} {
		if k := portKey("windows", p); k != "COM3" {
			t.Errorf("portKey(windows, %q) = %q, want COM3", p, k)
		}
	}
	if portKey("windows", "COM3") == portKey("windows", "COM13") {
		t.Error("COM3 and COM13 are one port")
	}
}
