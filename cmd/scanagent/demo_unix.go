//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/dispatch"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/devices/sim"
)

// demoStations are the simulated sorting line: induction into the sorting
// centre, a sorter and the customs hand-over.
var demoStations = []struct{ id, event, scale, extra string }{
	{"induct-1", "EDD", "mt-sics", ""}, // a polled Mettler Toledo bench scale
	{"sort-2", "EDE", "toledo", ""},    // a Toledo scale streaming continuously
	{"customs-3", "EDB", "", ""},
	// The inward office of exchange: bags (S9 receptacles) are weighed,
	// opened and emptied by a signed-in operator (docs/WORKFLOWS.md).
	{"inbound-4", "EMD", "cas", `, workflow: open_receptacles, operator_pattern: "^OP[0-9]{4}$", controls: {close: CTL-CLOSE, cancel: CTL-CANCEL, logout: CTL-LOGOUT}`},
}

var demoHelp = help{
	usage:   "scanagent demo [flags]",
	summary: "Run end to end with simulated scanners, scales and an in-process MQTT broker.",
	more: `It prints each scan as a central subscriber receives it, then a summary
(sent, accepted, received, left in the buffer). Ctrl-C stops it.
`,
	example: "scanagent demo --duration 30s --rate 5",
}

// cmdDemo runs the real agent pipeline (serial ports, buffer, MQTT uplink)
// against simulated scanners on pseudo-terminals and an in-process broker,
// and prints what a central subscriber receives.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", demoHelp, stdout, stderr)
	rate := fs.Float64("rate", 2, "scans per second per scanner")
	bad := fs.Float64("bad", 0.1, "share of codes with a wrong check digit")
	duration := fs.Duration("duration", 0, "stop after this long (0 = until Ctrl-C)")
	dataDir := fs.String("data-dir", "", "buffer directory (default: a temporary one, removed at exit)")
	quiet := fs.Bool("quiet", false, "print only the summary")
	verbose := fs.Bool("v", false, "show the agent's info logs")
	httpAddr := fs.String("http", "127.0.0.1:0", "the technician console's `address` (port 0: any free one; the URL is printed)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *rate <= 0 {
		return usagef("-rate must be positive")
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	dir := *dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "scanagent-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}

	// The central side: an in-process broker on a free loopback port.
	broker := mochi.New(&mochi.Options{InlineClient: false, Logger: slog.New(slog.DiscardHandler)})
	broker.AddHook(new(auth.AllowHook), nil)
	tcp := listeners.NewTCP(listeners.Config{ID: "demo", Address: "127.0.0.1:0"})
	if err := broker.AddListener(tcp); err != nil {
		return fmt.Errorf("demo broker: %w", err)
	}
	go broker.Serve()
	defer broker.Close()
	brokerURL := "tcp://" + tcp.Address()

	// The sorting line: one simulated scanner per station.
	scanners := make([]*sim.Scanner, len(demoStations))
	for i := range demoStations {
		sc, err := sim.NewScanner("\r\n")
		if err != nil {
			return err
		}
		defer sc.Close()
		scanners[i] = sc
	}
	// Scales behind the first stations, showing parcel weights.
	scales := make([]*sim.Scale, len(demoStations))
	for i, st := range demoStations {
		if st.scale == "" {
			continue
		}
		sc, err := sim.NewScale(st.scale, sim.Line{Baud: 9600}, sim.Weight{Value: "0.000", Unit: "kg", Stable: true}, 100*time.Millisecond)
		if err != nil {
			return err
		}
		defer sc.Close()
		scales[i] = sc
	}
	cfgText := fmt.Sprintf("agent: {id: demo-agent, site: DEMO-HUB, data_dir: %q}\nmqtt: {brokers: [%q], connect_spread: 0s}\nhttp: {listen: %q}\nstations:\n", dir, brokerURL, *httpAddr)
	for i, st := range demoStations {
		scale := ""
		if scales[i] != nil {
			scale = fmt.Sprintf(", scale: {port: %q, baud: 9600, protocol: %s}", scales[i].Path(), st.scale)
		}
		cfgText += fmt.Sprintf("  - {id: %s, event: %s, scanner: {port: %q, baud: 115200, terminator: crlf}%s%s}\n", st.id, st.event, scanners[i].Path(), scale, st.extra)
	}
	cfg, err := config.Parse("demo.yaml", []byte(cfgText), func(string) (string, bool) { return "", false })
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	// The central system's view: a subscriber to the agent's topics.
	view := &demoView{out: stdout, quiet: *quiet, seen: map[string]bool{}, complete: map[string]bool{}}
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID("demo-central"))
	if t := sub.Connect(); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("demo subscriber: %v", t.Error())
	}
	defer sub.Disconnect(100)
	prefix := cfg.MQTT.TopicPrefix
	if t := sub.Subscribe(prefix+"/#", 1, view.handle); !t.WaitTimeout(5*time.Second) || t.Error() != nil {
		return fmt.Errorf("demo subscribe: %v", t.Error())
	}

	fmt.Fprintf(stdout, "scanagent demo: %d simulated scanners and 3 scales, one station emptying receptacles -> agent (buffer %s) -> MQTT %s\n", len(demoStations), dir, brokerURL)
	fmt.Fprintf(stdout, "central system subscribed to %s/#  (Ctrl-C to stop)\n\n", prefix)

	ready := func(addr string) {
		if addr != "" {
			fmt.Fprintf(stdout, "technician console: http://%s/\n\n", addr)
		}
	}
	a, err := agent.New(cfg, agent.Deps{Log: log, Version: version, Ready: ready})
	if err != nil {
		return err
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()

	// Feed the scanners until ctx ends.
	var sent atomic.Int64
	var feeders sync.WaitGroup
	for i, sc := range scanners {
		feeders.Go(func() {
			codes := sim.NewCodes(uint64(i+1)*7919+uint64(time.Now().UnixNano()), *bad)
			tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
			defer tick.Stop()
			var bags *demoBags
			if demoStations[i].extra != "" {
				bags = &demoBags{codes: codes}
			}
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if bags != nil {
						code, scan := bags.next()
						if sc.Send("", code) == nil && scan {
							sent.Add(1)
						}
						// What the next scan weighs goes on the scale now.
						g := bags.grams
						scales[i].Set(sim.Weight{Value: fmt.Sprintf("%d.%03d", g/1000, g%1000), Unit: "kg", Stable: true})
						continue
					}
					if scales[i] != nil {
						// The next parcel on the scale: 0.1 to 5 kg.
						g := 100 + codes.Intn(4900)
						scales[i].Set(sim.Weight{Value: fmt.Sprintf("%d.%03d", g/1000, g%1000), Unit: "kg", Stable: true})
					}
					code, aim := codes.Next()
					if sc.Send(aim, code) == nil {
						sent.Add(1)
					}
				}
			}
		})
	}
	feeders.Wait()

	// Stop: give the last reads a moment to be framed, stop the agent
	// (it flushes in-flight publishes), then wait for the subscriber.
	time.Sleep(300 * time.Millisecond)
	stopAgent()
	runErr := <-agentDone
	st := a.Status()
	var accepted uint64
	for _, s := range st.Stations {
		accepted += s.Counters.Scans
	}
	deadline := time.Now().Add(3 * time.Second)
	for view.count() < int(accepted) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	received, invalid, dups := view.totals()
	fmt.Fprintf(stdout, "\nsummary: sent %d, accepted %d (durable), received by central %d (invalid %d, duplicates %d), left in buffer %d\n",
		sent.Load(), accepted, received, invalid, dups, st.Buffer.Depth)
	view.mu.Lock()
	fmt.Fprintf(stdout, "receptacles: %d closed, %d dispatches complete\n", view.receptacles, len(view.complete))
	view.mu.Unlock()
	return runErr
}

