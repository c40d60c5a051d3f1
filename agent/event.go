package agent

import (
	"encoding/json"
	"errors"
	"time"
)

// Schema is the scan event schema name published in every event.
const Schema = "scanagent.scan/v1"

// Event is one scan as published on P/scans/<station> (SPEC.md, schema
// scanagent.scan/v1).
type Event struct {
	Schema    string  `json:"schema"`
	ID        string  `json:"id"`
	Seq       uint64  `json:"seq"`
	Agent     string  `json:"agent"`
	Site      string  `json:"site"`
	Station   string  `json:"station"`
	Event     string  `json:"event,omitempty"`
	ScannedAt string  `json:"scanned_at"`
	Barcode   string  `json:"barcode"`
	AIM       string  `json:"aim,omitempty"`
	Kind      string  `json:"kind"`
	Valid     bool    `json:"valid"`
	Reason    string  `json:"reason,omitempty"`
	Weight    *Weight `json:"weight,omitempty"`
	// WeightStatus says why weight is what it is, on stations with a
	// scale: ok, or none, motion, overload, underload, stale, empty,
	// already_used, scale_offline.
	WeightStatus string `json:"weight_status,omitempty"`
}

// Weight is a scale reading attached to a scan.
type Weight struct {
	Grams      int64  `json:"grams"`
	Value      string `json:"value"`
	Unit       string `json:"unit"`
	Stable     bool   `json:"stable"`
	MeasuredAt string `json:"measured_at"`
}

// Timestamp formats t as the events do: UTC, milliseconds.
func Timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// A buffered record is the station id (length-prefixed) followed by the
// event JSON, so the uplink can build the topic without decoding the event.

// encodeRecord appends the record for station and payload to dst.
func encodeRecord(dst []byte, station string, payload []byte) []byte {
	dst = append(dst, byte(len(station)))
	dst = append(dst, station...)
	return append(dst, payload...)
}

var errBadRecord = errors.New("malformed buffer record")

// decodeRecord splits a buffered record into station and event JSON.
func decodeRecord(rec []byte) (station string, payload []byte, err error) {
	if len(rec) < 1 || len(rec) < 1+int(rec[0]) {
		return "", nil, errBadRecord
	}
	n := int(rec[0])
	return string(rec[1 : 1+n]), rec[1+n:], nil
}

// SplitRecord splits a buffer record into its station and event JSON.
func SplitRecord(rec []byte) (station string, payload []byte, err error) {
	return decodeRecord(rec)
}

// RecordEncoder returns the buffer encoder for ev at station: it stamps
// the sequence number the buffer assigns and encodes the record.
func RecordEncoder(station string, ev *Event) func(seq uint64) ([]byte, error) {
	return func(seq uint64) ([]byte, error) {
		ev.Seq = seq
		payload, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		return encodeRecord(make([]byte, 0, len(payload)+1+len(station)), station, payload), nil
	}
}

// DecodeRecord returns the event stored in a buffer record (for export
// tools and tests).
func DecodeRecord(rec []byte) (station string, ev Event, err error) {
	station, payload, err := decodeRecord(rec)
	if err != nil {
		return "", Event{}, err
	}
	err = json.Unmarshal(payload, &ev)
	return station, ev, err
}
