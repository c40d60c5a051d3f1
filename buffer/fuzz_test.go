package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// FuzzReadSegment: whatever bytes a journal segment holds after a crash
// or corruption, reading it never panics, and every record it returns has
// a valid checksum for this segment.
func FuzzReadSegment(f *testing.F) {
	dir := f.TempDir()
	j, err := openJournal(dir, 64<<10)
	if err != nil {
		f.Fatal(err)
	}
	j.start(0)
	j.write([]journalRecord{{seq: 1, value: []byte("a")}, {seq: 2, value: []byte("RR473124829GB")}})
	j.sync()
	j.close()
	seg, _ := os.ReadFile(segPath(dir, 1))
	f.Add(seg[:200])
	f.Add(seg[:segHeaderLen])
	f.Add([]byte("SAJ1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		scanSegment(data, 1, func(r journalRecord) {
			body := binary.BigEndian.AppendUint64(nil, r.seq)
			body = append(body, r.value...)
			found := false
			// The record's checksum must be in the data, right before it.
			for i := 0; i+8+len(body) <= len(data); i++ {
				if string(data[i+8:i+8+len(body)]) == string(body) && binary.BigEndian.Uint32(data[i+4:]) == recordCRC(1, body) {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("record %d returned without a valid checksum", r.seq)
			}
		})
	})
}

// FuzzJournalDamage: a segment of records (appends and acknowledgements)
// followed by its preallocated zeros is damaged anywhere (any bytes, any
// length, the header included). Reading it never panics, returns only
// records that were written, and returns every record whose bytes the
// damage did not touch: the reader resynchronises after damage in the
// middle instead of stopping there.
func FuzzJournalDamage(f *testing.F) {
	f.Add(uint8(20), uint16(100), []byte{0xff, 0xff})
	f.Add(uint8(50), uint16(48), []byte("garbage in the middle of a segment"))
	f.Add(uint8(30), uint16(3), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(uint8(10), uint16(60), []byte{0, 0, 0, 9, 1, 2, 3, 4, 0})
	f.Add(uint8(200), uint16(5000), bytes.Repeat([]byte{0xAB}, 300))
	f.Fuzz(func(t *testing.T, n uint8, off uint16, dmg []byte) {
		const num = 7
		type span struct{ start, end int }
		data := encodeHeader(segHeader{num: num, base: 0})
		var recs []journalRecord
		var spans []span
		for i := range int(n) + 1 {
			r := journalRecord{seq: uint64(i + 1), value: fmt.Appendf(nil, "record-%d-%s", i, strings.Repeat("x", i%37))}
			if i%5 == 4 {
				r = journalRecord{seq: uint64(i - 2), ack: true}
			}
			start := len(data)
			data = appendRecord(data, num, r)
			recs = append(recs, r)
			spans = append(spans, span{start, len(data)})
		}
		data = append(data, make([]byte, 4096)...)
		o := int(off) % len(data)
		dEnd := o + copy(data[o:], dmg)
		got := make([]bool, len(recs))
		forged := false
		scanSegment(data, num, func(r journalRecord) {
			for i, w := range recs {
				if !got[i] && w.seq == r.seq && w.ack == r.ack && bytes.Equal(w.value, r.value) {
					got[i] = true
					return
				}
			}
			forged = true // damage that forms a record with a valid checksum
		})
		if forged {
			return
		}
		for i, s := range spans {
			if (s.end <= o || s.start >= dEnd) && !got[i] {
				t.Fatalf("record %d (bytes %d-%d) untouched by the damage at %d-%d but not read", i, s.start, s.end, o, dEnd)
			}
		}
	})
}

// TestRangeSet checks the range set against a plain set, for sequences
// added in any order and merged sets.
func TestRangeSet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var s, o rangeSet
		want := map[uint64]bool{}
		for range r.IntN(300) {
			v := uint64(r.IntN(400) + 1)
			if r.IntN(4) == 0 {
				o.add(v)
			} else {
				s.add(v)
			}
			want[v] = true
		}
		s.addSet(o)
		for v := uint64(0); v <= 402; v++ {
			if s.contains(v) != want[v] {
				t.Fatalf("round %d: contains(%d) = %v, want %v (ranges %v)", round, v, s.contains(v), want[v], s.r)
			}
		}
		for i := 1; i < len(s.r); i++ {
			if s.r[i].lo <= s.r[i-1].hi+1 || s.r[i].lo > s.r[i].hi {
				t.Fatalf("round %d: ranges not disjoint, sorted and merged: %v", round, s.r)
			}
		}
	}
}
