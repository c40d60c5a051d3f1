package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/scanagent/scanagent/agent/internal/ratelog"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/buffer"
)

// ReceiptSchema is the schema name of a receipt.
const ReceiptSchema = "scanagent.receipt/v1"

// Receipt is what a receiver publishes on the receipt topic once it has
// stored scans: their seqs, as ranges of first and last seq.
type Receipt struct {
	Schema   string      `json:"schema"`
	Agent    string      `json:"agent"`
	Ranges   [][2]uint64 `json:"ranges"`
	Receiver string      `json:"receiver"`
	StoredAt string      `json:"stored_at"`
}

// Reasons a receipt is ignored.
const (
	BadMalformed = "malformed"       // not JSON, or not a receipt
	BadSchema    = "schema"          // another schema
	BadAgent     = "other_agent"     // names another agent
	BadRange     = "bad_range"       // no ranges, a reversed one, or seq 0
	BadBeyond    = "beyond_last_seq" // a seq this agent never assigned
	BadUnknown   = "unknown_seq"     // nothing waiting under its seqs (a second receipt, or another agent's)
	BadOverflow  = "overflow"        // receipts came faster than they were applied
)

// maxUnreceipted caps the scans published and not yet receipted: past it
// the uplink publishes nothing new until receipts come or scans are due
// again, so that a receiver that is down does not make the agent flood
// the broker with its whole backlog, nor hold it all in memory.
const maxUnreceipted = 8192

// maxReceiptScan caps the buffer records one receipt looks up, over all
// its ranges, beyond what this process published (a receipt for scans
// published before a restart): a receipt of many ranges costs no more.
const maxReceiptScan = 10_000

// pending is a scan published under receipts.
type pending struct {
	rec       buffer.Record
	first     time.Time // its first publish in this process
	pubacked  bool      // a PUBACK came for it at least once
	sent      time.Time // its last publish
	acked     bool      // the broker's PUBACK came: waiting for the receipt
	receipted bool      // deleted: a receipt named it
}

// receipts keeps the scans published and not yet receipted: in flight
// (no PUBACK yet) and waiting (PUBACK, no receipt). A receipt deletes the
// scans it names from the buffer, whether their PUBACK came or not; a
// waiting scan whose receipt has not come within the timeout is published
// again. Safe for concurrent use: the pump, the acker and the receipt loop
// share it.
type receipts struct {
	agent   string
	timeout time.Duration
	q       Queue
	log     *slog.Logger
	in      chan []byte // receipt payloads from paho's goroutine
	changed chan struct{}

	mu          sync.Mutex
	pending     map[uint64]*pending
	gone        map[uint64]struct{} // deleted by a receipt: never published again
	goneRing    []uint64            // gone's seqs, oldest first (it keeps the last goneKeep)
	order       []*pending          // waiting, in the order of their PUBACKs (receipted ones skipped lazily)
	receipted   uint64
	republished uint64
	bad         map[string]uint64
	errLog      ratelog.Limiter
}

func newReceipts(agent string, timeout time.Duration, q Queue, log *slog.Logger) *receipts {
	return &receipts{agent: agent, timeout: timeout, q: q, log: log, in: make(chan []byte, 1024), changed: make(chan struct{}, 1),
		pending: map[uint64]*pending{}, gone: map[uint64]struct{}{}, bad: map[string]uint64{}, errLog: ratelog.Limiter{Every: 30 * time.Second}}
}

// deliver hands a receipt payload over from paho's goroutine; it never
// blocks.
func (r *receipts) deliver(payload []byte) {
	select {
	case r.in <- payload:
	default:
		r.ignore(BadOverflow, "receipts arrive faster than they are applied; the scans they name are published again after mqtt.receipts.timeout")
	}
}

// goneKeep is how many receipted seqs are remembered: the buffer hides a
// deleted record from readers at once, so only the records the pump had
// read just before (a page) can come back.
const goneKeep = 16384

// markGone remembers a receipted seq. r.mu is held.
func (r *receipts) markGone(seq uint64) {
	r.gone[seq] = struct{}{}
	r.goneRing = append(r.goneRing, seq)
	if len(r.goneRing) > goneKeep {
		delete(r.gone, r.goneRing[0])
		r.goneRing = r.goneRing[1:]
	}
}

// published records a publish (or a publish again) of rec; false when a
// receipt deleted it meanwhile: it must not be published.
func (r *receipts) published(rec buffer.Record, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.gone[rec.Seq]; ok {
		return false
	}
	p := r.pending[rec.Seq]
	if p == nil {
		p = &pending{rec: rec, first: now}
		r.pending[rec.Seq] = p
	}
	p.sent, p.acked = now, false
	return true
}

