package buffer

import (
	"os"

	"golang.org/x/sys/unix"
)

// dataSync flushes a file's data (not its timestamps) to stable storage.
func dataSync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
