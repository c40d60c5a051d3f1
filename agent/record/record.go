package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/scanagent/scanagent/buffer"
)

// ErrMalformed marks a buffer record that is not a station id followed by
// an event.
var ErrMalformed = errors.New("malformed buffer record")

// Topic is where a record's event is published, below the agent's
// prefix. A record's first byte holds it in its high bit, and the station
// id's length (at most 127; the configuration allows 64) in the others:
// records written before there were topics are all TopicScans.
type Topic byte

const (
	TopicScans       Topic = 0 // P/scans/<station>: scans and cancels
	TopicReceptacles Topic = 1 // P/receptacles/<station>: closed receptacles
)

// Name is the topic level of t ("scans", "receptacles").
func (t Topic) Name() string {
	if t == TopicReceptacles {
		return "receptacles"
	}
	return "scans"
}

// appendStation starts a record: the station id, length-prefixed, for a
// scan's topic.
func appendStation(b []byte, station string) []byte { return appendHead(b, TopicScans, station) }

func appendHead(b []byte, t Topic, station string) []byte {
	b = append(b, byte(len(station))|byte(t)<<7)
	return append(b, station...)
}

// Split splits a buffer record into its station and event JSON, without
// copying the JSON.
func Split(rec []byte) (station string, payload []byte, err error) {
	_, station, payload, err = SplitTopic(rec)
	return station, payload, err
}

// SplitTopic is Split, also returning the record's topic.
func SplitTopic(rec []byte) (t Topic, station string, payload []byte, err error) {
	if len(rec) < 1 {
		return 0, "", nil, ErrMalformed
	}
	n := int(rec[0] & 0x7f)
	if len(rec) < 1+n {
		return 0, "", nil, ErrMalformed
	}
	return Topic(rec[0] >> 7), string(rec[1 : 1+n]), rec[1+n:], nil
}

// Join makes the record of station and a scan event's JSON (the inverse
// of Split, for tools that move records).
func Join(station string, payload []byte) []byte { return JoinTopic(TopicScans, station, payload) }

// JoinTopic makes the record of an event published on t.
func JoinTopic(t Topic, station string, payload []byte) []byte {
	return append(appendHead(make([]byte, 0, 1+len(station)+len(payload)), t, station), payload...)
}

// Decode returns the event stored in a buffer record.
func Decode(rec []byte) (station string, ev Event, err error) {
	station, payload, err := Split(rec)
	if err != nil {
		return "", Event{}, err
	}
	err = json.Unmarshal(payload, &ev)
	return station, ev, err
}

// EventValue returns the buffer value of ev at station: the record, with
// the sequence number left to the buffer (ev.Seq is ignored). Station ids
// longer than 255 bytes cannot be recorded (the configuration allows 64).
func EventValue(station string, ev *Event) (buffer.Value, error) {
	e := *ev
	e.Seq = 0
	return JSONValue(TopicScans, station, &e)
}

// JSONValue returns the buffer value of an event published on t by
// station, encoded with encoding/json: v must encode schema, id and seq
// first, in that order, with seq 0, which is left to the buffer.
func JSONValue(t Topic, station string, v any) (buffer.Value, error) {
	if len(station) > 127 {
		return buffer.Value{}, fmt.Errorf("station id longer than 127 bytes")
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return buffer.Value{}, err
	}
	// Split after "seq": and drop the 0. No JSON string holds a bare
	// quote, so the first ,"seq":0 is the field.
	i := bytes.Index(payload, []byte(`,"seq":0`))
	if !bytes.HasPrefix(payload, []byte(`{"schema":`)) || i < 0 || !bytes.Contains(payload[:i], []byte(`,"id":`)) {
		return buffer.Value{}, fmt.Errorf("event JSON does not start with schema, id and seq: %.80s", payload)
	}
	i += len(`,"seq":`)
	head := append(appendHead(make([]byte, 0, 1+len(station)+i), t, station), payload[:i]...)
	return buffer.Value{Head: head, Tail: payload[i+1:]}, nil
}
