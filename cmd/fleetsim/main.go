//go:build linux

// Command fleetsim runs a fleet of simulated hubs in one process against
// a real mosquitto: each hub is the agent's real uplink (agent/uplink)
// over its own real buffer (buffer), fed with scans at a set rate. It
// measures steady state, then kills the broker for a while as the hubs go
// on scanning, restarts it, and measures the reconnect storm and the
// drain: connection attempts per second (the peak as a share of the
// fleet), the time until every hub reconnected and until every backlog
// drained, the broker's CPU and memory, the latency of live scans during
// the drain, lost and duplicated scans (by id), and how soon the fleet
// view (central/fleet) shows each hub online again.
//
//	go run ./cmd/fleetsim -hubs 1000 -rate 1 -steady 30s -outage 60s
//
// Linux only: CPU and memory are read from /proc. docs/FLEET.md and
// docs/BENCHMARKS.md hold the figures.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/agent/record"
	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/agent/uplink"
	"github.com/scanagent/scanagent/buffer"
	"github.com/scanagent/scanagent/central/fleet"
	"github.com/scanagent/scanagent/central/receiver"
)

type options struct {
	hubs                      int
	rate                      float64
	steady, outage, settle    time.Duration
	spread, recMin, recMax    time.Duration
	drainRate                 int
	order                     string
	mosquitto, dir, jsonFile  string
	kill                      string
	keepalive, connectTimeout time.Duration
	health                    time.Duration
	cpuProfile                string
	receipts                  time.Duration // 0: off
}

