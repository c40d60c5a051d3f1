//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent/parcel"
	"github.com/scanagent/scanagent/central/pgtest"
	"github.com/scanagent/scanagent/central/receiver"
	"github.com/scanagent/scanagent/devices/sim"
)

const (
	// Every code is unique: scanner i sends serials base + i×rangeSize + k.
	rangeSize   = 3_000_000
	liveBase    = 0
	backlogBase = 50_000_000
	window      = 1000
	grace       = 10 * time.Second
	mib         = 1 << 20
)

// bench holds the state shared by the phases.
type bench struct {
	o        options
	pg       *pgtest.Cluster // -receiver
	receiver *child          // -receiver
	dir      string
	dataDir  string
	cfgPath  string
	bin      string
	httpAddr string
	port     int
	stations []string
	scanners []*sim.Scanner

	broker *broker
	agent  *child
	agents int // agent processes started (log file names)

	// Memory sampler over the whole run.
	curPid  atomic.Int64
	peakMu  sync.Mutex
	peakHWM int64
	peakAn  int64
	procAn  int64 // the current agent process's peak RssAnon

	res Results
}

func run(ctx context.Context, o options) (err error) {
	if o.scanners < 1 || o.rate < 1 || o.live <= 0 || o.backlog < 1 {
		return errors.New("-scanners, -rate, -live and -backlog must be positive")
	}
	if int64(o.rate)*int64(o.live/time.Second+1)/int64(o.scanners) >= rangeSize || o.backlog/o.scanners >= rangeSize || o.scanners*rangeSize > backlogBase {
		return errors.New("too many codes per scanner for the serial ranges (raise -scanners or lower -rate/-live/-backlog)")
	}
	b := &bench{o: o}
	b.res.Command = strings.Join(os.Args, " ")
	b.res.Params = o.params()
	b.res.Machine = machine()
	b.dir, err = os.MkdirTemp("", "scanbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	defer b.cleanup()

	// Whatever was measured is printed, even after a failure.
	defer func() {
		if err != nil {
			b.res.Errors = append(b.res.Errors, err.Error())
		}
		b.res.print(os.Stdout)
		if o.jsonFile != "" {
			j, _ := json.MarshalIndent(&b.res, "", "  ")
			if werr := os.WriteFile(o.jsonFile, append(j, '\n'), 0o644); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}()

	if err := b.setup(ctx); err != nil {
		return err
	}
	go b.sampleMemory(ctx)

	if o.idle > 0 {
		fmt.Fprintf(os.Stderr, "idle: a fresh agent with %d idle stations for %s\n", o.scanners, o.idle)
		if err := b.freshIdle(ctx); err != nil {
			return fmt.Errorf("idle phase: %w", err)
		}
		if o.idleOnly {
			return nil
		}
	}
	fmt.Fprintf(os.Stderr, "live: %d scanners, %d scans/s for %s\n", o.scanners, o.rate, o.live)
	if err := b.live(ctx); err != nil {
		return fmt.Errorf("live phase: %w", err)
	}
	if !o.skipDrain {
		fmt.Fprintf(os.Stderr, "drain: backlog of %d scans\n", o.backlog)
		if err := b.drain(ctx); err != nil {
			return fmt.Errorf("drain phase: %w", err)
		}
	}
	fmt.Fprintln(os.Stderr, "footprint: idle for 10 s")
	return b.footprint(ctx)
}

func (o options) params() Params {
	p := Params{Scanners: o.scanners, Rate: o.rate, LiveS: o.live.Seconds(), Backlog: o.backlog, Window: window}
	if o.skipDrain {
		p.Backlog = 0
	}
	return p
}

func (b *bench) setup(ctx context.Context) error {
	b.bin = b.o.agent
	if b.bin == "" {
		b.bin = filepath.Join(b.dir, "scanagent")
		fmt.Fprintln(os.Stderr, "building scanagent")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "github.com/scanagent/scanagent/cmd/scanagent")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build the agent: %w", err)
		}
	}
	fi, err := os.Stat(b.bin)
	if err != nil {
		return err
	}
	b.res.Footprint.BinaryBytes = fi.Size()

	if b.port, err = freePort(); err != nil {
		return err
	}
	hp, err := freePort()
	if err != nil {
		return err
	}
	b.httpAddr = fmt.Sprintf("127.0.0.1:%d", hp)
	b.dataDir = filepath.Join(b.dir, "data")

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "agent: {id: bench, site: LAB, data_dir: %q}\n", b.dataDir)
	receipts := ""
	if b.o.receipts || b.o.receiver {
		receipts = ", receipts: {enabled: true}"
	}
	fmt.Fprintf(&cfg, "mqtt: {brokers: [\"tcp://127.0.0.1:%d\"], window: %d, reconnect_min: 50ms, reconnect_max: 500ms, connect_spread: 0s, drain_rate: 0%s}\n", b.port, window, receipts)
	if b.o.buffer != "" {
		fmt.Fprintf(&cfg, "buffer: {%s}\n", b.o.buffer)
	}
	fmt.Fprintf(&cfg, "http: {listen: %q}\nlog: {level: warn}\nstations:\n", b.httpAddr)
	for i := range b.o.scanners {
		sc, err := sim.NewScanner("\r\n")
		if err != nil {
			return err
		}
		b.scanners = append(b.scanners, sc)
		link := filepath.Join(b.dir, fmt.Sprintf("scanner-%d", i))
		if err := sc.Link(link); err != nil {
			return err
		}
		id := fmt.Sprintf("line-%d", i)
		b.stations = append(b.stations, id)
		fmt.Fprintf(&cfg, "  - {id: %s, scanner: {port: %q, baud: 115200}}\n", id, link)
	}
	b.cfgPath = filepath.Join(b.dir, "bench.yaml")
	return os.WriteFile(b.cfgPath, []byte(cfg.String()), 0o644)
}

