package config

import "github.com/scanagent/scanagent/agent/config/yamlcfg"

// Error is one problem in a configuration file. Line and Col are 1-based:
// a bad value points at the value, an unknown or duplicate key at the
// key, a missing key at the key of the section that lacks it (1:1 when the
// section itself is absent).
type Error = yamlcfg.Error

// Errors is every problem found in a configuration file, sorted by position.
type Errors = yamlcfg.Errors

// Duration is a time.Duration written in Go syntax ("50ms", "2s"). A bare
// number other than 0 is rejected as missing its unit.
type Duration = yamlcfg.Duration

// checker decodes a configuration file into a Config with the decoder it
// shares with the agent (no merge keys here) and validates it.
type checker struct{ *yamlcfg.Checker }

func newChecker(file string) *checker {
	c := yamlcfg.New(file)
	c.Refused = map[string]string{}
	for p, env := range map[string]string{"mqtt.password": EnvMQTTPassword, "postgres.password": EnvPostgresPassword} {
		c.Refused[p] = "passwords are not read from the config file; put it in the file named by " + p + "_file or in the " + env + " environment variable"
	}
	return &checker{c}
}
