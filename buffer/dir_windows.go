package buffer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
)

// syncDir is a no-op on Windows: NTFS journals its metadata and a
// directory cannot be opened for flushing.
func syncDir(string) error { return nil }

// lockDir takes an exclusive lock on dir (a LOCK file in it) for as long
// as the returned file stays open. Another process holding it gives
// ErrLocked.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, ErrLocked
		}
		return nil, err
	}
	return f, nil
}

// allocated is the file's size (allocation is not reported here; NTFS
// allocates what a file's size says).
func allocated(fi fs.FileInfo) int64 { return fi.Size() }
