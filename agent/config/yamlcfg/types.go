package yamlcfg

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written in Go syntax ("500ms", "2s"). A bare
// number other than 0 is rejected as missing its unit.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d in the syntax UnmarshalYAML reads.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		return fmt.Errorf("expected a duration such as \"2s\", got %s", Describe(n))
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
		return fmt.Errorf("invalid duration %q (use Go syntax such as \"500ms\", \"2s\" or \"1m30s\")", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Size is a number of bytes, written as a plain integer or with a unit:
// B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000),
// optionally separated from the number by spaces ("4GiB", "64 MiB").
type Size int64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

// String formats s with the largest binary unit that divides it exactly.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		size Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.size == 0 {
			return fmt.Sprintf("%d%s", s/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(s))
}

// MarshalYAML writes s in the syntax UnmarshalYAML reads.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			var v int64
			if err := n.Decode(&v); err != nil {
				return fmt.Errorf("invalid size %s", n.Value)
			}
			*s = Size(v)
			return nil
		case "!!str":
			v, err := parseSize(n.Value)
			if err != nil {
				return err
			}
			*s = v
			return nil
		case "!!float":
			return fmt.Errorf("invalid size %s (use whole bytes or a unit, e.g. \"1536KiB\")", n.Value)
		}
	}
	return fmt.Errorf("expected a size such as \"64MiB\", got %s", Describe(n))
}

func parseSize(str string) (Size, error) {
	t := strings.TrimSpace(str)
	i := 0
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q (use bytes or a unit, e.g. \"512KiB\", \"64MiB\", \"4GiB\")", str)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnit(unit)
	if !ok {
		return 0, fmt.Errorf("unknown unit %q in size %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", unit, str)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", str)
	}
	return Size(n * mult), nil
}

func sizeUnit(u string) (int64, bool) {
	switch u {
	case "", "B":
		return 1, true
	case "KiB":
		return int64(KiB), true
	case "MiB":
		return int64(MiB), true
	case "GiB":
		return int64(GiB), true
	case "TiB":
		return int64(TiB), true
	case "KB", "kB":
		return 1e3, true
	case "MB":
		return 1e6, true
	case "GB":
		return 1e9, true
	case "TB":
		return 1e12, true
	}
	return 0, false
}

// Describe names a node's value for an error message.
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return Describe(n.Alias)
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "null"
	case "!!str":
		return strconv.Quote(n.Value)
	}
	return n.Value
}

// HumanBytes writes n bytes with one decimal in the largest binary unit
// ("1.5 MiB"), for messages.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
