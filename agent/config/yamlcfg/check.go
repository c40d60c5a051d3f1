package yamlcfg

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Errorf reports a problem with the value at path, unless that value or
// one containing it already failed to decode or was reported; the value
// then counts as failed.
func (c *Checker) Errorf(path, format string, args ...any) {
	if !c.Failed(path) {
		c.bad[path] = true
		c.add(c.Pos(path, false), "%s: %s", path, fmt.Sprintf(format, args...))
	}
}

// Warnf records a problem that must not stop the program (such as a file
// that is only needed once connected); see Warnings.
func (c *Checker) Warnf(path, format string, args ...any) {
	n := c.Pos(path, false)
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, max(n.Column, 1)
	}
	c.warns = append(c.warns, &Error{File: c.file, Line: line, Col: col, Msg: path + ": " + fmt.Sprintf(format, args...)})
}

// Warned reports whether Warnf reported a problem with path.
func (c *Checker) Warned(path string) bool {
	for _, w := range c.warns {
		if strings.HasPrefix(w.Msg, path+": ") {
			return true
		}
	}
	return false
}

// Missing reports that the required key path is absent (or null).
func (c *Checker) Missing(path string) {
	if !c.Failed(path) {
		c.add(c.Pos(path, true), "missing required key %s", path)
	}
}

// Present reports whether path has a non-null value in the file.
func (c *Checker) Present(path string) bool { return c.nodes[path] != nil }

// Failed reports whether the value at path, or one containing it, failed
// to decode or was reported by Errorf.
func (c *Checker) Failed(path string) bool {
	for p := path; ; p = Parent(p) {
		if c.bad[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

// Pos finds where to report a problem with path: its value, else its key,
// else the nearest enclosing entry; nil (1:1) for an absent top-level
// section. For a missing key the enclosing entry's key is preferred, so
// "agent.id" missing points at "agent:".
func (c *Checker) Pos(path string, missing bool) *yaml.Node {
	for p := path; p != ""; p = Parent(p) {
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

// OneOf checks that v is one of allowed.
func (c *Checker) OneOf(path, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		c.Errorf(path, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	}
}

// Between, AtLeast and Positive check numeric values (ints, Durations, Sizes).
func Between[T ~int | ~int64](c *Checker, path string, v, lo, hi T) {
	if v < lo || v > hi {
		c.Errorf(path, "must be between %v and %v, got %v", lo, hi, v)
	}
}

// AtLeast checks that v is lo or more.
func AtLeast[T ~int64](c *Checker, path string, v, lo T) {
	if v < lo {
		c.Errorf(path, "must be at least %v, got %v", lo, v)
	}
}

// Positive checks that v is greater than 0.
func Positive[T ~int64](c *Checker, path string, v T) {
	if v <= 0 {
		c.Errorf(path, "must be greater than 0, got %v", v)
	}
}

// Name checks a required topic-safe identifier (ValidName) and reports
// whether it is valid.
func (c *Checker) Name(path, s string) bool {
	switch {
	case !c.Present(path):
		c.Missing(path)
	case !ValidName(s):
		c.Errorf(path, "must be 1 to 64 characters from A-Z a-z 0-9 . _ -, got %q", s)
	default:
		return true
	}
	return false
}

// ValidName reports whether s is 1 to 64 characters from A-Z a-z 0-9 . _ -
// (the rule for agent, site and station ids; topic-safe).
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

// Broker checks an MQTT broker URL: a known scheme, a host and a numeric
// port, and no credentials (they belong in the username and password file).
func (c *Checker) Broker(path, b string) {
	schemes := []string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"}
	u, err := url.Parse(b)
	if err != nil {
		if ue, ok := err.(*url.Error); ok { // its message repeats the URL, which may hold credentials
			err = ue.Err
		}
		c.Errorf(path, "invalid broker URL: %v", err)
		return
	}
	switch {
	case u.User != nil:
		c.Errorf(path, "broker URL must not contain credentials; use mqtt.username and mqtt.password_file")
	case !slices.Contains(schemes, u.Scheme):
		c.Errorf(path, "unsupported scheme %q in %q; want %s://host:port", u.Scheme, b, strings.Join(schemes, "|"))
	case !IsHostPort(u.Host, false):
		c.Errorf(path, "broker %q needs a host and a port, e.g. tcp://127.0.0.1:1883", b)
	}
}

// BadTopicRune finds the first character of s that a topic must not hold:
// an invalid UTF-8 byte (invalid true), a control character (NUL
// included) or whitespace. i is -1 when there is none.
func BadTopicRune(s string) (i int, r rune, invalid bool) {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i, r, true // not a U+FFFD written as such
			}
		case unicode.IsControl(r) || unicode.IsSpace(r):
			return i, r, false
		}
	}
	return -1, 0, false
}

// IsHostPort reports whether s is host:port with a numeric port. A listen
// address may have an empty host (all interfaces) and port 0.
func IsHostPort(s string, listen bool) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" || strings.Trim(port, "0123456789") != "" || (host == "" && !listen) {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n <= 65535 && (n > 0 || listen)
}

// Resolve makes a relative path relative to the directory of the file
// being checked.
func (c *Checker) Resolve(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(c.file), path)
}
