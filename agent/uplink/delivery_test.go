package uplink

import (
	"slices"
	"testing"

	"github.com/scanagent/scanagent/buffer"
)

type recordingDelivery struct{ published, receipted []uint64 }

func (d *recordingDelivery) Published(seq uint64) { d.published = append(d.published, seq) }
func (d *recordingDelivery) Receipted(seq uint64) { d.receipted = append(d.receipted, seq) }

type ackQueue struct {
	Queue
	acked []uint64
}

func (q *ackQueue) Ack(recs ...buffer.Record) {
	for _, r := range recs {
		q.acked = append(q.acked, r.Seq)
	}
}

// TestReceiptedQueue: what the receipts delete is told as receipted,
// after the buffer has it; without a Delivery the queue is the buffer's.
func TestReceiptedQueue(t *testing.T) {
	q := &ackQueue{}
	if receiptedQueue(q, nil) != Queue(q) {
		t.Fatal("a queue wrapped for nobody")
	}
	d := &recordingDelivery{}
	receiptedQueue(q, d).Ack(buffer.Record{Seq: 4}, buffer.Record{Seq: 5})
	if !slices.Equal(q.acked, []uint64{4, 5}) || !slices.Equal(d.receipted, []uint64{4, 5}) || len(d.published) != 0 {
		t.Fatalf("acked %v, receipted %v", q.acked, d.receipted)
	}
}
