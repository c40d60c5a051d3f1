//go:build linux

// Command scanbench measures the scanagent binary end to end on this
// machine: live scans through simulated scanners (pseudo-terminals) to a
// subscriber on a local mosquitto, a backlog built while the broker is down
// and its drain compared with a raw paho publisher, and the footprint.
//
//	go run ./cmd/scanbench -live 20s -backlog 1000000 -json bench.json
//
// Linux only: CPU and memory are read from /proc.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const mosquittoPath = "/usr/sbin/mosquitto"

type options struct {
	agent     string
	scanners  int
	rate      int
	live      time.Duration
	backlog   int
	jsonFile  string
	skipDrain bool
	buffer    string
	idle      time.Duration
	idleOnly  bool
	receipts  bool
	receiver  bool
	console   int
	flood     int
}

func main() {
	var o options
	flag.StringVar(&o.agent, "agent", "", "scanagent binary (empty: build ./cmd/scanagent into a temporary directory)")
	flag.IntVar(&o.scanners, "scanners", 16, "simulated scanners (stations)")
	flag.IntVar(&o.rate, "rate", 10000, "live phase: scans per second, all scanners together")
	flag.DurationVar(&o.live, "live", 20*time.Second, "live phase duration")
	flag.IntVar(&o.backlog, "backlog", 1_000_000, "drain phase: scans buffered while the broker is down")
	flag.StringVar(&o.jsonFile, "json", "", "also write the results as JSON to this file")
	flag.BoolVar(&o.skipDrain, "skip-drain", false, "skip the backlog / start-up / drain phase")
	flag.StringVar(&o.buffer, "buffer", "", "the agent's buffer settings, as YAML flow mapping content (\"min_free_disk: 0\")")
	flag.DurationVar(&o.idle, "idle", 0, "first measure a fresh agent's CPU with its stations idle for this long (0: skip)")
	flag.BoolVar(&o.idleOnly, "idle-only", false, "with -idle: only that phase")
	flag.BoolVar(&o.receiver, "receiver", false, "live phase: mqtt.receipts on, answered by the real scanreceiver storing into a real PostgreSQL (Debian's postgresql package); reports write-to-receipt latency")
	flag.BoolVar(&o.receipts, "receipts", false, "live phase: mqtt.receipts on; the subscriber answers with receipts every 10 ms, as a receiver committing batches would")
	flag.IntVar(&o.console, "console", 0, "live phase: this many technician-console event streams (/api/events) read the agent, as browsers showing the page would")
	flag.IntVar(&o.flood, "flood", 0, "live phase instead of -rate/-live: this many codes in total, written as fast as the ptys take them (with -scanners 1: one station on one pty); throughput is counted from the first write to the last receipt")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "scanbench:", err)
		os.Exit(1)
	}
}
