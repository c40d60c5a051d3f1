package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/devices"
)

var monitorHelp = help{
	usage:   "scanagent monitor PORT [flags]",
	summary: "Open one serial port and print what the device sends, decoded, live.",
	more: `Scanner decoding is the default; --protocol decodes a scale (and sends
its polls). --probe tries common baud rates and framings instead and
prints the best as config lines.
`,
	example: "scanagent monitor /dev/ttyUSB0 --protocol mt-sics --baud 9600",
}

type monitorFlags struct {
	baud, dataBits                     int
	parity, stopBits                   string
	protocol, mode                     string
	pollInterval, duration, window     time.Duration
	scanner                            bool
	terminator, codeID, prefix, suffix string
	bauds                              string
	raw, probe, asJSON                 bool
}

func cmdMonitor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("monitor", monitorHelp, stdout, stderr)
	var f monitorFlags
	fs.IntVar(&f.baud, "baud", 9600, "baud `rate`")
	fs.IntVar(&f.dataBits, "data-bits", 8, "data bits (7 or 8)")
	fs.StringVar(&f.parity, "parity", "none", "parity: none, even, odd, mark, space")
	fs.StringVar(&f.stopBits, "stop-bits", "1", "stop bits: 1, 1.5, 2")
	fs.StringVar(&f.protocol, "protocol", "", "decode as a scale `protocol`: "+strings.Join(devices.ProtocolNames(), ", "))
	fs.StringVar(&f.mode, "mode", "", "scale `mode`: poll or continuous (default: the protocol's)")
	fs.DurationVar(&f.pollInterval, "poll-interval", 500*time.Millisecond, "scale poll interval")
	fs.BoolVar(&f.scanner, "scanner", false, "decode as a barcode scanner (the default without --protocol)")
	fs.StringVar(&f.terminator, "terminator", "crlf", "scanner terminator: crlf, cr, lf, none, or a string")
	fs.StringVar(&f.codeID, "code-id", "none", "scanner Code IDs: none or honeywell")
	fs.StringVar(&f.prefix, "strip-prefix", "", "scanner prefix to strip")
	fs.StringVar(&f.suffix, "strip-suffix", "", "scanner suffix to strip")
	fs.BoolVar(&f.raw, "raw", false, "also print every piece read, in hex")
	fs.BoolVar(&f.probe, "probe", false, "try common baud rates and framings; report which gives valid frames")
	fs.StringVar(&f.bauds, "bauds", "", "probe: comma-separated baud `rates` to try (default 9600,115200,19200,38400,57600,4800,2400,1200)")
	fs.DurationVar(&f.window, "window", 1500*time.Millisecond, "probe: listening time per setting")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long (default: until interrupted)")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object per line")

	// Accept the port before or after the flags.
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	if err := fs.parseArgs(args); err != nil {
		return err
	}
	if path == "" && fs.NArg() == 1 {
		path = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if path == "" {
		fs.Usage()
		return usagef("monitor needs a PORT (see scanagent ports)")
	}
	var proto *devices.Protocol
	if f.protocol != "" {
		if proto = devices.LookupProtocol(f.protocol); proto == nil {
			return usagef("unknown protocol %q: use one of %s", f.protocol, strings.Join(devices.ProtocolNames(), ", "))
		}
		if f.scanner {
			return usagef("--scanner and --protocol exclude each other")
		}
	}
	poll := false
	if proto != nil {
		switch f.mode {
		case "":
			poll = !proto.Streams
		case "poll":
			if proto.Poll == nil {
				return usagef("protocol %s only streams: use --mode continuous", proto.Name)
			}
			poll = true
		case "continuous":
			if !proto.Streams && proto.Continuous == nil {
				return usagef("protocol %s only answers polls: use --mode poll", proto.Name)
			}
		default:
			return usagef("--mode must be poll or continuous, got %q", f.mode)
		}
	}
	sc := config.Scanner{Terminator: f.terminator}
	framer := devices.FramerConfig{Terminator: sc.TerminatorBytes(), MaxLength: 4096,
		StripPrefix: []byte(f.prefix), StripSuffix: []byte(f.suffix), CodeID: f.codeID}
	if f.codeID != "none" && f.codeID != devices.CodeIDHoneywell {
		return usagef("--code-id must be none or honeywell, got %q", f.codeID)
	}
	port := devices.PortConfig{Path: path, Baud: f.baud, DataBits: f.dataBits, Parity: f.parity, StopBits: f.stopBits}
	if _, err := port.Mode(); err != nil {
		return usagef("%v", err)
	}

	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	out := &monitorOut{w: stdout, json: f.asJSON}
	if f.probe {
		o := devices.ProbeOptions{Path: path, Window: f.window, Protocol: proto}
		if f.scanner {
			o.Scanner = &framer
		}
		if f.bauds != "" {
			for _, b := range strings.Split(f.bauds, ",") {
				baud, err := strconv.Atoi(strings.TrimSpace(b))
				if err != nil || baud <= 0 {
					return usagef("--bauds: %q is not a baud rate", b)
				}
				for _, s := range devices.ProbeSettings() {
					if s.Baud == baud {
						o.Settings = append(o.Settings, s)
					}
				}
			}
			if o.Settings == nil {
				return usagef("--bauds: none of %s is a common baud rate", f.bauds)
			}
		}
		return runProbe(ctx, o, stdout)
	}

	// Fail at once, with the reason, when the port cannot be opened.
	p, err := devices.OpenPort(port, time.Second)
	if err != nil {
		return err
	}
	p.Close()
	what := "scanner"
	if proto != nil {
		what = "scale (" + proto.Name + ")"
	}
	out.note(fmt.Sprintf("monitoring %s as a %s at %s; Ctrl-C to stop", path, what, port))

	var raw func([]byte, time.Time)
	if f.raw {
		raw = out.raw
	}
	state := func(s devices.DeviceState, reason string) {
		if reason != "" && reason != "stopped" {
			out.line(time.Now(), "port", string(s)+": "+reason, nil)
		} else if reason == "" {
			out.line(time.Now(), "port", string(s), nil)
		}
	}
	if proto != nil {
		return devices.RunScale(ctx, devices.ScaleOptions{
			Port: port, Protocol: proto, Poll: poll, PollInterval: f.pollInterval, PollTimeout: max(f.pollInterval, time.Second),
			Reading: out.reading, Result: func(r string) {
				if r != devices.ResultOK {
					out.line(time.Now(), "no weight", r, map[string]any{"result": r})
				}
			}, State: state, Raw: raw,
		})
	}
	return devices.RunScanner(ctx, devices.ScannerOptions{
		Port: port, Framer: framer, Frame: out.frame, State: state, Raw: raw,
		Reject: func(reason string) { out.line(time.Now(), "rejected", reason, map[string]any{"reason": reason}) },
	})
}

