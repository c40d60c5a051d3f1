package buffer

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// dataSync flushes a file's data (not its timestamps) to stable storage.
func dataSync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// allocate gives a file size bytes of real disk blocks (a full disk fails
// here, with ENOSPC, instead of later on a write through a memory map). A
// filesystem without fallocate gets zeros written.
func allocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := writeZeros(f, fi.Size(), size); err != nil {
		return err
	}
	return f.Sync()
}
