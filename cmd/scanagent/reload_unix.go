//go:build unix

package main

import (
	"os"
	"syscall"
)

var reloadSignal os.Signal = syscall.SIGHUP
