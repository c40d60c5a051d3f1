// Package store owns the receiver's PostgreSQL side: the schema and its
// versioned migrations (embedded, applied under an advisory lock so that
// receivers starting together do not race), and the writes of a batch in
// one transaction: scans (INSERT ... ON CONFLICT (id) DO NOTHING),
// rejected messages, and the agents' and devices' latest states. It is
// imported by central/receiver and cmd/scanreceiver; it knows nothing of
// MQTT.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Method is how a batch's scans reach the scans table.
type Method string

// The write methods, measured by BenchmarkWrite (docs/CENTRAL.md).
const (
	// MethodCopy copies the batch into a temporary table with COPY, then
	// INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING from it.
	MethodCopy Method = "copy"
	// MethodUnnest sends each column as one array parameter of a single
	// INSERT ... SELECT FROM unnest(...) ON CONFLICT (id) DO NOTHING.
	MethodUnnest Method = "unnest"
	// MethodInserts pipelines one INSERT ... ON CONFLICT per scan.
	MethodInserts Method = "inserts"
)

// DefaultMethod is the fastest method measured on the reference machine.
const DefaultMethod = MethodUnnest

// Options configure Open.
type Options struct {
	URL      string // a postgres:// URL or a key=value DSN
	Password string // when not empty, used instead of any in URL, PGPASSWORD or .pgpass
	MaxConns int32  // pool size; 0 means 4
	Method   Method // "" means DefaultMethod
	Log      *slog.Logger
	// AppName is the connections' application_name (pg_stat_activity),
	// "scanreceiver" when empty.
	AppName string
}

// Store is a pool of connections to the receiver's database.
type Store struct {
	pool   *pgxpool.Pool
	method Method
	log    *slog.Logger
}

// Open checks the options and creates the pool; it does not connect yet
// (Migrate and Ping do).
func Open(opts Options) (*Store, error) {
	pc, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if opts.Password != "" {
		pc.ConnConfig.Password = opts.Password
	}
	pc.MaxConns = 4
	if opts.MaxConns > 0 {
		pc.MaxConns = opts.MaxConns
	}
	pc.MinConns = 0
	pc.HealthCheckPeriod = 10 * time.Second
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "scanreceiver"
	if opts.AppName != "" {
		pc.ConnConfig.RuntimeParams["application_name"] = opts.AppName
	}
	m := opts.Method
	switch m {
	case "":
		m = DefaultMethod
	case MethodCopy, MethodUnnest, MethodInserts:
	default:
		return nil, fmt.Errorf("unknown write method %q", m)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, method: m, log: log}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Pool is the connection pool, for queries beyond the receiver's own.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.pool.Ping(ctx)
}

// Scan is one valid scan event, its fields as the scans table's columns.
// Empty optional strings and a nil WeightGrams are stored as NULL.
type Scan struct {
	ID                   [16]byte
	Seq                  int64
	Agent, Site, Station string
	Event                string
	ScannedAt            time.Time
	Barcode, AIM, Kind   string
	Valid                bool
	Reason               string
	WeightGrams          *int64
	WeightStatus         string
	// The station context (docs/WORKFLOWS.md): the open receptacle's S9
	// label, the bag session (nil when none), the operator.
	Receptacle string
	BagSession *[16]byte
	Operator   string
	ReceivedAt time.Time
	Payload    []byte // the event's JSON
	Topic      string // where it came from, for messages (not stored)
}

// Rejected is a message that could not be stored as what its topic says.
type Rejected struct {
	ReceivedAt time.Time
	Topic      string
	Reason     string
	Agent      string // "" when unreadable
	Seq        int64  // 0 when unreadable
	Payload    []byte
}

// Status is an agent's retained P/status.
type Status struct {
	Prefix, Agent, Site, State, Version string
	Since, ReceivedAt                   time.Time
	// Session is the status's session number (0: an agent without them).
	Session int64
}

// Health is an agent's P/health document and the figures taken from it.
type Health struct {
	Prefix, Agent, Site string
	Time                time.Time
	BufferDepth         int64
	BufferOldestAge     float64 // seconds
	BufferLastSeq       int64
	Doc                 []byte
	ReceivedAt          time.Time
}

