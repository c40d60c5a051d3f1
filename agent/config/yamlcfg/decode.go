// Package yamlcfg is the strict YAML machinery shared by the agent's and
// the receiver's configuration files (agent/config, central/config): a
// decoder that fills a struct by reflection and reports every problem in
// one pass as "file:line:col: message" (unknown keys with a suggestion,
// duplicate keys, wrong types, an expansion budget for aliases and merge
// keys), the checks both files make of their values, the Duration and
// Size types, the size cap on a file, and the loading of client TLS files.
//
// It imports nothing of the project, so that the receiver can use it
// without the agent's serial port and device code.
package yamlcfg

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

// A Checker decodes one configuration file into a struct by reflection
// and collects every problem on the way; the caller's validation then
// reports through Errorf, Missing and the checks in check.go. Paths name
// keys as the messages do: "stations[1].scanner.baud"; "" is the whole
// document.
type Checker struct {
	// MergeKeys lets mappings use YAML merge keys ("<<: *anchor"); without
	// it a merge key is refused.
	MergeKeys bool
	// Refused gives, for a path whose key is not a field, the message to
	// report instead of "unknown key" (such as where a password belongs).
	Refused map[string]string
	// Defaults, if set, is called with a pointer to every struct the
	// decoder allocates (a slice element, a pointer's target) before it is
	// decoded into, to fill in its defaults.
	Defaults func(ptr any)

	file    string
	errs    Errors
	warns   Errors                // problems that do not stop the program (Warnf)
	nodes   map[string]*yaml.Node // value of each path present with a non-null value
	keys    map[string]*yaml.Node // key of each path present in the file
	bad     map[string]bool       // paths whose value failed to decode or was reported
	merging map[*yaml.Node]bool   // mappings being expanded by a merge key, to stop cycles

	// Aliases and merge keys are expanded as the document is decoded. A
	// few hundred bytes of nested merges ("billion laughs") would expand
	// to billions of entries, so what is reached through them is counted
	// against MaxExpanded; past it decoding stops with one error at the
	// alias or merge key that started the expansion.
	expanding int        // depth of aliases and merge keys being followed
	expandAt  *yaml.Node // the outermost one
	expanded  int        // nodes and entries reached through them
	exhausted bool       // MaxExpanded was passed: decoding stopped
}

// MaxExpanded bounds the nodes and mapping entries reached through aliases
// and merge keys. A site with hundreds of stations sharing a merged
// scanner block stays far below it; it takes well under a second to reach.
const MaxExpanded = 100_000

// New returns a Checker for the file name, which is used in positions and
// to resolve relative paths.
func New(file string) *Checker {
	return &Checker{
		file:    file,
		nodes:   map[string]*yaml.Node{},
		keys:    map[string]*yaml.Node{},
		bad:     map[string]bool{},
		merging: map[*yaml.Node]bool{},
	}
}

// File is the name the Checker was made for.
func (c *Checker) File() string { return c.file }

// Decode parses data, a single YAML document, and decodes it into the
// struct v points to, which holds the defaults: a key that is absent or
// null keeps its default. It reports whether validation should go on: not
// after a syntax error, nor once the expansion budget is spent (what was
// decoded is partial).
func (c *Checker) Decode(data []byte, v any) bool {
	root := c.parse(data)
	if len(c.errs) > 0 {
		return false
	}
	if root != nil {
		c.decode(root, reflect.ValueOf(v).Elem(), "")
	}
	return !c.exhausted
}

// Err returns every problem reported, sorted by position and without
// repeats, as an Errors value; nil if there is none.
func (c *Checker) Err() error { return c.finish() }

// Errors returns the problems reported so far, in the order reported.
func (c *Checker) Errors() Errors { return c.errs }

// Warnings returns the problems reported with Warnf.
func (c *Checker) Warnings() Errors { return c.warns }