func main() {
	var o options
	flag.IntVar(&o.hubs, "hubs", 100, "simulated hubs")
	flag.Float64Var(&o.rate, "rate", 1, "scans per second per hub")
	flag.DurationVar(&o.steady, "steady", 30*time.Second, "steady state before the outage")
	flag.DurationVar(&o.outage, "outage", 60*time.Second, "how long the broker is down")
	flag.DurationVar(&o.settle, "settle", 180*time.Second, "longest wait after the restart for every hub to reconnect and drain")
	flag.DurationVar(&o.spread, "connect-spread", 20*time.Second, "mqtt.connect_spread of each hub")
	flag.DurationVar(&o.recMin, "reconnect-min", 500*time.Millisecond, "mqtt.reconnect_min")
	flag.DurationVar(&o.recMax, "reconnect-max", 60*time.Second, "mqtt.reconnect_max")
	flag.IntVar(&o.drainRate, "drain-rate", 500, "mqtt.drain_rate (scans/s, 0 = no cap)")
	flag.StringVar(&o.order, "order", "seq", "mqtt.order: seq or live_first")
	flag.DurationVar(&o.keepalive, "keepalive", 30*time.Second, "mqtt.keepalive")
	flag.DurationVar(&o.connectTimeout, "connect-timeout", 10*time.Second, "mqtt.connect_timeout")
	flag.DurationVar(&o.health, "health-interval", 30*time.Second, "mqtt.health_interval")
	flag.DurationVar(&o.receipts, "receipts", 0, "turn mqtt.receipts on with this timeout; the central subscriber receipts what it received every 100 ms (0: off, a PUBACK deletes)")
	flag.StringVar(&o.kill, "signal", "kill", "how the broker is stopped: kill (SIGKILL) or term (SIGTERM, it saves its state)")
	flag.StringVar(&o.mosquitto, "mosquitto", "/usr/sbin/mosquitto", "mosquitto binary")
	flag.StringVar(&o.dir, "dir", "", "working directory (default: a temporary one, removed after)")
	flag.StringVar(&o.jsonFile, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the steady state to this file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}

// hub is one simulated hub.
type hub struct {
	i           int
	q           *buffer.Queue
	u           *uplink.Uplink
	appended    atomic.Int64 // scans made durable: ids h<i>-0 .. h<i>-(n-1)
	timesMu     sync.Mutex
	times       []time.Time  // when each was made durable
	failed      atomic.Int64 // appends refused
	reconnectAt time.Time    // after the restart (sampler only)
	drainedAt   time.Time
}

type rep struct{ h *hub }

func (r rep) Status() status.Status {
	return status.Status{Agent: fmt.Sprintf("hub-%04d", r.h.i), Site: "SIM", Version: "fleetsim", Time: record.Timestamp(time.Now()),
		Uptime: "1s", Buffer: r.h.q.Stats(), MQTT: r.h.u.Stats(), Clock: "synced"}
}
func (r rep) Devices() []status.DeviceReport { return nil }

// received is one scan as the central subscriber got it.
type received struct {
	scanned, at time.Time
	hub         int
}

type results struct {
	Hubs                 int            `json:"hubs"`
	RatePerHub           float64        `json:"rate_per_hub"`
	Outage               string         `json:"outage"`
	Settings             map[string]any `json:"settings"`
	ProcessRSSBytes      int64          `json:"process_rss_bytes"`
	PerHubRSSBytes       int64          `json:"per_hub_rss_bytes"`
	ProcessCPUPercent    float64        `json:"process_cpu_percent_steady"`
	SteadyP50Ms          float64        `json:"steady_latency_p50_ms"`
	SteadyP99Ms          float64        `json:"steady_latency_p99_ms"`
	AttemptsPeakPerSec   int            `json:"attempts_peak_per_s"`
	AttemptsPeakPercent  float64        `json:"attempts_peak_percent_of_fleet"`
	AttemptsPeakOutage   int            `json:"attempts_peak_per_s_during_outage"`
	AttemptsPeakRestart  int            `json:"attempts_peak_per_s_after_restart"`
	AllReconnectedS      float64        `json:"all_reconnected_s"`
	AllDrainedS          float64        `json:"all_drained_s"`
	MaxDrainAfterReconnS float64        `json:"max_drain_after_reconnect_s"`
	DrainLiveP50Ms       float64        `json:"drain_live_latency_p50_ms"`
	DrainLiveP99Ms       float64        `json:"drain_live_latency_p99_ms"`
	BrokerCPUPeak        float64        `json:"broker_cpu_percent_peak"`
	BrokerCPUSteady      float64        `json:"broker_cpu_percent_steady"`
	BrokerRSSPeak        int64          `json:"broker_rss_peak_bytes"`
	FleetViewP99S        float64        `json:"fleet_view_online_lag_p99_s"`
	FleetViewMaxS        float64        `json:"fleet_view_online_lag_max_s"`
	FleetViewStale       uint64         `json:"fleet_view_stale_statuses"`
	Appended             int64          `json:"appended"`
	AppendFailed         int64          `json:"append_failed"`
	Received             int64          `json:"received_distinct"`
	Lost                 int64          `json:"lost"`
	LostAtKill           int64          `json:"lost_made_durable_within_2s_before_the_kill"`
	LostFirst            []string       `json:"lost_first,omitempty"`
	Undrained            int            `json:"hubs_not_empty_at_count"`
	Duplicates           int64          `json:"duplicates"`
	AttemptsPerSecond    []int          `json:"attempts_per_second_from_outage"`
}

func run(ctx context.Context, o options) error {
	if o.hubs < 1 || o.rate <= 0 {
		return fmt.Errorf("-hubs and -rate must be positive")
	}
	if o.kill != "kill" && o.kill != "term" {
		return fmt.Errorf("-signal must be kill or term")
	}
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "fleetsim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	res := results{Hubs: o.hubs, RatePerHub: o.rate, Outage: o.outage.String(), Settings: map[string]any{
		"connect_spread": o.spread.String(), "reconnect_min": o.recMin.String(), "reconnect_max": o.recMax.String(),
		"drain_rate": o.drainRate, "order": o.order, "keepalive": o.keepalive.String(), "signal": o.kill, "receipts_timeout": o.receipts.String(),
		"cpus": runtime.NumCPU()}}
	fmt.Printf("fleetsim: %d hubs at %.2f scans/s each, steady %s, outage %s, %d CPUs\n", o.hubs, o.rate, o.steady, o.outage, runtime.NumCPU())

	br, err := startBroker(o, dir)
	if err != nil {
		return err
	}
	defer br.stop()

	// The central subscriber: a persistent session, so that what the hubs
	// publish before it is back after the restart is kept for it.
	var (
		recvMu    sync.Mutex
		seen      = map[string]int32{}
		toReceipt = map[int][]int64{} // -receipts: seqs received, per hub
		recv      []received
	)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(br.url()).SetClientID("fleetsim-central").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(500 * time.Millisecond).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			var ev struct {
				ID        string `json:"id"`
				Seq       int64  `json:"seq"`
				ScannedAt string `json:"scanned_at"`
			}
			now := time.Now()
			if json.Unmarshal(m.Payload(), &ev) != nil {
				return
			}
			t, _ := time.Parse(time.RFC3339Nano, ev.ScannedAt)
			hubNo := -1
			if a, _, ok := strings.Cut(strings.TrimPrefix(ev.ID, "h"), "-"); ok {
				hubNo, _ = strconv.Atoi(a)
			}
			recvMu.Lock()
			seen[ev.ID]++
			if o.receipts > 0 && hubNo >= 0 {
				toReceipt[hubNo] = append(toReceipt[hubNo], ev.Seq)
			}
			recv = append(recv, received{t, now, hubNo})
			recvMu.Unlock()
		}).
		SetOnConnectHandler(func(c mqtt.Client) {
			go c.Subscribe("scanagent/+/+/scans/#", 1, nil).WaitTimeout(10 * time.Second)
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if o.receipts > 0 {
		// What was received is receipted every 100 ms, as a receiver
		// that commits batches would (central/receiver's payload).
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				recvMu.Lock()
				batch := toReceipt
				toReceipt = map[int][]int64{}
				recvMu.Unlock()
				for hubNo, seqs := range batch {
					slices.Sort(seqs)
					id := fmt.Sprintf("hub-%04d", hubNo)
					b, _ := json.Marshal(receiver.Receipt{Schema: receiver.ReceiptSchema, Agent: id, Ranges: receiver.Ranges(seqs),
						Receiver: "fleetsim", StoredAt: time.Now().UTC().Format(time.RFC3339Nano)})
					// A receipt lost in the outage: the hub publishes those scans
					// again after the receipt timeout.
					sub.Publish("scanagent/SIM/"+id+"/receipts", 1, false, b)
				}
			}
		}()
	}

	view, _ := fleet.NewView("scanagent/+/+", 0)
	fw, err := fleet.Watch(ctx, fleet.Conn{Brokers: []string{br.url()}, ClientID: "fleetsim-fleet", ConnectTimeout: 5 * time.Second}, "scanagent/+/+", view)
	if err != nil {
		return err
	}
	defer fw.Close()

	var scanning atomic.Bool
	scanning.Store(true)
	rssBefore := selfRSS()
	hubs := make([]*hub, o.hubs)
	log := slog.New(slog.DiscardHandler)
	// The buffers are opened first, several at a time (an open takes a
	// few hundred milliseconds here), then every hub starts.
	queues := make([]*buffer.Queue, o.hubs)
	openErr := make([]error, o.hubs)
	var owg sync.WaitGroup
	sem := make(chan struct{}, 8)
	openedAt := time.Now()
	for i := range queues {
		owg.Add(1)
		sem <- struct{}{}
		go func() {
			defer owg.Done()
			defer func() { <-sem }()
			queues[i], openErr[i] = buffer.Open(filepath.Join(dir, "hubs", strconv.Itoa(i)), buffer.Options{MinFreeDisk: -1, SegmentSize: 256 << 10, Logger: log})
		}()
	}
	owg.Wait()
	for i, err := range openErr {
		if err != nil {
			for _, q := range queues {
				if q != nil {
					q.Close()
				}
			}
			return fmt.Errorf("hub %d: %w", i, err)
		}
	}
	fmt.Printf("  %d buffers opened in %.1f s\n", o.hubs, time.Since(openedAt).Seconds())
	runCtx, stopHubs := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range hubs {
		h := &hub{i: i, q: queues[i]}
		q := h.q
		id := fmt.Sprintf("hub-%04d", i)
		m := config.MQTT{Brokers: []string{br.url()}, ClientID: "scanagent-" + id, TopicPrefix: "scanagent/SIM/" + id, Window: 64,
			KeepAlive: config.Duration(o.keepalive), ConnectTimeout: config.Duration(o.connectTimeout),
			ReconnectMin: config.Duration(o.recMin), ReconnectMax: config.Duration(o.recMax), HealthInterval: config.Duration(o.health),
			Order: o.order, ConnectSpread: config.Duration(o.spread), DrainRate: o.drainRate,
			Receipts: config.Receipts{Enabled: o.receipts > 0, Topic: "scanagent/SIM/" + id + "/receipts", Timeout: config.Duration(max(o.receipts, time.Second))}}
		h.u = uplink.New(uplink.Config{MQTT: m, Agent: config.Agent{ID: id, Site: "SIM"}, Version: "fleetsim",
			SessionFile: filepath.Join(dir, "hubs", strconv.Itoa(i), "mqtt-session")},
			uplink.Deps{Queue: q, Reporter: rep{h}, Log: log})
		hubs[i] = h
		wg.Add(2)
		go func() { defer wg.Done(); h.u.Run(runCtx) }()
		go func() { defer wg.Done(); scan(runCtx, h, o.rate, &scanning) }()
	}
	defer func() {
		stopHubs()
		wg.Wait()
		for _, h := range hubs {
			if h != nil {
				h.q.Close()
			}
		}
	}()
	fmt.Printf("  %d hubs started; waiting for all to connect (connect_spread %s)\n", o.hubs, o.spread)
	if !waitFor(ctx, o.spread+60*time.Second, func() bool { return countConnected(hubs) == len(hubs) }) {
		return fmt.Errorf("only %d of %d hubs connected", countConnected(hubs), len(hubs))
	}

	// Steady state.
	fmt.Printf("  steady state for %s\n", o.steady)
	runtime.GC()
	cpu0, brCPU0, t0 := selfCPU(), br.cpu(), time.Now()
	recvMu.Lock()
	steadyFrom := len(recv)
	recvMu.Unlock()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	ok := sleep(ctx, o.steady)
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if !ok {
		return ctx.Err()
	}
	el := time.Since(t0).Seconds()
	res.ProcessCPUPercent = (selfCPU() - cpu0) / el * 100
	res.BrokerCPUSteady = (br.cpu() - brCPU0) / el * 100
	res.ProcessRSSBytes = selfRSS()
	res.PerHubRSSBytes = (res.ProcessRSSBytes - rssBefore) / int64(o.hubs)
	recvMu.Lock()
	var lat []float64
	for _, r := range recv[steadyFrom:] {
		lat = append(lat, ms(r.at.Sub(r.scanned)))
	}
	recvMu.Unlock()
	res.SteadyP50Ms, res.SteadyP99Ms = pct(lat, 50), pct(lat, 99)
	fmt.Printf("  steady: process RSS %s (%s per hub), process CPU %.0f%%, broker CPU %.0f%%, latency p50 %.1f ms p99 %.1f ms\n",
		mb(res.ProcessRSSBytes), mb(res.PerHubRSSBytes), res.ProcessCPUPercent, res.BrokerCPUSteady, res.SteadyP50Ms, res.SteadyP99Ms)

	// The sampler: connection attempts per 100 ms, connected hubs, drains,
	// the fleet view's lag and the broker's CPU and memory.
	sessions := func() uint64 {
		var n uint64
		for _, h := range hubs {
			n += h.u.Stats().Sessions
		}
		return n
	}
	type sample struct {
		at       time.Time
		attempts uint64
	}
	var (
		sampMu    sync.Mutex
		samples   []sample
		brCPUPeak float64
		brRSSPeak int64
		viewLag   []float64
		restartAt time.Time
		restarted atomic.Bool
	)
	sampCtx, stopSamp := context.WithCancel(ctx)
	sampDone := make(chan struct{})
	go func() {
		defer close(sampDone)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		lastCPU, lastAt := br.cpu(), time.Now()
		viewSeen := make([]bool, len(hubs))
		for {
			select {
			case <-sampCtx.Done():
				return
			case now := <-tk.C:
				s := sample{now, sessions()}
				sampMu.Lock()
				samples = append(samples, s)
				if now.Sub(lastAt) >= time.Second {
					c := br.cpu()
					brCPUPeak = max(brCPUPeak, (c-lastCPU)/now.Sub(lastAt).Seconds()*100)
					lastCPU, lastAt = c, now
					brRSSPeak = max(brRSSPeak, br.rss())
				}
				if restarted.Load() {
					rows := map[string]fleet.Hub{}
					for _, r := range view.Snapshot(now) {
						rows[r.Agent] = r
					}
					for _, h := range hubs {
						st := h.u.Stats()
						if h.reconnectAt.IsZero() && st.Connected {
							h.reconnectAt = now
						}
						if !h.reconnectAt.IsZero() && h.drainedAt.IsZero() {
							bs := h.q.Stats()
							if bs.Depth == 0 || bs.OldestAge < now.Sub(h.reconnectAt).Seconds() {
								h.drainedAt = now
							}
						}
						if !h.reconnectAt.IsZero() && !viewSeen[h.i] {
							if r, ok := rows[fmt.Sprintf("hub-%04d", h.i)]; ok && r.State == "online" && r.Session >= st.Session && st.Session > 0 {
								viewSeen[h.i] = true
								viewLag = append(viewLag, now.Sub(h.reconnectAt).Seconds())
							}
						}
					}
				}
				sampMu.Unlock()
			}
		}
	}()

	// The outage.
	outageAt := time.Now()
	fmt.Printf("  broker stopped (%s) for %s; hubs keep scanning\n", o.kill, o.outage)
	br.halt(o.kill == "kill")
	if !sleep(ctx, o.outage) {
		stopSamp()
		return ctx.Err()
	}
	if err := br.start(); err != nil {
		stopSamp()
		return err
	}
	restartAt = time.Now()
	restarted.Store(true)
	fmt.Printf("  broker restarted; waiting up to %s for every hub to reconnect and drain\n", o.settle)
	done := waitFor(ctx, o.settle, func() bool {
		sampMu.Lock()
		defer sampMu.Unlock()
		for _, h := range hubs {
			if h.drainedAt.IsZero() {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second) // the view's lag for the last hubs
	stopSamp()
	<-sampDone
	if !done {
		fmt.Printf("  NOT every hub reconnected and drained within %s\n", o.settle)
	}
	var lastReconnect, lastDrain time.Time
	var maxDrain time.Duration
	missing := 0
	for _, h := range hubs {
		if h.drainedAt.IsZero() {
			missing++
			continue
		}
		lastReconnect = later(lastReconnect, h.reconnectAt)
		lastDrain = later(lastDrain, h.drainedAt)
		maxDrain = max(maxDrain, h.drainedAt.Sub(h.reconnectAt))
	}
	res.AllReconnectedS = lastReconnect.Sub(restartAt).Seconds()
	res.AllDrainedS = lastDrain.Sub(restartAt).Seconds()
	res.MaxDrainAfterReconnS = maxDrain.Seconds()
	res.BrokerCPUPeak, res.BrokerRSSPeak = brCPUPeak, brRSSPeak
	res.FleetViewP99S, res.FleetViewMaxS = pct(viewLag, 99), pct(viewLag, 100)
	res.FleetViewStale = view.Counts().Stale
	// Attempts per whole second from the outage on.
	for i := 1; i < len(samples); i++ {
		sec := int(samples[i].at.Sub(outageAt) / time.Second)
		if sec < 0 {
			continue
		}
		for len(res.AttemptsPerSecond) <= sec {
			res.AttemptsPerSecond = append(res.AttemptsPerSecond, 0)
		}
		res.AttemptsPerSecond[sec] += int(samples[i].attempts - samples[i-1].attempts)
	}
	restartSec := int(restartAt.Sub(outageAt) / time.Second)
	for sec, n := range res.AttemptsPerSecond {
		res.AttemptsPeakPerSec = max(res.AttemptsPeakPerSec, n)
		if sec < restartSec {
			res.AttemptsPeakOutage = max(res.AttemptsPeakOutage, n)
		} else {
			res.AttemptsPeakRestart = max(res.AttemptsPeakRestart, n)
		}
	}
	res.AttemptsPeakPercent = float64(res.AttemptsPeakPerSec) / float64(o.hubs) * 100
	recvMu.Lock()
	lat = lat[:0]
	for _, r := range recv {
		// A live scan during its hub's drain: made after the hub
		// reconnected, before its backlog was gone.
		if r.hub < 0 || r.hub >= len(hubs) {
			continue
		}
		h := hubs[r.hub]
		if !h.reconnectAt.IsZero() && !r.scanned.Before(h.reconnectAt) && !r.scanned.After(h.drainedAt) {
			lat = append(lat, ms(r.at.Sub(r.scanned)))
		}
	}
	recvMu.Unlock()
	res.DrainLiveP50Ms, res.DrainLiveP99Ms = pct(lat, 50), pct(lat, 99)

	// Stop scanning, let every buffer empty, then count by id.
	fmt.Println("  counting: stopping the hubs' scanning and waiting for every buffer to empty")
	scanning.Store(false)
	waitFor(ctx, 120*time.Second, func() bool {
		for _, h := range hubs {
			if h.q.Stats().Depth > 0 {
				return false
			}
		}
		return true
	})
	for _, h := range hubs {
		if h.q.Stats().Depth > 0 {
			res.Undrained++
		}
	}
	quiet := 0
	last := -1
	for quiet < 20 && ctx.Err() == nil { // 2 s without a new scan
		time.Sleep(100 * time.Millisecond)
		recvMu.Lock()
		n := len(recv)
		recvMu.Unlock()
		if n == last {
			quiet++
		} else {
			quiet, last = 0, n
		}
	}
	recvMu.Lock()
	for _, h := range hubs {
		n := h.appended.Load()
		res.Appended += n
		res.AppendFailed += h.failed.Load()
		for k := range n {
			switch c := seen[fmt.Sprintf("h%d-%d", h.i, k)]; {
			case c == 0:
				res.Lost++
				h.timesMu.Lock()
				at := h.times[k]
				h.timesMu.Unlock()
				if d := outageAt.Sub(at); d >= 0 && d <= 2*time.Second {
					res.LostAtKill++
				}
				if len(res.LostFirst) < 10 {
					res.LostFirst = append(res.LostFirst, fmt.Sprintf("h%d-%d made durable %.3f s before the kill", h.i, k, outageAt.Sub(at).Seconds()))
				}
			case c > 1:
				res.Duplicates += int64(c - 1)
			}
		}
	}
	res.Received = int64(len(seen))
	recvMu.Unlock()

	fmt.Printf("results (%d hubs, %.2f scans/s each, outage %s, %s):\n", o.hubs, o.rate, o.outage, o.kill)
	fmt.Printf("  connection attempts: peak %d/s = %.1f%% of the fleet (during the outage %d/s, after the restart %d/s)\n",
		res.AttemptsPeakPerSec, res.AttemptsPeakPercent, res.AttemptsPeakOutage, res.AttemptsPeakRestart)
	fmt.Printf("  every hub reconnected %.1f s after the restart (reconnect_max %s); %d never drained\n", res.AllReconnectedS, o.recMax, missing)
	fmt.Printf("  every backlog drained %.1f s after the restart; longest drain after a hub's reconnect %.1f s\n", res.AllDrainedS, res.MaxDrainAfterReconnS)
	fmt.Printf("  live scans during the drain (made after their hub reconnected, before its backlog was gone; %d): latency p50 %.0f ms, p99 %.0f ms\n", len(lat), res.DrainLiveP50Ms, res.DrainLiveP99Ms)
	fmt.Printf("  broker: CPU steady %.0f%%, peak %.0f%% (of one core, per second); RSS peak %s\n", res.BrokerCPUSteady, res.BrokerCPUPeak, mb(res.BrokerRSSPeak))
	fmt.Printf("  fleet view: online shown within p99 %.2f s, max %.2f s of a hub's reconnect; %d stale statuses ignored\n", res.FleetViewP99S, res.FleetViewMaxS, res.FleetViewStale)
	fmt.Printf("  scans: %d appended (%d refused), %d distinct received, %d lost (%d of them made durable within 2 s before the kill), %d duplicates; %d hubs not empty when counted\n",
		res.Appended, res.AppendFailed, res.Received, res.Lost, res.LostAtKill, res.Duplicates, res.Undrained)
	for _, l := range res.LostFirst {
		fmt.Println("    lost:", l)
	}
	if o.jsonFile != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(o.jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// scan appends scans at rate per second, from a random phase.
func scan(ctx context.Context, h *hub, rate float64, scanning *atomic.Bool) {
	period := time.Duration(float64(time.Second) / rate)
	if !sleep(ctx, rand.N(period)) {
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	station := "induct-1"
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !scanning.Load() {
				continue
			}
			n := h.appended.Load()
			ev := record.Event{Schema: record.Schema, ID: fmt.Sprintf("h%d-%d", h.i, n), Agent: fmt.Sprintf("hub-%04d", h.i), Site: "SIM",
				Station: station, ScannedAt: record.Timestamp(now), Barcode: fmt.Sprintf("RR%09dRU", n%1e9), Kind: "other", Valid: true}
			v, err := record.EventValue(station, &ev)
			if err == nil {
				_, err = h.q.Append(v)
			}
			if err != nil {
				h.failed.Add(1)
				continue
			}
			h.timesMu.Lock()
			h.times = append(h.times, time.Now())
			h.timesMu.Unlock()
			h.appended.Add(1)
		}
	}
}

func countConnected(hubs []*hub) int {
	n := 0
	for _, h := range hubs {
		if h.u.Connected() {
			n++
		}
	}
	return n
}

func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return cond()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// broker is a mosquitto process on a fixed port, stopped and started.
type broker struct {
	bin, conf string
	port      int
	cmd       *exec.Cmd
	pid       atomic.Int64 // 0 while stopped; read by the sampler
	done      chan struct{}
}

func startBroker(o options, dir string) (*broker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	bdir := filepath.Join(dir, "broker")
	if err := os.MkdirAll(bdir, 0o755); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("per_listener_settings false\npersistence true\npersistence_location %s/\nautosave_interval 1\n"+
		"max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\nallow_anonymous true\nlistener %d 127.0.0.1\n", bdir, port)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	b := &broker{bin: o.mosquitto, conf: filepath.Join(bdir, "mosquitto.conf"), port: port}
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return b, b.start()
}

func (b *broker) url() string { return "tcp://127.0.0.1:" + strconv.Itoa(b.port) }

func (b *broker) start() error {
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	b.done = make(chan struct{})
	b.pid.Store(int64(b.cmd.Process.Pid))
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(b.cmd, b.done)
	for range 100 {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.port), 100*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("mosquitto did not listen on %d", b.port)
}

func (b *broker) halt(kill bool) {
	if b.cmd == nil {
		return
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	b.pid.Store(0)
	b.cmd.Process.Signal(sig)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
}

func (b *broker) stop() { b.halt(false) }

// cpu is the broker's CPU seconds so far.
func (b *broker) cpu() float64 {
	pid := b.pid.Load()
	if pid == 0 {
		return 0
	}
	return procCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

func (b *broker) rss() int64 {
	pid := b.pid.Load()
	if pid == 0 {
		return 0
	}
	return procRSS(fmt.Sprintf("/proc/%d/status", pid))
}

func selfCPU() float64 { return procCPU("/proc/self/stat") }
func selfRSS() int64   { return procRSS("/proc/self/status") }

// procCPU reads utime + stime (fields 14, 15) in seconds (USER_HZ 100).
func procCPU(path string) float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100
}

func procRSS(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
