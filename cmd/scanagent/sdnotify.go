package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/scanagent/scanagent/agent"
)

// notifier tells the service manager about the agent: systemd's sd_notify
// protocol on Linux (Type=notify, WatchdogSec=), nothing elsewhere.
type notifier interface {
	notify(state string) error
}

// serviceNotifier returns the service manager's notifier, or nil when the
// agent was not started by one that listens.
func serviceNotifier() notifier { return newSDNotifier(os.Getenv("NOTIFY_SOCKET")) }

// runWatchdog pings the watchdog at half the interval systemd asked for
// (WATCHDOG_USEC), after checking that the agent answers (its status is
// taken under its locks), with a one-line status for systemctl.
func runWatchdog(ctx context.Context, n notifier, a *agent.Agent, log *slog.Logger) {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 || n == nil {
		return
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return
	}
	t := time.NewTicker(time.Duration(usec) * time.Microsecond / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := a.Status()
		status := fmt.Sprintf("STATUS=broker %s, %d scans waiting, %d stations", st.MQTT.State, st.Buffer.Depth, len(st.Stations))
		if err := n.notify("WATCHDOG=1\n" + status); err != nil {
			log.Warn("systemd watchdog ping failed", "err", err)
		}
	}
}
