package uplink

import "github.com/scanagent/scanagent/buffer"

// Delivery is told of each scan the broker acknowledged (PUBACK) and each
// one a receipt deleted: the technician console. It must not wait.
type Delivery interface {
	Published(seq uint64)
	Receipted(seq uint64)
}

func (u *Uplink) published1(seq uint64) {
	if u.delivery != nil {
		u.delivery.Published(seq)
	}
}

// receiptedQueue is the queue the receipts delete from: each record
// acknowledged there was receipted.
func receiptedQueue(q Queue, d Delivery) Queue {
	if d == nil {
		return q
	}
	return tellingQueue{Queue: q, d: d}
}

type tellingQueue struct {
	Queue
	d Delivery
}

func (q tellingQueue) Ack(recs ...buffer.Record) {
	q.Queue.Ack(recs...)
	for _, r := range recs {
		q.d.Receipted(r.Seq)
	}
}
