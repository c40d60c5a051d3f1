//go:build !unix

package main

import "os"

// reloadSignal is nil where there is no SIGHUP: restart the service to
// apply a new configuration.
var reloadSignal os.Signal
