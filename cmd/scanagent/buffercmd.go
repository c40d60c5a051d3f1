package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
)

const bufferUsage = `usage: scanagent buffer <stats|export|import> -c FILE [flags]

  stats  [--json]          backlog depth, bytes, oldest age, journal, damage found, disk use
  export [--out FILE]      the backlog as JSON lines, in order, without removing it; a damaged
                           record is exported from its journal copy, or named on stderr
         --parked          the parked scans instead (not delivered: the broker would not take
                           them, or both their copies were damaged), with why
         --store DIR       the records of a quarantined store (store.corrupt-*), read from its
                           files without the buffer (the agent may run)
  import --in FILE         append the events of an export to the backlog (new seq, same id)

The agent must be stopped: the buffer is locked while it runs. Run the
commands as the user the agent runs as (sudo -u scanagent ...): files they
create must stay the agent's. "scanagent buffer SUBCOMMAND -h" shows its
flags and an example.
`

// exportLine is one line of "buffer export".
type exportLine struct {
	Seq        uint64 `json:"seq"`
	AppendedAt string `json:"appended_at"`
	Station    string `json:"station"`
	// Topic is the topic level the event is published on: scans (scans
	// and cancels) or receptacles.
	Topic string          `json:"topic,omitempty"`
	Event json.RawMessage `json:"event,omitempty"`
	// Parked says why a parked scan was taken out of the queue (--parked).
	Parked *parkedInfo `json:"parked,omitempty"`
}

type parkedInfo struct {
	Reason string `json:"reason"`
	At     string `json:"at"`
	// Raw is the stored record, when it is damaged (base64).
	Raw []byte `json:"raw,omitempty"`
}

// bufferHelp is each buffer subcommand's -h.
var bufferHelp = map[string]help{
	"stats": {
		usage:   "scanagent buffer stats -c FILE [--json]",
		summary: "Print the backlog: depth, oldest age, journal, damage, parked scans, disk use.",
		more:    bufferNote,
		example: "sudo -u scanagent scanagent buffer stats -c /etc/scanagent/scanagent.yaml",
	},
	"export": {
		usage:   "scanagent buffer export -c FILE [--out FILE] [--parked | --store DIR]",
		summary: "Write the backlog as JSON lines, in order, without removing it.",
		more: `A record damaged in the store is exported from its journal copy, or named
on stderr and skipped (exit 1 at the end). --parked exports the parked
scans instead, with why; --store reads a quarantined store's files (the
agent may run).

` + bufferNote,
		example: "sudo -u scanagent scanagent buffer export -c /etc/scanagent/scanagent.yaml --out backlog.jsonl",
	},
	"import": {
		usage:   "scanagent buffer import -c FILE --in FILE",
		summary: "Append the events of an export to the backlog (new seq, same id).",
		more:    bufferNote,
		example: "sudo -u scanagent scanagent buffer import -c /etc/scanagent/scanagent.yaml --in backlog.jsonl",
	},
}

const bufferNote = `The agent must be stopped: the buffer is locked while it runs. Run the
commands as the user the agent runs as: files they create must stay the
agent's.
`

func cmdBuffer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelpFlag(args[0]) {
		fmt.Fprint(stdout, bufferUsage)
		return nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, bufferUsage)
		return usagef("buffer needs a subcommand")
	}
	sub, args := args[0], args[1:]
	h, ok := bufferHelp[sub]
	if !ok {
		fmt.Fprint(stderr, bufferUsage)
		return usagef("unknown buffer subcommand %q", sub)
	}
	fs := newFlags("buffer "+sub, h, stdout, stderr)
	path := fs.String("c", "", "config `FILE`")
	var asJSON, parked *bool
	var out, in, store *string
	switch sub {
	case "stats":
		asJSON = fs.Bool("json", false, "print JSON")
	case "export":
		out = fs.String("out", "", "write to `FILE` instead of standard output")
		parked = fs.Bool("parked", false, "export the parked scans instead of the backlog")
		store = fs.String("store", "", "export the records of a quarantined store `DIR` (store.corrupt-*)")
	case "import":
		in = fs.String("in", "", "export `FILE` to import (- for standard input)")
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	dir := agent.BufferDir(cfg)
	if sub == "export" && *store != "" {
		if *parked {
			return usagef("--parked and --store exclude each other")
		}
		return exportSalvaged(ctx, *store, *out, stdout, stderr)
	}
	if err := checkOwner(dir, cfg.Agent.DataDir); err != nil {
		return err
	}
	if sub != "import" {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no buffer at %s (agent.data_dir %s): nothing was buffered yet", dir, cfg.Agent.DataDir)
		}
	}
	opts := agent.BufferOptions(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	opts.Inspect = sub != "import" // look, do not repair: the agent's next start does
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
		if *parked {
			return exportParked(q, *out, stdout, stderr)
		}
		return bufferExport(ctx, q, *out, stdout, stderr)
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
		fmt.Fprintf(w, "quarantined      %d store(s) or journal segment(s) moved aside (store.corrupt-*, journal.corrupt-* under %s); export a store with --store\n", st.Quarantined, dir)
	}
	if st.Parked > 0 {
		fmt.Fprintf(w, "parked           %d scan(s), not delivered: scanagent buffer export --parked\n", st.Parked)
	}
	if st.Restored+st.CopiedBack+st.JournalDamaged > 0 {
		fmt.Fprintf(w, "repaired         %d damaged segment(s); %d record(s) copied back to the journal, %d restored from it\n", st.JournalDamaged, st.CopiedBack, st.Restored)
	}
	if st.Unrecoverable > 0 {
		fmt.Fprintf(w, "UNRECOVERABLE    %d scan(s): both copies damaged or missing\n", st.Unrecoverable)
		for _, l := range st.Loss {
			fmt.Fprintf(w, "                 %s: seq %s (%s)\n", l.At, l.Ranges, l.Why)
		}
	}
	fmt.Fprintf(w, "disk             %s free, %s held in reserve for the store\n", humanBytes(st.FreeBytes), humanBytes(st.ReserveBytes))
	return nil
}

