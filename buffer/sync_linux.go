package buffer

import (
	"os"

	"golang.org/x/sys/unix"
)

// dataSync flushes a file's data (not its timestamps) to stable storage.
func dataSync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// allocate gives a file size bytes of real disk blocks (a full disk fails
// here, with ENOSPC, instead of later on a write through a memory map).
func allocate(f *os.File, size int64) error { return unix.Fallocate(int(f.Fd()), 0, 0, size) }
