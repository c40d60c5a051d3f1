//go:build unix

package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
)

// filledBuffer writes n scans into the buffer of a fresh config.
func filledBuffer(t *testing.T, n int) (cfgPath, bufDir string) {
	t.Helper()
	cfgPath, _ = writeConfig(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bufDir = agent.BufferDir(cfg)
	q, err := buffer.Open(bufDir, agent.BufferOptions(cfg, nil))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ev := record.Event{Schema: record.Schema, ID: fmt.Sprintf("id-%d", i+1), Agent: "hub-1", Site: "LAB", Station: "induct-1",
			ScannedAt: "2026-11-22T01:31:44.781Z", Barcode: fmt.Sprintf("RR47312482%dGB", i), Kind: "s10"}
		v, err := record.EventValue("induct-1", &ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(v); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	return cfgPath, bufDir
}

// damageStored overwrites the stored value of seq behind the buffer's
// back (as bit rot that Badger's own checks do not see).
func damageStored(t *testing.T, bufDir string, seq uint64) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(bufDir, "store")).WithLogger(nil).WithCompression(options.None))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k := binary.BigEndian.AppendUint64([]byte{'q'}, seq)
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, _ := item.ValueCopy(nil)
		v[len(v)-20] ^= 0x04
		return txn.Set(k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func exportedSeqs(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e exportLine
		var ev record.Event
		if json.Unmarshal([]byte(l), &e) != nil || json.Unmarshal(e.Event, &ev) != nil || ev.ID != fmt.Sprintf("id-%d", e.Seq) {
			t.Fatalf("export line %q", l)
		}
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// TestBufferExportPastDamage: a record damaged in the store is exported
// from its journal copy; without one, it is named and skipped, the export
// goes on and exits 1.
func TestBufferExportPastDamage(t *testing.T) {
	cfgPath, bufDir := filledBuffer(t, 5)
	damageStored(t, bufDir, 3)
	code, out, errs := runCmd(t, "buffer", "export", "-c", cfgPath)
	if code != 0 || fmt.Sprint(exportedSeqs(t, out)) != "[1 2 3 4 5]" || !strings.Contains(errs, "record 3 is damaged in the store: exported from its journal copy") {
		t.Fatalf("with the journal copy: exit %d\n%s%s", code, out, errs)
	}
	os.RemoveAll(filepath.Join(bufDir, "journal"))
	code, out, errs = runCmd(t, "buffer", "export", "-c", cfgPath)
	if code != 1 || fmt.Sprint(exportedSeqs(t, out)) != "[1 2 4 5]" ||
		!strings.Contains(errs, "record 3 is damaged in the store and has no intact journal copy: not exported") ||
		!strings.Contains(errs, "1 record(s) could not be exported (named above); 4 exported") {
		t.Fatalf("without it: exit %d\n%s%s", code, out, errs)
	}
}

// TestBufferExportParkedAndImport: parked scans are exported with why,
// and such an export can be imported back (after the broker's limit was
// raised, say).
func TestBufferExportParkedAndImport(t *testing.T) {
	cfgPath, bufDir := filledBuffer(t, 3)
	q, err := buffer.Open(bufDir, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := q.Read(0, 10)
	q.Park(recs[1], buffer.ParkPoison)
	q.Close()
	code, parked, errs := runCmd(t, "buffer", "export", "-c", cfgPath, "--parked")
	var l exportLine
	if code != 0 || json.Unmarshal([]byte(strings.TrimSpace(parked)), &l) != nil || l.Seq != 2 || l.Parked == nil || l.Parked.Reason != buffer.ParkPoison {
		t.Fatalf("export --parked: exit %d\n%s%s", code, parked, errs)
	}
	if _, out, _ := runCmd(t, "buffer", "stats", "-c", cfgPath); !strings.Contains(out, "parked           1 scan(s)") || !strings.Contains(out, "pending scans    2") {
		t.Fatalf("stats: %s", out)
	}
	in := filepath.Join(t.TempDir(), "parked.jsonl")
	os.WriteFile(in, []byte(parked), 0o644)
	if code, out, errs := runCmd(t, "buffer", "import", "-c", cfgPath, "--in", in); code != 0 || !strings.Contains(out, "imported 1") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errs)
	}
}

// TestBufferExportQuarantinedStore: buffer export --store reads a store
// the buffer moved aside, from its files.
func TestBufferExportQuarantinedStore(t *testing.T) {
	cfgPath, bufDir := filledBuffer(t, 5)
	os.WriteFile(filepath.Join(bufDir, "store", "MANIFEST"), []byte("garbage"), 0o644)
	q, err := buffer.Open(bufDir, buffer.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	aside, _ := filepath.Glob(filepath.Join(bufDir, "store.corrupt-*"))
	if len(aside) != 1 {
		t.Fatalf("quarantined: %v", aside)
	}
	code, out, errs := runCmd(t, "buffer", "export", "-c", cfgPath, "--store", aside[0])
	if code != 0 || fmt.Sprint(exportedSeqs(t, out)) != "[1 2 3 4 5]" {
		t.Fatalf("export --store: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runCmd(t, "buffer", "export", "-c", cfgPath, "--store", t.TempDir()); code != 2 || !strings.Contains(errs, "is not a buffer store") {
		t.Fatalf("export --store of an empty dir: exit %d %s", code, errs)
	}
}

// TestBufferCommandsRefuseAnotherOwner: run as another user than the
// buffer's owner (root, say), the buffer commands refuse to write there:
// files they created could not be opened by the agent afterwards.
func TestBufferCommandsRefuseAnotherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the buffer to another user")
	}
	cfgPath, bufDir := filledBuffer(t, 1)
	filepath.Walk(filepath.Dir(bufDir), func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, 65534, 65534) })
	for _, sub := range []string{"stats", "export"} {
		code, _, errs := runCmd(t, "buffer", sub, "-c", cfgPath)
		if code != 1 || !strings.Contains(errs, "belongs to user") || !strings.Contains(errs, "sudo -u") {
			t.Fatalf("%s as root on a buffer of uid 65534: exit %d %s", sub, code, errs)
		}
	}
	if entries, _ := os.ReadDir(bufDir); len(entries) == 0 {
		t.Fatal("buffer gone")
	}
}