// Device is a retained P/devices/<station>/<device> state; Cleared is its
// removal (a zero-byte payload).
type Device struct {
	Prefix, Station, Device string
	Port, State, Reason     string
	Since, ReceivedAt       time.Time
	Cleared                 bool
}

// Batch is what one transaction writes. Write sorts its slices (by key,
// so that concurrent receivers lock rows in one order and never deadlock).
type Batch struct {
	Receiver string // the receiver's name, kept with rejected messages
	Scans    []Scan
	Rejected []Rejected
	Statuses []Status
	Healths  []Health
	Devices  []Device
	// The station workflows' events (workflow.go).
	Receptacles []Receptacle
	Cancels     []Cancel
	Dispatches  []Dispatch
}

// Len is the number of items in b.
func (b *Batch) Len() int {
	return len(b.Scans) + len(b.Rejected) + len(b.Statuses) + len(b.Healths) + len(b.Devices) +
		len(b.Receptacles) + len(b.Cancels) + len(b.Dispatches)
}

// Result is what a committed Write did.
type Result struct {
	Inserted int64 // new scans rows; the others of Scans were already stored
	// New receptacles and cancels rows; the others were already stored.
	InsertedReceptacles, InsertedCancels int64
}

// Write stores b in one transaction. On error nothing of b is stored.
func (s *Store) Write(ctx context.Context, b *Batch) (Result, error) {
	slices.SortFunc(b.Scans, func(x, y Scan) int { return bytes.Compare(x.ID[:], y.ID[:]) })
	slices.SortStableFunc(b.Statuses, func(x, y Status) int { return strings.Compare(x.Prefix, y.Prefix) })
	slices.SortStableFunc(b.Healths, func(x, y Health) int { return strings.Compare(x.Prefix, y.Prefix) })
	slices.SortStableFunc(b.Devices, func(x, y Device) int {
		return cmpStrings(x.Prefix, y.Prefix, x.Station, y.Station, x.Device, y.Device)
	})
	var res Result
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if len(b.Scans) > 0 {
			switch s.method {
			case MethodCopy:
				res.Inserted, err = insertCopy(ctx, tx, b.Scans)
			case MethodInserts:
				res.Inserted, err = insertEach(ctx, tx, b.Scans)
			default:
				res.Inserted, err = insertUnnest(ctx, tx, b.Scans)
			}
			if err != nil {
				return fmt.Errorf("insert scans: %w", err)
			}
		}
		if err := insertWorkflowEvents(ctx, tx, b, &res); err != nil {
			return err
		}
		if len(b.Rejected) > 0 {
			if err := insertRejected(ctx, tx, b.Receiver, b.Rejected); err != nil {
				return fmt.Errorf("insert rejected: %w", err)
			}
		}
		if len(b.Statuses)+len(b.Healths)+len(b.Devices) > 0 {
			if err := upsertStates(ctx, tx, b); err != nil {
				return fmt.Errorf("update agents and devices: %w", err)
			}
		}
		if len(b.Dispatches) > 0 {
			if err := upsertDispatches(ctx, tx, b.Dispatches); err != nil {
				return fmt.Errorf("update dispatches: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

func cmpStrings(pairs ...string) int {
	for i := 0; i+1 < len(pairs); i += 2 {
		if c := strings.Compare(pairs[i], pairs[i+1]); c != 0 {
			return c
		}
	}
	return 0
}

// IsDataError reports whether err is PostgreSQL refusing the data itself
// (SQLSTATE classes 22, data exception, and 23, integrity constraint
// violation): writing the same batch again fails the same way, so its
// items must be written one by one to find the culprit.
func IsDataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

const scanColumns = "id, seq, agent, site, station, event, scanned_at, barcode, aim, kind, valid, reason, weight_grams, weight_status, received_at, payload, " +
	"receptacle, bag_session, operator"

var scanColumnList = strings.Split(strings.ReplaceAll(scanColumns, " ", ""), ",")

// null maps "" to SQL NULL.
func null(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// uuidOrNull maps nil to SQL NULL.
func uuidOrNull(u *[16]byte) any {
	if u == nil {
		return nil
	}
	return *u
}

func scanRow(sc *Scan) []any {
	var grams any
	if sc.WeightGrams != nil {
		grams = *sc.WeightGrams
	}
	return []any{sc.ID, sc.Seq, sc.Agent, sc.Site, sc.Station, null(sc.Event), sc.ScannedAt, sc.Barcode,
		null(sc.AIM), sc.Kind, sc.Valid, null(sc.Reason), grams, null(sc.WeightStatus), sc.ReceivedAt, json.RawMessage(sc.Payload),
		null(sc.Receptacle), uuidOrNull(sc.BagSession), null(sc.Operator)}
}

func insertCopy(ctx context.Context, tx pgx.Tx, scans []Scan) (int64, error) {
	if _, err := tx.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS scans_in (LIKE scans) ON COMMIT DELETE ROWS"); err != nil {
		return 0, err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"scans_in"}, scanColumnList, pgx.CopyFromSlice(len(scans), func(i int) ([]any, error) {
		return scanRow(&scans[i]), nil
	})); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, "INSERT INTO scans ("+scanColumns+") SELECT "+scanColumns+" FROM scans_in ORDER BY id ON CONFLICT (id) DO NOTHING")
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

const insertOne = "INSERT INTO scans (" + scanColumns + ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19) ON CONFLICT (id) DO NOTHING"

func insertEach(ctx context.Context, tx pgx.Tx, scans []Scan) (int64, error) {
	var pb pgx.Batch
	for i := range scans {
		pb.Queue(insertOne, scanRow(&scans[i])...)
	}
	br := tx.SendBatch(ctx, &pb)
	var n int64
	for range scans {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return 0, err
		}
		n += tag.RowsAffected()
	}
	return n, br.Close()
}

const insertArrays = "INSERT INTO scans (" + scanColumns + ") SELECT * FROM unnest(" +
	"$1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], " +
	"$9::text[], $10::text[], $11::boolean[], $12::text[], $13::bigint[], $14::text[], $15::timestamptz[], $16::jsonb[], " +
	"$17::text[], $18::uuid[], $19::text[]" +
	") ON CONFLICT (id) DO NOTHING"

func insertUnnest(ctx context.Context, tx pgx.Tx, scans []Scan) (int64, error) {
	n := len(scans)
	var (
		ids                                   = make([][16]byte, n)
		seqs, grams                           = make([]int64, n), make([]*int64, n)
		agents, sites, stations, barcodes     = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		kinds                                 = make([]string, n)
		events, aims, reasons, weightStatuses = make([]*string, n), make([]*string, n), make([]*string, n), make([]*string, n)
		scanned, received                     = make([]time.Time, n), make([]time.Time, n)
		valid                                 = make([]bool, n)
		payloads                              = make([]json.RawMessage, n)
		receptacles, operators                = make([]*string, n), make([]*string, n)
		bagSessions                           = make([]*[16]byte, n)
	)
	ptr := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	for i := range scans {
		sc := &scans[i]
		ids[i], seqs[i], agents[i], sites[i], stations[i] = sc.ID, sc.Seq, sc.Agent, sc.Site, sc.Station
		events[i], scanned[i], barcodes[i], aims[i], kinds[i] = ptr(sc.Event), sc.ScannedAt, sc.Barcode, ptr(sc.AIM), sc.Kind
		valid[i], reasons[i], grams[i], weightStatuses[i] = sc.Valid, ptr(sc.Reason), sc.WeightGrams, ptr(sc.WeightStatus)
		received[i], payloads[i] = sc.ReceivedAt, json.RawMessage(sc.Payload)
		receptacles[i], bagSessions[i], operators[i] = ptr(sc.Receptacle), sc.BagSession, ptr(sc.Operator)
	}
	tag, err := tx.Exec(ctx, insertArrays, ids, seqs, agents, sites, stations, events, scanned, barcodes,
		aims, kinds, valid, reasons, grams, weightStatuses, received, payloads, receptacles, bagSessions, operators)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func insertRejected(ctx context.Context, tx pgx.Tx, receiver string, rs []Rejected) error {
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"rejected"},
		[]string{"received_at", "receiver", "topic", "reason", "agent", "seq", "payload"},
		pgx.CopyFromSlice(len(rs), func(i int) ([]any, error) {
			r := &rs[i]
			var seq any
			if r.Seq > 0 {
				seq = r.Seq
			}
			return []any{r.ReceivedAt, receiver, r.Topic, r.Reason, null(r.Agent), seq, r.Payload}, nil
		}))
	return err
}