// demoBags is the inward office of exchange's line: an operator signs
// in, then each bag's label is scanned on the scale and its items after
// it; three bags make a dispatch, the third labelled the highest.
type demoBags struct {
	codes    *sim.Codes
	started  bool   // the badge was scanned
	label    string // the next bag's label
	bag      int    // the next bag's weight
	grams    int    // what the next scan weighs (the next bag, or item)
	items    int    // items left in the open bag
	serial   int    // the next bag's serial in its dispatch
	dispatch int
}

// next returns the next code to scan and whether it is a scan (not a
// badge); b.grams is then the weight of the scan after it.
func (b *demoBags) next() (code string, scan bool) {
	switch {
	case !b.started:
		b.started = true
		code = "OP0042"
		b.nextBag()
	case b.items > 0:
		b.items--
		code, _ = b.codes.Next()
		scan = true
	default:
		code, scan = b.label, true
		b.items = 3 + b.codes.Intn(5)
		b.nextBag()
	}
	b.grams = b.bag
	if b.items > 0 {
		b.grams = 100 + b.codes.Intn(2900) // the next item
	}
	return code, scan
}

// nextBag labels the next bag and puts its weight, within 4 % of its
// label's, in b.bag; three bags make a dispatch.
func (b *demoBags) nextBag() {
	if b.serial == 3 || b.dispatch == 0 {
		b.dispatch++
		b.serial = 0
	}
	b.serial++
	highest := 0
	if b.serial == 3 {
		highest = 1
	}
	declared := 20 + b.codes.Intn(200) // hectograms
	b.label = fmt.Sprintf("CNSHAARUMOWAAUN6%04d%03d%d0%04d", b.dispatch, b.serial, highest, declared)
	b.bag = declared*100 + b.codes.Intn(declared*8) - declared*4
}

