//go:build !linux

package status

// rss is not read on this platform; Status still reports the Go heap.
func rss() (cur, peak int64) { return 0, 0 }
