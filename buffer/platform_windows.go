package buffer

import (
	"golang.org/x/sys/windows"
)

// flushedSeq is 0 on Windows: Badger's syncs are no-ops there (its msync
// and directory sync do nothing), so no record is known to be durable in
// the store. Journal segments are kept until every record in them has
// been acknowledged (see maintain).
func (q *Queue) flushedSeq() uint64 { return 0 }

// freeBytes is the space available to this user on dir's volume.
func freeBytes(dir string) (uint64, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return 0, err
	}
	var free, total, totalFree uint64
	if err := windows.GetDiskFreeSpaceEx(p, &free, &total, &totalFree); err != nil {
		return 0, err
	}
	return free, nil
}