// startReceiver starts a PostgreSQL cluster (central/pgtest) and the real
// scanreceiver on the bench's broker.
func (b *bench) startReceiver(ctx context.Context) error {
	pg, err := pgtest.Start(pgtest.Options{Durable: true})
	if err != nil {
		return fmt.Errorf("postgresql: %w", err)
	}
	b.pg = pg
	if err := pg.Exec("CREATE DATABASE bench"); err != nil {
		return err
	}
	bin := filepath.Join(b.dir, "scanreceiver")
	fmt.Fprintln(os.Stderr, "building scanreceiver")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/scanagent/scanagent/cmd/scanreceiver")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build the receiver: %w", err)
	}
	cfg := filepath.Join(b.dir, "receiver.yaml")
	text := fmt.Sprintf("mqtt: {brokers: [%q]}\npostgres: {url: %q}\nreceiver: {name: bench}\nhttp: {listen: \"\"}\nlog: {level: warn}\n",
		b.broker.url(), pg.URL("bench"))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		return err
	}
	rc, err := startChild("scanreceiver", filepath.Join(b.dir, "receiver.log"), bin, "run", "-c", cfg)
	if err != nil {
		return err
	}
	b.receiver = rc
	return nil
}

func (b *bench) cleanup() {
	if b.receiver != nil {
		b.receiver.stop(10 * time.Second)
	}
	if b.pg != nil {
		b.pg.Stop()
	}
	if b.agent != nil {
		b.agent.stop(30 * time.Second)
	}
	if b.broker != nil {
		b.broker.stop(5 * time.Second)
	}
	for _, sc := range b.scanners {
		sc.Close()
	}
}

func (b *bench) startBroker(ctx context.Context) error {
	extra := ""
	if b.o.receiver {
		// A receiver holds each message until its batch is committed:
		// mosquitto's default of 20 unacknowledged per client would cap it
		// (docs/CENTRAL.md).
		extra = "max_inflight_messages 0\n"
	}
	br, err := startBroker(ctx, b.dir, b.port, extra)
	if err != nil {
		return err
	}
	b.broker = br
	return nil
}

func (b *bench) stopBroker() {
	b.broker.stop(5 * time.Second)
	b.broker = nil
}

// startAgent starts the agent and waits for /readyz; it returns the time
// from the start to the first 200.
func (b *bench) startAgent(ctx context.Context) (time.Duration, error) {
	b.agents++
	start := time.Now()
	ag, err := startChild("scanagent", filepath.Join(b.dir, fmt.Sprintf("agent-%d.log", b.agents)), b.bin, "run", "-c", b.cfgPath)
	if err != nil {
		return 0, err
	}
	b.agent = ag
	b.peakMu.Lock()
	b.procAn = 0
	b.peakMu.Unlock()
	b.curPid.Store(int64(ag.pid()))
	if err := waitFor(ctx, "agent /readyz", ag, 5*time.Minute, 5*time.Millisecond, func() bool { return ready(b.httpAddr) }); err != nil {
		return 0, fmt.Errorf("%w; agent log: %s", err, b.agentLog())
	}
	return time.Since(start), nil
}

