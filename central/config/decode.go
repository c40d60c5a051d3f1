package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a configuration file. Line and Col are 1-based:
// a bad value points at the value, an unknown or duplicate key at the
// key, a missing key at the key of the section that lacks it (1:1 when the
// section itself is absent).
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *Error) Error() string { return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg) }

// Errors is every problem found in a configuration file, sorted by position.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual *Error values.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Duration is a time.Duration written in Go syntax ("50ms", "2s"). A bare
// number other than 0 is rejected as missing its unit.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return fmt.Errorf("expected a duration such as \"2s\", got %s", describe(n))
	}
	s := strings.TrimSpace(n.Value)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f == 0 {
			*d = 0
			return nil
		}
		return fmt.Errorf("missing unit in duration %s (write e.g. \"%sms\" or \"%ss\")", s, s, s)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use Go syntax such as \"50ms\", \"2s\" or \"1m30s\")", n.Value)
	}
	*d = Duration(v)
	return nil
}

// checker decodes a YAML node tree into a Config by reflection and
// collects every problem on the way. Paths name keys as the messages do:
// "mqtt.brokers[1]"; "" is the whole document.
type checker struct {
	file  string
	errs  Errors
	nodes map[string]*yaml.Node // value of each path present with a non-null value
	keys  map[string]*yaml.Node // key of each path present in the file
	bad   map[string]bool       // paths whose value failed to decode

	// Aliases are followed as the document is decoded; what is reached
	// through them is counted against maxExpanded, so that nested aliases
	// ("billion laughs") stop with one error instead of running away.
	expanding int
	expandAt  *yaml.Node
	expanded  int
	exhausted bool
}

const maxExpanded = 100_000

func newChecker(file string) *checker {
	return &checker{file: file, nodes: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}, bad: map[string]bool{}}
}

// add records a problem at n, or at 1:1 when n is nil.
func (c *checker) add(n *yaml.Node, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, max(n.Column, 1)
	}
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// finish sorts and de-duplicates the problems; nil if there are none.
func (c *checker) finish() error {
	if len(c.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(c.errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return slices.CompactFunc(c.errs, func(a, b *Error) bool { return *a == *b })
}

// parse returns the document's root node, or nil for an empty document.
func (c *checker) parse(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			c.syntax(err)
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		c.syntax(err)
	case len(next.Content) > 0 && next.Content[0].ShortTag() != "!!null":
		c.add(next.Content[0], "only one YAML document is allowed")
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// syntax records a YAML syntax error at the line the parser names.
func (c *checker) syntax(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, tail
			}
		}
	}
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Col: 1, Msg: "invalid YAML: " + msg})
}

// fail records that the value at path could not be decoded.
func (c *checker) fail(n *yaml.Node, path, msg string) {
	c.bad[path] = true
	c.add(n, "%s: %s", label(path), msg)
}

// decode stores n into v, recording positions and problems under path.
func (c *checker) decode(n *yaml.Node, v reflect.Value, path string) {
	if c.exhausted {
		return
	}
	if c.expanding > 0 {
		if c.expanded++; c.expanded > maxExpanded {
			c.exhausted = true
			c.add(c.expandAt, "%s: aliases here expand to more than %d entries; write the values out", label(path), maxExpanded)
			return
		}
	}
	c.nodes[path] = n
	if n.Kind == yaml.AliasNode {
		if c.expanding == 0 {
			c.expandAt = n
		}
		c.expanding++
		defer func() { c.expanding-- }()
		n = n.Alias
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			c.fail(n, path, err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "expected a mapping, got "+describe(n))
			return
		}
		c.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.fail(n, path, "expected a sequence, got "+describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			c.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			c.fail(n, path, "expected a string, got "+describe(n))
			return
		}
		s := n.Value
		if n.ShortTag() == "!!null" {
			s = ""
		}
		v.SetString(s)
	case reflect.Int:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			c.fail(n, path, "expected an integer, got "+describe(n))
			return
		}
		v.SetInt(i)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// decodeStruct stores the entries of mapping m into the struct v.
func (c *checker) decodeStruct(m *yaml.Node, v reflect.Value, path string) {
	fields := fieldsOf(v.Type())
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, val := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			c.add(k, "%s: mapping keys must be strings, got %s", label(path), describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			c.add(k, "%s: merge keys (<<) are not supported here; write the keys out", label(path))
			continue
		}
		if first := seen[k.Value]; first != nil {
			c.add(k, "duplicate key %q%s, first at line %d", k.Value, in(path), first.Line)
			continue
		}
		seen[k.Value] = k
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		switch {
		case !ok && (p == "mqtt.password" || p == "postgres.password"):
			env := EnvMQTTPassword
			if p == "postgres.password" {
				env = EnvPostgresPassword
			}
			c.add(k, "%s: passwords are not read from the config file; put it in the file named by %s_file or in the %s environment variable", p, p, env)
		case !ok:
			msg := fmt.Sprintf("unknown key %q%s", k.Value, in(path))
			if s := suggest(k.Value, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			c.add(k, "%s", msg)
		default:
			c.keys[p] = k
			if val.ShortTag() != "!!null" { // an empty value keeps the default
				c.decode(val, v.Field(idx), p)
			}
		}
	}
}

// fieldsOf maps each YAML key of struct type t to its field index.
func fieldsOf(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "-" && name != "" {
			m[name] = i
		}
	}
	return m
}

// suggest returns the known key closest to a mistyped one, if any is close.
func suggest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	for name := range fields {
		d := editDistance(key, name)
		if d < len(key) && (d < bestDist || d == bestDist && name < best) {
			best, bestDist = name, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names a node's value for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return describe(n.Alias)
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!str":
		return strconv.Quote(n.Value)
	}
	return n.Value
}

// label names path in a message.
func label(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

// in is " in <path>" for a message about a key inside path.
func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

// parent is the path of the mapping or sequence that contains path.
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}
