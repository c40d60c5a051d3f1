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

// appendStation starts a record: the station id, length-prefixed.
func appendStation(b []byte, station string) []byte {
	b = append(b, byte(len(station)))
	return append(b, station...)
}

// Split splits a buffer record into its station and event JSON, without
// copying the JSON.
func Split(rec []byte) (station string, payload []byte, err error) {
	if len(rec) < 1 || len(rec) < 1+int(rec[0]) {
		return "", nil, ErrMalformed
	}
	n := int(rec[0])
	return string(rec[1 : 1+n]), rec[1+n:], nil
}

// Join makes the record of station and an event's JSON (the inverse of
// Split, for tools that move records).
func Join(station string, payload []byte) []byte {
	return append(appendStation(make([]byte, 0, 1+len(station)+len(payload)), station), payload...)
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
	if len(station) > 255 {
		return buffer.Value{}, fmt.Errorf("station id longer than 255 bytes")
	}
	e := *ev
	e.Seq = 0
	payload, err := json.Marshal(&e)
	if err != nil {
		return buffer.Value{}, err
	}
	// The JSON starts with schema, id and seq, in that order: split after
	// "seq": and drop the 0.
	schema, _ := json.Marshal(e.Schema)
	id, _ := json.Marshal(e.ID)
	prefix := fmt.Appendf(nil, `{"schema":%s,"id":%s,"seq":`, schema, id)
	if !bytes.HasPrefix(payload, prefix) || len(payload) <= len(prefix) || payload[len(prefix)] != '0' {
		return buffer.Value{}, fmt.Errorf("event JSON does not start with schema, id and seq: %.80s", payload)
	}
	head := append(appendStation(make([]byte, 0, 1+len(station)+len(prefix)), station), prefix...)
	return buffer.Value{Head: head, Tail: payload[len(prefix)+1:]}, nil
}
