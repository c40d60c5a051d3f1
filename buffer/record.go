package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// A stored value (in the store and in the journal) is
//
//	[0]     0xC1, the format tag
//	[1:5]   CRC-32C of the record's sequence (8 bytes, big-endian) and of
//	        everything from byte 5 on, so a value can never pass for
//	        another record's
//	[5:13]  append time, Unix nanoseconds, big-endian
//	[13:]   the record
//
// Values written before the checksum was added ([time][record], whose
// first byte is never 0xC1 for a time between 1970 and 2262) are still
// read, unchecked.
const (
	valueTag       = 0xC1
	valueHeaderLen = 1 + 4 + timeLen
)

// ErrDamaged marks a stored value whose checksum does not match.
var ErrDamaged = errors.New("record damaged (checksum mismatch)")

// encodeValue builds the stored value of a record.
func encodeValue(seq uint64, t time.Time, rec []byte) []byte {
	return seal(append(make([]byte, valueHeaderLen, valueHeaderLen+len(rec)), rec...), seq, t)
}

// encodeNew builds the stored value of the record rec makes with seq.
func encodeNew(seq uint64, t time.Time, rec Value) []byte {
	return seal(rec.appendTo(make([]byte, valueHeaderLen, valueHeaderLen+rec.size(seq)), seq), seq, t)
}

// seal fills in the header of v, a value with room for it before the
// record.
func seal(v []byte, seq uint64, t time.Time) []byte {
	v[0] = valueTag
	binary.BigEndian.PutUint64(v[5:], uint64(t.UnixNano()))
	binary.BigEndian.PutUint32(v[1:], valueCRC(seq, v[5:]))
	return v
}

func valueCRC(seq uint64, b []byte) uint32 {
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	return crc32.Update(crc32.Update(0, crcTable, s[:]), crcTable, b)
}

// decodeValue checks a stored value and returns its record. The error
// wraps ErrDamaged when the value is not what was written for seq.
func decodeValue(seq uint64, v []byte) (Record, error) {
	if len(v) > 0 && v[0] == valueTag {
		if len(v) < valueHeaderLen {
			return Record{}, fmt.Errorf("record %d: %w: %d bytes", seq, ErrDamaged, len(v))
		}
		if valueCRC(seq, v[5:]) != binary.BigEndian.Uint32(v[1:]) {
			return Record{}, fmt.Errorf("record %d: %w", seq, ErrDamaged)
		}
		return Record{Seq: seq, Time: time.Unix(0, int64(binary.BigEndian.Uint64(v[5:]))), Value: v[valueHeaderLen:], stored: int64(len(v))}, nil
	}
	if len(v) < timeLen {
		return Record{}, fmt.Errorf("record %d: %w: %d bytes", seq, ErrDamaged, len(v))
	}
	return Record{Seq: seq, Time: time.Unix(0, int64(binary.BigEndian.Uint64(v))), Value: v[timeLen:], stored: int64(len(v))}, nil
}
