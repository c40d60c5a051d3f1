// Command scanreceiver is the reference central receiver: it stores the
// agents' scans from MQTT in PostgreSQL and sends each agent receipts for
// what is stored (docs/CENTRAL.md). It is a binary of its own so that the
// hub binary, scanagent, links neither pgx nor the PostgreSQL code. main
// is wiring only; see run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal kills at once
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}
