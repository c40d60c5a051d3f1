//go:build !unix

package main

import "io/fs"

// allocated is the file's size (allocation is not reported here).
func allocated(fi fs.FileInfo) int64 { return fi.Size() }
