package buffer

import (
	"io/fs"
	"maps"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of the queue's state and counters.
type Stats struct {
	Depth     int64   `json:"depth"`      // records waiting for an acknowledgement
	Bytes     int64   `json:"bytes"`      // their bytes, as counted against max_bytes
	OldestAge float64 `json:"oldest_age"` // seconds since the oldest pending record was appended (0 if none)
	LastSeq   uint64  `json:"last_seq"`   // highest sequence assigned so far
	Full      bool    `json:"full"`       // max_bytes reached (dropping or rejecting)

	Appended uint64            `json:"appended"` // since open
	Acked    uint64            `json:"acked"`
	Commits  uint64            `json:"commits"`
	Dropped  map[string]uint64 `json:"dropped"`  // removed without delivery, by reason
	Rejected map[string]uint64 `json:"rejected"` // appends refused, by reason

	Sync LatencyStats `json:"sync"` // journal write + sync per commit

	JournalSegments int    `json:"journal_segments"`
	SegmentsRetired uint64 `json:"segments_retired"`
	Replayed        int    `json:"replayed"`             // journal records replayed into the store at open
	Quarantined     int    `json:"quarantined"`          // stores and journal segments moved aside (store.corrupt-*, journal.corrupt-*)
	Quarantine      string `json:"quarantine,omitempty"` // the store moved aside at this open, and why

	// JournalOnly counts the records durable in the journal alone, waiting
	// for their acknowledgement for less than SpillAfter (tail.go);
	// Spilled, the records copied into the store since open because they
	// waited longer.
	JournalOnly int    `json:"journal_only"`
	Spilled     uint64 `json:"spilled"`
	// StoreOpen is false while the store sleeps (it holds no record, and
	// is closed: sleep.go); StoreWakes counts its openings for a backlog.
	StoreOpen  bool   `json:"store_open"`
	StoreWakes uint64 `json:"store_wakes"`

	// Integrity: every record has two copies (journal and store) until it
	// is acknowledged, except those in JournalOnly.
	Parked         int64  `json:"parked"`          // records taken out of the queue (buffer export --parked)
	Restored       uint64 `json:"restored"`        // damaged store records restored from the journal
	CopiedBack     uint64 `json:"copied_back"`     // records copied back into the journal from the store
	JournalDamaged uint64 `json:"journal_damaged"` // damaged or missing journal segments found
	// Unrecoverable counts scans of which both copies were damaged or
	// missing; Loss lists each finding with its sequence ranges. They stay
	// reported until unrecoverable.jsonl is removed from the buffer
	// directory.
	Unrecoverable uint64       `json:"unrecoverable"`
	Loss          []LossRecord `json:"loss,omitempty"`

	// Disk: the free space on the buffer's filesystem, whether new scans
	// are refused for lack of it, and the reserve kept for the store's
	// flushes and compactions (see reserve.go).
	FreeBytes    int64 `json:"free_bytes"`
	DiskLow      bool  `json:"disk_low"`
	ReserveBytes int64 `json:"reserve_bytes"`
}

// Stats returns the current state. The oldest pending age is refreshed by
// maintenance (every MaintInterval).
func (q *Queue) Stats() Stats {
	s := Stats{
		Depth:           q.depth.Load(),
		Bytes:           q.bytes.Load(),
		LastSeq:         q.seqStat.Load(),
		Full:            q.full.Load(),
		Appended:        q.appended.Load(),
		Acked:           q.acked.Load(),
		Commits:         q.commits.Load(),
		Dropped:         q.dropped.snapshot(),
		Rejected:        q.rejected.snapshot(),
		Sync:            q.sync.snapshot(),
		JournalSegments: q.j.segments(),
		SegmentsRetired: q.retired.Load(),
		Replayed:        q.replayed,
		Spilled:         q.spilledRecs.Load(),
		Quarantined:     int(q.quarantined.Load()),
		Quarantine:      q.quarantineNote(),
		Parked:          q.parked.Load(),
		Restored:        q.restored.Load(),
		CopiedBack:      q.copied.Load(),
		JournalDamaged:  q.journalDmg.Load(),
		FreeBytes:       q.freeBytes.Load(),
		DiskLow:         q.diskLow.Load(),
		ReserveBytes:    q.reserveBytes.Load(),
	}
	s.Unrecoverable, s.Loss = q.lossSnapshot()
	_, s.JournalOnly = q.unspilled()
	if _, release, awake := q.peekStore(); awake {
		release()
		s.StoreOpen = true
	}
	s.StoreWakes = q.wakes.Load()
	if t := q.oldestNs.Load(); s.Depth > 0 && t != 0 {
		s.OldestAge = max(0, q.now().Sub(time.Unix(0, t)).Seconds())
	}
	return s
}

// oldestTime is the append time of the first pending record.
func (q *Queue) oldestTime() (time.Time, bool) {
	recs, err := q.Read(0, 1)
	if err != nil || len(recs) == 0 {
		return time.Time{}, false
	}
	return recs[0].Time, true
}

// firstKey returns the lowest sequence present in the store (pending
// deletion or not), or 0 when empty or asleep.
func (q *Queue) firstKey() uint64 {
	db, release, ok := q.peekStore()
	if !ok {
		return 0
	}
	defer release()
	return q.firstKeyIn(db)
}

// counters are named counters (drop and reject reasons).
type counters struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *counters) add(name string, n uint64) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[name] += n
	c.mu.Unlock()
}

func (c *counters) get(name string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name]
}

func (c *counters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// LatencyBounds are the upper bounds (seconds) of the sync latency buckets.
var LatencyBounds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5}

// LatencyStats is a cumulative histogram of durations.
type LatencyStats struct {
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`     // seconds
	Max     float64  `json:"max"`     // seconds
	Buckets []uint64 `json:"buckets"` // cumulative counts for LatencyBounds, then +Inf
}

type latency struct {
	count   atomic.Uint64
	sumNs   atomic.Int64
	maxNs   atomic.Int64
	buckets [len(LatencyBounds) + 1]atomic.Uint64
}

func (l *latency) observe(d time.Duration) {
	l.count.Add(1)
	l.sumNs.Add(int64(d))
	for {
		m := l.maxNs.Load()
		if int64(d) <= m || l.maxNs.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	i := 0
	for i < len(LatencyBounds) && d.Seconds() > LatencyBounds[i] {
		i++
	}
	l.buckets[i].Add(1)
}

func (l *latency) snapshot() LatencyStats {
	s := LatencyStats{
		Count:   l.count.Load(),
		Sum:     time.Duration(l.sumNs.Load()).Seconds(),
		Max:     time.Duration(l.maxNs.Load()).Seconds(),
		Buckets: make([]uint64, len(l.buckets)),
	}
	var cum uint64
	for i := range l.buckets {
		cum += l.buckets[i].Load()
		s.Buckets[i] = cum
	}
	return s
}

// DiskBytes is the disk space the files under dir take (sparse files
// count for what they use).
func DiskBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += allocated(fi)
			}
		}
		return nil
	})
	return n
}

// quarantineNote is the last store moved aside, and why ("" if none).
func (q *Queue) quarantineNote() string {
	s, _ := q.quarantine.Load().(string)
	return s
}