// exportWriter writes export lines to a file or stdout.
type exportWriter struct {
	f   *os.File
	bw  *bufio.Writer
	enc *json.Encoder
	n   int
}

func newExportWriter(out string, stdout io.Writer) (*exportWriter, error) {
	x := &exportWriter{}
	w := stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return nil, err
		}
		x.f, w = f, f
	}
	x.bw = bufio.NewWriter(w)
	x.enc = json.NewEncoder(x.bw)
	return x, nil
}

func (x *exportWriter) line(l exportLine) error {
	x.n++
	return x.enc.Encode(l)
}

func (x *exportWriter) close() error {
	err := x.bw.Flush()
	if x.f != nil {
		if cerr := x.f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// recordLine makes the export line of a record; a record that does not
// split into station and event is reported instead.
func recordLine(r buffer.Record) (exportLine, error) {
	topic, station, payload, err := record.SplitTopic(r.Value)
	if err == nil && !json.Valid(payload) {
		err = errors.New("its event is not valid JSON")
	}
	if err != nil {
		return exportLine{}, fmt.Errorf("record %d: %w", r.Seq, err)
	}
	return exportLine{Seq: r.Seq, AppendedAt: record.Timestamp(r.Time), Station: station, Topic: topic.Name(), Event: payload}, nil
}

// unexported collects the records an export had to leave out.
type unexported []string

func (u *unexported) add(stderr io.Writer, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Fprintln(stderr, "scanagent: "+msg)
	*u = append(*u, msg)
}

func (u unexported) err(n int) error {
	if len(u) == 0 {
		return nil
	}
	return fmt.Errorf("%d record(s) could not be exported (named above); %d exported", len(u), n)
}

// bufferExport writes the backlog as JSON lines; a cancelled ctx stops it
// between pages, with the lines written so far complete. A record damaged
// in the store is exported from its journal copy; one without an intact
// copy is named on stderr and skipped, and the export goes on (exit 1 at
// the end).
func bufferExport(ctx context.Context, q *buffer.Queue, out string, stdout, stderr io.Writer) error {
	x, err := newExportWriter(out, stdout)
	if err != nil {
		return err
	}
	var missed unexported
	var cursor uint64
	for {
		if ctx.Err() != nil {
			x.close()
			return fmt.Errorf("export interrupted by a signal after %d scan(s); the buffer is unchanged", x.n)
		}
		recs, damaged, err := q.ReadVerified(cursor, 1000)
		if err != nil {
			x.close()
			return fmt.Errorf("%w (%d scan(s) exported before it)", err, x.n)
		}
		if len(recs) == 0 && len(damaged) == 0 {
			break
		}
		for _, d := range damaged {
			if rec, ok := q.JournalCopy(d.Seq); ok {
				fmt.Fprintf(stderr, "scanagent: record %d is damaged in the store: exported from its journal copy\n", d.Seq)
				recs = append(recs, rec)
			} else {
				missed.add(stderr, "record %d is damaged in the store and has no intact journal copy: not exported", d.Seq)
			}
			cursor = max(cursor, d.Seq)
		}
		slices.SortFunc(recs, func(a, b buffer.Record) int { return cmp.Compare(a.Seq, b.Seq) })
		for _, r := range recs {
			cursor = max(cursor, r.Seq)
			l, err := recordLine(r)
			if err != nil {
				missed.add(stderr, "%v: not exported", err)
				continue
			}
			if err := x.line(l); err != nil {
				return err
			}
		}
	}
	if err := x.close(); err != nil {
		return err
	}
	if out != "" {
		fmt.Fprintf(stdout, "exported %d scan(s) to %s\n", x.n, out)
	}
	return missed.err(x.n)
}

// exportParked writes the parked scans, each with why it was parked.
func exportParked(q *buffer.Queue, out string, stdout, stderr io.Writer) error {
	x, err := newExportWriter(out, stdout)
	if err != nil {
		return err
	}
	err = q.ReadParked(func(p buffer.ParkedRecord) error {
		info := &parkedInfo{Reason: p.Reason, At: record.Timestamp(p.ParkedAt)}
		l := exportLine{Seq: p.Seq, Parked: info}
		if p.Err == nil {
			if rl, lerr := recordLine(p.Record); lerr == nil {
				rl.Parked = info
				l = rl
			} else {
				p.Err = lerr
			}
		}
		if p.Err != nil {
			info.Raw = p.Raw
			fmt.Fprintf(stderr, "scanagent: parked record %d is damaged (%v): exported as raw bytes\n", p.Seq, p.Err)
		}
		return x.line(l)
	})
	if cerr := x.close(); err == nil {
		err = cerr
	}
	if err == nil && out != "" {
		fmt.Fprintf(stdout, "exported %d parked scan(s) to %s\n", x.n, out)
	}
	return err
}

// exportSalvaged writes what can be read of a quarantined store.
func exportSalvaged(ctx context.Context, store, out string, stdout, stderr io.Writer) error {
	if fi, err := os.Stat(filepath.Join(store, "MANIFEST")); err != nil || fi.IsDir() {
		return usagef("%s is not a buffer store (no MANIFEST in it)", store)
	}
	if !buffer.IsQuarantined(store) {
		fmt.Fprintf(stderr, "scanagent: %s is not a quarantined store (store.corrupt-*); reading it anyway, without the buffer\n", store)
	}
	x, err := newExportWriter(out, stdout)
	if err != nil {
		return err
	}
	var missed unexported
	problems, err := buffer.Salvage(store, func(r buffer.Record, rerr error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("export interrupted by a signal after %d scan(s)", x.n)
		}
		if rerr != nil {
			missed.add(stderr, "record %d is damaged: not exported", r.Seq)
			return nil
		}
		l, lerr := recordLine(r)
		if lerr != nil {
			missed.add(stderr, "%v: not exported", lerr)
			return nil
		}
		return x.line(l)
	})
	for _, p := range problems {
		fmt.Fprintf(stderr, "scanagent: %s: %s (records in it are not exported)\n", store, p)
	}
	if cerr := x.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if out != "" {
		fmt.Fprintf(stdout, "exported %d scan(s) from %s to %s\n", x.n, store, out)
	}
	return missed.err(x.n)
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
		if !config.ValidName(l.Station) {
			// It becomes a topic level: a wildcard or an overlong name
			// would block the uplink on this record.
			return fmt.Errorf("%s:%d: station %q is not a valid station id (1-64 of A-Z a-z 0-9 . _ -)", in, line, l.Station)
		}
		v, err := importValue(l)
		if err != nil {
			return fmt.Errorf("%s:%d: %v", in, line, err)
		}
		if _, err := q.Append(v); err != nil {
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

// importValue makes the buffer value of an exported event, by its schema:
// a scan, a cancel (both on the scans topic) or a receptacle event.
func importValue(l exportLine) (buffer.Value, error) {
	var probe struct {
		Schema string `json:"schema"`
		ID     string `json:"id"`
	}
	if err := json.Unmarshal(l.Event, &probe); err != nil || probe.ID == "" {
		return buffer.Value{}, fmt.Errorf("not an event with a schema and an id")
	}
	switch probe.Schema {
	case record.Schema:
		var ev record.Event
		if err := json.Unmarshal(l.Event, &ev); err != nil {
			return buffer.Value{}, err
		}
		return record.EventValue(l.Station, &ev)
	case record.SchemaCancel:
		var ev record.Cancel
		if err := json.Unmarshal(l.Event, &ev); err != nil {
			return buffer.Value{}, err
		}
		ev.Seq = 0
		return record.JSONValue(record.TopicScans, l.Station, &ev)
	case record.SchemaReceptacle:
		var ev record.Receptacle
		if err := json.Unmarshal(l.Event, &ev); err != nil {
			return buffer.Value{}, err
		}
		ev.Seq = 0
		return record.JSONValue(record.TopicReceptacles, l.Station, &ev)
	}
	return buffer.Value{}, fmt.Errorf("schema %q: not %s, %s or %s", probe.Schema, record.Schema, record.SchemaCancel, record.SchemaReceptacle)
}

func humanBytes(n int64) string { return config.HumanBytes(n) }