const (
	// A status replaces the stored one when its session is newer; within
	// one session offline follows online, never the reverse (a late Last
	// Will of an old session, or an online replayed after its session
	// ended, is ignored: Sparkplug's bdSeq). Without session numbers on
	// both, the later since wins.
	upsertStatus = `INSERT INTO agents AS a (prefix, agent, site, status, status_since, version, status_at, status_session, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (prefix) DO UPDATE SET agent = excluded.agent, site = excluded.site, status = excluded.status,
    status_since = excluded.status_since, version = coalesce(excluded.version, a.version),
    status_at = excluded.status_at, status_session = excluded.status_session, updated_at = excluded.updated_at
WHERE CASE WHEN a.status_session IS NOT NULL AND excluded.status_session IS NOT NULL THEN
        excluded.status_session > a.status_session OR
        (excluded.status_session = a.status_session AND NOT (excluded.status = 'online' AND a.status = 'offline'))
    ELSE a.status_since IS NULL OR excluded.status_since >= a.status_since END`

	upsertHealth = `INSERT INTO agents AS a (prefix, agent, site, health, health_at, buffer_depth, buffer_oldest_age_seconds, buffer_last_seq, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
ON CONFLICT (prefix) DO UPDATE SET agent = excluded.agent, site = excluded.site, health = excluded.health,
    health_at = excluded.health_at, buffer_depth = excluded.buffer_depth,
    buffer_oldest_age_seconds = excluded.buffer_oldest_age_seconds, buffer_last_seq = excluded.buffer_last_seq,
    updated_at = excluded.updated_at
WHERE a.health_at IS NULL OR excluded.health_at >= a.health_at`

	upsertDevice = `INSERT INTO devices AS d (prefix, station, device, port, state, reason, since, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (prefix, station, device) DO UPDATE SET port = excluded.port, state = excluded.state,
    reason = excluded.reason, since = excluded.since, updated_at = excluded.updated_at
WHERE d.since IS NULL OR excluded.since >= d.since`

	deleteDevice = `DELETE FROM devices WHERE prefix = $1 AND station = $2 AND device = $3`
)

