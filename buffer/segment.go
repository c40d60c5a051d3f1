package buffer

import (
	"encoding/binary"
	"hash/crc32"
)

// Journal segment format.
//
// A segment starts with a header and holds records
// [u32 n][u32 crc][u64 seq][value], where n = 8+len(value) and crc is
// CRC-32C over the segment number, seq and value, so a record can never be
// taken from another segment. A record with n = 8 (no value) is an
// acknowledgement of seq: the record was delivered, dropped or parked.
//
// Header, version 2 (48 bytes):
//
//	[0:4]   magic "SAJ1"
//	[4:8]   version (2)
//	[8:16]  segment number (also in the file name)
//	[16:24] base: the queue's last sequence when the segment was started;
//	        every record first appended in it has a larger sequence, and
//	        the sequence never goes backwards even if the store is lost
//	[24:32] acked mark: every record at or below it was acknowledged
//	[32:40] flushed mark: every record at or below it that was not
//	        acknowledged was in a synced store table (Unix; 0 on Windows)
//	[40:44] reserved, zero
//	[44:48] CRC-32C of bytes 0..43
//
// Version 1 headers (24 bytes: magic, version, number, base; no checksum)
// are still read.
const (
	journalMagic     = "SAJ1"
	journalVersion   = 2
	segHeaderLen     = 48
	segHeaderLenV1   = 24
	recHeaderLen     = 16
	maxJournalRecord = 4 << 20 // n of a record never exceeds this (values are at most a few hundred KB)
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// journalRecord is a record as kept in the journal.
type journalRecord struct {
	seq   uint64
	value []byte
	ack   bool // an acknowledgement of seq (no value), not an append
}

// segHeader is a decoded segment header.
type segHeader struct {
	version        uint32
	num            uint64
	base           uint64
	acked, flushed uint64
}

func encodeHeader(h segHeader) []byte {
	b := make([]byte, segHeaderLen)
	copy(b, journalMagic)
	binary.BigEndian.PutUint32(b[4:], journalVersion)
	binary.BigEndian.PutUint64(b[8:], h.num)
	binary.BigEndian.PutUint64(b[16:], h.base)
	binary.BigEndian.PutUint64(b[24:], h.acked)
	binary.BigEndian.PutUint64(b[32:], h.flushed)
	binary.BigEndian.PutUint32(b[44:], crc32.Checksum(b[:44], crcTable))
	return b
}

// headerProblem says why a header cannot be trusted ("" when it can).
// An all-zero header is a segment that was never started: not a problem.
func decodeHeader(data []byte, num uint64) (h segHeader, start int, problem string) {
	switch {
	case len(data) >= 8 && string(data[:4]) == journalMagic && binary.BigEndian.Uint32(data[4:]) == 1 && len(data) >= segHeaderLenV1:
		h = segHeader{version: 1, num: binary.BigEndian.Uint64(data[8:]), base: binary.BigEndian.Uint64(data[16:])}
		start = segHeaderLenV1
	case len(data) >= segHeaderLen && string(data[:4]) == journalMagic && binary.BigEndian.Uint32(data[4:]) == journalVersion:
		if crc32.Checksum(data[:44], crcTable) != binary.BigEndian.Uint32(data[44:]) {
			return segHeader{}, segHeaderLen, "header checksum mismatch"
		}
		h = segHeader{version: 2, num: binary.BigEndian.Uint64(data[8:]), base: binary.BigEndian.Uint64(data[16:]),
			acked: binary.BigEndian.Uint64(data[24:]), flushed: binary.BigEndian.Uint64(data[32:])}
		start = segHeaderLen
	case firstNonZero(data[:min(len(data), segHeaderLen)]) < 0:
		return segHeader{}, segHeaderLen, "" // never started
	default:
		return segHeader{}, segHeaderLen, "bad header (magic or version)"
	}
	if h.num != num {
		return segHeader{}, start, "header names another segment"
	}
	return h, start, ""
}

func recordCRC(num uint64, body []byte) uint32 {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], num)
	return crc32.Update(crc32.Update(0, crcTable, b[:]), crcTable, body)
}

