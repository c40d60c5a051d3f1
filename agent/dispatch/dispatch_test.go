package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func open(t *testing.T, path string, expire time.Duration) *Tracker {
	t.Helper()
	tr, err := Open(Config{Path: path, Agent: "hub", Site: "SITE", Expire: expire})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

const s8 = "BEBRUABOLPBBAEN60073"

// TestMissingThenComplete: serials arrive out of order, one twice; the
// highest label fixes the count; the last missing one completes it. The
// state survives a restart, and a label given again after it (a station
// counting again from the buffer) changes nothing.
func TestMissingThenComplete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dispatches.state")
	tr := open(t, path, time.Hour)
	t0 := time.Now()
	seen := func(tr *Tracker, seq uint64, serial int, highest bool) {
		tr.Seen(Label{Station: "open-1", Seq: seq, At: t0.Add(time.Duration(seq) * time.Second), Dispatch: s8, Serial: serial, Highest: highest})
	}
	seen(tr, 10, 3, false)
	seen(tr, 11, 1, false)
	m, _ := tr.Message(s8)
	if fmt.Sprint(m.Received, m.Missing, m.Duplicates) != "[1 3] [2] []" || m.Highest != nil || m.Complete {
		t.Fatalf("before the highest: %+v", m)
	}
	seen(tr, 12, 5, true)
	seen(tr, 13, 3, false) // the same bag again
	m, _ = tr.Message(s8)
	if fmt.Sprint(m.Received, m.Missing, m.Duplicates) != "[1 3 5] [2 4] [3]" || m.Highest == nil || *m.Highest != 5 || m.Complete {
		t.Fatalf("highest seen: %+v", m)
	}
	if st := tr.Stats(); st.Tracked != 1 || st.Incomplete != 1 || st.Complete != 0 {
		t.Fatalf("stats: %+v", st)
	}
	tr.Run(canceled()) // closes the state

	tr = open(t, path, time.Hour)
	if tr.LastSeq("open-1") != 13 {
		t.Fatalf("last seq after restart: %d", tr.LastSeq("open-1"))
	}
	seen(tr, 13, 3, false) // given again: not a duplicate
	seen(tr, 14, 2, false)
	seen(tr, 15, 4, false)
	m, _ = tr.Message(s8)
	if fmt.Sprint(m.Received, m.Missing, m.Duplicates) != "[1 2 3 4 5] [] [3]" || !m.Complete ||
		m.FirstSeen >= m.LastSeen {
		t.Fatalf("complete: %+v", m)
	}
	// Retained: every dispatch at a new session, only changes after.
	all := tr.Retained(true)
	if len(all) != 1 || all[0].Topic != "dispatches/"+s8 {
		t.Fatalf("retained: %+v", all)
	}
	var got Message
	if err := json.Unmarshal(all[0].Payload, &got); err != nil || !got.Complete || got.Schema != Schema {
		t.Fatalf("payload %s: %v", all[0].Payload, err)
	}
	tr.RetainedSent(all[0].Topic, all[0].Version)
	if len(tr.Retained(false)) != 0 {
		t.Fatal("a message sent is still changed")
	}
	tr.Run(canceled())
}

// TestExpiry: a dispatch not seen for longer than the expiry is dropped
// and its retained message cleared (an empty payload), also after a
// restart that came before the broker took the clearing.
func TestExpiry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dispatches.state")
	tr := open(t, path, time.Hour)
	tr.Seen(Label{Station: "s", Seq: 1, At: time.Now().Add(-2 * time.Hour), Dispatch: s8, Serial: 1})
	tr.expire(time.Now())
	if _, ok := tr.Message(s8); ok {
		t.Fatal("not expired")
	}
	tr.Run(canceled())
	tr = open(t, path, time.Hour)
	msgs := tr.Retained(true)
	if len(msgs) != 1 || len(msgs[0].Payload) != 0 {
		t.Fatalf("clearing after restart: %+v", msgs)
	}
	tr.RetainedSent(msgs[0].Topic, msgs[0].Version)
	if len(tr.Retained(true)) != 0 {
		t.Fatal("cleared twice")
	}
	tr.Run(canceled())
}

// TestDamagedState: a garbage state file is moved aside; the tracker
// starts empty and works.
func TestDamagedState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dispatches.state")
	os.WriteFile(path, []byte("garbage"), 0o640)
	tr := open(t, path, time.Hour)
	tr.Seen(Label{Station: "s", Seq: 1, At: time.Now(), Dispatch: s8, Serial: 1})
	if _, ok := tr.Message(s8); !ok {
		t.Fatal("tracker does not work after a damaged state")
	}
	tr.Run(canceled())
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestOddStateRecords: records with a good checksum but impossible values
// (a huge highest, serials out of 1..999, a key that is no S8, a last seq
// beyond the buffer) are dropped or clamped; the rest is kept, and a
// record that does not decode is skipped, not the end of the history.
func TestOddStateRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dispatches.state")
	tr := open(t, path, time.Hour)
	tr.Seen(Label{Station: "s", Seq: 1, At: time.Now(), Dispatch: s8, Serial: 1})
	tr.write(entry{Snapshot: &snapshot{Dispatches: []*state{
		{Dispatch: s8, Serials: map[int]uint64{1: 1, 0: 2, 5000: 3}, Highest: 30_000_000},
		{Dispatch: "A/B#", Serials: map[int]uint64{1: 1}},
		{Dispatch: "CNSHAARUMOWAAUN60001", Serials: map[int]uint64{2: 4, -1: 5}, Highest: 2},
	}, LastSeq: map[string]uint64{"s": 1 << 62}, Clearing: []string{"+/#"}}}, true)
	tr.file.Append([]byte("{not json"))
	tr.Seen(Label{Station: "t", Seq: 9, At: time.Now(), Dispatch: "CNSHAARUMOWAAUN60001", Serial: 1})
	tr.Run(canceled())

	tr = open(t, path, time.Hour)
	defer tr.Run(canceled())
	if _, ok := tr.Message(s8); ok {
		t.Error("a dispatch with a highest beyond 999 was kept")
	}
	m, ok := tr.Message("CNSHAARUMOWAAUN60001")
	if !ok || fmt.Sprint(m.Received, m.Missing) != "[1 2] []" || !m.Complete {
		t.Errorf("the sound dispatch, and the label after the bad record: %+v %v", m, ok)
	}
	for _, msg := range tr.Retained(true) {
		if !ValidS8(msg.Topic[len("dispatches/"):]) {
			t.Errorf("retained topic %s", msg.Topic)
		}
	}
	tr.ClampLastSeq(100)
	if tr.LastSeq("s") != 0 {
		t.Error("a last seq beyond the buffer's was kept")
	}
}
