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

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a configuration file. Line and Col are 1-based:
// a bad value points at the value, an unknown or duplicate key at the key,
// a missing key at the key of the section that lacks it (1:1 when the
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

// checker decodes a YAML node tree into a Config by reflection and collects
// every problem on the way. Paths name keys as the messages do:
// "stations[1].scanner.baud"; "" is the whole document.
type checker struct {
	file    string
	errs    Errors
	warns   Errors                // problems that do not stop the agent (see Config.Warnings)
	nodes   map[string]*yaml.Node // value of each path present with a non-null value
	keys    map[string]*yaml.Node // key of each path present in the file
	bad     map[string]bool       // paths whose value failed to decode
	merging map[*yaml.Node]bool   // mappings being expanded by a merge key, to stop cycles

	// Aliases and merge keys are expanded as the document is decoded. A
	// few hundred bytes of nested merges ("billion laughs") would expand
	// to billions of entries, so what is reached through them is counted
	// against maxExpanded; past it decoding stops with one error at the
	// alias or merge key that started the expansion.
	expanding int        // depth of aliases and merge keys being followed
	expandAt  *yaml.Node // the outermost one
	expanded  int        // nodes and entries reached through them
	exhausted bool       // maxExpanded was passed: decoding stopped
}

// maxExpanded bounds the nodes and mapping entries reached through aliases
// and merge keys. A site with hundreds of stations sharing a merged
// scanner block stays far below it; it takes well under a second to reach.
const maxExpanded = 100_000

func newChecker(file string) *checker {
	return &checker{
		file:    file,
		nodes:   map[string]*yaml.Node{},
		keys:    map[string]*yaml.Node{},
		bad:     map[string]bool{},
		merging: map[*yaml.Node]bool{},
	}
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

type defaulter interface{ setDefaults() }

// setDefaults fills in the defaults of a newly allocated value.
func setDefaults(v reflect.Value) {
	if d, ok := v.Addr().Interface().(defaulter); ok {
		d.setDefaults()
	}
}

// expand enters an alias or merge key at n; the returned function leaves it.
func (c *checker) expand(n *yaml.Node) func() {
	if c.expanding == 0 {
		c.expandAt = n
	}
	c.expanding++
	return func() { c.expanding-- }
}

// charge counts n nodes or entries reached through an alias or merge key
// and reports false once the budget is spent (the error is recorded once).
func (c *checker) charge(n int, path string) bool {
	if c.exhausted {
		return false
	}
	if c.expanding == 0 {
		return true
	}
	c.expanded += n
	if c.expanded <= maxExpanded {
		return true
	}
	c.exhausted = true
	c.add(c.expandAt, "%s: aliases and merge keys (<<) here expand to more than %d entries (nested merges that multiply, "+
		"a \"billion laughs\" document); write the values out, or refer to each block once", label(path), maxExpanded)
	return false
}

// decode stores n into v, recording positions and problems under path.
func (c *checker) decode(n *yaml.Node, v reflect.Value, path string) {
	if !c.charge(1, path) {
		return
	}
	c.nodes[path] = n
	if n.Kind == yaml.AliasNode {
		defer c.expand(n)()
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
			setDefaults(s.Index(i))
			c.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		setDefaults(p.Elem())
		c.decode(n, p.Elem(), path)
		v.Set(p)
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
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			c.fail(n, path, "expected an integer, got "+describe(n))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			c.fail(n, path, "expected true or false, got "+describe(n))
			return
		}
		v.SetBool(b)
	default:
		panic("config: no decoder for " + v.Type().String())
	}
}

// decodeStruct stores the entries of mapping m into the struct v.
func (c *checker) decodeStruct(m *yaml.Node, v reflect.Value, path string) {
	fields := fieldsOf(v.Type())
	for _, kv := range c.pairs(m, path) {
		k, val := kv[0], kv[1]
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		switch {
		case !ok && p == "mqtt.password":
			c.add(k, "mqtt.password: passwords are not read from the config file; "+
				"put it in the file named by mqtt.password_file or in the %s environment variable", EnvMQTTPassword)
		case !ok:
			msg := fmt.Sprintf("unknown key %q%s", k.Value, in(path))
			if s := suggest(k.Value, fields); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			c.add(k, "%s", msg)
		default:
			c.keys[p] = k
			if val.ShortTag() != "!!null" { // an empty value keeps the default
				c.decode(val, v.FieldByIndex(idx), p)
			}
		}
	}
}

// pairs returns the key/value entries of mapping m, reporting duplicate and
// non-string keys, and expanding YAML merge keys ("<<: *anchor"); keys
// written in m win over merged ones, earlier merge sources over later ones.
func (c *checker) pairs(m *yaml.Node, path string) [][2]*yaml.Node {
	if c.merging[m] {
		c.add(m, "%s: merge key refers to the mapping that contains it", label(path))
		return nil
	}
	if !c.charge(len(m.Content)/2, path) {
		return nil
	}
	c.merging[m] = true
	defer delete(c.merging, m)

	var out, merged [][2]*yaml.Node
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			merged = append(merged, c.mergePairs(k, v, path)...)
		case k.Kind != yaml.ScalarNode:
			c.add(k, "%s: mapping keys must be strings, got %s", label(path), describe(k))
		case seen[k.Value] != nil:
			c.add(k, "duplicate key %q%s, first at line %d", k.Value, in(path), seen[k.Value].Line)
		default:
			seen[k.Value] = k
			out = append(out, [2]*yaml.Node{k, v})
		}
	}
	for _, kv := range merged {
		if seen[kv[0].Value] == nil {
			seen[kv[0].Value] = kv[0]
			out = append(out, kv)
		}
	}
	return out
}

func (c *checker) mergePairs(key, v *yaml.Node, path string) [][2]*yaml.Node {
	defer c.expand(key)()
	srcs := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		srcs = v.Content
	}
	var out [][2]*yaml.Node
	for _, s := range srcs {
		if s.Kind == yaml.AliasNode {
			s = s.Alias
		}
		if s.Kind != yaml.MappingNode {
			c.add(s, "%s: merge key << needs a mapping or a list of mappings, got %s", label(path), describe(s))
			continue
		}
		out = append(out, c.pairs(s, path)...)
	}
	return out
}

// fieldsOf maps each YAML key of struct type t to its field index,
// flattening ",inline" embedded structs.
func fieldsOf(t reflect.Type) map[string][]int {
	m := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case !f.IsExported() || name == "-":
		case opts == "inline":
			for k, idx := range fieldsOf(f.Type) {
				m[k] = append([]int{i}, idx...)
			}
		case name == "":
			m[strings.ToLower(f.Name)] = []int{i}
		default:
			m[name] = []int{i}
		}
	}
	return m
}

// suggest returns the known key closest to a mistyped one, if any is close.
func suggest(key string, fields map[string][]int) string {
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
