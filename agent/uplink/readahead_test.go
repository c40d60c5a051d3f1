package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/testmqtt"
)

// waitAhead waits until the page read ahead is read, and leaves it there.
func waitAhead(t *testing.T, p *pager) {
	t.Helper()
	if p.ahead == nil {
		t.Fatal("no page read ahead")
	}
	pg := <-p.ahead
	p.ahead <- pg
}

// TestReadAheadIsASnapshot: a full page starts reading the next one; a
// record deleted by a receipt after it was read ahead is still in that
// page (the buffer hid it only from later reads), and the receipts refuse
// to publish it, as for the rest of a page read in its turn. A short page
// reads nothing ahead; a cursor other than the one read ahead reads anew.
func TestReadAheadIsASnapshot(t *testing.T) {
	q, recs := fillQueue(t, 2*readPage+5)
	r := newReceipts("hub-1", time.Minute, q, slog.New(slog.DiscardHandler))
	p := newPager(q, readPage)
	defer p.close()

	first, err := p.read(0)
	if err != nil || len(first) != readPage || first[0].Seq != 1 {
		t.Fatalf("first page: %d records from seq %v, %v", len(first), first[0].Seq, err)
	}
	waitAhead(t, p)
	gone := recs[readPage+3] // in the page read ahead
	if n := r.apply(receiptJSON("hub-1", [2]uint64{gone.Seq, gone.Seq})); n != 1 {
		t.Fatalf("the receipt deleted %d", n)
	}
	second, err := p.read(first[len(first)-1].Seq)
	if err != nil || len(second) != readPage || second[0].Seq != readPage+1 {
		t.Fatalf("second page: %d records, %v", len(second), err)
	}
	if second[3].Seq != gone.Seq {
		t.Fatalf("the page read ahead has seq %d where %d was", second[3].Seq, gone.Seq)
	}
	if !r.skip(gone.Seq) && r.published(gone, time.Now()) {
		t.Fatalf("seq %d, deleted by a receipt after it was read ahead, would be published", gone.Seq)
	}
	if !r.published(second[4], time.Now()) {
		t.Fatal("the next record would not be published")
	}

	// The second page was full: the third is read ahead. The pump asks for
	// another cursor (it put the second page aside): read anew, without
	// the receipted record.
	waitAhead(t, p)
	again, err := p.read(first[len(first)-1].Seq)
	if err != nil || len(again) != readPage || again[len(again)-1].Seq != 2*readPage+1 {
		t.Fatalf("read anew: %d records, %v", len(again), err)
	}
	for _, rec := range again {
		if rec.Seq == gone.Seq {
			t.Fatalf("read anew, seq %d is still there", gone.Seq)
		}
	}
	// Full again (the receipted record's place taken by the next one):
	// then the short last page, after which nothing is read ahead.
	last, err := p.read(again[len(again)-1].Seq)
	if err != nil || len(last) != 4 || last[3].Seq != 2*readPage+5 {
		t.Fatalf("last page: %d records, %v", len(last), err)
	}
	if p.ahead != nil {
		t.Fatal("a short page started a read ahead")
	}
}

// TestReadAheadDrain: a backlog of several pages, a real buffer and a
// real mosquitto: every scan goes out once, in seq order, and the buffer
// empties.
func TestReadAheadDrain(t *testing.T) {
	b := testmqtt.Start(t)
	sub := testmqtt.Subscribe(t, b, "watcher", "scanagent/#")
	const n = 3*readPage + 17
	q, _ := fillQueue(t, n)
	u := New(Config{MQTT: mqttConfig(b.URL()), Agent: config.Agent{ID: "hub-1", Site: "LAB"}, Version: "test"},
		Deps{Queue: q, Reporter: &reporter{}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()

	msgs := sub.WaitFor(20*time.Second, "every scan", func(m []testmqtt.Message) bool { return len(testmqtt.Events(m, "/scans/")) >= n })
	events := testmqtt.Events(msgs, "/scans/")
	if len(events) != n {
		t.Fatalf("%d scans delivered, want %d", len(events), n)
	}
	for i, ev := range events {
		if ev["seq"] != float64(i+1) || ev["barcode"] != fmt.Sprint(i) {
			t.Fatalf("scan %d out of order: %v", i, ev)
		}
	}
	waitFor(t, "the buffer emptied", func() bool { return q.Stats().Depth == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := u.Stats(); st.Published != n || st.Acked != n {
		t.Fatalf("stats %+v", st)
	}
}
