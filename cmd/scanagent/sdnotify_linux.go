package main

import (
	"net"
)

// sdNotifier writes sd_notify datagrams to systemd's socket; no cgo, no
// libsystemd.
type sdNotifier struct{ addr *net.UnixAddr }

func newSDNotifier(socket string) notifier {
	if socket == "" {
		return nil
	}
	if socket[0] == '@' { // abstract namespace
		socket = "\x00" + socket[1:]
	}
	return sdNotifier{&net.UnixAddr{Name: socket, Net: "unixgram"}}
}

func (s sdNotifier) notify(state string) error {
	c, err := net.DialUnix("unixgram", nil, s.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