// stopAgent stops the agent with SIGTERM; it records its peak RSS first.
func (b *bench) stopAgent() (time.Duration, error) {
	b.notePeak(memStatus(b.agent.pid()))
	b.curPid.Store(0)
	d, err := b.agent.stop(60 * time.Second)
	b.agent = nil
	return d, err
}

func (b *bench) agentLog() string {
	t, _ := os.ReadFile(filepath.Join(b.dir, fmt.Sprintf("agent-%d.log", b.agents)))
	if len(t) > 2000 {
		t = t[len(t)-2000:]
	}
	return strings.TrimSpace(string(t))
}

func (b *bench) notePeak(m map[string]int64) {
	b.peakMu.Lock()
	defer b.peakMu.Unlock()
	b.peakHWM = max(b.peakHWM, m["VmHWM"], m["VmRSS"])
	b.peakAn = max(b.peakAn, m["RssAnon"])
	b.procAn = max(b.procAn, m["RssAnon"])
}

// procPeakAnon is the current agent process's peak anonymous RSS, as
// sampled (every 250 ms) and now.
func (b *bench) procPeakAnon() int64 {
	if b.agent != nil {
		b.notePeak(memStatus(b.agent.pid()))
	}
	b.peakMu.Lock()
	defer b.peakMu.Unlock()
	return b.procAn
}

// sampleMemory keeps the agent's peak RSS and peak anonymous RSS.
func (b *bench) sampleMemory(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if pid := b.curPid.Load(); pid != 0 {
			b.notePeak(memStatus(int(pid)))
		}
	}
}

func appendCode(buf []byte, serial int) []byte {
	s := fmt.Sprintf("%08d", serial)
	d, _ := parcel.S10CheckDigit(s)
	buf = append(buf, "]C0RR"...)
	buf = append(buf, s...)
	buf = append(buf, byte('0'+d))
	return append(buf, "GB\r\n"...)
}