// pubacked records rec's PUBACK: it now waits for its receipt.
func (r *receipts) pubacked(rec buffer.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[rec.Seq]
	if p == nil || p.receipted || p.acked {
		return
	}
	p.acked, p.pubacked = true, true
	if len(r.order) > 2*len(r.pending)+64 {
		// Receipted scans leave the list only as due passes them; behind a
		// scan that waits long, drop them here so the list stays near the
		// number waiting.
		r.order = slices.DeleteFunc(r.order, func(q *pending) bool { return q.receipted || !q.acked || r.pending[q.rec.Seq] != q })
	}
	r.order = append(r.order, p)
	if len(r.order) == 1 {
		r.kick() // the pump may be idle with no scan due: now one will be
	}
}

// kick wakes the pump (without blocking).
func (r *receipts) kick() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// sessionEnded forgets the publishes of a session that ended without
// their PUBACK: the next session publishes them again from the buffer.
func (r *receipts) sessionEnded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for seq, p := range r.pending {
		if !p.acked {
			delete(r.pending, seq)
		}
	}
}

// skip reports whether the pump passes over rec: it waits for its receipt
// and is not due again yet (or is in flight).
func (r *receipts) skip(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[seq]
	return ok
}

// full reports whether the cap of unreceipted scans is reached.
func (r *receipts) full() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending) >= maxUnreceipted
}

// due returns up to limit waiting scans whose receipt is overdue at now,
// oldest first, and when the next one falls due (zero: none waiting).
func (r *receipts) due(now time.Time, limit int) (recs []buffer.Record, next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for ; i < len(r.order); i++ {
		p := r.order[i]
		if p.receipted || !p.acked || r.pending[p.rec.Seq] != p {
			continue // deleted, or in flight again (listed anew at its PUBACK)
		}
		if now.Sub(p.sent) < r.timeout {
			next = p.sent.Add(r.timeout)
			break
		}
		if len(recs) == limit {
			next = now
			break
		}
		// In flight again from here: if the session ends before it is
		// published, sessionEnded forgets it and the next session
		// publishes it from the buffer.
		p.acked = false
		recs = append(recs, p.rec)
	}
	r.order = r.order[i:]
	return recs, next
}

// apply acts on one receipt payload; it returns the scans it deleted.
func (r *receipts) apply(payload []byte) int {
	var rc Receipt
	if err := json.Unmarshal(payload, &rc); err != nil {
		r.ignore(BadMalformed, fmt.Sprintf("not a receipt: %v", err))
		return 0
	}
	switch {
	case rc.Schema != ReceiptSchema:
		r.ignore(BadSchema, fmt.Sprintf("schema %q, want %q", rc.Schema, ReceiptSchema))
		return 0
	case rc.Agent != r.agent:
		r.ignore(BadAgent, fmt.Sprintf("for agent %q, this is %q: check the receiver's receipt topic", rc.Agent, r.agent))
		return 0
	case len(rc.Ranges) == 0:
		r.ignore(BadRange, "no ranges")
		return 0
	}
	last := r.q.Durable()
	for _, rg := range rc.Ranges {
		switch {
		case rg[0] == 0 || rg[0] > rg[1]:
			r.ignore(BadRange, fmt.Sprintf("range [%d,%d] from %s", rg[0], rg[1], rc.Receiver))
			return 0
		case rg[1] > last:
			r.ignore(BadBeyond, fmt.Sprintf("range [%d,%d] from %s: the last seq stored here is %d", rg[0], rg[1], rc.Receiver, last))
			return 0
		}
	}
	var del []buffer.Record
	budget := maxReceiptScan
	for _, rg := range rc.Ranges {
		taken := r.take(rg[0], rg[1])
		del = append(del, taken...)
		// A range whose every seq was waiting here (the usual receipt of
		// live scans) needs no look at the buffer.
		if uint64(len(taken)) <= rg[1]-rg[0] && budget > 0 {
			var found []buffer.Record
			found, budget = r.fromBuffer(rg[0], rg[1], budget)
			del = append(del, found...)
		}
	}
	if len(del) == 0 {
		r.ignore(BadUnknown, fmt.Sprintf("ranges %v from %s name no scan waiting here (a second receipt?)", rc.Ranges, rc.Receiver))
		return 0
	}
	r.q.Ack(del...)
	r.mu.Lock()
	r.receipted += uint64(len(del))
	r.mu.Unlock()
	r.kick()
	return len(del)
}

// take marks the pending scans in [first, last] receipted and returns
// them.
func (r *receipts) take(first, last uint64) []buffer.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []buffer.Record
	mark := func(seq uint64, p *pending) {
		p.receipted = true
		delete(r.pending, seq)
		r.markGone(seq)
		out = append(out, p.rec)
	}
	if last-first < uint64(len(r.pending)) {
		for seq := first; ; seq++ {
			if p, ok := r.pending[seq]; ok {
				mark(seq, p)
			}
			if seq == last {
				break
			}
		}
	} else {
		for _, seq := range slices.Sorted(maps.Keys(r.pending)) {
			if seq >= first && seq <= last {
				mark(seq, r.pending[seq])
			}
		}
	}
	return out
}

