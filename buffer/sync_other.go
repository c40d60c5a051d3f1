//go:build !linux

package buffer

import (
	"os"
	"runtime"
)

// dataSync flushes a file to stable storage (FlushFileBuffers on Windows,
// fsync elsewhere).
func dataSync(f *os.File) error { return f.Sync() }

// allocate gives a file size bytes of disk space: on Windows, extending a
// file allocates it (NTFS); elsewhere, zeros are written.
func allocate(f *os.File, size int64) error {
	if runtime.GOOS == "windows" {
		return f.Truncate(size)
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return writeZeros(f, fi.Size(), size)
}
