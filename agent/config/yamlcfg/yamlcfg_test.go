package yamlcfg_test

import (
	"strings"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config/yamlcfg"
)

type section struct {
	Name  string           `yaml:"name"`
	Wait  yamlcfg.Duration `yaml:"wait"`
	Items []item           `yaml:"items"`
}

type item struct {
	Port string `yaml:"port"`
	Baud int    `yaml:"baud"`
}

type doc struct {
	Section section `yaml:"section"`
}

func decode(t *testing.T, merge bool, src string) (*doc, string) {
	t.Helper()
	c := yamlcfg.New("x.yaml")
	c.MergeKeys = merge
	c.Refused = map[string]string{"section.secret": "secrets are not read from the config file"}
	c.Defaults = func(p any) {
		if it, ok := p.(*item); ok {
			it.Baud = 9600
		}
	}
	d := &doc{}
	if c.Decode([]byte(src), d) {
		yamlcfg.Between(c, "section.wait", d.Section.Wait, 0, yamlcfg.Duration(time.Second))
	}
	if err := c.Err(); err != nil {
		return d, err.Error()
	}
	return d, ""
}

// TestDecode: positions, suggestions, refused keys, defaults of new slice
// elements, and merge keys only when the Checker allows them.
func TestDecode(t *testing.T) {
	src := `base: &b {port: COM1}
section:
  name: one
  wiat: 2s
  secret: x
  items:
    - {port: /dev/ttyS0}
    - <<: *b
      baud: 19200
`
	d, got := decode(t, false, "section:\n  name: one\n  items: [{port: a}]\n")
	if got != "" || d.Section.Items[0].Baud != 9600 {
		t.Fatalf("defaults: %+v %q", d, got)
	}
	_, got = decode(t, true, src)
	want := []string{
		`x.yaml:1:1: unknown key "base"`,
		`x.yaml:4:3: unknown key "wiat" in section (did you mean "wait"?)`,
		`x.yaml:5:3: section.secret: secrets are not read from the config file`,
	}
	if got != strings.Join(want, "\n") {
		t.Errorf("with merge keys:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	_, got = decode(t, false, src)
	want = append(want, `x.yaml:8:7: section.items[1]: merge keys (<<) are not supported here; write the keys out`)
	if got != strings.Join(want, "\n") {
		t.Errorf("without merge keys:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	_, got = decode(t, false, "section: {wait: 5}\n")
	if want := `x.yaml:1:17: section.wait: missing unit in duration 5 (write e.g. "5ms" or "5s")`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, got = decode(t, false, "section: {wait: 2s}\n")
	if want := `x.yaml:1:17: section.wait: must be between 0s and 1s, got 2s`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestLoadTLS: no files gives a TLS 1.2 client config; a missing CA file
// is named by its key.
func TestLoadTLS(t *testing.T) {
	c, err := yamlcfg.TLS{ServerName: "broker"}.Load(time.Time{})
	if err != nil || c.ServerName != "broker" || c.MinVersion == 0 {
		t.Fatalf("%+v %v", c, err)
	}
	_, err = yamlcfg.TLS{CAFile: "/nonexistent/ca.pem"}.Load(time.Now())
	if err == nil || !strings.HasPrefix(err.Error(), "mqtt.tls.ca_file: ") {
		t.Fatalf("missing CA: %v", err)
	}
}
