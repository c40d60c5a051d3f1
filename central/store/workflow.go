package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// The station workflows' events (docs/WORKFLOWS.md): receptacle and
// cancel events, buffered by the agent and stored like scans (one row per
// id, ON CONFLICT (id) DO NOTHING), and the retained dispatch
// completeness, one row per agent and dispatch.

// Receptacle is a receptacle event (scanagent.receptacle/v1), its fields
// as the receptacles table's columns. Empty optional strings and nil
// pointers are stored as NULL.
type Receptacle struct {
	ID                   [16]byte
	Seq                  int64
	Agent, Site, Station string
	Workflow             string
	Receptacle           string // the S9 label
	Dispatch             string // its s9.dispatch
	Serial               *int32 // its s9.serial
	BagSession           *[16]byte
	Items, Cancelled     int64
	FirstItemSeq         *int64
	LastItemSeq          *int64
	ItemsGrams           int64
	DeclaredGrams        *int64
	MeasuredGrams        *int64
	WeightMismatch       *bool
	Operator             string
	OpenedAt, ClosedAt   time.Time
	ClosedBy             string
	Clock                string
	ReceivedAt           time.Time
	Payload              []byte // the event's JSON
	Topic                string // where it came from, for messages (not stored)
}

// Cancel is a cancel event (scanagent.cancel/v1): Cancels is the id of
// the scan it withdraws.
type Cancel struct {
	ID                   [16]byte
	Seq                  int64
	Agent, Site, Station string
	Cancels              [16]byte
	Barcode              string
	Operator             string
	CancelledAt          time.Time
	Clock                string
	ReceivedAt           time.Time
	Payload              []byte // the event's JSON
	Topic                string // where it came from, for messages (not stored)
}

// Dispatch is a retained P/dispatches/<S8> (scanagent.dispatch/v1);
// Cleared is the agent's empty payload when it forgot the dispatch
// (only Prefix, Dispatch and ReceivedAt are set): the row is marked
// expired.
type Dispatch struct {
	Prefix, Dispatch              string
	Agent, Site                   string
	Received, Missing, Duplicates []int32
	Highest                       *int32
	Complete                      bool
	FirstSeen, LastSeen           time.Time
	UpdatedAt                     time.Time
	Clock                         string
	Doc                           []byte
	ReceivedAt                    time.Time
	Cleared                       bool
}

const (
	insertReceptacle = `INSERT INTO receptacles (id, seq, agent, site, station, workflow, receptacle, dispatch, serial, bag_session,
    items, cancelled, first_item_seq, last_item_seq, items_grams, declared_grams, measured_grams, weight_mismatch,
    operator, opened_at, closed_at, closed_by, clock, received_at, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)
ON CONFLICT (id) DO NOTHING`

	insertCancel = `INSERT INTO cancels (id, seq, agent, site, station, cancels, barcode, operator, cancelled_at, clock, received_at, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO NOTHING`

	upsertDispatch = `INSERT INTO dispatches AS d (prefix, dispatch, agent, site, received, missing, duplicates, highest, complete,
    first_seen, last_seen, updated_at, clock, doc, received_at, expired_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, NULL)
ON CONFLICT (prefix, dispatch) DO UPDATE SET agent = excluded.agent, site = excluded.site, received = excluded.received,
    missing = excluded.missing, duplicates = excluded.duplicates, highest = excluded.highest, complete = excluded.complete,
    first_seen = excluded.first_seen, last_seen = excluded.last_seen, updated_at = excluded.updated_at,
    clock = excluded.clock, doc = excluded.doc, received_at = excluded.received_at, expired_at = NULL
WHERE excluded.updated_at >= d.updated_at`

	expireDispatch = `UPDATE dispatches SET expired_at = $3 WHERE prefix = $1 AND dispatch = $2 AND expired_at IS NULL`
)

// insertWorkflowEvents inserts b's receptacles, then its cancels, each in
// id order, pipelined (there are few: one per bag, one per cancel code).
func insertWorkflowEvents(ctx context.Context, tx pgx.Tx, b *Batch, res *Result) error {
	if len(b.Receptacles)+len(b.Cancels) == 0 {
		return nil
	}
	slices.SortFunc(b.Receptacles, func(x, y Receptacle) int { return bytes.Compare(x.ID[:], y.ID[:]) })
	slices.SortFunc(b.Cancels, func(x, y Cancel) int { return bytes.Compare(x.ID[:], y.ID[:]) })
	var pb pgx.Batch
	for i := range b.Receptacles {
		r := &b.Receptacles[i]
		pb.Queue(insertReceptacle, r.ID, r.Seq, r.Agent, r.Site, r.Station, r.Workflow, null(r.Receptacle), null(r.Dispatch),
			r.Serial, uuidOrNull(r.BagSession), r.Items, r.Cancelled, r.FirstItemSeq, r.LastItemSeq, r.ItemsGrams,
			r.DeclaredGrams, r.MeasuredGrams, r.WeightMismatch, null(r.Operator), r.OpenedAt, r.ClosedAt, r.ClosedBy,
			null(r.Clock), r.ReceivedAt, json.RawMessage(r.Payload))
	}
	for i := range b.Cancels {
		c := &b.Cancels[i]
		pb.Queue(insertCancel, c.ID, c.Seq, c.Agent, c.Site, c.Station, c.Cancels, c.Barcode, null(c.Operator),
			c.CancelledAt, null(c.Clock), c.ReceivedAt, json.RawMessage(c.Payload))
	}
	br := tx.SendBatch(ctx, &pb)
	for i := range len(b.Receptacles) + len(b.Cancels) {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			what := "receptacles"
			if i >= len(b.Receptacles) {
				what = "cancels"
			}
			return fmt.Errorf("insert %s: %w", what, err)
		}
		if i < len(b.Receptacles) {
			res.InsertedReceptacles += tag.RowsAffected()
		} else {
			res.InsertedCancels += tag.RowsAffected()
		}
	}
	return br.Close()
}

// upsertDispatches applies dispatch states in key order; a document older
// than the row's (updated_at) changes nothing.
func upsertDispatches(ctx context.Context, tx pgx.Tx, ds []Dispatch) error {
	slices.SortStableFunc(ds, func(x, y Dispatch) int { return cmpStrings(x.Prefix, y.Prefix, x.Dispatch, y.Dispatch) })
	var pb pgx.Batch
	for i := range ds {
		d := &ds[i]
		if d.Cleared {
			pb.Queue(expireDispatch, d.Prefix, d.Dispatch, d.ReceivedAt)
			continue
		}
		pb.Queue(upsertDispatch, d.Prefix, d.Dispatch, d.Agent, d.Site, nonNil(d.Received), nonNil(d.Missing), nonNil(d.Duplicates),
			d.Highest, d.Complete, d.FirstSeen, d.LastSeen, d.UpdatedAt, null(d.Clock), json.RawMessage(d.Doc), d.ReceivedAt)
	}
	return tx.SendBatch(ctx, &pb).Close()
}

// nonNil makes a nil slice an empty array, not NULL.
func nonNil(a []int32) []int32 {
	if a == nil {
		return []int32{}
	}
	return a
}