// serialOf returns the serial of an RR…GB code in an event payload, or -1.
func serialOf(p []byte) int {
	j := bytes.Index(p, []byte(`"barcode":"RR`))
	if j < 0 || len(p) < j+13+8 {
		return -1
	}
	n := 0
	for _, c := range p[j+13 : j+21] {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func (b *bench) live(ctx context.Context) error {
	o := b.o
	r := &b.res.Live
	n := o.scanners
	if err := b.startBroker(ctx); err != nil {
		return err
	}

	// Per-scanner send and receipt times, ns since t0 (0 = not yet).
	t0 := time.Now()
	sent := make([][]int64, n)
	recv := make([][]int64, n)
	framed := make([][]int64, n) // the event's scanned_at (wall clock)
	rates := make([]int, n)
	total := 0
	for i := range n {
		rates[i] = o.rate / n
		if i < o.rate%n {
			rates[i]++
		}
		c := int(int64(rates[i]) * int64(o.live) / int64(time.Second))
		if o.flood > 0 {
			c = o.flood / n
			if i < o.flood%n {
				c++
			}
		}
		sent[i], recv[i], framed[i] = make([]int64, c), make([]int64, c), make([]int64, c)
		total += c
	}
	var delivered, dups, payload atomic.Int64
	// With -receipts: the seqs received and not yet receipted, and when
	// each scan's receipt was published.
	rcpt := make([][]int64, n)
	for i := range n {
		rcpt[i] = make([]int64, len(sent[i]))
	}
	type waiting struct {
		seq  uint64
		i, k int
	}
	var rmu sync.Mutex
	var toReceipt []waiting
	var seqMu sync.Mutex
	seqAt := map[uint64]int64{} // receiver mode: when a receipt named each seq
	seqOfScan := make([][]uint64, n)
	for i := range n {
		seqOfScan[i] = make([]uint64, len(sent[i]))
	}
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.broker.url()).SetClientID("scanbench-sub").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	topic := "scanagent/LAB/bench/scans/#"
	tok := sub.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		now := time.Since(t0).Nanoseconds()
		p := m.Payload()
		s := serialOf(p) - liveBase
		if s < 0 {
			return
		}
		i, k := s/rangeSize, s%rangeSize
		if i >= n || k >= len(recv[i]) {
			return
		}
		if o.receiver {
			if seq, ok := seqOf(p); ok {
				atomic.StoreUint64(&seqOfScan[i][k], seq)
			}
		}
		if o.receipts {
			if seq, ok := seqOf(p); ok {
				rmu.Lock()
				toReceipt = append(toReceipt, waiting{seq, i, k})
				rmu.Unlock()
			}
		}
		if atomic.CompareAndSwapInt64(&recv[i][k], 0, now) {
			delivered.Add(1)
			if at, ok := scannedAt(p); ok {
				atomic.StoreInt64(&framed[i][k], at.Sub(t0).Nanoseconds())
			}
		} else {
			dups.Add(1)
		}
		payload.CompareAndSwap(0, int64(len(p)))
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe: %v", tok.Error())
	}

	if o.receiver {
		if err := b.startReceiver(ctx); err != nil {
			return err
		}
		tok := sub.Subscribe("scanagent/LAB/bench/receipts", 1, func(_ mqtt.Client, m mqtt.Message) {
			now := time.Since(t0).Nanoseconds()
			var rc struct {
				Ranges [][2]uint64 `json:"ranges"`
			}
			if json.Unmarshal(m.Payload(), &rc) != nil {
				return
			}
			seqMu.Lock()
			for _, rg := range rc.Ranges {
				for s := rg[0]; s <= rg[1] && s-rg[0] < 1<<20; s++ {
					if _, ok := seqAt[s]; !ok {
						seqAt[s] = now
					}
				}
			}
			seqMu.Unlock()
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("subscribe to receipts: %v", tok.Error())
		}
	}
	if o.receipts {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-rctx.Done():
					return
				case <-tick.C:
				}
				rmu.Lock()
				batch := toReceipt
				toReceipt = nil
				rmu.Unlock()
				if len(batch) == 0 {
					continue
				}
				seqs := make([]int64, len(batch))
				for j, w := range batch {
					seqs[j] = int64(w.seq)
				}
				sub.Publish("scanagent/LAB/bench/receipts", 1, false, receiptPayload(seqs))
				t := time.Since(t0).Nanoseconds()
				for _, w := range batch {
					atomic.CompareAndSwapInt64(&rcpt[w.i][w.k], 0, t)
				}
			}
		}()
	}
	if _, err := b.startAgent(ctx); err != nil {
		return err
	}
	// Ready to take scans: broker connected and every scanner port open.
	err := waitFor(ctx, "agent connected with all scanners open", b.agent, 30*time.Second, 20*time.Millisecond, func() bool {
		st, err := getStatus(b.httpAddr)
		if err != nil || !st.MQTT.Connected || len(st.Stations) != n {
			return false
		}
		for _, s := range st.Stations {
			if s.Scanner.State != "connected" {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}

	var consoleWait func() (int64, int64, error)
	consoleCtx, stopConsole := context.WithCancel(ctx)
	defer stopConsole()
	if o.console > 0 {
		w, err := consoleClients(consoleCtx, b.httpAddr, o.console)
		if err != nil {
			return fmt.Errorf("console streams: %w", err)
		}
		consoleWait = w
	}
	agCPU, mqCPU, selfCPU := startCPU(b.agent.pid()), startCPU(b.broker.pid()), startCPU(0)
	busy0, tot0 := systemBusy()
	var wg sync.WaitGroup
	var feedErr error
	var errOnce sync.Once
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			c := len(sent[i])
			buf := make([]byte, 0, 256*20)
			for k := 0; k < c; {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				due := c
				if el := time.Since(start); el < o.live && o.flood == 0 {
					due = min(c, int(int64(rates[i])*int64(el)/int64(time.Second)))
				}
				for k < due {
					m := min(due-k, 256)
					buf = buf[:0]
					for j := range m {
						buf = appendCode(buf, liveBase+i*rangeSize+k+j)
					}
					if err := b.scanners[i].Write(buf); err != nil {
						errOnce.Do(func() { feedErr = fmt.Errorf("scanner %d: %w", i, err) })
						return
					}
					t := time.Since(t0).Nanoseconds()
					for j := range m {
						atomic.StoreInt64(&sent[i][k+j], t)
					}
					k += m
				}
			}
		}()
	}
	wg.Wait()
	feed := time.Since(start)
	r.AgentCPUPct = agCPU.percent()
	if consoleWait != nil {
		stopConsole()
		by, batches, err := consoleWait()
		if err != nil {
			return fmt.Errorf("console streams: %w", err)
		}
		r.ConsoleClients, r.ConsoleBytes, r.ConsoleBatches = o.console, by, batches
		if r.ConsoleDropped, err = consoleDropped(b.httpAddr); err != nil {
			return err
		}
	}
	r.MosquittoCPUPct = mqCPU.percent()
	r.BenchCPUPct = selfCPU.percent()
	busy1, tot1 := systemBusy()
	if tot1 > tot0 {
		r.SystemBusyPct = float64(busy1-busy0) / float64(tot1-tot0) * 100
	}
	if feedErr != nil {
		return feedErr
	}
	// Grace period for the stragglers.
	waitFor(ctx, "delivery", nil, grace, 10*time.Millisecond, func() bool { return delivered.Load() >= int64(total) })
	if d := delivered.Load(); d > 0 {
		// Everything the agent spent on the phase, to the last delivery
		// (and up to 10 ms after it), per scan delivered.
		r.AgentCPUPerScanUs = agCPU.seconds() * 1e6 / float64(d)
	}
	r.AgentPeakRSS = memStatus(b.agent.pid())["VmHWM"]
	b.res.PayloadBytes = int(payload.Load())

	lat := make([]time.Duration, 0, total)
	var toFramed, toRecv []time.Duration // write → scanned_at, scanned_at → receipt
	for i := range n {
		for k := range sent[i] {
			s, rc, f := atomic.LoadInt64(&sent[i][k]), atomic.LoadInt64(&recv[i][k]), atomic.LoadInt64(&framed[i][k])
			if s != 0 && rc != 0 {
				lat = append(lat, time.Duration(max(0, rc-s)))
				if f != 0 {
					toFramed = append(toFramed, time.Duration(max(0, f-s)))
					toRecv = append(toRecv, time.Duration(max(0, rc-f)))
				}
			}
		}
	}
	if o.receiver {
		waitFor(ctx, "receipts", nil, grace, 10*time.Millisecond, func() bool {
			st, err := getStatus(b.httpAddr)
			return err == nil && st.Buffer.Depth == 0
		})
		seqMu.Lock()
		for i := range n {
			for k := range sent[i] {
				if s := atomic.LoadInt64(&sent[i][k]); s != 0 {
					if rc, ok := seqAt[atomic.LoadUint64(&seqOfScan[i][k])]; ok {
						atomic.StoreInt64(&rcpt[i][k], rc)
					}
				}
			}
		}
		seqMu.Unlock()
	}
	if o.receipts || o.receiver {
		r.ReceiptsBy = "scanbench, every 10 ms"
		if o.receiver {
			r.ReceiptsBy = "scanreceiver into PostgreSQL"
		}
		if !o.receiver {
			waitFor(ctx, "receipts", nil, grace, 10*time.Millisecond, func() bool {
				st, err := getStatus(b.httpAddr)
				return err == nil && st.Buffer.Depth == 0
			})
		}
		var toRcpt []time.Duration
		for i := range n {
			for k := range sent[i] {
				if s, rc := atomic.LoadInt64(&sent[i][k]), atomic.LoadInt64(&rcpt[i][k]); s != 0 && rc != 0 {
					toRcpt = append(toRcpt, time.Duration(max(0, rc-s)))
				}
			}
		}
		slices.Sort(toRcpt)
		if len(toRcpt) > 0 {
			r.ReceiptP50Ms, r.ReceiptP99Ms = ms(toRcpt[len(toRcpt)/2]), ms(toRcpt[len(toRcpt)*99/100])
		}
		if st, err := getStatus(b.httpAddr); err == nil {
			r.Unreceipted = int(st.Buffer.Depth)
		}
	}
	slices.Sort(lat)
	slices.Sort(toFramed)
	slices.Sort(toRecv)
	if len(toFramed) > 0 {
		r.FramedP50Ms, r.FramedP99Ms = ms(toFramed[len(toFramed)/2]), ms(toFramed[len(toFramed)*99/100])
		r.PublishP50Ms, r.PublishP99Ms = ms(toRecv[len(toRecv)/2]), ms(toRecv[len(toRecv)*99/100])
	}
	r.Sent = total
	r.Delivered = int(delivered.Load())
	r.Duplicates = int(dups.Load())
	r.Lost = total - r.Delivered
	r.DurationS = feed.Seconds()
	r.Throughput = float64(r.Delivered) / feed.Seconds()
	if o.flood > 0 {
		// From the first write to the last receipt: every scan fsync'd,
		// published and delivered.
		var first, last int64
		for i := range n {
			for k := range sent[i] {
				if s := atomic.LoadInt64(&sent[i][k]); s != 0 && (first == 0 || s < first) {
					first = s
				}
				last = max(last, atomic.LoadInt64(&recv[i][k]))
			}
		}
		// The first write returns once the pty took it: count from just
		// before it, the feed's start.
		first = min(first, start.Sub(t0).Nanoseconds())
		if last > first {
			r.DurationS = time.Duration(last - first).Seconds()
			r.Throughput = float64(r.Delivered) / r.DurationS
		}
		r.Flood = o.flood
	}
	if len(lat) > 0 {
		r.P50Ms = ms(lat[len(lat)/2])
		r.P99Ms = ms(lat[len(lat)*99/100])
		r.MaxMs = ms(lat[len(lat)-1])
	}
	if st, err := getStatus(b.httpAddr); err == nil {
		for _, s := range st.Stations {
			r.Accepted += int(s.Counters.Scans)
			for _, v := range s.Counters.NotAccepted {
				r.NotAccepted += int(v)
			}
			for _, v := range s.Counters.Rejected {
				r.RejectedFrames += int(v)
			}
		}
	}
	return nil
}