// fromBuffer returns the records in [first, last] still in the buffer
// that this process has not published (published before a restart): the
// receiver stored them, so they are deleted too. It looks at no more than
// budget records, and returns what is left of it.
func (r *receipts) fromBuffer(first, last uint64, budget int) ([]buffer.Record, int) {
	var out []buffer.Record
	after := first - 1
	for budget > 0 {
		recs, err := r.q.Read(after, int(min(512, uint64(budget), last-after)))
		if err != nil || len(recs) == 0 {
			break
		}
		budget -= len(recs)
		for _, rec := range recs {
			if rec.Seq > last {
				return out, budget
			}
			if r.claim(rec.Seq) {
				out = append(out, rec)
			}
		}
		after = recs[len(recs)-1].Seq
		if after >= last {
			break
		}
	}
	return out, budget
}

// claim takes seq for deletion by a receipt unless it is pending (take
// deals with those) or already gone.
func (r *receipts) claim(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.pending[seq]; ok {
		return false
	}
	if _, ok := r.gone[seq]; ok {
		return false
	}
	r.markGone(seq)
	return true
}

// ignore counts a receipt left alone and logs it, at most once per
// reason every 30 s.
func (r *receipts) ignore(reason, detail string) {
	r.mu.Lock()
	r.bad[reason]++
	ok, held := r.errLog.Allow(reason, time.Now())
	r.mu.Unlock()
	if ok {
		r.log.Warn("receipt ignored; nothing deleted", "reason", reason, "detail", detail, "similar_suppressed", held)
	}
}

// stats is the receipts' part of the uplink status.
func (r *receipts) stats(now time.Time) *status.Receipts {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &status.Receipts{Unreceipted: len(r.pending), Receipted: r.receipted, Republished: r.republished, Bad: maps.Clone(r.bad)}
	var oldest time.Time
	for _, p := range r.pending {
		if oldest.IsZero() || p.first.Before(oldest) {
			oldest = p.first
		}
	}
	if !oldest.IsZero() {
		s.OldestAge = now.Sub(oldest).Seconds()
	}
	return s
}

// overdue reports whether a scan the broker acknowledged was first
// published longer than the timeout ago and still has no receipt:
// PUBACKs come, receipts do not.
func (r *receipts) overdue(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pending {
		if p.pubacked && now.Sub(p.first) >= r.timeout {
			return true
		}
	}
	return false
}

// countRepublished counts a scan published again for want of its receipt.
func (r *receipts) countRepublished() {
	r.mu.Lock()
	r.republished++
	r.mu.Unlock()
}

// receiptHandler takes the receipts paho delivers (on paho's goroutine).
func (u *Uplink) receiptHandler(_ mqtt.Client, m mqtt.Message) {
	if m.Topic() != u.cfg.Receipts.Topic {
		return
	}
	u.rc.deliver(append([]byte(nil), m.Payload()...))
}

// subscribeReceipts subscribes to the receipt topic at QoS 1.
func (u *Uplink) subscribeReceipts(ctx context.Context, c mqtt.Client) error {
	topic := u.cfg.Receipts.Topic
	tok := c.Subscribe(topic, 1, u.receiptHandler)
	if err := waitToken(ctx, tok, u.cfg.ConnectTimeout.D()); err != nil {
		return fmt.Errorf("subscribe to receipts on %s: %w", topic, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if code := st.Result()[topic]; code >= 0x80 {
			return fmt.Errorf("%w: the broker refused the subscription to %s (its ACL?)", errReceiptSubscription, topic)
		}
	}
	return nil
}

// errReceiptSubscription marks a broker that refused the receipt topic.
var errReceiptSubscription = errors.New("receipts cannot arrive")

// receiptLoop applies the receipts as they come, and follows whether they
// come at all: while PUBACKs arrive but the oldest published scan has had
// no receipt within the timeout, the state is no_receipts, with the likely
// causes as its hint.
func (u *Uplink) receiptLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-u.rc.in:
			u.rc.apply(p)
		case <-tick.C:
		}
		cur := u.st.Load().state
		switch overdue := u.rc.overdue(time.Now()); {
		case overdue && cur == status.UplinkConnected && u.connected.Load():
			u.setState(status.UplinkNoReceipts, nil, fmt.Sprintf("the broker acknowledges the scans, but no receipt came within mqtt.receipts.timeout (%v): "+
				"the broker may deny the scans topic by its ACL (an MQTT 3.1.1 broker still acknowledges a denied publish), "+
				"the receiver may be down or behind, or it publishes receipts on another topic than %s; the scans are kept and published again",
				u.rc.timeout, u.cfg.Receipts.Topic))
			u.log.Warn("no receipts: scans are acknowledged by the broker but not receipted; they are kept and published again",
				"timeout", u.rc.timeout, "receipt_topic", u.cfg.Receipts.Topic)
		case !overdue && cur == status.UplinkNoReceipts && u.connected.Load():
			u.setState(status.UplinkConnected, nil, "")
			u.log.Info("receipts arrive again")
		}
	}
}
