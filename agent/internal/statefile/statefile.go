// Package statefile keeps small durable state: an append-only file of
// checksummed records, rewritten as a snapshot when it grows. The station
// workflows (their open receptacle, operator) and the dispatch tracker
// keep theirs in one each.
//
// Format: the magic "SASTATE1", then records [u32 n][u32 crc][n bytes],
// little endian, crc the CRC-32C of the bytes. Reading stops at the first
// record that does not check: a record torn by a power cut ends the file,
// and the file is cut back to the last good record so that appends go on.
package statefile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

const (
	magic     = "SASTATE1"
	recHeader = 8
	// MaxRecord bounds one record: a larger length is damage.
	MaxRecord = 16 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// File is an open state file. Its methods are safe for concurrent use.
type File struct {
	path  string
	mu    sync.Mutex
	f     *os.File
	size  int64
	dirty bool // written since the last sync
}

// Open opens the state file at path, creating it (and its directory) when
// missing, and returns the records it holds. A file that is not a state
// file at all, or whose first record is damaged, is moved aside (its name
// in moved) and a new one started. problem, when not empty, says what was
// found: damage cut off, or the file moved aside.
func Open(path string) (f *File, recs [][]byte, problem string, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, nil, "", err
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		data = nil
	case err != nil:
		return nil, nil, "", err
	}
	if len(data) == 0 {
		data = nil // new, or created and killed before its magic
	}
	good := 0
	if len(data) > 0 {
		if len(data) < len(magic) || string(data[:len(magic)]) != magic {
			moved, err := moveAside(path)
			if err != nil {
				return nil, nil, "", err
			}
			problem = fmt.Sprintf("not a state file; moved aside to %s and started anew", moved)
			data = nil
		} else {
			recs, good = parse(data)
			if good < len(data) {
				if len(recs) == 0 {
					moved, err := moveAside(path)
					if err != nil {
						return nil, nil, "", err
					}
					problem = fmt.Sprintf("its first record is damaged; moved aside to %s and started anew", moved)
					data, good = nil, 0
				} else {
					problem = fmt.Sprintf("%d damaged bytes after offset %d cut off (a write torn by a power cut, or damage): the state is the last good record's", len(data)-good, good)
				}
			}
		}
	}
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, "", err
	}
	if data == nil {
		err = fh.Truncate(0)
		if err == nil {
			_, err = fh.WriteAt([]byte(magic), 0)
		}
		if err == nil {
			err = fh.Sync()
		}
		if err == nil {
			err = syncDir(filepath.Dir(path))
		}
		if err != nil {
			fh.Close()
			return nil, nil, "", err
		}
		good = len(magic)
	} else if good < len(data) {
		if err := fh.Truncate(int64(good)); err != nil {
			fh.Close()
			return nil, nil, "", err
		}
	}
	if _, err := fh.Seek(int64(good), io.SeekStart); err != nil {
		fh.Close()
		return nil, nil, "", err
	}
	return &File{path: path, f: fh, size: int64(good)}, recs, problem, nil
}

// parse returns the good records of data and the length they end at.
func parse(data []byte) (recs [][]byte, end int) {
	off := len(magic)
	for len(data)-off >= recHeader {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		crc := binary.LittleEndian.Uint32(data[off+4:])
		if n > MaxRecord || len(data)-off-recHeader < n {
			break
		}
		body := data[off+recHeader : off+recHeader+n]
		if crc32.Checksum(body, crcTable) != crc {
			break
		}
		recs = append(recs, body)
		off += recHeader + n
	}
	return recs, off
}

func moveAside(path string) (string, error) {
	to := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	return to, os.Rename(path, to)
}

func frame(b []byte, rec []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(rec)))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(rec, crcTable))
	return append(b, rec...)
}

// Append writes rec at the end of the file, without a sync (a process
// killed after Append loses nothing; Sync covers power cuts).
func (f *File) Append(rec []byte) error {
	if len(rec) > MaxRecord {
		return fmt.Errorf("state record of %d bytes, the limit is %d", len(rec), MaxRecord)
	}
	b := frame(make([]byte, 0, recHeader+len(rec)), rec)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return os.ErrClosed
	}
	n, err := f.f.Write(b)
	f.size += int64(n)
	f.dirty = true
	if err != nil && n > 0 {
		// A partial record would end the file for the next reader: cut it.
		if terr := f.f.Truncate(f.size - int64(n)); terr == nil {
			f.size -= int64(n)
			f.f.Seek(f.size, io.SeekStart)
		}
	}
	return err
}

// Sync makes what was appended durable.
func (f *File) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil || !f.dirty {
		return nil
	}
	if err := dataSync(f.f); err != nil {
		return err
	}
	f.dirty = false
	return nil
}

// Size is the file's length.
func (f *File) Size() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

// Rewrite replaces the file's records with recs, durably: a new file is
// written and synced beside it, then renamed over it.
func (f *File) Rewrite(recs ...[]byte) error {
	b := []byte(magic)
	for _, r := range recs {
		b = frame(b, r)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return os.ErrClosed
	}
	tmp := f.path + ".tmp"
	if err := writeSynced(tmp, b); err != nil {
		os.Remove(tmp)
		return err
	}
	// Closed before the rename, which Windows refuses over an open file.
	f.f.Close()
	err := os.Rename(tmp, f.path)
	if err == nil {
		err = syncDir(filepath.Dir(f.path))
	}
	nf, oerr := os.OpenFile(f.path, os.O_RDWR, 0)
	if oerr != nil {
		f.f = nil
		return errors.Join(err, oerr)
	}
	size, serr := nf.Seek(0, io.SeekEnd)
	f.f, f.size, f.dirty = nf, size, false
	return errors.Join(err, serr)
}

func writeSynced(path string, b []byte) error {
	nf, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = nf.Write(b)
	if err == nil {
		err = nf.Sync()
	}
	return errors.Join(err, nf.Close())
}

// Close syncs and closes the file.
func (f *File) Close() error {
	err := f.Sync()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.f == nil {
		return err
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	f.f = nil
	return err
}
