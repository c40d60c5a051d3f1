//go:build unix

package buffer

import (
	"golang.org/x/sys/unix"
)

// flushedSeq is the highest record sequence that Badger has written to a
// synced table file. Memtables are flushed in order and sequences only
// grow, so every record up to it is durable in the store and its journal
// entry is no longer needed.
func (q *Queue) flushedSeq() uint64 {
	var hi uint64
	db, release, awake := q.peekStore()
	if !awake {
		return 0
	}
	defer release()
	for _, t := range db.Tables() {
		k := t.Right
		if len(k) == keyLen+8 && k[0] == prefixRecord {
			hi = max(hi, seqOf(k[:keyLen]))
		}
	}
	return hi
}

// freeBytes is the space available to this user on dir's filesystem.
func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
