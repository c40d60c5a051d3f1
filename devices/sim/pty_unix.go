//go:build unix

package sim

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Line is the serial line setting a simulated device really uses. When the
// agent opens the port at another baud rate, the device's bytes arrive
// garbled, as on a real line; what the device sends before any program has
// opened and set up the port is lost, as bytes sent into a closed port are
// (a pseudo-terminal would otherwise keep them, garbled at its default
// speed, for the first reader). The zero value accepts any setting and
// keeps what is sent before the port is opened.
//
// Only the baud rate is checked: Linux pseudo-terminals force 8 data bits
// and no parity whatever the agent asks for, so those cannot be read back.
type Line struct {
	Baud int
}

func (l Line) String() string {
	if l.Baud == 0 {
		return "any"
	}
	return fmt.Sprintf("%d baud", l.Baud)
}

// Device is a simulated serial device behind a pseudo-terminal: the agent
// opens Path() as its serial port; Write puts bytes on the wire; what the
// agent writes is passed to the device's handler.
type Device struct {
	mu      sync.Mutex
	master  *os.File
	slave   *os.File
	link    string
	line    Line
	handler func([]byte)
	rx      bytes.Buffer
	rxCond  *sync.Cond
}

// NewDevice creates a pseudo-terminal pair in raw mode. handler (may be
// nil) receives each piece the agent writes, on the device's reader
// goroutine.
func NewDevice(line Line, handler func([]byte)) (*Device, error) {
	d := &Device{line: line, handler: handler}
	d.rxCond = sync.NewCond(&d.mu)
	if err := d.open(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Device) open() error {
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
	// Close would not interrupt the reader below and the slave would never
	// see the hang-up. Reopen it through the poller. Close-on-exec, or an
	// agent started as a child process would hold the master open and
	// never see an unplug.
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
	d.master, d.slave = m, sl
	go d.read(m)
	return nil
}

// read passes what the agent writes to the handler, until the master is
// closed.
func (d *Device) read(m *os.File) {
	buf := make([]byte, 512)
	for {
		n, err := m.Read(buf)
		if n > 0 {
			p := buf[:n]
			if d.lineState() == lineWrong {
				p = garble(p)
			}
			d.mu.Lock()
			d.rx.Write(p)
			d.rxCond.Broadcast()
			h := d.handler
			d.mu.Unlock()
			if h != nil {
				h(bytes.Clone(p))
			}
		}
		if err != nil {
			return
		}
	}
}

// Received returns everything the agent has written to the device.
func (d *Device) Received() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.rx.Bytes())
}

// WaitReceived waits up to timeout until what the agent wrote contains
// want.
func (d *Device) WaitReceived(want []byte, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		d.mu.Lock()
		d.rxCond.Broadcast()
		d.mu.Unlock()
	})
	defer t.Stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for !bytes.Contains(d.rx.Bytes(), want) {
		if time.Now().After(deadline) {
			return false
		}
		d.rxCond.Wait()
	}
	return true
}

// Path is the serial device the agent should open (the link when one was
// made with Link).
func (d *Device) Path() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.link != "" || d.slave == nil {
		return d.link
	}
	return d.slave.Name()
}

// Link makes a stable symbolic link to the device, like /dev/serial/by-id.
func (d *Device) Link(path string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.slave == nil {
		return fmt.Errorf("device unplugged")
	}
	os.Remove(path)
	if err := os.Symlink(d.slave.Name(), path); err != nil {
		return err
	}
	d.link = path
	return nil
}

// Write puts raw bytes on the wire, garbled when the agent's line settings
// differ from the device's, lost when no program has set up the port yet
// (see Line).
func (d *Device) Write(p []byte) error {
	d.mu.Lock()
	m := d.master
	d.mu.Unlock()
	if m == nil {
		return fmt.Errorf("device unplugged")
	}
	switch d.lineState() {
	case lineUnset:
		return nil
	case lineWrong:
		p = garble(p)
	}
	_, err := m.Write(p)
	return err
}

// lineState is how the port is set, as the device sees it.
type lineState int

const (
	lineSet     lineState = iota // as the device's line, or the device accepts any setting
	lineWrong                    // at another baud rate: bytes are garbled both ways
	lineUnset                    // not set up by any program since the pseudo-terminal was made
	lineUnknown                  // the settings cannot be read back: taken as set
)

// lineState reads how the port is set. A device that accepts any setting
// is always lineSet.
func (d *Device) lineState() lineState {
	d.mu.Lock()
	want, m := d.line, d.master
	d.mu.Unlock()
	if want.Baud == 0 || m == nil {
		return lineSet
	}
	got, st := portLine(int(m.Fd()))
	switch {
	case st == lineUnknown:
		return lineSet
	case st == lineUnset:
		return lineUnset
	case got != want:
		return lineWrong
	}
	return lineSet
}

// garble turns bytes into what a receiver with the wrong baud rate or
// framing makes of them: fewer bytes, high bits and control characters.
func garble(p []byte) []byte {
	out := make([]byte, 0, len(p))
	for i, c := range p {
		if i%3 == 2 {
			continue // framing errors lose bytes
		}
		out = append(out, (c*37+0x91)|0x80)
		if i%5 == 0 {
			out = append(out, c&0x1F) // and make control characters
		}
	}
	return out
}

// Unplug closes the pseudo-terminal: the agent's reads fail as with a
// pulled USB cable.
func (d *Device) Unplug() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.master != nil {
		d.master.Close()
		d.slave.Close()
		d.master, d.slave = nil, nil
	}
}

// Replug creates a new pseudo-terminal behind the same link.
func (d *Device) Replug() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.master != nil {
		return nil
	}
	if err := d.open(); err != nil {
		return err
	}
	if d.link != "" {
		os.Remove(d.link)
		return os.Symlink(d.slave.Name(), d.link)
	}
	return nil
}

// Close releases the pseudo-terminal and removes the link.
func (d *Device) Close() error {
	d.Unplug()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.link != "" {
		os.Remove(d.link)
	}
	return nil
}

// Scanner is a simulated barcode scanner.
type Scanner struct {
	*Device
	suffix string
}

// NewScanner creates a scanner accepting any line setting. suffix is the
// terminator it appends (e.g. "\r\n").
func NewScanner(suffix string) (*Scanner, error) {
	return NewScannerLine(suffix, Line{})
}

// NewScannerLine creates a scanner that really talks at line.
func NewScannerLine(suffix string, line Line) (*Scanner, error) {
	d, err := NewDevice(line, nil)
	if err != nil {
		return nil, err
	}
	return &Scanner{Device: d, suffix: suffix}, nil
}

// Send writes one read: AIM identifier, code and the terminator.
func (s *Scanner) Send(aim, code string) error {
	return s.Write([]byte(aim + code + s.suffix))
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
	clearSpeed(t)
	return unix.IoctlSetTermios(fd, ioctlSetTermios, t)
}
