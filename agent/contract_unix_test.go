//go:build unix

package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/dispatch"
	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// The MQTT contract: docs/asyncapi.yaml names every topic, its QoS and
// retain flag and its messages; docs/schemas holds one JSON Schema per
// message. These tests hold the agent's real output, and the examples, to
// them.

const (
	contractDir = "../docs"
	schemaDir   = contractDir + "/schemas"
	// schemaBase is the $id of every schema file, less its name.
	schemaBase = "https://github.com/scanagent/scanagent/raw/main/docs/schemas/"
)

// contract is docs/asyncapi.yaml with its schemas compiled.
type contract struct {
	channels []*contractChannel
	messages map[string]*contractMessage // by components.messages key
}

type contractChannel struct {
	name    string
	address string
	params  map[string][]string // parameter -> enum (nil: any one topic level)
	action  string              // of its operation: send (the agent publishes) or receive
	qos     int
	retain  bool
	msgs    []*contractMessage
}

type contractMessage struct {
	name        string
	contentType string
	schemaFile  string
	schema      *jsonschema.Schema
	examples    []any
}

// loadContract reads docs/asyncapi.yaml and compiles every schema in
// docs/schemas; it fails the test on a broken reference, a schema file
// without a proper $id, title or description, or one that no message uses.
func loadContract(t *testing.T) *contract {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(contractDir, "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi.yaml: asyncapi = %v, want 3.0.0", doc["asyncapi"])
	}
	c := &contract{messages: map[string]*contractMessage{}}

	// Every schema file: draft 2020-12, an $id naming its file, a title
	// and a description.
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas in %s (%v)", schemaDir, err)
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.AssertFormat()
	for _, f := range files {
		s, err := readJSONFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		m, _ := s.(map[string]any)
		if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema %v, want draft 2020-12", f, m["$schema"])
		}
		if want := schemaBase + filepath.Base(f); m["$id"] != want {
			t.Errorf("%s: $id %v, want %s", f, m["$id"], want)
		}
		for _, k := range []string{"title", "description"} {
			if s, _ := m[k].(string); s == "" {
				t.Errorf("%s: no %s", f, k)
			}
		}
		if err := comp.AddResource(schemaBase+filepath.Base(f), s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	schemas := map[string]*jsonschema.Schema{}
	for _, f := range files {
		sch, err := comp.Compile(schemaBase + filepath.Base(f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		schemas[filepath.Base(f)] = sch
	}

	// Every $ref in asyncapi.yaml resolves: to a part of the document, or
	// to an existing file (and a part of it).
	walkRefs(doc, "", func(path, ref string) {
		file, frag, _ := strings.Cut(ref, "#")
		target := any(doc)
		if file != "" {
			f := filepath.Join(contractDir, filepath.FromSlash(file))
			v, err := readJSONFile(f)
			if err != nil {
				t.Errorf("asyncapi.yaml %s: $ref %q: %v", path, ref, err)
				return
			}
			target = v
		}
		if _, err := pointer(target, frag); err != nil {
			t.Errorf("asyncapi.yaml %s: $ref %q: %v", path, ref, err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// Messages, and the schema file each payload refers to.
	used := map[string]bool{}
	for name, v := range mapAt(t, doc, "components", "messages") {
		m := asMap(v)
		ref, _ := pointerString(m, "/payload/schema/$ref")
		if ref == "" {
			ref, _ = pointerString(m, "/payload/$ref")
		}
		file := strings.TrimPrefix(ref, "schemas/")
		sch := schemas[file]
		if sch == nil || strings.Contains(file, "/") {
			t.Fatalf("asyncapi.yaml: message %s: payload $ref %q is not a file in docs/schemas", name, ref)
		}
		used[file] = true
		ct, _ := m["contentType"].(string)
		if ct == "" {
			ct, _ = doc["defaultContentType"].(string)
		}
		cm := &contractMessage{name: name, contentType: ct, schemaFile: file, schema: sch}
		for _, ex := range asSlice(m["examples"]) {
			p, ok := asMap(ex)["payload"]
			if !ok {
				t.Errorf("asyncapi.yaml: message %s: an example without a payload", name)
			}
			cm.examples = append(cm.examples, p)
		}
		c.messages[name] = cm
	}
	for f := range schemas {
		if !used[f] {
			t.Errorf("docs/schemas/%s: no message in asyncapi.yaml uses it", f)
		}
	}

	// Channels, with their operation's action, QoS and retain flag.
	ops := mapAt(t, doc, "operations")
	for name, v := range mapAt(t, doc, "channels") {
		ch := asMap(v)
		cc := &contractChannel{name: name, params: map[string][]string{}, qos: -1}
		cc.address, _ = ch["address"].(string)
		for p, pv := range asMap(ch["parameters"]) {
			def := resolve(t, doc, pv)
			var enum []string
			for _, e := range asSlice(def["enum"]) {
				enum = append(enum, fmt.Sprint(e))
			}
			cc.params[p] = enum
		}
		for _, mv := range asMap(ch["messages"]) {
			ref, _ := asMap(mv)["$ref"].(string)
			m := c.messages[strings.TrimPrefix(ref, "#/components/messages/")]
			if m == nil {
				t.Fatalf("asyncapi.yaml: channel %s: message %q is not in components.messages", name, ref)
			}
			cc.msgs = append(cc.msgs, m)
		}
		sort.Slice(cc.msgs, func(i, j int) bool { return cc.msgs[i].name < cc.msgs[j].name })
		for _, ov := range ops {
			op := asMap(ov)
			if ref, _ := asMap(op["channel"])["$ref"].(string); ref != "#/channels/"+name {
				continue
			}
			if cc.action != "" {
				t.Fatalf("asyncapi.yaml: channel %s has more than one operation", name)
			}
			cc.action, _ = op["action"].(string)
			b := asMap(asMap(op["bindings"])["mqtt"])
			if q, ok := b["qos"].(int); ok {
				cc.qos = q
			}
			cc.retain, _ = b["retain"].(bool)
		}
		if cc.action == "" || cc.qos != 1 || len(cc.msgs) == 0 {
			t.Errorf("asyncapi.yaml: channel %s: action %q, qos %d, %d messages: want an operation with an MQTT binding at QoS 1 and messages",
				name, cc.action, cc.qos, len(cc.msgs))
		}
		c.channels = append(c.channels, cc)
	}
	sort.Slice(c.channels, func(i, j int) bool { return c.channels[i].name < c.channels[j].name })
	return c
}

// match finds the channel of a topic, with the topic prefix the agent was
// configured with.
func (c *contract) match(prefix, topic string) *contractChannel {
	for _, ch := range c.channels {
		if ch.regexp(prefix).MatchString(topic) {
			return ch
		}
	}
	return nil
}

var paramRE = regexp.MustCompile(`\{([^}]+)\}`)

func (ch *contractChannel) regexp(prefix string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range paramRE.FindAllStringSubmatchIndex(ch.address, -1) {
		b.WriteString(regexp.QuoteMeta(ch.address[last:m[0]]))
		name := ch.address[m[2]:m[3]]
		switch enum := ch.params[name]; {
		case name == "prefix":
			b.WriteString(regexp.QuoteMeta(prefix))
		case enum != nil:
			alts := make([]string, len(enum))
			for i, e := range enum {
				alts[i] = regexp.QuoteMeta(e)
			}
			b.WriteString("(?:" + strings.Join(alts, "|") + ")")
		default:
			b.WriteString("[^/+#]+")
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(ch.address[last:]) + "$")
	return regexp.MustCompile(b.String())
}

// validate checks a payload as published against the message's schema:
// JSON for application/json, else the payload taken as a string.
func (m *contractMessage) validate(payload []byte) error {
	if m.contentType != "application/json" {
		return m.schema.Validate(string(payload))
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return m.schema.Validate(v)
}

// validateOne checks a payload against the channel's messages, and
// returns the one it is.
func (ch *contractChannel) validateOne(payload []byte) (*contractMessage, error) {
	var errs []string
	for _, m := range ch.msgs {
		err := m.validate(payload)
		if err == nil {
			return m, nil
		}
		errs = append(errs, fmt.Sprintf("as %s (%s): %v", m.name, m.schemaFile, err))
	}
	return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
}

// TestContractEndToEnd runs an agent with a station that has a scanner and
// a scale, drives every message it publishes (scans with and without a
// weight, online and offline status, health, both device states and the
// clearing of a removed device), and validates each message received, by
// topic, against the schema docs/asyncapi.yaml gives it. The retained
// messages left at the broker are those of the retained channels.
func TestContractEndToEnd(t *testing.T) {
	c := loadContract(t)
	scale, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scale.Close() })
	// The station follows receptacles (docs/WORKFLOWS.md): badges, control
	// codes, receptacle and cancel events, dispatches.
	r := newRigStation(t, "", fmt.Sprintf("    workflow: open_receptacles\n    operator_pattern: \"^OP[0-9]{4}$\"\n"+
		"    controls: {close: CTL-CLOSE, cancel: CTL-CANCEL}\n    scale: {port: %q, baud: 9600, protocol: toledo, wait_stable: 300ms}\n", scale.Path()))
	prefix := r.cfg.MQTT.TopicPrefix
	// A dispatch last seen long ago, in the state the agent starts from:
	// it expires at once and its retained message is cleared.
	r.stop()
	old, err := dispatch.Open(dispatch.Config{Path: filepath.Join(agent.StateDir(r.cfg), "dispatches.state"), Expire: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	old.Seen(dispatch.Label{Station: "induct-3", Seq: 1, At: time.Now().Add(-30 * 24 * time.Hour), Dispatch: "CNSHAARUMOWAAUN60001", Serial: 1})
	old.Run(canceledCtx())
	r.start()
	waitUntil(t, 10*time.Second, "the scale's reading", func() bool {
		st := r.a.Status().Stations
		return len(st) > 0 && st[0].Scale != nil && st[0].Scale.Last != nil && st[0].Scale.Last.Grams == 1234
	})

	r.sc.Send("]C0", "RR473124829GB")                 // valid, weighed
	r.sc.Send("]C0", "RR473124828GB")                 // wrong check digit; the same stay on the scale
	r.sc.Send("", "OP0042")                           // a badge: the operator
	r.sc.Send("]C0", "INBOMAJPKWSAAUY60597001100039") // an S9 receptacle, decoded: it opens, its dispatch is complete
	has := func(m []testmqtt.Message, suffix, part string) bool {
		return slices.ContainsFunc(m, func(m testmqtt.Message) bool {
			return strings.HasSuffix(m.Topic, suffix) && strings.Contains(string(m.Payload), part)
		})
	}
	r.sub.WaitFor(15*time.Second, "scans, status, health and both devices", func(m []testmqtt.Message) bool {
		return countScans(3)(m) && has(m, "/status", `"online"`) && has(m, "/health", "") &&
			has(m, "/devices/induct-3/scanner", `"connected"`) && has(m, "/devices/induct-3/scale", `"connected"`)
	})
	r.sc.Send("]C0", "EE123456785RU") // an item in the receptacle
	r.sub.WaitFor(15*time.Second, "the item", countScans(4))
	r.sc.Send("", "CTL-CANCEL")
	r.sc.Send("", "CTL-CLOSE")
	r.sub.WaitFor(15*time.Second, "cancel, receptacle, dispatch and the cleared dispatch", func(m []testmqtt.Message) bool {
		return has(m, "/scans/induct-3", `"schema":"scanagent.cancel/v1"`) && has(m, "/receptacles/induct-3", `"items":0`) &&
			has(m, "/dispatches/INBOMAJPKWSAAUY60597", `"complete":true`) &&
			slices.ContainsFunc(m, func(m testmqtt.Message) bool {
				return strings.HasSuffix(m.Topic, "/dispatches/CNSHAARUMOWAAUN60001") && len(m.Payload) == 0
			})
	})

	// A new session (the broker restarted) publishes health again, now
	// with the scans, the scale's reading and the weight counters.
	r.broker.Stop()
	r.broker.Restart()
	r.sub.WaitFor(20*time.Second, "health with the scans", func(m []testmqtt.Message) bool {
		return has(m, "/health", `"scans":4,`) && has(m, "/health", `"last":{`)
	})

	// A reload removes the scale: its retained state is cleared.
	cfg := *r.cfg
	cfg.Stations = slices.Clone(r.cfg.Stations)
	cfg.Stations[0].Scale = nil
	if _, err := r.a.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	r.sub.WaitFor(15*time.Second, "the scale's state cleared", func(m []testmqtt.Message) bool {
		return slices.ContainsFunc(m, func(m testmqtt.Message) bool {
			return strings.HasSuffix(m.Topic, "/devices/induct-3/scale") && len(m.Payload) == 0
		})
	})

	// A graceful stop publishes the offline status.
	r.stop()
	msgs := r.sub.WaitFor(10*time.Second, "offline status", func(m []testmqtt.Message) bool {
		return m[len(m)-1].Retained == false && strings.HasSuffix(m[len(m)-1].Topic, "/status") && strings.Contains(string(m[len(m)-1].Payload), `"offline"`)
	})

	// Every message, by topic, against its schema.
	seen := map[string]int{} // channel/message -> count
	for _, m := range msgs {
		ch := c.match(prefix, m.Topic)
		if ch == nil {
			t.Errorf("topic %s: no channel in asyncapi.yaml", m.Topic)
			continue
		}
		if ch.action != "send" {
			t.Errorf("topic %s: the agent published on channel %s, whose operation is %q", m.Topic, ch.name, ch.action)
		}
		msg, err := ch.validateOne(m.Payload)
		if err != nil {
			t.Errorf("topic %s, payload %s:\n%v", m.Topic, m.Payload, err)
			continue
		}
		if ch.name == "scans" || ch.name == "receptacles" || ch.name == "dispatches" {
			if _, err := checkWorkflowMessage(c, prefix, m.Topic, m.Payload); err != nil {
				t.Errorf("topic %s, payload %s:\n%v", m.Topic, m.Payload, err)
			}
		}
		seen[ch.name+"/"+msg.name]++
	}
	for _, ch := range c.channels {
		if ch.action != "send" {
			continue
		}
		for _, m := range ch.msgs {
			key := ch.name + "/" + m.name
			switch {
			case contractPending[key] && seen[key] > 0:
				t.Errorf("channel %s: the agent publishes %s messages now: remove %q from contractPending", ch.name, m.name, key)
			case contractPending[key]:
				t.Logf("channel %s: %s not published by the agent yet (contractPending)", ch.name, m.name)
			case seen[key] == 0:
				t.Errorf("channel %s: no %s message in the run: the test does not cover it", ch.name, m.name)
			}
		}
	}
	t.Logf("validated %d messages by channel/message: %v", len(msgs), seen)

	// The content the run was built to produce.
	var weighed, invalid, receptacle, online, offline bool
	clockRE := regexp.MustCompile(`,"clock":"(synced|unsynced|unknown)"[,}]`)
	for _, m := range msgs {
		s := string(m.Payload)
		switch {
		case strings.Contains(m.Topic, "/scans/"):
			weighed = weighed || strings.Contains(s, `"weight_status":"ok"`) && strings.Contains(s, `"grams":1234`)
			invalid = invalid || strings.Contains(s, `"reason":"check_digit"`)
			receptacle = receptacle || strings.Contains(s, `"kind":"s9","valid":true,"s9":{"origin":"INBOMA","destination":"JPKWSA",`+
				`"category":"A","class":"U","subclass":"Y","year":6,"dispatch":"INBOMAJPKWSAAUY60597","serial":1,"highest":true,`+
				`"registered":false,"declared_grams":3900}`)
			if !clockRE.MatchString(s) {
				t.Errorf("scan event without clock: %s", s)
			}
		case strings.HasSuffix(m.Topic, "/health"):
			if !clockRE.MatchString(s) {
				t.Errorf("health without clock: %.200s", s)
			}
		case strings.HasSuffix(m.Topic, "/status"):
			online = online || strings.Contains(s, `"state":"online"`)
			offline = offline || strings.Contains(s, `"state":"offline"`)
		}
	}
	if !weighed || !invalid || !receptacle || !online || !offline {
		t.Errorf("weighed scan %v, invalid scan %v, receptacle %v, online %v, offline %v: want all", weighed, invalid, receptacle, online, offline)
	}

	// Not vacuous: a real scan event without its id fails.
	for _, m := range msgs {
		if !strings.Contains(m.Topic, "/scans/") {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		delete(ev, "id")
		b, _ := json.Marshal(ev)
		if err := c.messages["scan"].validate(b); err == nil {
			t.Errorf("a scan event without id passed validation: %s", b)
		}
		break
	}

	// The retained messages left at the broker: the offline status, the
	// last health, the scanner's state (the scale's was cleared) and the
	// complete dispatch (the expired one was cleared), each on a channel
	// marked retained; nothing of a channel that is not.
	retained := retainedMessages(t, r.broker, prefix)
	var topics []string
	for _, m := range retained {
		topics = append(topics, m.Topic)
		ch := c.match(prefix, m.Topic)
		if ch == nil || !ch.retain {
			t.Errorf("retained message on %s: its channel is not retained in asyncapi.yaml", m.Topic)
		}
	}
	want := []string{prefix + "/devices/induct-3/scanner", prefix + "/dispatches/INBOMAJPKWSAAUY60597", prefix + "/health", prefix + "/status"}
	sort.Strings(topics)
	if !slices.Equal(topics, want) {
		t.Errorf("retained topics %v, want %v", topics, want)
	}
	for _, ch := range c.channels {
		if ch.pending() {
			continue
		}
		if ch.retain && !slices.ContainsFunc(retained, func(m testmqtt.Message) bool { return ch.regexp(prefix).MatchString(m.Topic) }) {
			t.Errorf("channel %s is retained in asyncapi.yaml, but nothing was left retained on it", ch.name)
		}
	}
}

// contractPending names the channel/message pairs of the contract that
// the agent does not publish yet (the station workflows of
// docs/WORKFLOWS.md): TestContractEndToEnd does not require them in its
// run, and fails once one shows up, so that this list is emptied as the
// agent learns them. TestContractWorkflowEvents holds their schemas to
// hand-written documents meanwhile; checkWorkflowMessage validates what
// the agent publishes once it does.
var contractPending = map[string]bool{}

// pending reports whether every message of the channel is pending.
func (ch *contractChannel) pending() bool {
	for _, m := range ch.msgs {
		if !contractPending[ch.name+"/"+m.name] {
			return false
		}
	}
	return true
}

// retainedMessages subscribes anew to prefix/# and returns the retained
// messages the broker delivers: those arrive before a marker published
// after the subscription.
func retainedMessages(t *testing.T, b *testmqtt.Broker, prefix string) []testmqtt.Message {
	t.Helper()
	sub := testmqtt.Subscribe(t, b, "contract-retained", prefix+"/#")
	marker := prefix + "/contract-test-marker"
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("contract-marker"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("marker connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	if tok := pub.Publish(marker, 1, false, "end"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("marker publish: %v", tok.Error())
	}
	msgs := sub.WaitFor(10*time.Second, "the marker", func(m []testmqtt.Message) bool {
		return slices.ContainsFunc(m, func(m testmqtt.Message) bool { return m.Topic == marker })
	})
	var out []testmqtt.Message
	for _, m := range msgs {
		if m.Topic == marker {
			break
		}
		if !m.Retained {
			t.Errorf("before the marker: a message on %s that is not retained", m.Topic)
		}
		out = append(out, m)
	}
	return out
}

// TestContractExamples validates every message's examples in
// asyncapi.yaml against its schema; every message has at least one.
func TestContractExamples(t *testing.T) {
	c := loadContract(t)
	n := 0
	for name, m := range c.messages {
		if len(m.examples) == 0 {
			t.Errorf("message %s: no example", name)
		}
		for i, ex := range m.examples {
			var payload []byte
			if s, ok := ex.(string); ok && m.contentType != "application/json" {
				payload = []byte(s)
			} else {
				var err error
				if payload, err = json.Marshal(ex); err != nil {
					t.Fatalf("message %s example %d: %v", name, i, err)
				}
			}
			if err := m.validate(payload); err != nil {
				t.Errorf("message %s example %d (%s):\n%v", name, i, payload, err)
			}
			n++
		}
	}
	t.Logf("%d examples of %d messages valid", n, len(c.messages))
}

// TestContractS9AndClock: the scan schema holds s9 to its kind and
// fields, and clock to its three values; health's clock too.
func TestContractS9AndClock(t *testing.T) {
	c := loadContract(t)
	const head = `{"schema":"scanagent.scan/v1","id":"019aa8f0-4d20-7c33-9b44-556677889900","seq":1,"agent":"hub","site":"S","station":"st",` +
		`"scanned_at":"2026-11-22T01:31:47.305Z","barcode":"BEBRUABOLPBBAEN60073003000227",`
	const s9 = `"s9":{"origin":"BEBRUA","destination":"BOLPBB","category":"A","class":"E","subclass":"N","year":6,` +
		`"dispatch":"BEBRUABOLPBBAEN60073","serial":3,"highest":false,"registered":false,"declared_grams":22700}`
	scan := c.messages["scan"]
	for _, good := range []string{
		head + `"kind":"s9","valid":true,` + s9 + `,"clock":"synced"}`,
		head + `"kind":"s9","valid":false,"reason":"unexpected_kind",` + s9 + `}`,
		head + `"kind":"s9","valid":false,"reason":"serial","clock":"unknown"}`,
		head + `"kind":"s9","valid":true,` + strings.Replace(s9, `"highest":false,"registered":false,`, "", 1) + `}`, // both not given
	} {
		if err := scan.validate([]byte(good)); err != nil {
			t.Errorf("valid event refused: %s\n%v", good, err)
		}
	}
	for _, bad := range []string{
		head + `"kind":"s10","valid":true,` + s9 + `}`,                                        // s9 of another kind
		head + `"kind":"s9","valid":false,"reason":"serial",` + s9 + `}`,                      // s9 of a code that failed
		head + `"kind":"s9","valid":true,` + strings.Replace(s9, `60073"`, `60000"`, 1) + `}`, // dispatch 0000
		head + `"kind":"s9","valid":true,` + strings.Replace(s9, `"serial":3`, `"serial":0`, 1) + `}`,
		head + `"kind":"s9","valid":true,` + strings.Replace(s9, `"class":"E"`, `"class":"X"`, 1) + `}`,
		head + `"kind":"s9","valid":true,` + strings.Replace(s9, `22700`, `22750`, 1) + `}`, // not in 0.1 kg
		head + `"kind":"s9","valid":true,` + strings.Replace(s9, `,"year":6`, ``, 1) + `}`,
		head + `"kind":"s9","valid":true,"clock":"ntp"}`,
		head + `"kind":"s9","valid":true,"clock":""}`,
	} {
		if err := scan.validate([]byte(bad)); err == nil {
			t.Errorf("invalid event passed: %s", bad)
		}
	}
}

// TestContractReceipt: the agent does not publish receipts, it receives
// them on P/receipts: a receipt as a central receiver would send it is
// valid, and the usual mistakes are not.
func TestContractReceipt(t *testing.T) {
	c := loadContract(t)
	const prefix = "scanagent/TEST-HUB/hub-test-01"
	ch := c.match(prefix, prefix+"/receipts")
	if ch == nil || ch.action != "receive" || ch.retain {
		t.Fatalf("channel of %s/receipts: %+v: want one the agent receives, not retained", prefix, ch)
	}
	good := `{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[[1,5],[7,7],[18446744073709551615,18446744073709551615]],` +
		`"receiver":"central-1","stored_at":"2026-11-22T01:31:45.310Z","batch":"extra fields are allowed"}`
	if m, err := ch.validateOne([]byte(good)); err != nil || m.name != "receipt" {
		t.Errorf("receipt %s: %v", good, err)
	}
	for _, bad := range []string{
		`{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[[1,5]],"stored_at":"2026-11-22T01:31:45.310Z"}`,                    // no receiver
		`{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[[1,5,6]],"receiver":"c","stored_at":"2026-11-22T01:31:45.310Z"}`,   // not a pair
		`{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[["1","5"]],"receiver":"c","stored_at":"2026-11-22T01:31:45.310Z"}`, // strings
		`{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[[-1,5]],"receiver":"c","stored_at":"2026-11-22T01:31:45.310Z"}`,    // negative
		`{"schema":"scanagent.receipt/v2","agent":"hub-test-01","ranges":[[1,5]],"receiver":"c","stored_at":"2026-11-22T01:31:45.310Z"}`,     // another schema
		`{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[[1,5]],"receiver":"c","stored_at":"yesterday"}`,                    // not a time
		`{"schema":"scanagent.receipt/v1","agent":"hub-test-01","ranges":[[1,5]],"receiver":"c","stored_at":"2026-11-22T01:31:45.310Z"`,      // not JSON
	} {
		if _, err := ch.validateOne([]byte(bad)); err == nil {
			t.Errorf("invalid receipt passed: %s", bad)
		}
	}
}

// readJSONFile reads a JSON file as the schema compiler does (numbers as
// json.Number).
func readJSONFile(path string) (any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return jsonschema.UnmarshalJSON(f)
}

// walkRefs calls fn for every "$ref" string in v, with its path.
func walkRefs(v any, path string, fn func(path, ref string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "$ref" {
				fn(path, s)
				continue
			}
			walkRefs(e, path+"/"+k, fn)
		}
	case []any:
		for i, e := range v {
			walkRefs(e, path+"/"+strconv.Itoa(i), fn)
		}
	}
}

// pointer resolves a JSON pointer ("" or "/a/b") in v.
func pointer(v any, ptr string) (any, error) {
	if ptr == "" {
		return v, nil
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, fmt.Errorf("%q is not a JSON pointer", ptr)
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch c := v.(type) {
		case map[string]any:
			e, ok := c[tok]
			if !ok {
				return nil, fmt.Errorf("%s: no %q", ptr, tok)
			}
			v = e
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, fmt.Errorf("%s: no index %q", ptr, tok)
			}
			v = c[i]
		default:
			return nil, fmt.Errorf("%s: %q is not in an object or array", ptr, tok)
		}
	}
	return v, nil
}

func pointerString(v any, ptr string) (string, error) {
	e, err := pointer(v, ptr)
	s, _ := e.(string)
	return s, err
}

// resolve follows a {"$ref": "#/..."} within the document.
func resolve(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m := asMap(v)
	if ref, ok := m["$ref"].(string); ok {
		e, err := pointer(doc, strings.TrimPrefix(ref, "#"))
		if err != nil {
			t.Fatal(err)
		}
		return asMap(e)
	}
	return m
}

func mapAt(t *testing.T, doc map[string]any, path ...string) map[string]any {
	t.Helper()
	e, err := pointer(doc, "/"+strings.Join(path, "/"))
	if err != nil || len(asMap(e)) == 0 {
		t.Fatalf("asyncapi.yaml: no %s (%v)", strings.Join(path, "."), err)
	}
	return asMap(e)
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asSlice(v any) []any        { s, _ := v.([]any); return s }

func canceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