// scannedAt returns the event's scanned_at.
func scannedAt(p []byte) (time.Time, bool) {
	const key = `"scanned_at":"`
	j := bytes.Index(p, []byte(key))
	if j < 0 {
		return time.Time{}, false
	}
	v := p[j+len(key):]
	e := bytes.IndexByte(v, '"')
	if e < 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(v[:e]))
	return t, err == nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// seqOf reads an event's seq without decoding it.
func seqOf(p []byte) (uint64, bool) {
	j := bytes.Index(p, []byte(`"seq":`))
	if j < 0 {
		return 0, false
	}
	var n uint64
	ok := false
	for _, c := range p[j+6:] {
		if c < '0' || c > '9' {
			break
		}
		n, ok = n*10+uint64(c-'0'), true
	}
	return n, ok
}

// receiptPayload is a receipt for seqs, as ranges, as the reference
// receiver writes it.
func receiptPayload(seqs []int64) []byte {
	b, _ := json.Marshal(receiver.Receipt{Schema: receiver.ReceiptSchema, Agent: "bench", Ranges: receiver.Ranges(seqs),
		Receiver: "scanbench", StoredAt: time.Now().UTC().Format(time.RFC3339Nano)})
	return b
}

// consumed returns, per station, the frames the agent has dealt with
// (accepted, not accepted or rejected) and the accepted ones.
func (b *bench) consumed() (all, accepted []uint64, err error) {
	st, err := getStatus(b.httpAddr)
	if err != nil {
		return nil, nil, err
	}
	idx := map[string]int{}
	for i, id := range b.stations {
		idx[id] = i
	}
	all, accepted = make([]uint64, len(b.stations)), make([]uint64, len(b.stations))
	for _, s := range st.Stations {
		i, ok := idx[s.ID]
		if !ok {
			continue
		}
		c := s.Counters
		accepted[i] = c.Scans
		all[i] = c.Scans
		for _, v := range c.NotAccepted {
			all[i] += v
		}
		for _, v := range c.Rejected {
			all[i] += v
		}
	}
	return all, accepted, nil
}

