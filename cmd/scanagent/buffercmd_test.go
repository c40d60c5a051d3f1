package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
)

func writeConfig(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "scanagent.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "agent: {id: hub-1, site: LAB, data_dir: %q}\nstations: [{id: induct-1, scanner: {port: /dev/ttyS0}}]\n", dir), 0o644)
	return cfg, dir
}

// TestBufferExportImportStats fills a buffer through the same encoder the
// stations use, exports it, imports the export into a second agent's
// buffer, and checks stats, order, ids and new seqs.
func TestBufferExportImportStats(t *testing.T) {
	cfgPath, _ := writeConfig(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(agent.BufferDir(cfg), agent.BufferOptions(cfg, nil))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		ev := record.Event{Schema: record.Schema, ID: fmt.Sprintf("id-%d", i), Agent: "hub-1", Site: "LAB", Station: "induct-1",
			ScannedAt: "2026-11-22T01:31:44.781Z", Barcode: fmt.Sprintf("RR47312482%dGB", i), Kind: "s10"}
		v, err := record.EventValue("induct-1", &ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(v); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	// A workflow station's cancel and receptacle events (docs/WORKFLOWS.md).
	cancel := &record.Cancel{Schema: record.SchemaCancel, ID: "cancel-1", Agent: "hub-1", Site: "LAB", Station: "open-1",
		Cancels: "id-4", Barcode: "RR473124824GB", CancelledAt: "2026-11-22T01:31:45.000Z"}
	recept := &record.Receptacle{Schema: record.SchemaReceptacle, ID: "recept-1", Agent: "hub-1", Site: "LAB", Station: "open-1",
		Workflow: "open_receptacles", Receptacle: "BEBRUABOLPBBAEN60073003000227", Items: 4, OpenedAt: "2026-11-22T01:30:00.000Z",
		ClosedAt: "2026-11-22T01:31:46.000Z", ClosedBy: "control"}
	for _, w := range []struct {
		topic record.Topic
		ev    any
		id    string
	}{{record.TopicScans, cancel, cancel.ID}, {record.TopicReceptacles, recept, recept.ID}} {
		v, err := record.JSONValue(w.topic, "open-1", w.ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(v); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, w.id)
	}

	// While the buffer is held, the CLI says so and fails.
	code, _, errs := runCmd(t, "buffer", "stats", "-c", cfgPath)
	if code != 1 || !strings.Contains(errs, "stop it first") {
		t.Fatalf("locked: exit %d, %s", code, errs)
	}
	q.Close()

	code, out, errs := runCmd(t, "buffer", "stats", "-c", cfgPath)
	if code != 0 || !strings.Contains(out, "pending scans    7") {
		t.Fatalf("stats: exit %d\n%s%s", code, out, errs)
	}
	export := filepath.Join(t.TempDir(), "backlog.jsonl")
	if code, out, errs := runCmd(t, "buffer", "export", "-c", cfgPath, "--out", export); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, out, errs)
	}
	data, _ := os.ReadFile(export)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 7 {
		t.Fatalf("export has %d lines:\n%s", len(lines), data)
	}
	for i, l := range lines {
		var e exportLine
		var ev record.Event
		station, topic := "induct-1", "scans"
		if i >= 5 {
			station = "open-1"
		}
		if i == 6 {
			topic = "receptacles"
		}
		if json.Unmarshal([]byte(l), &e) != nil || json.Unmarshal(e.Event, &ev) != nil || e.Seq != uint64(i+1) || ev.ID != ids[i] ||
			e.Station != station || e.Topic != topic {
			t.Fatalf("line %d: %s", i, l)
		}
	}
	// Export does not remove anything.
	if _, out, _ := runCmd(t, "buffer", "stats", "-c", cfgPath); !strings.Contains(out, "pending scans    7") {
		t.Fatalf("after export: %s", out)
	}

	// Import into another agent's (empty) buffer.
	other, _ := writeConfig(t)
	if code, out, errs := runCmd(t, "buffer", "import", "-c", other, "--in", export); code != 0 || !strings.Contains(out, "imported 7") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCmd(t, "buffer", "export", "-c", other)
	got := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(got) != 7 {
		t.Fatalf("re-export: exit %d\n%s", code, out)
	}
	// The workflow events keep their topic and content.
	for i, want := range []string{`"topic":"scans","event":{"schema":"scanagent.cancel/v1","id":"cancel-1","seq":6,`,
		`"topic":"receptacles","event":{"schema":"scanagent.receptacle/v1","id":"recept-1","seq":7,`} {
		if !strings.Contains(got[5+i], want) || !strings.Contains(got[5+i], `"station":"open-1"`) {
			t.Errorf("re-exported %s, want %s", got[5+i], want)
		}
	}
	var e exportLine
	var ev record.Event
	json.Unmarshal([]byte(got[4]), &e)
	json.Unmarshal(e.Event, &ev)
	if ev.ID != ids[4] || ev.Seq != e.Seq {
		t.Fatalf("imported event %+v (record seq %d)", ev, e.Seq)
	}

	// A line that is not an export is refused with its line number.
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte(lines[0]+"\n{\"seq\":1}\n"), 0o644)
	if code, _, errs := runCmd(t, "buffer", "import", "-c", other, "--in", bad); code != 1 || !strings.Contains(errs, bad+":2:") {
		t.Fatalf("bad import: exit %d, %s", code, errs)
	}
}

func TestBufferUsage(t *testing.T) {
	for _, args := range [][]string{{"buffer"}, {"buffer", "frob"}, {"buffer", "import", "-c", "x"}} {
		if code, _, _ := runCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestBufferImportStopsOnSignal: an import interrupted by a signal stops
// between lines, closes the buffer, and says how many scans it imported
// (importing the file again would add them twice).
func TestBufferImportStopsOnSignal(t *testing.T) {
	cfgPath, _ := writeConfig(t)
	in := filepath.Join(t.TempDir(), "backlog.jsonl")
	var lines []string
	for i := range 3 {
		ev, _ := json.Marshal(record.Event{Schema: record.Schema, ID: fmt.Sprintf("id-%d", i), Agent: "hub-1", Site: "LAB", Station: "induct-1",
			ScannedAt: "2026-11-22T01:31:44.781Z", Barcode: "RR473124829GB", Kind: "s10", Valid: true})
		l, _ := json.Marshal(exportLine{Seq: uint64(i + 1), Station: "induct-1", Event: ev})
		lines = append(lines, string(l))
	}
	os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal came before the first line
	var out, errb bytes.Buffer
	code := exitCode(run(ctx, []string{"buffer", "import", "-c", cfgPath, "--in", in}, &out, &errb), &errb)
	if code != 1 || !strings.Contains(errb.String(), in+":1: import interrupted by a signal; 0 scan(s) imported before this line") {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	// The buffer was closed (not left locked) and holds nothing.
	if code, out, errs := runCmd(t, "buffer", "stats", "-c", cfgPath); code != 0 || !strings.Contains(out, "pending scans    0") {
		t.Fatalf("stats after the interrupted import: exit %d\n%s%s", code, out, errs)
	}
}
