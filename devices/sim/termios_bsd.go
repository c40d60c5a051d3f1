//go:build darwin || freebsd || netbsd || openbsd

package sim

import "golang.org/x/sys/unix"

const (
	ioctlGetTermios = unix.TIOCGETA
	ioctlSetTermios = unix.TIOCSETA
)

// portLine is not implemented here: a BSD master does not read the slave's
// settings, so devices accept any line setting.
func portLine(int) (Line, lineState) { return Line{}, lineUnknown }

// clearSpeed leaves the speed alone: portLine cannot read it back here.
func clearSpeed(*unix.Termios) {}