func sum(v []uint64) (s uint64) {
	for _, x := range v {
		s += x
	}
	return s
}

func (b *bench) drain(ctx context.Context) error {
	o := b.o
	d := &DrainResult{Backlog: o.backlog}
	b.res.Drain = d
	n := o.scanners

	// 1. Broker down; the agent notices.
	b.stopBroker()
	if err := waitFor(ctx, "agent sees the broker down", b.agent, 30*time.Second, 20*time.Millisecond, func() bool {
		st, err := getStatus(b.httpAddr)
		return err == nil && !st.MQTT.Connected
	}); err != nil {
		return err
	}

	// 2. Feed the backlog as fast as the agent accepts it, with at most
	// `ahead` codes per scanner written but not yet consumed.
	const chunk, ahead = 128, 2048
	base, baseAcc, err := b.consumed()
	if err != nil {
		return err
	}
	done := make([]atomic.Uint64, n)
	var accTotal atomic.Uint64
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	pollErr := make(chan error, 1)
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pollCtx.Done():
				pollErr <- nil
				return
			case <-t.C:
			}
			all, acc, err := b.consumed()
			if err != nil {
				if b.agent.exited() {
					pollErr <- fmt.Errorf("agent exited: %v; log: %s", b.agent.err, b.agentLog())
					stopPoll()
					return
				}
				continue
			}
			for i := range n {
				done[i].Store(all[i] - base[i])
			}
			accTotal.Store(sum(acc) - sum(baseAcc))
		}
	}()

	agCPU := startCPU(b.agent.pid())
	var wg sync.WaitGroup
	var feedErr error
	var errOnce sync.Once
	start := time.Now()
	for i := range n {
		c := o.backlog / n
		if i < o.backlog%n {
			c++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, chunk*20)
			for k := 0; k < c; {
				if pollCtx.Err() != nil {
					return
				}
				if uint64(k) > done[i].Load()+ahead-chunk {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				m := min(c-k, chunk)
				buf = buf[:0]
				for j := range m {
					buf = appendCode(buf, backlogBase+i*rangeSize+k+j)
				}
				if err := b.scanners[i].Write(buf); err != nil {
					errOnce.Do(func() { feedErr = fmt.Errorf("scanner %d: %w", i, err) })
					return
				}
				k += m
			}
		}()
	}
	// Watchdog: no progress for 30 s closes the scanners, which unblocks
	// any pseudo-terminal write.
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	var last uint64
	lastT := time.Now()
	stalled := false
	for {
		var tot uint64
		for i := range n {
			tot += done[i].Load()
		}
		if tot >= uint64(o.backlog) {
			break
		}
		if tot != last {
			last, lastT = tot, time.Now()
		} else if time.Since(lastT) > 30*time.Second {
			stalled = true
			for _, sc := range b.scanners {
				sc.Close()
			}
			break
		}
		if pollCtx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	<-writersDone
	feed := time.Since(start)
	d.AgentCPUFeedPct = agCPU.percent()
	stopPoll()
	if err := <-pollErr; err != nil {
		return err
	}
	if stalled {
		return fmt.Errorf("backlog feed stalled at %d of %d scans consumed", last, o.backlog)
	}
	if feedErr != nil {
		return feedErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	all, acc, err := b.consumed()
	if err != nil {
		return err
	}
	d.Accepted = int(sum(acc) - sum(baseAcc))
	d.NotAccepted = int(sum(all)-sum(base)) - d.Accepted
	d.FeedS = feed.Seconds()
	d.IngestPerS = float64(d.Accepted) / feed.Seconds()
	d.DiskBytes = diskUsage(b.dataDir)
	d.DiskPerScan = float64(d.DiskBytes) / float64(o.backlog)
	if st, err := getStatus(b.httpAddr); err == nil {
		d.DepthBuffered = st.Buffer.Depth
	}
	d.AgentPeakRSSFeed = memStatus(b.agent.pid())["VmHWM"]
	d.AgentPeakAnonFeed = b.procPeakAnon() // the live phase and the fill

	// 3. Stop, then start again with the backlog: time to /readyz.
	fmt.Fprintln(os.Stderr, "drain: restart with the backlog")
	stopT, err := b.stopAgent()
	d.StopS = stopT.Seconds()
	if err != nil {
		return err
	}
	d.DiskAfterStopBytes = diskUsage(b.dataDir)
	up, err := b.startAgent(ctx)
	if err != nil {
		return err
	}
	d.StartupS = up.Seconds()
	st, err := getStatus(b.httpAddr)
	if err != nil {
		return err
	}
	depth := st.Buffer.Depth
	d.DrainN = int(depth)

	// 4. Broker back: time until the buffer is empty.
	fmt.Fprintf(os.Stderr, "drain: publishing %d buffered scans\n", depth)
	if err := b.startBroker(ctx); err != nil {
		return err
	}
	agCPU, mqCPU := startCPU(b.agent.pid()), startCPU(b.broker.pid())
	start = time.Now()
	var lastDepth int64
	err = waitFor(ctx, "drain to depth 0", b.agent, time.Minute+time.Duration(depth)*time.Second/5000, 20*time.Millisecond, func() bool {
		st, err := getStatus(b.httpAddr)
		if err != nil {
			return false
		}
		lastDepth = st.Buffer.Depth
		return st.Buffer.Depth == 0
	})
	el := time.Since(start)
	if err != nil {
		return fmt.Errorf("%w (depth %d)", err, lastDepth)
	}
	d.DrainS = el.Seconds()
	d.AgentPerS = float64(depth) / el.Seconds()
	d.AgentCPUDrainPct = agCPU.percent()
	d.MosquittoCPUDrainPct = mqCPU.percent()
	d.AgentPeakRSSDrain = memStatus(b.agent.pid())["VmHWM"]
	d.AgentPeakAnonDrain = b.procPeakAnon() // start-up with the backlog and the drain

	// 5. Baseline: raw paho, same broker, count, payload size and window.
	size := b.res.PayloadBytes
	if size == 0 {
		size = 261
	}
	fmt.Fprintf(os.Stderr, "drain: raw paho baseline, %d × %d bytes\n", depth, size)
	base2, err := rawPaho(b.broker.url(), int(depth), window, make([]byte, size))
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	d.BaselineS = base2.Seconds()
	d.BaselinePerS = float64(depth) / base2.Seconds()
	d.Ratio = d.AgentPerS / d.BaselinePerS
	return nil
}

// rawPaho publishes n payloads with QoS 1 and up to window tokens in flight
// (a goroutine waits for them in order).
func rawPaho(url string, n, window int, payload []byte) (time.Duration, error) {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("scanbench-baseline").SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	toks := make(chan mqtt.Token, window)
	var failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	go func() {
		for t := range toks {
			t.Wait()
			if t.Error() != nil {
				if failed.Add(1) == 1 {
					firstErr.Store(t.Error())
				}
			}
		}
		close(done)
	}()
	start := time.Now()
	for range n {
		toks <- c.Publish("scanbench/baseline/scans", 1, false, payload)
	}
	close(toks)
	<-done
	el := time.Since(start)
	if f := failed.Load(); f > 0 {
		return el, fmt.Errorf("%d publishes failed: %v", f, firstErr.Load())
	}
	return el, nil
}

// freshIdle measures a newly started agent, connected to the broker, with
// its scanners quiet: the cost of waiting for scans.
func (b *bench) freshIdle(ctx context.Context) error {
	f := &b.res.Footprint
	if err := b.startBroker(ctx); err != nil {
		return err
	}
	defer b.stopBroker()
	up, err := b.startAgent(ctx)
	if err != nil {
		return err
	}
	f.FreshIdleStartup = up.Seconds()
	// Let start-up work (Badger's first flushes, the first health report)
	// settle.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Second):
	}
	pid := b.agent.pid()
	cpu := startCPU(pid)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.o.idle):
	}
	f.FreshIdleS = b.o.idle.Seconds()
	f.FreshIdleCPUPct = cpu.percent()
	f.FreshIdleRSS = memStatus(pid)["VmRSS"]
	_, err = b.stopAgent()
	return err
}

func (b *bench) footprint(ctx context.Context) error {
	f := &b.res.Footprint
	if b.agent == nil {
		return errors.New("no agent running")
	}
	pid := b.agent.pid()
	cpu := startCPU(pid)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
	}
	f.IdleCPUPct = cpu.percent()
	m := memStatus(pid)
	f.IdleRSS, f.IdleRSSAnon, f.IdleRSSFile = m["VmRSS"], m["RssAnon"], m["RssFile"]
	if _, err := b.stopAgent(); err != nil {
		return err
	}
	b.peakMu.Lock()
	f.PeakRSS, f.PeakRSSAnon = b.peakHWM, b.peakAn
	b.peakMu.Unlock()
	return nil
}

func machine() Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if t, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(t), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	out, _ := exec.Command(mosquittoPath, "-h").CombinedOutput()
	m.Mosquitto, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	return m
}
