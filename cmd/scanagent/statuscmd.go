package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/status"
)

// exitUnhealthy is the exit code of "status" when the agent answers but
// something needs attention.
const exitUnhealthy = 3

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", help{
		usage:   "scanagent status [-c FILE | --addr ADDRESS] [flags]",
		summary: "Ask the running agent for its state over its local HTTP server (/status).",
		more: `Exit 0 when all is well, 1 when the agent cannot be reached, 3 when
something needs attention (the broker or a device not connected, the
buffer full, unable to open or the disk nearly full, scans parked or lost).
`,
		example: "scanagent status -c /etc/scanagent/scanagent.yaml",
	}, stdout, stderr)
	path := fs.String("c", "", "config `FILE` (for http.listen and the token)")
	addr := fs.String("addr", "", "the agent's HTTP `address` (default: from -c, else 127.0.0.1:9180)")
	tokenFile := fs.String("token-file", "", "bearer token `FILE` (default: http.token_file of -c, or $"+config.EnvHTTPToken+")")
	asJSON := fs.Bool("json", false, "print the raw /status JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the agent")
	if err := fs.parse(args); err != nil {
		return err
	}
	target, token, err := agentAddress(*path, *addr, *tokenFile, stderr)
	if err != nil {
		return err
	}

	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+target+"/status", nil)
	if err != nil {
		return usagef("address %q: %v", target, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: *timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("agent not reachable at %s: %v (is it running? see systemctl status scanagent)", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read status from %s: %w", target, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return fmt.Errorf("agent at %s wants a bearer token: give -c FILE, --token-file or $%s", target, config.EnvHTTPToken)
	default:
		return fmt.Errorf("agent at %s answered %s: %s", target, resp.Status, strings.TrimSpace(string(body)))
	}
	var st status.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("agent at %s sent a status this version cannot read: %w", target, err)
	}
	problems := statusProblems(st)
	if *asJSON {
		stdout.Write(body)
	} else {
		printStatus(stdout, st, problems)
	}
	if len(problems) > 0 {
		return errSilent{Code: exitUnhealthy}
	}
	return nil
}

// dialable turns a listen address into one to connect to: an unspecified
// host (":9180", "0.0.0.0:9180", "[::]:9180") is reached on loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// statusProblems lists what needs attention: an unconnected broker, a full
// buffer, a device that is not connected.
func statusProblems(st status.Status) []string {
	var out []string
	if !st.MQTT.Connected {
		p := "broker " + st.MQTT.State
		if st.MQTT.LastError != "" {
			p += ": " + st.MQTT.LastError
		}
		out = append(out, p+" (scans are buffered)")
	}
	if st.BufferError != "" {
		out = append(out, "buffer cannot open, scans are NOT accepted: "+st.BufferError)
	}
	if st.Buffer.Full {
		out = append(out, "buffer full (buffer.max_bytes)")
	}
	if st.Buffer.DiskLow {
		out = append(out, fmt.Sprintf("disk nearly full (%s free): new scans are refused (buffer.min_free_disk)", humanBytes(st.Buffer.FreeBytes)))
	}
	if st.Buffer.Unrecoverable > 0 {
		out = append(out, fmt.Sprintf("%d scan(s) could not be recovered from damaged files (buffer.loss in /status; unrecoverable.jsonl in the buffer directory)", st.Buffer.Unrecoverable))
	}
	if st.Buffer.Parked > 0 {
		out = append(out, fmt.Sprintf("%d scan(s) parked, not delivered: scanagent buffer export --parked", st.Buffer.Parked))
	}
	for _, s := range st.Stations {
		if s.Scanner.State != "connected" {
			out = append(out, fmt.Sprintf("station %s: scanner %s %s", s.ID, s.Scanner.State, s.Scanner.Reason))
		}
		if s.Scale != nil && s.Scale.State != "connected" {
			out = append(out, fmt.Sprintf("station %s: scale %s %s", s.ID, s.Scale.State, s.Scale.Reason))
		}
	}
	return out
}

func printStatus(w io.Writer, st status.Status, problems []string) {
	health := "healthy"
	if len(problems) > 0 {
		health = "NEEDS ATTENTION"
	}
	fmt.Fprintf(w, "scanagent %s  agent %s  site %s  up %s  %s\n", st.Version, st.Agent, st.Site, st.Uptime, health)
	m := st.MQTT
	fmt.Fprintf(w, "broker   %s %s (since %s), published %d, acknowledged %d, sessions %d\n", m.State, m.Broker, m.Since, m.Published, m.Acked, m.Sessions)
	if m.LastError != "" {
		fmt.Fprintf(w, "         last error: %s\n", m.LastError)
	}
	if m.Hint != "" {
		fmt.Fprintf(w, "         hint: %s\n", m.Hint)
	}
	b := st.Buffer
	fmt.Fprintf(w, "buffer   %d scans waiting (%s), oldest %s, last seq %d", b.Depth, humanBytes(b.Bytes),
		(time.Duration(b.OldestAge * float64(time.Second))).Round(time.Second), b.LastSeq)
	if b.Full {
		fmt.Fprint(w, ", FULL")
	}
	fmt.Fprintln(w)
	for _, s := range st.Stations {
		c := s.Counters
		fmt.Fprintf(w, "station  %-12s scans %d, invalid %d, double reads %d", s.ID, c.Scans, c.Invalid, c.Suppressed)
		if n := sum(c.NotAccepted); n > 0 {
			fmt.Fprintf(w, ", NOT accepted %d", n)
		}
		if n := sum(c.Rejected); n > 0 {
			fmt.Fprintf(w, ", frames rejected %d", n)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "         scanner %s %s%s\n", s.Scanner.State, s.Scanner.Port, reason(s.Scanner.Reason))
		if sc := s.Scale; sc != nil {
			last := "no weight yet"
			if sc.Last != nil {
				last = fmt.Sprintf("last %s %s (%d g)", sc.Last.Value, sc.Last.Unit, sc.Last.Grams)
			}
			fmt.Fprintf(w, "         scale   %s %s%s, %s\n", sc.State, sc.Port, reason(sc.Reason), last)
		}
		if wf := s.Workflow; wf != nil {
			op := wf.Operator
			if op == "" {
				op = "nobody signed in"
			}
			open := "nothing open"
			if r := wf.Receptacle; r != nil {
				what := r.Receptacle
				if what == "" {
					what = "bag session " + r.BagSession
				}
				open = fmt.Sprintf("%s open since %s, %d items", what, r.OpenedAt, r.Items)
			}
			fmt.Fprintf(w, "         %s: %s; %s\n", wf.Name, op, open)
		}
	}
	if d := st.Dispatches; d != nil && d.Tracked > 0 {
		fmt.Fprintf(w, "dispatches %d tracked: %d complete, %d incomplete (highest seen, some missing)\n", d.Tracked, d.Complete, d.Incomplete)
	}
	for _, p := range problems {
		fmt.Fprintf(w, "attention: %s\n", p)
	}
}

func reason(r string) string {
	if r == "" {
		return ""
	}
	return " (" + r + ")"
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}
