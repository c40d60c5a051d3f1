// Command scanagent is the parcel-scan edge agent: it reads barcode scanners
// over serial ports, stores every scan durably and forwards it over MQTT.
// main is wiring only; see run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Started by the Windows service manager: it stops the agent, not
	// signals. os.Stderr is read inside the closure: in a service it is
	// redirected to the log file first.
	if handled, err := runAsService(func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}); handled {
		os.Exit(exitCode(err, os.Stderr))
	}
	stopProfile := startProfile()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills the process as usual.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	os.Exit(exitCode(err, os.Stderr))
}
