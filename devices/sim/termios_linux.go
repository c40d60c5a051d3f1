package sim

import "golang.org/x/sys/unix"

const (
	ioctlGetTermios = unix.TCGETS
	ioctlSetTermios = unix.TCSETS
)

var bauds = map[uint32]int{
	unix.B1200: 1200, unix.B2400: 2400, unix.B4800: 4800, unix.B9600: 9600, unix.B19200: 19200,
	unix.B38400: 38400, unix.B57600: 57600, unix.B115200: 115200, unix.B230400: 230400,
}

// portLine reads the baud rate the agent set on the terminal. On Linux a
// termios request on the master reads the slave's settings. A terminal
// still at B0, as makeRaw leaves it, was not set up by any program since
// it was made: portLine returns lineUnset.
func portLine(masterFd int) (Line, lineState) {
	t, err := unix.IoctlGetTermios(masterFd, unix.TCGETS)
	if err != nil {
		return Line{}, lineUnknown
	}
	if t.Cflag&unix.CBAUD == unix.B0 {
		return Line{}, lineUnset
	}
	l := Line{Baud: bauds[t.Cflag&unix.CBAUD]}
	if l.Baud == 0 {
		return l, lineUnknown
	}
	return l, lineSet
}

// clearSpeed sets the speed to B0, which no program opening the port as a
// serial line keeps: portLine then tells whether one has set it up.
func clearSpeed(t *unix.Termios) {
	t.Cflag &^= unix.CBAUD
	t.Cflag |= unix.B0
}