// add records a problem at n, or at 1:1 when n is nil.
func (c *Checker) add(n *yaml.Node, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, max(n.Column, 1)
	}
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

// finish sorts and de-duplicates the problems; nil if there are none.
func (c *Checker) finish() error {
	if len(c.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(c.errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return slices.CompactFunc(c.errs, func(a, b *Error) bool { return *a == *b })
}

// parse returns the document's root node, or nil for an empty document.
func (c *Checker) parse(data []byte) *yaml.Node {
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
func (c *Checker) syntax(err error) {
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
func (c *Checker) fail(n *yaml.Node, path, msg string) {
	c.bad[path] = true
	c.add(n, "%s: %s", label(path), msg)
}

// setDefaults fills in the defaults of a newly allocated value.
func (c *Checker) setDefaults(v reflect.Value) {
	if c.Defaults != nil {
		c.Defaults(v.Addr().Interface())
	}
}

// expand enters an alias or merge key at n; the returned function leaves it.
func (c *Checker) expand(n *yaml.Node) func() {
	if c.expanding == 0 {
		c.expandAt = n
	}
	c.expanding++
	return func() { c.expanding-- }
}

// charge counts n nodes or entries reached through an alias or merge key
// and reports false once the budget is spent (the error is recorded once).
func (c *Checker) charge(n int, path string) bool {
	if c.exhausted {
		return false
	}
	if c.expanding == 0 {
		return true
	}
	c.expanded += n
	if c.expanded <= MaxExpanded {
		return true
	}
	c.exhausted = true
	if !c.MergeKeys {
		c.add(c.expandAt, "%s: aliases here expand to more than %d entries; write the values out", label(path), MaxExpanded)
		return false
	}
	c.add(c.expandAt, "%s: aliases and merge keys (<<) here expand to more than %d entries (nested merges that multiply, "+
		"a \"billion laughs\" document); write the values out, or refer to each block once", label(path), MaxExpanded)
	return false
}

// decode stores n into v, recording positions and problems under path.
func (c *Checker) decode(n *yaml.Node, v reflect.Value, path string) {
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
			c.fail(n, path, "expected a mapping, got "+Describe(n))
			return
		}
		c.decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.fail(n, path, "expected a sequence, got "+Describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			c.setDefaults(s.Index(i))
			c.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		c.setDefaults(p.Elem())
		c.decode(n, p.Elem(), path)
		v.Set(p)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			c.fail(n, path, "expected a string, got "+Describe(n))
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
			c.fail(n, path, "expected an integer, got "+Describe(n))
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			c.fail(n, path, "expected true or false, got "+Describe(n))
			return
		}
		v.SetBool(b)
	default:
		panic("yamlcfg: no decoder for " + v.Type().String())
	}
}

// decodeStruct stores the entries of mapping m into the struct v.
func (c *Checker) decodeStruct(m *yaml.Node, v reflect.Value, path string) {
	fields := fieldsOf(v.Type())
	for _, kv := range c.pairs(m, path) {
		k, val := kv[0], kv[1]
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		idx, ok := fields[k.Value]
		switch {
		case !ok && c.Refused[p] != "":
			c.add(k, "%s: %s", p, c.Refused[p])
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
func (c *Checker) pairs(m *yaml.Node, path string) [][2]*yaml.Node {
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
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" && !c.MergeKeys:
			c.add(k, "%s: merge keys (<<) are not supported here; write the keys out", label(path))
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			merged = append(merged, c.mergePairs(k, v, path)...)
		case k.Kind != yaml.ScalarNode:
			c.add(k, "%s: mapping keys must be strings, got %s", label(path), Describe(k))
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

func (c *Checker) mergePairs(key, v *yaml.Node, path string) [][2]*yaml.Node {
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
			c.add(s, "%s: merge key << needs a mapping or a list of mappings, got %s", label(path), Describe(s))
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

// Parent is the path of the mapping or sequence that contains path.
func Parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}
