//go:build unix

package devices

import (
	"errors"
	"io"
	"os"
	"reflect"
	"sync/atomic"
	"time"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// A port read through Go's network poller.
//
// go.bug.st/serial reads a Unix port with a blocking pselect(2) bounded by
// the read timeout, then read(2). A goroutine in a blocking system call
// holds its thread; once it has been there 10 ms the runtime's monitor
// takes its processor back, and then polls every 20 µs for the next
// millisecond, betting that more such calls follow. An idle scanner waits
// in that call for its whole read timeout, so with a few ports the monitor
// never slept: at 1,000 scans/s over 16 ports it woke 3,700 times a second
// (a quarter of the agent's CPU in a profile), and at idle it was most of
// what the agent did. The port's own descriptor is left to the library for
// everything else (line settings, modem lines, break, flushes, close); a
// duplicate of it, in non-blocking mode, is read and written through an
// os.File, which waits in the poller (epoll) like a socket.
//
// Non-blocking mode belongs to the open file, so the library's descriptor
// is non-blocking too: its Read and Write are not used any more. When the
// descriptor cannot be had or polled, the library's port is used as it
// is.

// polledPort is a serial.Port whose Read and Write go through the poller.
type polledPort struct {
	serial.Port
	f       *os.File
	timeout atomic.Int64 // read timeout in ns; -1: none
}

// errPortClosed is a read that found the port hung up (a USB adapter
// unplugged leaves it readable with no data, as the library says).
var errPortClosed = errors.New("port closed (device unplugged?)")

// portWriteTimeout bounds a write to a device that stopped reading (flow
// control held): the write fails rather than holding the port goroutine.
const portWriteTimeout = 2 * time.Second

// pollable wraps p when its descriptor can be polled; otherwise it
// returns p.
func pollable(p serial.Port, path string) serial.Port {
	fd, ok := portFD(p)
	if !ok {
		return p
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return p
	}
	unix.CloseOnExec(dup)
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return p
	}
	f := os.NewFile(uintptr(dup), path)
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		// Not pollable (os.ErrNoDeadline): back to blocking reads.
		f.Close()
		unix.SetNonblock(fd, false)
		return p
	}
	pp := &polledPort{Port: p, f: f}
	pp.timeout.Store(int64(serial.NoTimeout))
	return pp
}

// portFD is the library's descriptor of an open Unix port (its unexported
// handle field, read by reflection: the library offers no accessor).
func portFD(p serial.Port) (int, bool) {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return 0, false
	}
	h := v.Elem().FieldByName("handle")
	if !h.IsValid() || h.Kind() != reflect.Int {
		return 0, false
	}
	return int(h.Int()), true
}

// Read reads what is there, waiting at most the read timeout; a timeout
// returns 0 and no error, as the library's Read does.
func (p *polledPort) Read(b []byte) (int, error) {
	var deadline time.Time
	if t := time.Duration(p.timeout.Load()); t >= 0 {
		deadline = time.Now().Add(t)
	}
	if err := p.f.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := p.f.Read(b)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, nil
	case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
		return n, errPortClosed
	}
	return n, err
}

// Write writes all of b, waiting at most portWriteTimeout.
func (p *polledPort) Write(b []byte) (int, error) {
	if err := p.f.SetWriteDeadline(time.Now().Add(portWriteTimeout)); err != nil {
		return 0, err
	}
	return p.f.Write(b)
}

// SetReadTimeout sets the timeout of each Read (serial.NoTimeout: none).
func (p *polledPort) SetReadTimeout(t time.Duration) error {
	if err := p.Port.SetReadTimeout(t); err != nil {
		return err
	}
	p.timeout.Store(int64(t))
	return nil
}

// Close ends a Read waiting in the poller, then closes the port.
func (p *polledPort) Close() error {
	p.f.Close()
	return p.Port.Close()
}
