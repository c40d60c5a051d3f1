package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/buffer"
)

const bufferUsage = `usage: scanagent buffer <stats|export|import> -c FILE [flags]

  stats  [--json]          backlog depth, bytes, oldest age, journal, quarantined stores, disk use
  export [--out FILE]      the backlog as JSON lines, in order, without removing it
  import --in FILE         append the events of an export to the backlog (new seq, same id)

The agent must be stopped: the buffer is locked while it runs.
`

// exportLine is one line of "buffer export".
type exportLine struct {
	Seq        uint64          `json:"seq"`
	AppendedAt string          `json:"appended_at"`
	Station    string          `json:"station"`
	Event      json.RawMessage `json:"event"`
}

func cmdBuffer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, bufferUsage)
		return usagef("buffer needs a subcommand")
	}
	sub, args := args[0], args[1:]
	fs := newFlags("buffer "+sub, stderr)
	path := fs.String("c", "", "config `FILE`")
	var asJSON *bool
	var out, in *string
	switch sub {
	case "stats":
		asJSON = fs.Bool("json", false, "print JSON")
	case "export":
		out = fs.String("out", "", "write to `FILE` instead of standard output")
	case "import":
		in = fs.String("in", "", "export `FILE` to import (- for standard input)")
	default:
		fmt.Fprint(stderr, bufferUsage)
		return usagef("unknown buffer subcommand %q", sub)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	dir := agent.BufferDir(cfg)
	if sub != "import" {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no buffer at %s (agent.data_dir %s): nothing was buffered yet", dir, cfg.Agent.DataDir)
		}
	}
	opts := agent.BufferOptions(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	q, err := buffer.Open(dir, opts)
	if errors.Is(err, buffer.ErrLocked) {
		return fmt.Errorf("%w\n  the buffer %s is held by a running agent; stop it first (systemctl stop scanagent), or use 'scanagent status' for live figures", err, dir)
	}
	if err != nil {
		return err
	}
	defer q.Close()
	switch sub {
	case "stats":
		return bufferStats(q, dir, *asJSON, stdout)
	case "export":
		return bufferExport(ctx, q, *out, stdout)
	default:
		return bufferImport(ctx, q, *in, stdout)
	}
}

func bufferStats(q *buffer.Queue, dir string, asJSON bool, w io.Writer) error {
	st := q.Stats()
	if recs, err := q.Read(0, 1); err == nil && len(recs) == 1 {
		st.OldestAge = time.Since(recs[0].Time).Seconds()
	}
	disk := buffer.DiskBytes(dir)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Dir       string       `json:"dir"`
			DiskBytes int64        `json:"disk_bytes"`
			Stats     buffer.Stats `json:"stats"`
		}{dir, disk, st})
	}
	fmt.Fprintf(w, "buffer           %s\n", dir)
	fmt.Fprintf(w, "pending scans    %d (%s)\n", st.Depth, humanBytes(st.Bytes))
	if st.Depth > 0 {
		fmt.Fprintf(w, "oldest pending   %s ago\n", time.Duration(st.OldestAge*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintf(w, "last seq         %d\n", st.LastSeq)
	fmt.Fprintf(w, "disk use         %s\n", humanBytes(disk))
	fmt.Fprintf(w, "journal          %d segment(s)", st.JournalSegments)
	if st.Replayed > 0 {
		fmt.Fprintf(w, ", %d record(s) replayed at this open", st.Replayed)
	}
	fmt.Fprintln(w)
	if st.Quarantined > 0 {
		fmt.Fprintf(w, "quarantined      %d store(s) moved aside (store.corrupt-* under %s)\n", st.Quarantined, dir)
	}
	return nil
}

// bufferExport writes the backlog as JSON lines; a cancelled ctx stops it
// between pages, with the lines written so far complete.
func bufferExport(ctx context.Context, q *buffer.Queue, out string, stdout io.Writer) error {
	w := stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	var cursor uint64
	n := 0
	for {
		if ctx.Err() != nil {
			bw.Flush()
			return fmt.Errorf("export interrupted by a signal after %d scan(s); the buffer is unchanged", n)
		}
		recs, err := q.Read(cursor, 1000)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			station, payload, err := agent.SplitRecord(r.Value)
			if err != nil {
				return fmt.Errorf("record %d: %w", r.Seq, err)
			}
			if err := enc.Encode(exportLine{Seq: r.Seq, AppendedAt: agent.Timestamp(r.Time), Station: station, Event: payload}); err != nil {
				return err
			}
			n++
		}
		cursor = recs[len(recs)-1].Seq
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if out != "" {
		fmt.Fprintf(stdout, "exported %d scan(s) to %s\n", n, out)
	}
	return nil
}

// bufferImport appends an export's events; a cancelled ctx stops it between
// lines, saying how many were imported.
func bufferImport(ctx context.Context, q *buffer.Queue, in string, stdout io.Writer) error {
	if in == "" {
		return usagef("import needs --in FILE")
	}
	var r io.Reader = os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for line := 1; sc.Scan(); line++ {
		if ctx.Err() != nil {
			return fmt.Errorf("%s:%d: import interrupted by a signal; %d scan(s) imported before this line "+
				"(importing the file again would add them twice: split it at this line)", in, line, n)
		}
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var l exportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("%s:%d: %v", in, line, err)
		}
		var ev agent.Event
		if err := json.Unmarshal(l.Event, &ev); err != nil || ev.Schema != agent.Schema || ev.ID == "" {
			return fmt.Errorf("%s:%d: not a %s event with an id", in, line, agent.Schema)
		}
		if !config.ValidName(l.Station) {
			// It becomes a topic level: a wildcard or an overlong name
			// would block the uplink on this record.
			return fmt.Errorf("%s:%d: station %q is not a valid station id (1-64 of A-Z a-z 0-9 . _ -)", in, line, l.Station)
		}
		if _, err := q.Append(agent.RecordEncoder(l.Station, &ev)); err != nil {
			return fmt.Errorf("%s:%d: %w (%d imported before it)", in, line, err, n)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w (%d imported)", in, err, n)
	}
	fmt.Fprintf(stdout, "imported %d scan(s); they keep their id (the de-duplication key) and get new seq numbers\n", n)
	return nil
}

func humanBytes(n int64) string {
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
