package agent

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeRecord: buffer records decoded by the uplink and the export
// tool never panic the decoder, and a record encoded by the agent decodes
// back to the same station and payload.
func FuzzDecodeRecord(f *testing.F) {
	ev := Event{Schema: Schema, ID: "0193f2c4-9a4e-7c1d-8f3a-2b5e6d7c8a90", Station: "induct-3", Barcode: "RR473124829GB", Kind: "s10", Valid: true}
	rec, _ := RecordEncoder("induct-3", &ev)(7)
	f.Add(rec)
	f.Add([]byte{})
	f.Add([]byte{200, 'a'})
	f.Fuzz(func(t *testing.T, rec []byte) {
		station, payload, err := decodeRecord(rec)
		if err != nil {
			return
		}
		if len(station)+len(payload)+1 != len(rec) {
			t.Fatalf("decoded %d+%d bytes from %d", len(station), len(payload), len(rec))
		}
		DecodeRecord(rec) // any JSON: must not panic
		if len(station) <= 255 && json.Valid(payload) {
			again := encodeRecord(nil, station, payload)
			if string(again) != string(rec) {
				t.Fatalf("round trip changed the record")
			}
		}
	})
}
