package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"

	"github.com/scanagent/scanagent/agent"
	"github.com/scanagent/scanagent/agent/config"
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
			log.Info("reload: reading the configuration", "config", path)
			cfg, err := config.Load(path)
			if err != nil {
				var errs config.Errors
				if errors.As(err, &errs) {
					for _, e := range errs {
						log.Error("reload refused: the running configuration stays", "error", e.Error())
					}
				} else {
					log.Error("reload refused: the running configuration stays", "error", err.Error())
				}
				continue
			}
			logWarnings(log, cfg)
			restart, err := a.Reload(cfg)
			if err != nil {
				log.Error("reload failed", "err", err)
				continue
			}
			if len(restart) > 0 {
				log.Warn("reload: these sections changed and need a restart to apply; the running values stay", "sections", restart)
			}
		}
	}()
}
