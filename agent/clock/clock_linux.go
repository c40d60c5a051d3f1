package clock

import "golang.org/x/sys/unix"

// read reads the kernel's clock state with adjtimex(2), modes 0: a read
// that changes nothing and needs no privilege (a seccomp filter may still
// refuse it: unknown then).
func read() string {
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != nil {
		return Unknown
	}
	return quality(int64(tx.Maxerror))
}