// monitorOut prints monitor lines; device callbacks come from one port
// goroutine, the mutex only keeps lines whole.
type monitorOut struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

func (o *monitorOut) note(s string) {
	if !o.json {
		fmt.Fprintln(o.w, s)
	}
}

func (o *monitorOut) line(at time.Time, kind, text string, fields map[string]any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.json {
		m := map[string]any{"time": at.UTC().Format(time.RFC3339Nano), "type": kind}
		if fields == nil {
			m["text"] = text
		}
		for k, v := range fields {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		fmt.Fprintln(o.w, string(b))
		return
	}
	fmt.Fprintf(o.w, "%s  %-9s %s\n", at.Local().Format("15:04:05.000"), kind, text)
}

func (o *monitorOut) frame(fr devices.Frame) {
	res := parcel.Classify(fr.Data, fr.AIM)
	verdict := "valid"
	if !res.Valid {
		verdict = "INVALID " + res.Reason
	}
	aim := fr.AIM
	if aim == "" {
		aim = "-"
	}
	o.line(fr.At, "scan", fmt.Sprintf("%-4s %-24q %s %s", aim, fr.Data, res.Kind, verdict), map[string]any{
		"barcode": fr.Data, "aim": fr.AIM, "code_id": fr.CodeID, "kind": res.Kind, "valid": res.Valid, "reason": res.Reason})
}

func (o *monitorOut) reading(r devices.Reading) {
	var text string
	switch {
	case r.Overload:
		text = "OVERLOAD"
	case r.Underload:
		text = "UNDERLOAD"
	default:
		motion := "stable"
		if !r.Stable {
			motion = "MOTION"
		}
		text = fmt.Sprintf("%s %s = %d g  %s %s", r.Value, r.Unit, r.Grams, motion, r.Basis)
	}
	o.line(r.At, "weight", strings.TrimSpace(text), map[string]any{"value": r.Value.String(), "unit": r.Unit, "grams": r.Grams,
		"stable": r.Stable, "overload": r.Overload, "underload": r.Underload, "basis": r.Basis})
}

func (o *monitorOut) raw(p []byte, at time.Time) {
	printable := make([]byte, len(p))
	for i, c := range p {
		if c < 0x20 || c > 0x7E {
			c = '.'
		}
		printable[i] = c
	}
	o.line(at, "raw", fmt.Sprintf("%s  |%s|", hex.EncodeToString(p), printable), map[string]any{"hex": hex.EncodeToString(p)})
}

func runProbe(ctx context.Context, o devices.ProbeOptions, stdout io.Writer) error {
	fmt.Fprintf(stdout, "probing %s, %s per setting", o.Path, o.Window)
	switch {
	case o.Protocol != nil:
		fmt.Fprintf(stdout, " as a %s scale\n", o.Protocol.Name)
	case o.Scanner != nil:
		fmt.Fprintln(stdout, " as a scanner: scan a code again and again while it runs")
	default:
		fmt.Fprintln(stdout, " with every decoder (scanners: scan codes while it runs; poll scales: give --protocol so polls are sent)")
	}
	const row = "%-12s %7s  %-24s %s\n"
	fmt.Fprintf(stdout, row, "SETTINGS", "BYTES", "DECODED", "NOTE")
	o.Progress = func(r devices.ProbeResult) {
		score, det := r.Score()
		decoded, note := "-", r.Err
		if score > 0 {
			decoded = fmt.Sprintf("%d %s frames", score, det)
		} else if r.Bytes > 0 && note == "" {
			note = "garbage"
		}
		fmt.Fprintf(stdout, row, r.Settings, strconv.Itoa(r.Bytes), decoded, note)
	}
	results, best := devices.Probe(ctx, o)
	if best < 0 {
		fmt.Fprintln(stdout, "\nno setting gave valid frames: is the device powered, cabled and sending?")
		return errSilent{Code: 1}
	}
	r := results[best]
	score, det := r.Score()
	fmt.Fprintf(stdout, "\nbest: %s (%d %s frames). In the config:\n", r.Settings, score, det)
	fmt.Fprintf(stdout, "  port: %s\n  baud: %d\n  data_bits: %d\n  parity: %s\n  stop_bits: %s\n",
		o.Path, r.Port.Baud, r.Port.DataBits, r.Port.Parity, r.Port.StopBits)
	if det != "scanner" {
		fmt.Fprintf(stdout, "  protocol: %s\n", det)
	}
	return nil
}
