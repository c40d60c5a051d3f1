package config

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

// Duration is a time.Duration written in Go syntax ("500ms", "2s"). A bare
// number other than 0 is rejected as missing its unit.
type Duration = yamlcfg.Duration

// Size is a number of bytes, written as a plain integer or with a unit:
// B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000),
// optionally separated from the number by spaces ("4GiB", "64 MiB").
type Size = yamlcfg.Size

// Binary size units.
const (
	KiB = yamlcfg.KiB
	MiB = yamlcfg.MiB
	GiB = yamlcfg.GiB
	TiB = yamlcfg.TiB
)

// StopBits is the number of stop bits: "1", "1.5" or "2". YAML may give it
// as a number or a string.
type StopBits string

// Stop bit settings.
const (
	StopBits1  StopBits = "1"
	StopBits15 StopBits = "1.5"
	StopBits2  StopBits = "2"
)

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *StopBits) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		f, err := strconv.ParseFloat(strings.TrimSpace(n.Value), 64)
		if err == nil {
			switch f {
			case 1:
				*b = StopBits1
				return nil
			case 1.5:
				*b = StopBits15
				return nil
			case 2:
				*b = StopBits2
				return nil
			}
		}
	}
	return fmt.Errorf("must be 1, 1.5 or 2, got %s", yamlcfg.Describe(n))
}

// Percent is a share written with a percent sign ("5%", "2.5%"), 0 to
// 100; the value is the number before the sign.
type Percent float64

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		v := strings.TrimSpace(n.Value)
		if num, ok := strings.CutSuffix(v, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err == nil && f >= 0 && f <= 100 {
				*p = Percent(f)
				return nil
			}
		} else if _, err := strconv.ParseFloat(v, 64); err == nil {
			return fmt.Errorf("must be a percentage with its sign, such as \"5%%\", got %s", yamlcfg.Describe(n))
		}
	}
	return fmt.Errorf("must be a percentage from 0%% to 100%%, such as \"5%%\", got %s", yamlcfg.Describe(n))
}