// demoView prints the scan stream as the central system receives it.
type demoView struct {
	mu          sync.Mutex
	out         io.Writer
	quiet       bool
	received    int
	invalid     int
	dups        int
	seen        map[string]bool
	receptacles int
	complete    map[string]bool
}

func (v *demoView) handle(_ mqtt.Client, m mqtt.Message) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var ev record.Event
	if err := json.Unmarshal(m.Payload(), &ev); err != nil || ev.Schema != record.Schema {
		if v.workflow(m.Payload()) || v.quiet {
			return
		}
		fmt.Fprintf(v.out, "  %-40s %s\n", m.Topic(), m.Payload())
		return
	}
	if v.seen[ev.ID] {
		v.dups++
		return
	}
	v.seen[ev.ID] = true
	v.received++
	verdict := "ok"
	if !ev.Valid {
		v.invalid++
		verdict = "INVALID " + ev.Reason
	}
	weight := ""
	switch {
	case ev.Weight != nil:
		weight = fmt.Sprintf("%6d g", ev.Weight.Grams)
	case ev.WeightStatus != "":
		weight = "(" + ev.WeightStatus + ")"
	}
	if ev.Receptacle != "" && ev.Receptacle != ev.Barcode {
		verdict += "  in " + ev.Receptacle
	}
	if ev.Operator != "" {
		verdict += "  by " + ev.Operator
	}
	if !v.quiet {
		fmt.Fprintf(v.out, "  seq %-5d %-10s %s  %-16s %-5s %-10s %s\n", ev.Seq, ev.Station, ev.Event, ev.Barcode, ev.Kind, weight, verdict)
	}
}

// workflow prints a receptacle or dispatch message; false for others.
func (v *demoView) workflow(payload []byte) bool {
	var probe struct{ Schema string }
	json.Unmarshal(payload, &probe)
	switch probe.Schema {
	case record.SchemaReceptacle:
		var r record.Receptacle
		if json.Unmarshal(payload, &r) != nil || v.seen[r.ID] {
			return true
		}
		v.seen[r.ID] = true
		v.receptacles++
		if !v.quiet {
			weights := ""
			if r.MeasuredGrams != nil && r.DeclaredGrams != nil {
				weights = fmt.Sprintf(", weighed %d g against %d g on its label", *r.MeasuredGrams, *r.DeclaredGrams)
			}
			fmt.Fprintf(v.out, "  seq %-5d %-10s RECEPTACLE %s closed by %s: %d items%s\n", r.Seq, r.Station, r.Receptacle, r.ClosedBy, r.Items, weights)
		}
		return true
	case dispatch.Schema:
		var d dispatch.Message
		if json.Unmarshal(payload, &d) != nil {
			return true
		}
		if d.Complete {
			v.complete[d.Dispatch] = true
		}
		if !v.quiet {
			fmt.Fprintf(v.out, "            DISPATCH %s: receptacles %v, missing %v, complete %v\n", d.Dispatch, d.Received, d.Missing, d.Complete)
		}
		return true
	}
	return false
}

func (v *demoView) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.received
}

func (v *demoView) totals() (received, invalid, dups int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.received, v.invalid, v.dups
}
