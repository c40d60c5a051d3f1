//go:build unix

package sim

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Scanner is a simulated barcode scanner: the agent opens Path() as its
// serial port, and Send writes what a real scanner would put on the wire.
type Scanner struct {
	mu     sync.Mutex
	master *os.File
	slave  *os.File
	link   string
	suffix string
}

// NewScanner creates a pseudo-terminal pair in raw mode. suffix is the
// terminator the simulated scanner appends (e.g. "\r\n").
func NewScanner(suffix string) (*Scanner, error) {
	s := &Scanner{suffix: suffix}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Scanner) open() error {
	m, sl, err := pty.Open()
	if err != nil {
		return fmt.Errorf("create pseudo-terminal: %w", err)
	}
	if err := makeRaw(int(sl.Fd())); err != nil {
		m.Close()
		sl.Close()
		return fmt.Errorf("raw mode on %s: %w", sl.Name(), err)
	}
	// creack/pty leaves the master in blocking mode (File.Fd does that), so
	// Close would not interrupt the discarding reader below and the slave
	// would never see the hang-up. Reopen it through the poller.
	// Close-on-exec, or an agent started as a child process would hold
	// the master open and never see an unplug.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		sl.Close()
		return fmt.Errorf("pseudo-terminal master: %w", err)
	}
	m = os.NewFile(uintptr(fd), "/dev/ptmx")
	s.master, s.slave = m, sl
	// Discard what the agent writes to the scanner (host feedback).
	go io.Copy(io.Discard, m)
	return nil
}

// Path is the serial device the agent should open (the link when one was
// made with Link).
func (s *Scanner) Path() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link != "" || s.slave == nil {
		return s.link
	}
	return s.slave.Name()
}

// Link makes a stable symbolic link to the device, like /dev/serial/by-id.
func (s *Scanner) Link(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slave == nil {
		return fmt.Errorf("scanner unplugged")
	}
	os.Remove(path)
	if err := os.Symlink(s.slave.Name(), path); err != nil {
		return err
	}
	s.link = path
	return nil
}

// Send writes one read: AIM identifier, code and the terminator.
func (s *Scanner) Send(aim, code string) error {
	return s.Write([]byte(aim + code + s.suffix))
}

// Write puts raw bytes on the wire.
func (s *Scanner) Write(p []byte) error {
	s.mu.Lock()
	m := s.master
	s.mu.Unlock()
	if m == nil {
		return fmt.Errorf("scanner unplugged")
	}
	_, err := m.Write(p)
	return err
}

// Unplug closes the pseudo-terminal: the agent's reads fail as with a
// pulled USB cable.
func (s *Scanner) Unplug() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master != nil {
		s.master.Close()
		s.slave.Close()
		s.master, s.slave = nil, nil
	}
}

// Replug creates a new pseudo-terminal behind the same link.
func (s *Scanner) Replug() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master != nil {
		return nil
	}
	if err := s.open(); err != nil {
		return err
	}
	if s.link != "" {
		os.Remove(s.link)
		return os.Symlink(s.slave.Name(), s.link)
	}
	return nil
}

// Close releases the pseudo-terminal and removes the link.
func (s *Scanner) Close() error {
	s.Unplug()
	if s.link != "" {
		os.Remove(s.link)
	}
	return nil
}

func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, ioctlSetTermios, t)
}
