package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/scanagent/scanagent/central/store"
)

// TestWriteStationContext: the scan's receptacle, bag_session and
// operator columns, by every write method, NULL when absent.
func TestWriteStationContext(t *testing.T) {
	for _, m := range []store.Method{store.MethodCopy, store.MethodUnnest, store.MethodInserts} {
		t.Run(string(m), func(t *testing.T) {
			s := open(t, pg.NewDB(t), m)
			ctx := context.Background()
			bag := [16]byte(uuid.Must(uuid.NewV7()))
			a, b, c := scan(1), scan(2), scan(3)
			a.Receptacle, a.Operator = "BEBRUABOLPBBAEN60073003000227", "OP0042"
			b.BagSession = &bag
			if res, err := s.Write(ctx, &store.Batch{Scans: []store.Scan{a, b, c}}); err != nil || res.Inserted != 3 {
				t.Fatalf("%+v, %v", res, err)
			}
			rows, err := s.Pool().Query(ctx, "SELECT seq, coalesce(receptacle, '-'), coalesce(bag_session::text, '-'), coalesce(operator, '-') FROM scans ORDER BY seq")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for rows.Next() {
				var seq int64
				var r, bs, op string
				if err := rows.Scan(&seq, &r, &bs, &op); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%d %s %s %s", seq, r, bs, op))
			}
			want := []string{"1 BEBRUABOLPBBAEN60073003000227 - OP0042", fmt.Sprintf("2 - %s -", uuid.UUID(bag)), "3 - - -"}
			if !slices.Equal(got, want) {
				t.Fatalf("rows\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestWriteWorkflowEvents: receptacles and cancels one row per id
// (duplicates counted out), the view marking cancelled scans, and the
// dispatches' latest state, expiry and return.
func TestWriteWorkflowEvents(t *testing.T) {
	s := open(t, pg.NewDB(t), "")
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	i32 := func(v int32) *int32 { return &v }
	i64 := func(v int64) *int64 { return &v }
	no := false
	sc1, sc2 := scan(1), scan(2)
	rc := store.Receptacle{
		ID: uuid.Must(uuid.NewV7()), Seq: 4, Agent: "hub-1", Site: "MSK", Station: "open-1", Workflow: "open_receptacles",
		Receptacle: "BEBRUABOLPBBAEN60073003000227", Dispatch: "BEBRUABOLPBBAEN60073", Serial: i32(3),
		Items: 2, Cancelled: 1, FirstItemSeq: i64(1), LastItemSeq: i64(2), ItemsGrams: 2468,
		DeclaredGrams: i64(22700), MeasuredGrams: i64(22815), WeightMismatch: &no, Operator: "OP0042",
		OpenedAt: t0.Add(-time.Minute), ClosedAt: t0, ClosedBy: "label", Clock: "synced", ReceivedAt: t0,
		Payload: []byte(`{"schema":"scanagent.receptacle/v1"}`),
	}
	bag := [16]byte(uuid.Must(uuid.NewV7()))
	filled := store.Receptacle{
		ID: uuid.Must(uuid.NewV7()), Seq: 5, Agent: "hub-1", Site: "MSK", Station: "bag-1", Workflow: "fill_receptacles",
		BagSession: &bag, OpenedAt: t0, ClosedAt: t0, ClosedBy: "idle", ReceivedAt: t0, Payload: []byte(`{}`),
	}
	cn := store.Cancel{ID: uuid.Must(uuid.NewV7()), Seq: 3, Agent: "hub-1", Site: "MSK", Station: "open-1", Cancels: sc2.ID,
		Barcode: sc2.Barcode, Operator: "OP0042", CancelledAt: t0, ReceivedAt: t0, Payload: []byte(`{"schema":"scanagent.cancel/v1"}`)}
	disp := store.Dispatch{Prefix: "p/hub-1", Dispatch: "BEBRUABOLPBBAEN60073", Agent: "hub-1", Site: "MSK",
		Received: []int32{1, 2, 3, 5}, Missing: []int32{4}, Duplicates: []int32{2}, Highest: i32(5),
		FirstSeen: t0.Add(-time.Hour), LastSeen: t0, UpdatedAt: t0, Clock: "synced", Doc: []byte(`{"complete":false}`), ReceivedAt: t0}
	older := disp
	older.Received, older.Missing, older.Duplicates, older.Highest, older.UpdatedAt = []int32{1}, nil, nil, nil, t0.Add(-time.Minute)

	res, err := s.Write(ctx, &store.Batch{Scans: []store.Scan{sc1, sc2}, Receptacles: []store.Receptacle{rc, filled},
		Cancels: []store.Cancel{cn}, Dispatches: []store.Dispatch{disp, older}})
	if err != nil || res.Inserted != 2 || res.InsertedReceptacles != 2 || res.InsertedCancels != 1 {
		t.Fatalf("first batch: %+v, %v", res, err)
	}
	// Sent again: nothing new.
	res, err = s.Write(ctx, &store.Batch{Receptacles: []store.Receptacle{rc}, Cancels: []store.Cancel{cn, cn}})
	if err != nil || res.InsertedReceptacles != 0 || res.InsertedCancels != 0 {
		t.Fatalf("again: %+v, %v", res, err)
	}

	q := func(query string, dest ...any) {
		t.Helper()
		if err := s.Pool().QueryRow(ctx, query).Scan(dest...); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
	var dispatch, closedBy, operator string
	var serial, items, cancelled int
	var mismatch bool
	q(`SELECT dispatch, serial, items, cancelled, closed_by, operator, weight_mismatch FROM receptacles WHERE seq = 4`,
		&dispatch, &serial, &items, &cancelled, &closedBy, &operator, &mismatch)
	if dispatch != "BEBRUABOLPBBAEN60073" || serial != 3 || items != 2 || cancelled != 1 || closedBy != "label" || operator != "OP0042" || mismatch {
		t.Fatalf("receptacle row: %s %d %d %d %s %s %v", dispatch, serial, items, cancelled, closedBy, operator, mismatch)
	}
	var nulls int
	q(`SELECT count(*) FROM receptacles WHERE seq = 5 AND receptacle IS NULL AND dispatch IS NULL AND serial IS NULL
		AND first_item_seq IS NULL AND declared_grams IS NULL AND weight_mismatch IS NULL AND operator IS NULL AND clock IS NULL
		AND bag_session = '`+uuid.UUID(bag).String()+`'`, &nulls)
	if nulls != 1 {
		t.Fatal("the fill_receptacles row without a label: optional columns not NULL")
	}
	var marked, unmarked int
	var by string
	q(`SELECT count(*) FILTER (WHERE cancelled), count(*) FILTER (WHERE NOT cancelled), max(cancelled_by) FROM scans_with_cancel`, &marked, &unmarked, &by)
	var cancelledSeq int64
	q(`SELECT seq FROM scans_with_cancel WHERE cancelled`, &cancelledSeq)
	if marked != 1 || unmarked != 1 || by != "OP0042" || cancelledSeq != 2 {
		t.Fatalf("scans_with_cancel: %d cancelled (seq %d, by %q), %d not", marked, cancelledSeq, by, unmarked)
	}

	dispatchRow := func() string {
		t.Helper()
		var received, missing, dups []int32
		var highest *int32
		var complete, expired bool
		q(`SELECT received, missing, duplicates, highest, complete, expired_at IS NOT NULL FROM dispatches WHERE prefix = 'p/hub-1' AND dispatch = 'BEBRUABOLPBBAEN60073'`,
			&received, &missing, &dups, &highest, &complete, &expired)
		h := "null"
		if highest != nil {
			h = fmt.Sprint(*highest)
		}
		return fmt.Sprintf("%v %v %v %s %v expired=%v", received, missing, dups, h, complete, expired)
	}
	if got := dispatchRow(); got != "[1 2 3 5] [4] [2] 5 false expired=false" {
		t.Fatalf("dispatch after an older document in the same batch: %s", got)
	}
	// Complete; then expired; an older document does not bring it back,
	// a newer one does.
	done := disp
	done.Received, done.Missing, done.Complete, done.UpdatedAt = []int32{1, 2, 3, 4, 5}, []int32{}, true, t0.Add(time.Minute)
	for _, step := range []struct {
		d    store.Dispatch
		want string
	}{
		{done, "[1 2 3 4 5] [] [2] 5 true expired=false"},
		{store.Dispatch{Prefix: "p/hub-1", Dispatch: "BEBRUABOLPBBAEN60073", Cleared: true, ReceivedAt: t0.Add(2 * time.Minute)}, "[1 2 3 4 5] [] [2] 5 true expired=true"},
		{disp, "[1 2 3 4 5] [] [2] 5 true expired=true"},
		{func() store.Dispatch { d := older; d.UpdatedAt = t0.Add(time.Hour); return d }(), "[1] [] [] null false expired=false"},
	} {
		if _, err := s.Write(ctx, &store.Batch{Dispatches: []store.Dispatch{step.d}}); err != nil {
			t.Fatal(err)
		}
		if got := dispatchRow(); got != step.want {
			t.Fatalf("dispatch: %s, want %s", got, step.want)
		}
	}
	// Clearing a dispatch never stored is no error.
	if _, err := s.Write(ctx, &store.Batch{Dispatches: []store.Dispatch{{Prefix: "p/x", Dispatch: "INBOMAJPKWSAAUY60597", Cleared: true, ReceivedAt: t0}}}); err != nil {
		t.Fatal(err)
	}
}
