package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	"github.com/scanagent/scanagent/agent"
)

// watchReload re-reads the configuration file on each reload signal
// (SIGHUP; none on Windows) and applies it to the running agent. A file
// that does not load keeps the running configuration; every error is
// logged.
func watchReload(ctx context.Context, path string, a *agent.Agent, log *slog.Logger) {
	if reloadSignal == nil {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, reloadSignal)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if _, err := a.ReloadFile("signal"); err != nil {
				log.Error("reload failed", "err", err)
			}
		}
	}()
}
