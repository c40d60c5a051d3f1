package buffer

import (
	"encoding/binary"
	"os"
	"testing"
)

// FuzzReadSegment: whatever bytes a journal segment holds after a crash
// or corruption, reading it never panics, and every record it returns has
// a valid checksum for this segment.
func FuzzReadSegment(f *testing.F) {
	dir := f.TempDir()
	j, _, _, err := openJournal(dir, 64<<10)
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
		_, recs, err := parseSegment(data, 1)
		if err != nil {
			return
		}
		for _, r := range recs {
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
		}
	})
}
