package config

import (
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

// Error is one problem in a configuration file. Line and Col are 1-based:
// a bad value points at the value, an unknown or duplicate key at the key,
// a missing key at the key of the section that lacks it (1:1 when the
// section itself is absent).
type Error = yamlcfg.Error

// Errors is every problem found in a configuration file, sorted by position.
type Errors = yamlcfg.Errors

// checker decodes and validates an agent configuration file with the
// shared machinery; the short names below keep validate.go readable.
type checker struct{ *yamlcfg.Checker }

type defaulter interface{ setDefaults() }

func newChecker(file string) *checker {
	c := yamlcfg.New(file)
	c.MergeKeys = true
	c.Refused = map[string]string{"mqtt.password": "passwords are not read from the config file; " +
		"put it in the file named by mqtt.password_file or in the " + EnvMQTTPassword + " environment variable"}
	c.Defaults = func(p any) {
		if d, ok := p.(defaulter); ok {
			d.setDefaults()
		}
	}
	return &checker{c}
}

func (c *checker) errorf(path, format string, args ...any) { c.Errorf(path, format, args...) }
func (c *checker) warnf(path, format string, args ...any)  { c.Warnf(path, format, args...) }
func (c *checker) missing(path string)                     { c.Missing(path) }
func (c *checker) present(path string) bool                { return c.Present(path) }
func (c *checker) name(path, s string) bool                { return c.Name(path, s) }
func (c *checker) oneOf(path, v string, allowed ...string) { c.OneOf(path, v, allowed...) }

func between[T ~int | ~int64](c *checker, path string, v, lo, hi T) {
	yamlcfg.Between(c.Checker, path, v, lo, hi)
}

func atLeast[T ~int64](c *checker, path string, v, lo T) { yamlcfg.AtLeast(c.Checker, path, v, lo) }
func positive[T ~int64](c *checker, path string, v T)    { yamlcfg.Positive(c.Checker, path, v) }

// ValidName reports whether s is a valid agent, site or station id: 1 to 64
// characters from A-Z a-z 0-9 . _ - (topic-safe).
func ValidName(s string) bool { return yamlcfg.ValidName(s) }

// CheckCA reports whether a CA file holds at least one PEM certificate.
func CheckCA(path string) error { return yamlcfg.CheckCA(path) }

// CheckKeyPair loads a client certificate and key and reports a pair that
// does not match or a certificate that is not valid at now.
func CheckKeyPair(certFile, keyFile string, now time.Time) error {
	return yamlcfg.CheckKeyPair(certFile, keyFile, now)
}

// HumanBytes writes n bytes with one decimal in the largest binary unit
// ("1.5 MiB"), for messages.
func HumanBytes(n int64) string { return yamlcfg.HumanBytes(n) }

func (c *checker) pos(path string, missing bool) *yaml.Node { return c.Pos(path, missing) }

var (
	parent       = yamlcfg.Parent
	badTopicRune = yamlcfg.BadTopicRune
	isHostPort   = yamlcfg.IsHostPort
)
