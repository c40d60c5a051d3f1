package buffer

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Salvage reads the records of a store that Badger cannot open (a
// quarantined store.corrupt-*), without Badger: every table file and
// memtable log is read directly, whatever its MANIFEST says, and each
// record's newest version is kept (a deletion hides it). Files, or parts
// of them, that cannot be read are skipped and named in the returned
// problems. fn gets the records in sequence order, damaged ones (checksum
// mismatch) with a non-nil error. Memory is proportional to the store.
//
// Badger's file formats (its table and memtable log layouts) are read
// through its exported table package and, for the logs, as documented in
// its source (badger v4 memtable.go, structs.go).
func Salvage(dir string, fn func(rec Record, err error) error) (problems []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type version struct {
		ts      uint64
		deleted bool
		value   []byte
	}
	latest := map[uint64]version{}
	keep := func(k []byte, deleted bool, v []byte) {
		if len(k) != keyLen+8 || k[0] != prefixRecord {
			return
		}
		seq, ts := seqOf(k[:keyLen]), y.ParseTs(k)
		if seq == 0 {
			return
		}
		if cur, ok := latest[seq]; ok && cur.ts >= ts {
			return
		}
		latest[seq] = version{ts: ts, deleted: deleted, value: slices.Clone(v)}
	}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		var perr error
		switch filepath.Ext(e.Name()) {
		case ".sst":
			perr = salvageTable(path, keep)
		case ".mem":
			perr = salvageLog(path, keep)
		default:
			continue
		}
		if perr != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", e.Name(), perr))
		}
	}
	seqs := make([]uint64, 0, len(latest))
	for s, v := range latest {
		if !v.deleted {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	for _, s := range seqs {
		rec, derr := decodeValue(s, latest[s].value)
		if derr != nil {
			rec = Record{Seq: s, Value: latest[s].value}
		}
		if err := fn(rec, derr); err != nil {
			return problems, err
		}
	}
	return problems, nil
}

// salvageTable reads every entry of one table file, in a goroutine (waited
// for) that turns a panic or a memory fault on a damaged file into an
// error.
func salvageTable(path string, keep func(k []byte, deleted bool, v []byte)) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		done <- func() (err error) {
			mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer mf.Close(-1)
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("unreadable past some point: %s", firstLine(fmt.Sprint(r)))
				}
			}()
			t, err := table.OpenTable(mf, table.Options{Compression: options.None, BlockSize: 4 << 10})
			if err != nil {
				return err
			}
			it := t.NewIterator(0)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				vs := it.Value()
				if vs.Meta&0x02 != 0 { // a value pointer into the value log: records are kept inline
					continue
				}
				keep(it.Key(), vs.Meta&0x01 != 0, vs.Value)
			}
			return nil
		}()
	}()
	return <-done
}

// salvageLog reads a memtable log: a 20-byte header, then entries
// [meta][user meta][uvarint key len][uvarint value len][uvarint expiry]
// [key][value][CRC-32C big-endian], ending at the first zero or damaged
// entry. Entries of a transaction count only once its end marker is read.
func salvageLog(path string, keep func(k []byte, deleted bool, v []byte)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const headerLen = 20
	const bitDelete, bitTxn, bitFinTxn = 0x01, 0x40, 0x80
	type entry struct {
		k, v []byte
		meta byte
	}
	var txn []entry
	var problem error
	for off := headerLen; off < len(data); {
		p := data[off:]
		if len(p) < 2 || p[0] == 0 && p[1] == 0 && firstNonZero(p[:min(len(p), 16)]) < 0 {
			break // the zeros after the last entry
		}
		n := 2
		klen, a := binary.Uvarint(p[n:])
		n += max(a, 0)
		vlen, b := binary.Uvarint(p[n:])
		n += max(b, 0)
		_, c := binary.Uvarint(p[n:])
		n += max(c, 0)
		if a <= 0 || b <= 0 || c <= 0 || klen > 1<<16 || vlen > 1<<30 || n+int(klen)+int(vlen)+4 > len(p) {
			problem = fmt.Errorf("damaged entry at offset %d: the rest of the log is not read", off)
			break
		}
		end := n + int(klen) + int(vlen)
		if crc32.Checksum(p[:end], y.CastagnoliCrcTable) != binary.BigEndian.Uint32(p[end:]) {
			problem = fmt.Errorf("checksum mismatch at offset %d: the rest of the log is not read", off)
			break
		}
		e := entry{k: p[n : n+int(klen)], v: p[n+int(klen) : end], meta: p[0]}
		switch {
		case e.meta&bitFinTxn != 0:
			for _, t := range txn {
				keep(t.k, t.meta&bitDelete != 0, t.v)
			}
			txn = txn[:0]
		case e.meta&bitTxn != 0:
			txn = append(txn, e)
		default:
			keep(e.k, e.meta&bitDelete != 0, e.v)
		}
		off += end + 4
	}
	return problem // a transaction without its end marker at the end was never committed
}

// IsQuarantined reports whether dir is a store moved aside by the buffer.
func IsQuarantined(dir string) bool {
	return strings.HasPrefix(filepath.Base(filepath.Clean(dir)), "store.corrupt-")
}
