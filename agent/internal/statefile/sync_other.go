//go:build !linux

package statefile

import "os"

func dataSync(f *os.File) error { return f.Sync() }
