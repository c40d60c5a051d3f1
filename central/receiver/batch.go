package receiver

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/scanagent/scanagent/central/store"
)

// batcher collects deliveries into batches of up to batch_size, or what
// came within batch_wait of a batch's first message, and commits each.
// ctx ends the collecting; writeCtx bounds the writes (it outlives ctx by
// a few seconds, for the last batch).
//
// Up to receiver.writers batches are written at once, each on its own
// connection; each waits for the one before it to be acknowledged before
// acknowledging its own, so PUBACKs leave in the order the messages came.
func (r *Receiver) batcher(ctx, writeCtx context.Context) {
	size, wait := r.cfg.Receiver.BatchSize, r.cfg.Receiver.BatchWait.D()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	writers := make(chan struct{}, max(r.cfg.Receiver.Writers, 1))
	var wg sync.WaitGroup
	defer wg.Wait()
	prev := make(chan struct{})
	close(prev)
	for {
		var batch []delivery
		select {
		case d := <-r.in:
			batch = append(batch, d)
		case <-ctx.Done():
			return
		}
		timer.Reset(wait)
	fill:
		for len(batch) < size {
			select {
			case d := <-r.in:
				batch = append(batch, d)
			case <-timer.C:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		timer.Stop()
		writers <- struct{}{}
		done := make(chan struct{})
		wg.Add(1)
		go func(batch []delivery, prev <-chan struct{}) {
			defer wg.Done()
			defer func() { <-writers }()
			defer close(done)
			r.commit(ctx, writeCtx, batch, prev)
		}(batch, prev)
		prev = done
	}
}

// receiptKey is one agent behind one prefix.
type receiptKey struct{ prefix, agent string }

// Receipt is the payload published on P/receipts (scanagent.receipt/v1).
type Receipt struct {
	Schema   string     `json:"schema"`
	Agent    string     `json:"agent"`
	Ranges   [][2]int64 `json:"ranges"`
	Receiver string     `json:"receiver"`
	StoredAt string     `json:"stored_at"`
}

// ReceiptSchema names the receipt payload's schema.
const ReceiptSchema = "scanagent.receipt/v1"

// commit writes one batch, retrying until it is stored; then acknowledges
// its messages in arrival order and publishes the receipts.
// prev is closed once the batch before this one is through.
func (r *Receiver) commit(ctx, writeCtx context.Context, batch []delivery, prev <-chan struct{}) {
	b := &store.Batch{Receiver: r.cfg.Receiver.Name}
	receipts := map[receiptKey][]int64{}
	rejected := map[string]int{}
	states := map[string]int{}
	for _, d := range batch {
		topic, payload := d.msg.Topic(), d.msg.Payload()
		prefix, k, rest := topicOf(topic, r.levels)
		var rej *rejection
		switch k {
		case kindScan, kindReceptacle:
			var agent string
			var seq int64
			var rj *rejection
			if k == kindScan {
				var sc store.Scan
				var cn *store.Cancel
				sc, cn, agent, seq, rj = parseScan(payload, d.at)
				switch {
				case rj != nil:
				case cn != nil:
					cn.Topic = topic
					b.Cancels = append(b.Cancels, *cn)
				default:
					sc.Topic = topic
					b.Scans = append(b.Scans, sc)
				}
			} else {
				var rc store.Receptacle
				if rc, agent, seq, rj = parseReceptacle(payload, d.at); rj == nil {
					rc.Topic = topic
					b.Receptacles = append(b.Receptacles, rc)
				}
			}
			if agent != "" { // buffered events share the agent's seqs: one receipt
				key := receiptKey{prefix, agent}
				receipts[key] = append(receipts[key], seq)
			}
			rej = rj
			if rej != nil {
				b.Rejected = append(b.Rejected, store.Rejected{ReceivedAt: d.at, Topic: topic, Reason: rej.Error(), Agent: agent, Seq: seq, Payload: payload})
			}
		case kindStatus:
			var st store.Status
			if st, rej = parseStatus(prefix, payload, d.at); rej == nil {
				b.Statuses = append(b.Statuses, st)
				states["status"]++
			}
		case kindHealth:
			var h store.Health
			if h, rej = parseHealth(prefix, payload, d.at); rej == nil {
				b.Healths = append(b.Healths, h)
				states["health"]++
			}
		case kindDevice:
			var dev store.Device
			if dev, rej = parseDevice(prefix, rest[1], rest[2], payload, d.at); rej == nil {
				b.Devices = append(b.Devices, dev)
				states["device"]++
			}
		case kindDispatch:
			var dp store.Dispatch
			if dp, rej = parseDispatch(prefix, rest[1], payload, d.at); rej == nil {
				b.Dispatches = append(b.Dispatches, dp)
				if dp.Cleared {
					states["dispatch_expired"]++
				} else {
					states["dispatch"]++
				}
			}
		default:
			rej = reject("topic", "not a topic of the contract under %s", r.cfg.Receiver.PrefixFilter)
		}
		if rej != nil {
			rejected[rej.code]++
			if k != kindScan && k != kindReceptacle {
				b.Rejected = append(b.Rejected, store.Rejected{ReceivedAt: d.at, Topic: topic, Reason: rej.Error(), Payload: payload})
			}
		}
	}

	start := time.Now()
	nScans, nReceptacles, nCancels := len(b.Scans), len(b.Receptacles), len(b.Cancels)
	res, ok := r.write(ctx, writeCtx, batch, b)
	took := time.Since(start)
	<-prev
	if !ok {
		return
	}

	for _, d := range batch { // MQTT wants PUBACKs in the order the messages came
		if !d.sess.isLost() {
			d.msg.Ack()
		}
	}

	r.metrics.batches.Inc()
	r.metrics.batchSeconds.Observe(took.Seconds())
	r.metrics.batchSize.Observe(float64(len(batch)))
	r.metrics.stored.Add(float64(res.Inserted))
	dups := int64(nScans) - res.Inserted - int64(res.Isolated)
	r.metrics.duplicates.Add(float64(dups))
	r.metrics.workflowStored.WithLabelValues("receptacle").Add(float64(res.InsertedReceptacles))
	r.metrics.workflowStored.WithLabelValues("cancel").Add(float64(res.InsertedCancels))
	r.metrics.workflowDuplicates.WithLabelValues("receptacle").Add(float64(int64(nReceptacles) - res.InsertedReceptacles - int64(res.IsolatedReceptacles)))
	r.metrics.workflowDuplicates.WithLabelValues("cancel").Add(float64(int64(nCancels) - res.InsertedCancels - int64(res.IsolatedCancels)))
	for code, n := range rejected {
		r.metrics.rejected.WithLabelValues(code).Add(float64(n))
	}
	for _, rj := range res.Moved {
		r.metrics.rejected.WithLabelValues("database").Inc()
		r.log.Warn("event refused by the database: kept in the rejected table", "topic", rj.Topic, "reason", rj.Reason)
	}
	for kind, n := range states {
		r.metrics.states.WithLabelValues(kind).Add(float64(n))
	}
	r.stats.batches.Add(1)
	r.stats.stored.Add(uint64(res.Inserted))
	r.stats.duplicates.Add(uint64(dups))
	r.stats.rejected.Add(uint64(len(b.Rejected)))

	// Through the session the batch came in when it is still up: the
	// first batches after a reconnect commit before it is made current.
	s := batch[len(batch)-1].sess
	if s.isLost() {
		s = r.cur.Load()
	}
	r.publishReceipts(s, receipts, time.Now())
}

// writeResult is a committed write: the store's result, and what the
// database refused when the batch was written item by item.
type writeResult struct {
	store.Result
	Isolated int              // scans moved to rejected by the database's refusal
	Moved    []store.Rejected // those rows, and those of the other kinds
	// Receptacle and cancel events moved to rejected.
	IsolatedReceptacles, IsolatedCancels int
}

// write stores b, retrying with backoff while the database fails. It
// gives up (false) when ctx ends, or when every message of the batch came
// in a session that has since ended: the broker sends those again, and
// acknowledging them is no longer possible.
func (r *Receiver) write(ctx, writeCtx context.Context, batch []delivery, b *store.Batch) (writeResult, bool) {
	next := r.backoff()
	failing := false
	for {
		res, err := r.st.Write(writeCtx, b)
		if err == nil {
			if failing {
				r.log.Info("database writes work again")
			}
			return writeResult{Result: res}, true
		}
		if store.IsDataError(err) {
			if wr, err := r.writeEach(writeCtx, b); err == nil {
				return wr, true
			}
		}
		r.metrics.dbErrors.Inc()
		if !failing {
			r.log.Error("database write failed; holding the batch unacknowledged and retrying", "err", err, "messages", len(batch))
			failing = true
		}
		if ctx.Err() != nil || writeCtx.Err() != nil {
			r.log.Warn("stopping with a batch unwritten: the broker sends it again at the next start", "messages", len(batch))
			return writeResult{}, false
		}
		if allLost(batch) {
			r.metrics.abandoned.Inc()
			r.log.Warn("batch given up: its MQTT session ended, the broker sends it again", "messages", len(batch))
			return writeResult{}, false
		}
		if !sleep(ctx, min(next(), 5*time.Second)) {
			return writeResult{}, false
		}
	}
}

func allLost(batch []delivery) bool {
	for _, d := range batch {
		if !d.sess.isLost() {
			return false
		}
	}
	return true
}

// writeEach writes a batch the database refused item by item, each in its
// own transaction, to find what it refuses: a refused scan, receptacle,
// cancel, status, health, device or dispatch goes to the rejected table with the database's error,
// so that one bad message cannot hold back the others forever.
func (r *Receiver) writeEach(ctx context.Context, b *store.Batch) (writeResult, error) {
	var wr writeResult
	one := func(item *store.Batch, topic string, payload []byte, at time.Time) error {
		item.Receiver = b.Receiver
		res, err := r.st.Write(ctx, item)
		if err == nil {
			wr.Inserted += res.Inserted
			wr.InsertedReceptacles += res.InsertedReceptacles
			wr.InsertedCancels += res.InsertedCancels
			return nil
		}
		if !store.IsDataError(err) {
			return err
		}
		rj := store.Rejected{ReceivedAt: at, Topic: topic, Reason: "database: " + err.Error(), Payload: payload}
		if _, err := r.st.Write(ctx, &store.Batch{Receiver: b.Receiver, Rejected: []store.Rejected{rj}}); err != nil {
			return err
		}
		wr.Moved = append(wr.Moved, rj)
		return nil
	}
	for _, sc := range b.Scans {
		before := len(wr.Moved)
		if err := one(&store.Batch{Scans: []store.Scan{sc}}, sc.Topic, sc.Payload, sc.ReceivedAt); err != nil {
			return wr, err
		}
		wr.Isolated += len(wr.Moved) - before
	}
	for _, rc := range b.Receptacles {
		before := len(wr.Moved)
		if err := one(&store.Batch{Receptacles: []store.Receptacle{rc}}, rc.Topic, rc.Payload, rc.ReceivedAt); err != nil {
			return wr, err
		}
		wr.IsolatedReceptacles += len(wr.Moved) - before
	}
	for _, cn := range b.Cancels {
		before := len(wr.Moved)
		if err := one(&store.Batch{Cancels: []store.Cancel{cn}}, cn.Topic, cn.Payload, cn.ReceivedAt); err != nil {
			return wr, err
		}
		wr.IsolatedCancels += len(wr.Moved) - before
	}
	for _, rj := range b.Rejected {
		if err := one(&store.Batch{Rejected: []store.Rejected{rj}}, rj.Topic, rj.Payload, rj.ReceivedAt); err != nil {
			return wr, err
		}
	}
	for _, st := range b.Statuses {
		if err := one(&store.Batch{Statuses: []store.Status{st}}, st.Prefix+"/status", nil, st.ReceivedAt); err != nil {
			return wr, err
		}
	}
	for _, h := range b.Healths {
		if err := one(&store.Batch{Healths: []store.Health{h}}, h.Prefix+"/health", h.Doc, h.ReceivedAt); err != nil {
			return wr, err
		}
	}
	for _, d := range b.Devices {
		if err := one(&store.Batch{Devices: []store.Device{d}}, d.Prefix+"/devices/"+d.Station+"/"+d.Device, nil, d.ReceivedAt); err != nil {
			return wr, err
		}
	}
	for _, d := range b.Dispatches {
		if err := one(&store.Batch{Dispatches: []store.Dispatch{d}}, d.Prefix+"/dispatches/"+d.Dispatch, d.Doc, d.ReceivedAt); err != nil {
			return wr, err
		}
	}
	return wr, nil
}

// publishReceipts tells each agent which of its scans are stored. A
// receipt that cannot be published is counted and logged: the agent sends
// those scans again after its receipt timeout, and they are receipted
// then (as duplicates, they are still stored).
func (r *Receiver) publishReceipts(s *session, receipts map[receiptKey][]int64, storedAt time.Time) {
	if len(receipts) == 0 {
		return
	}
	if s == nil || s.isLost() {
		r.metrics.receiptFails.Add(float64(len(receipts)))
		r.log.Warn("receipts not published: no MQTT session", "agents", len(receipts))
		return
	}
	at := storedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	for key, seqs := range receipts {
		payload, err := json.Marshal(Receipt{Schema: ReceiptSchema, Agent: key.agent, Ranges: Ranges(seqs), Receiver: r.cfg.Receiver.Name, StoredAt: at})
		if err != nil {
			panic(err) // plain types only
		}
		tok := s.c.Publish(key.prefix+"/receipts", 1, false, payload)
		r.receiptsWG.Add(1)
		go func() {
			defer r.receiptsWG.Done()
			err := waitToken(context.Background(), tok, 30*time.Second)
			if err != nil {
				r.metrics.receiptFails.Inc()
				r.log.Warn("receipt not published", "topic", key.prefix+"/receipts", "err", err)
				return
			}
			r.metrics.receipts.Inc()
			r.stats.receipts.Add(1)
		}()
	}
}
