package uplink

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/buffer"
)

func receiptJSON(agent string, ranges ...[2]uint64) []byte {
	b, _ := json.Marshal(Receipt{Schema: ReceiptSchema, Agent: agent, Ranges: ranges, Receiver: "test", StoredAt: time.Now().Format(time.RFC3339)})
	return b
}

// fillQueue appends n scan records to a real buffer and returns them.
func fillQueue(t *testing.T, n int) (*buffer.Queue, []buffer.Record) {
	t.Helper()
	q, err := buffer.Open(t.TempDir(), buffer.Options{MinFreeDisk: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	for i := range n {
		v, err := record.EventValue("induct-1", &record.Event{Schema: record.Schema, ID: fmt.Sprint(i), Barcode: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(v); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := q.Read(0, n)
	if err != nil || len(recs) != n {
		t.Fatalf("read %d, %v", len(recs), err)
	}
	return q, recs
}

// TestReceiptBeforePUBACK: a receipt that arrives while its scan still
// waits for the PUBACK deletes it at once; the PUBACK that follows, and a
// second receipt, change nothing (the buffer's counts stay right), and it
// is not published again.
func TestReceiptBeforePUBACK(t *testing.T) {
	q, recs := fillQueue(t, 3)
	r := newReceipts("hub-1", time.Minute, q, slog.New(slog.DiscardHandler))
	now := time.Now()
	for _, rec := range recs {
		if !r.published(rec, now) {
			t.Fatal("published refused")
		}
	}
	if n := r.apply(receiptJSON("hub-1", [2]uint64{2, 2})); n != 1 {
		t.Fatalf("deleted %d, want 1", n)
	}
	r.pubacked(recs[1]) // its PUBACK after the receipt
	r.pubacked(recs[0])
	if r.apply(receiptJSON("hub-1", [2]uint64{2, 2})) != 0 || r.bad[BadUnknown] != 1 {
		t.Fatalf("second receipt: bad %v", r.bad)
	}
	if r.published(recs[1], now) {
		t.Fatal("a receipted scan would be published again")
	}
	waitFor(t, "the delete", func() bool { return q.Stats().Depth == 2 })
	if st := r.stats(now); st.Unreceipted != 2 || st.Receipted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Due: only the PUBACKed one, once the timeout has passed.
	if due, _ := r.due(now.Add(2*time.Minute), 10); len(due) != 1 || due[0].Seq != 1 {
		t.Fatalf("due %v", due)
	}
	if q.Stats().Depth != 2 || q.Stats().Acked != 1 {
		t.Fatalf("buffer %+v", q.Stats())
	}
}

// TestReceiptForEarlierProcess: after a restart, a receipt for scans this
// process has not published (the last one did) deletes them from the
// buffer, and they are not published again.
func TestReceiptForEarlierProcess(t *testing.T) {
	q, recs := fillQueue(t, 5)
	r := newReceipts("hub-1", time.Minute, q, slog.New(slog.DiscardHandler))
	r.published(recs[4], time.Now()) // this process published only seq 5
	if n := r.apply(receiptJSON("hub-1", [2]uint64{1, 3})); n != 3 {
		t.Fatalf("deleted %d, want 3", n)
	}
	waitFor(t, "the deletes", func() bool { return q.Stats().Depth == 2 })
	if r.published(recs[0], time.Now()) {
		t.Fatal("a receipted scan would be published")
	}
	if !r.published(recs[3], time.Now()) {
		t.Fatal("seq 4 has no receipt and must be published")
	}
}

// TestWaitingListStaysSmall: behind one scan whose receipt does not come,
// thousands are published and receipted; the list of waiting scans does
// not keep them.
func TestWaitingListStaysSmall(t *testing.T) {
	q, recs := fillQueue(t, 2)
	r := newReceipts("hub-1", time.Hour, q, slog.New(slog.DiscardHandler))
	now := time.Now()
	r.published(recs[0], now)
	r.pubacked(recs[0]) // waits for ever
	for i := range 10000 {
		rec := buffer.Record{Seq: uint64(100 + i)}
		r.published(rec, now)
		r.pubacked(rec)
		r.take(rec.Seq, rec.Seq)
	}
	if n := len(r.order); n > 200 {
		t.Fatalf("the waiting list holds %d entries for 1 scan waiting", n)
	}
}

// TestReceiptOfManyRangesIsBounded: a receipt of thousands of ranges that
// name nothing waiting looks at a bounded number of buffer records, and
// deletes nothing.
func TestReceiptOfManyRangesIsBounded(t *testing.T) {
	q, _ := fillQueue(t, 3)
	r := newReceipts("hub-1", time.Minute, q, slog.New(slog.DiscardHandler))
	ranges := make([][2]uint64, 5000)
	for i := range ranges {
		ranges[i] = [2]uint64{1, 3}
	}
	r.claim(1) // as if receipted before: the ranges find nothing new
	r.claim(2)
	r.claim(3)
	if n := r.apply(receiptJSON("hub-1", ranges...)); n != 0 {
		t.Fatalf("deleted %d", n)
	}
	if got, left := r.fromBuffer(1, 3, 2); len(got) != 0 || left != 0 {
		t.Fatalf("fromBuffer with a budget of 2: %d found, %d left", len(got), left)
	}
	if q.Stats().Depth != 3 || r.bad[BadUnknown] != 1 {
		t.Fatalf("depth %d, bad %v", q.Stats().Depth, r.bad)
	}
}