// appendRecord appends one record to buf.
func appendRecord(buf []byte, num uint64, r journalRecord) []byte {
	start := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, uint32(8+len(r.value)))
	buf = append(buf, 0, 0, 0, 0) // crc, filled below
	buf = binary.BigEndian.AppendUint64(buf, r.seq)
	buf = append(buf, r.value...)
	binary.BigEndian.PutUint32(buf[start+4:], recordCRC(num, buf[start+8:]))
	return buf
}

// recordAt returns the record at p[0:], if a valid one starts there.
func recordAt(p []byte, num uint64) (journalRecord, int, bool) {
	if len(p) < recHeaderLen {
		return journalRecord{}, 0, false
	}
	n := int(binary.BigEndian.Uint32(p))
	if n < 8 || n > maxJournalRecord || n > len(p)-8 {
		return journalRecord{}, 0, false
	}
	body := p[8 : 8+n]
	if body[0] != 0 { // a sequence above 2^56: not ours (cheap test before the checksum)
		return journalRecord{}, 0, false
	}
	if recordCRC(num, body) != binary.BigEndian.Uint32(p[4:]) {
		return journalRecord{}, 0, false
	}
	r := journalRecord{seq: binary.BigEndian.Uint64(body), ack: n == 8}
	if !r.ack {
		r.value = body[8:]
	}
	return r, 8 + n, true
}

// segDamage is a stretch of a segment that holds no valid record but is
// followed by one: damage in the middle, not a torn tail.
type segDamage struct {
	off, end      int    // byte offsets of the stretch
	after, before uint64 // sequences of the valid appends around it (0: none)
}

// segScan is what reading a segment found.
type segScan struct {
	header         segHeader
	headerProblem  string
	damage         []segDamage
	tail           int // non-zero bytes after the last record with no valid record after them (a torn write)
	appends, acks  int
	minSeq, maxSeq uint64 // of the appends (0 when none)
	end            int    // offset after the last valid record
	unreadable     string // the file could not be read
}

// scanSegment reads every valid record of a segment in order, calling fn
// for each (the value aliases data). A bad record is either the end
// (everything after it zero, or a torn write with no valid record after
// it) or damage in the middle: the scan resynchronises on the next valid
// record and reports the stretch it skipped. It never fails: what cannot
// be read is reported.
func scanSegment(data []byte, num uint64, fn func(journalRecord)) segScan {
	var s segScan
	var start int
	s.header, start, s.headerProblem = decodeHeader(data, num)
	if start > len(data) {
		return s
	}
	var lastAppend uint64
	open := -1 // index of a damage whose following append is not seen yet
	off := start
	for off < len(data) {
		r, size, ok := recordAt(data[off:], num)
		if !ok {
			next := nextRecord(data, off+1, num)
			if next < 0 {
				if firstNonZero(data[off:]) >= 0 {
					s.tail = len(data) - off
				}
				break
			}
			s.damage = append(s.damage, segDamage{off: off, end: next, after: lastAppend})
			open = len(s.damage) - 1
			off = next
			continue
		}
		if r.ack {
			s.acks++
		} else {
			s.appends++
			lastAppend = r.seq
			if s.minSeq == 0 || r.seq < s.minSeq {
				s.minSeq = r.seq
			}
			s.maxSeq = max(s.maxSeq, r.seq)
			if open >= 0 {
				s.damage[open].before = r.seq
				open = -1
			}
		}
		if fn != nil {
			fn(r)
		}
		off += size
		s.end = off
	}
	return s
}

// nextRecord returns the offset of the next valid record at or after
// from, or -1. Runs of zeros (the preallocated tail) are skipped fast.
func nextRecord(data []byte, from int, num uint64) int {
	off := from
	for off+recHeaderLen <= len(data) {
		if data[off] == 0 && data[off+1] == 0 && data[off+2] == 0 && data[off+3] == 0 {
			// n = 0 here. A record's length starts with a zero byte and
			// has a non-zero one among the next three: the next candidate
			// is 3 bytes before the next non-zero byte.
			nz := firstNonZero(data[off+4:])
			if nz < 0 {
				return -1
			}
			off = max(off+1, off+4+nz-3)
			continue
		}
		if _, _, ok := recordAt(data[off:], num); ok {
			return off
		}
		off++
	}
	return -1
}

// firstNonZero is the index of the first non-zero byte of b, or -1.
func firstNonZero(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}
