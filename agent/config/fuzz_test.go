package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/scanagent/scanagent/agent/config"
)

// FuzzParse: no input panics the loader; a config it accepts has every
// required value set, and an error lists positions.
func FuzzParse(f *testing.F) {
	example, _ := os.ReadFile("../../packaging/scanagent.example.yaml")
	f.Add(string(example))
	f.Add(head)
	f.Add("agent: {id: a, site: b}\nstations: [{id: s, scanner: {port: p, terminator: \"\\x03\"}}]\n")
	f.Add("agent: &a {id: x}\nmqtt: {<<: *a}\n")
	f.Add(":\n- [")
	// Merge keys that multiply: refused at once, not expanded.
	f.Add("agent: {id: a, site: b}\nstations:\n  - id: s\n    x0: &a {baud: 9600}\n" +
		"    x1: &b {<<: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]}\n" +
		"    x2: &c {<<: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]}\n" +
		"    x3: &d {<<: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]}\n" +
		"    x4: &e {<<: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]}\n" +
		"    x5: &f {<<: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]}\n" +
		"    scanner: {<<: [*f, *f], port: p}\n")
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := config.Parse("fuzz.yaml", []byte(text), func(string) (string, bool) { return "", false })
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml:") {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		if !config.ValidName(cfg.Agent.ID) || !config.ValidName(cfg.Agent.Site) || len(cfg.Stations) == 0 || len(cfg.MQTT.Brokers) == 0 {
			t.Fatalf("accepted an incomplete config: %+v", cfg)
		}
		for _, s := range cfg.Stations {
			if !config.ValidName(s.ID) || s.Scanner.Port == "" || s.Scanner.MaxLength < 1 {
				t.Fatalf("accepted a bad station: %+v", s)
			}
		}
	})
}
