// Package record owns the one format of a buffered scan: the scan event
// published on P/scans/<station> (schema scanagent.scan/v1) and the buffer
// record that carries it, the station id (length-prefixed) followed by the
// event JSON, so that the uplink builds the topic without decoding the
// event.
//
// A station writes records with Scan.Encode, field by field, leaving the
// sequence number to the buffer (it is assigned in commit order). Tools
// and tests write them from an Event with EventValue, through
// encoding/json; the tests hold the two to the same bytes.
package record

import (
	"time"
)

// Schema is the scan event schema name published in every event.
const Schema = "scanagent.scan/v1"

// Event is one scan as published on P/scans/<station> (docs/MQTT.md).
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
	S9        *S9     `json:"s9,omitempty"` // the code decoded, when it is a well-formed S9 (see S9)
	Weight    *Weight `json:"weight,omitempty"`
	// WeightStatus says why weight is what it is, on stations with a
	// scale: ok, or none, motion, overload, underload, stale, empty,
	// already_used, scale_offline.
	WeightStatus string `json:"weight_status,omitempty"`
	// Clock is the quality of the agent's clock when it made the event:
	// synced, unsynced or unknown (agent/clock); absent from events made
	// before agents reported it.
	Clock string `json:"clock,omitempty"`
	// Receptacle is the S9 label of the receptacle open at the station
	// (workflow open_receptacles); BagSession the bag being filled
	// (fill_receptacles, a UUIDv7); Operator who was signed in at the
	// station (docs/WORKFLOWS.md). Absent when not known.
	Receptacle string `json:"receptacle,omitempty"`
	BagSession string `json:"bag_session,omitempty"`
	Operator   string `json:"operator,omitempty"`
}

// S9 is a UPU S9 receptacle identifier as the scan event carries it
// (package parcel decodes it; docs/schemas/scan.json, s9): present when
// the code is kind s9 with no identifier reason, also when the station
// does not accept s9 (reason unexpected_kind).
type S9 struct {
	Origin      string `json:"origin"`      // origin office of exchange (IMPC code)
	Destination string `json:"destination"` // destination office of exchange
	Category    string `json:"category"`    // mail category: A, B, C, D
	Class       string `json:"class"`       // mail class: U, C, E, T
	Subclass    string `json:"subclass"`    // mail subclass: a letter or digit
	Year        int    `json:"year"`        // the last digit of the year
	Dispatch    string `json:"dispatch"`    // the S8 dispatch identifier (the code's first 20 characters)
	Serial      int    `json:"serial"`      // receptacle serial number, 1–999
	// Highest and Registered are absent when the label leaves them
	// unstated (the digit 9).
	Highest    *bool `json:"highest,omitempty"`    // the highest-numbered receptacle of its dispatch
	Registered *bool `json:"registered,omitempty"` // holds registered or insured items
	// DeclaredGrams is the gross weight on the label; 999900 stands for
	// 999.9 kg or more.
	DeclaredGrams int64 `json:"declared_grams"`
}

// Weight is a scale reading attached to a scan.
type Weight struct {
	Grams      int64  `json:"grams"`
	Value      string `json:"value"`
	Unit       string `json:"unit"`
	Stable     bool   `json:"stable"`
	MeasuredAt string `json:"measured_at"`
}

// timestampLayout is how events write times: UTC, milliseconds.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Timestamp formats t as the events do: UTC, milliseconds.
func Timestamp(t time.Time) string {
	return t.UTC().Format(timestampLayout)
}