// upsertStates applies statuses, healths and devices in key order: agents
// rows first, then devices rows.
func upsertStates(ctx context.Context, tx pgx.Tx, b *Batch) error {
	var pb pgx.Batch
	i, j := 0, 0
	for i < len(b.Statuses) || j < len(b.Healths) { // merge by prefix
		if j == len(b.Healths) || i < len(b.Statuses) && b.Statuses[i].Prefix <= b.Healths[j].Prefix {
			st := &b.Statuses[i]
			var session *int64
			if st.Session > 0 {
				session = &st.Session
			}
			pb.Queue(upsertStatus, st.Prefix, st.Agent, st.Site, st.State, st.Since, null(st.Version), st.ReceivedAt, session)
			i++
		} else {
			h := &b.Healths[j]
			pb.Queue(upsertHealth, h.Prefix, h.Agent, h.Site, json.RawMessage(h.Doc), h.Time, h.BufferDepth, h.BufferOldestAge, h.BufferLastSeq)
			j++
		}
	}
	for _, d := range b.Devices {
		if d.Cleared {
			pb.Queue(deleteDevice, d.Prefix, d.Station, d.Device)
		} else {
			pb.Queue(upsertDevice, d.Prefix, d.Station, d.Device, d.Port, d.State, null(d.Reason), d.Since)
		}
	}
	return tx.SendBatch(ctx, &pb).Close()
}
