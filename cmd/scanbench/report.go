//go:build linux

package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// Results is everything one run measured (also written with -json).
type Results struct {
	Command      string       `json:"command"`
	Machine      Machine      `json:"machine"`
	Params       Params       `json:"params"`
	PayloadBytes int          `json:"payload_bytes"` // size of a real event as received
	Live         LiveResult   `json:"live"`
	Drain        *DrainResult `json:"drain,omitempty"`
	Footprint    Footprint    `json:"footprint"`
	Errors       []string     `json:"errors,omitempty"`
}

type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	OS        string `json:"os"`
	GoVersion string `json:"go_version"`
	Mosquitto string `json:"mosquitto"`
}

type Params struct {
	Scanners int     `json:"scanners"`
	Rate     int     `json:"rate"`
	LiveS    float64 `json:"live_s"`
	Backlog  int     `json:"backlog"`
	Window   int     `json:"window"`
}

type LiveResult struct {
	Sent              int     `json:"sent"`
	Delivered         int     `json:"delivered"` // unique
	Duplicates        int     `json:"duplicates"`
	Lost              int     `json:"lost"` // not delivered after the grace period
	Accepted          int     `json:"accepted"`
	NotAccepted       int     `json:"not_accepted"`
	RejectedFrames    int     `json:"rejected_frames"`
	DurationS         float64 `json:"duration_s"`
	Throughput        float64 `json:"throughput_per_s"`
	P50Ms             float64 `json:"p50_ms"`
	P99Ms             float64 `json:"p99_ms"`
	MaxMs             float64 `json:"max_ms"`
	FramedP50Ms       float64 `json:"write_to_scanned_at_p50_ms"` // pseudo-terminal write → the agent's scanned_at
	FramedP99Ms       float64 `json:"write_to_scanned_at_p99_ms"`
	PublishP50Ms      float64 `json:"scanned_at_to_receipt_p50_ms"` // buffer, publish, broker, subscriber
	PublishP99Ms      float64 `json:"scanned_at_to_receipt_p99_ms"`
	AgentCPUPct       float64 `json:"agent_cpu_pct"` // % of one core
	MosquittoCPUPct   float64 `json:"mosquitto_cpu_pct"`
	BenchCPUPct       float64 `json:"bench_cpu_pct"`   // this program: scanners and subscriber
	SystemBusyPct     float64 `json:"system_busy_pct"` // all cores, % of the machine
	AgentPeakRSS      int64   `json:"agent_peak_rss_bytes"`
	AgentCPUPerScanUs float64 `json:"agent_cpu_per_scan_us"` // from the feed's start to the last delivery
	Flood             int     `json:"flood,omitempty"`       // -flood: codes written unpaced; throughput is first write → last receipt
	// With -console: the event streams open during the phase, what they
	// received and the events the agent dropped for them.
	ConsoleClients int    `json:"console_clients,omitempty"`
	ConsoleBytes   int64  `json:"console_bytes,omitempty"`
	ConsoleBatches int64  `json:"console_scan_batches,omitempty"`
	ConsoleDropped uint64 `json:"console_dropped,omitempty"`
	// With -receipts: scanner write → the receipt's publish, and the scans
	// still in the agent's buffer after the grace period.
	ReceiptP50Ms float64 `json:"write_to_receipt_p50_ms,omitempty"`
	ReceiptP99Ms float64 `json:"write_to_receipt_p99_ms,omitempty"`
	Unreceipted  int     `json:"unreceipted,omitempty"`
	ReceiptsBy   string  `json:"receipts_by,omitempty"` // who answered with receipts
}

type DrainResult struct {
	Backlog              int     `json:"backlog"`
	Accepted             int     `json:"accepted"`
	NotAccepted          int     `json:"not_accepted"`
	FeedS                float64 `json:"feed_s"`
	IngestPerS           float64 `json:"ingest_per_s"`
	AgentCPUFeedPct      float64 `json:"agent_cpu_feed_pct"`
	DepthBuffered        int64   `json:"depth_buffered"`
	DiskBytes            int64   `json:"disk_bytes"`
	DiskPerScan          float64 `json:"disk_bytes_per_scan"`
	DiskAfterStopBytes   int64   `json:"disk_after_stop_bytes"`
	AgentPeakRSSFeed     int64   `json:"agent_peak_rss_feed_bytes"`
	StopS                float64 `json:"stop_s"`
	StartupS             float64 `json:"startup_s"`
	DrainN               int     `json:"drain_n"`
	DrainS               float64 `json:"drain_s"`
	AgentPerS            float64 `json:"agent_per_s"`
	AgentCPUDrainPct     float64 `json:"agent_cpu_drain_pct"`
	MosquittoCPUDrainPct float64 `json:"mosquitto_cpu_drain_pct"`
	AgentPeakRSSDrain    int64   `json:"agent_peak_rss_drain_bytes"`
	AgentPeakAnonFeed    int64   `json:"agent_peak_rss_anon_feed_bytes"`  // RssAnon, sampled every 250 ms
	AgentPeakAnonDrain   int64   `json:"agent_peak_rss_anon_drain_bytes"` // RssAnon, sampled every 250 ms
	BaselineS            float64 `json:"baseline_s"`
	BaselinePerS         float64 `json:"baseline_per_s"`
	Ratio                float64 `json:"ratio"`
}

type Footprint struct {
	BinaryBytes int64 `json:"binary_bytes"`
	// A fresh agent, connected, its scanners idle, before any load.
	FreshIdleS       float64 `json:"fresh_idle_s,omitempty"`
	FreshIdleCPUPct  float64 `json:"fresh_idle_cpu_pct,omitempty"`
	FreshIdleRSS     int64   `json:"fresh_idle_rss_bytes,omitempty"`
	FreshIdleStartup float64 `json:"fresh_startup_s,omitempty"`
	IdleCPUPct       float64 `json:"idle_cpu_pct"`
	IdleRSS          int64   `json:"idle_rss_bytes"`
	IdleRSSAnon      int64   `json:"idle_rss_anon_bytes"`
	IdleRSSFile      int64   `json:"idle_rss_file_bytes"`
	PeakRSS          int64   `json:"peak_rss_bytes"` // whole run, all agent processes
	PeakRSSAnon      int64   `json:"peak_rss_anon_bytes"`
}

func mb(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/mib) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func (r *Results) print(w io.Writer) {
	fmt.Fprintf(w, "\nscanbench: %d scanners, live %d scans/s for %gs, backlog %d, window %d\n", r.Params.Scanners, r.Params.Rate, r.Params.LiveS, r.Params.Backlog, r.Params.Window)
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s, %s, %s\n\n", r.Machine.NProc, r.Machine.CPU, r.Machine.OS, r.Machine.GoVersion, r.Machine.Mosquitto)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(phase, metric, value, target string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", phase, metric, value, target)
	}
	row("phase", "metric", "result", "target")
	row("-----", "------", "------", "------")
	l := r.Live
	if l.Sent > 0 {
		row("live", "sent / delivered (unique)", fmt.Sprintf("%d / %d (dup %d)", l.Sent, l.Delivered, l.Duplicates), "")
		row("live", "lost (after 10 s grace)", fmt.Sprint(l.Lost), "0: "+verdict(l.Lost == 0))
		row("live", "accepted / not accepted / rejected frames", fmt.Sprintf("%d / %d / %d", l.Accepted, l.NotAccepted, l.RejectedFrames), "")
		if l.Flood > 0 {
			row("live", "flood: first write → last receipt", fmt.Sprintf("%.0f scans/s over %.2f s", l.Throughput, l.DurationS), fmt.Sprintf("30000/s: %s", verdict(l.Lost == 0 && l.Throughput >= 30000)))
		} else {
			row("live", "throughput", fmt.Sprintf("%.0f scans/s over %.1f s", l.Throughput, l.DurationS), fmt.Sprintf("%d/s: %s", r.Params.Rate, verdict(l.Lost == 0 && l.Throughput >= 0.99*float64(r.Params.Rate))))
		}
		row("live", "latency p50 / p99 / max", fmt.Sprintf("%.2f / %.2f / %.2f ms", l.P50Ms, l.P99Ms, l.MaxMs), "p99 <= 25 ms: "+verdict(l.P99Ms <= 25))
		row("live", "  write→scanned_at p50 / p99 (ms resolution)", fmt.Sprintf("%.2f / %.2f ms", l.FramedP50Ms, l.FramedP99Ms), "")
		row("live", "  scanned_at→receipt p50 / p99", fmt.Sprintf("%.2f / %.2f ms", l.PublishP50Ms, l.PublishP99Ms), "")
		if l.ReceiptP99Ms > 0 {
			row("live", "write→receipt p50 / p99 ("+l.ReceiptsBy+")", fmt.Sprintf("%.2f / %.2f ms; %d left in the buffer", l.ReceiptP50Ms, l.ReceiptP99Ms, l.Unreceipted), "p99 <= 250 ms: "+verdict(l.ReceiptP99Ms <= 250))
		}
		row("live", "agent CPU per scan (to the last delivery)", fmt.Sprintf("%.1f µs", l.AgentCPUPerScanUs), "")
		row("live", "CPU agent / mosquitto / scanbench", fmt.Sprintf("%.1f%% / %.0f%% / %.0f%% of one core", l.AgentCPUPct, l.MosquittoCPUPct, l.BenchCPUPct), "")
		if c := consoleRow(l); c != "" {
			row("live", "technician console", c, "")
		}
		row("live", "machine busy", fmt.Sprintf("%.0f%% of %d cores", l.SystemBusyPct, r.Machine.NProc), "")
		row("live", "agent peak RSS (VmHWM)", mb(l.AgentPeakRSS), "")
	}
	if d := r.Drain; d != nil {
		row("drain", "backlog accepted (broker down)", fmt.Sprintf("%d of %d (not accepted %d)", d.Accepted, d.Backlog, d.NotAccepted), "")
		row("drain", "ingest through ptys", fmt.Sprintf("%.0f scans/s (%.1f s), agent CPU %.0f%%", d.IngestPerS, d.FeedS, d.AgentCPUFeedPct), "")
		row("drain", "disk per buffered scan", fmt.Sprintf("%.0f B (%s total; %s after stop)", d.DiskPerScan, mb(d.DiskBytes), mb(d.DiskAfterStopBytes)), "")
		row("drain", "stop (SIGTERM) / start-up to /readyz", fmt.Sprintf("%.2f s / %.3f s", d.StopS, d.StartupS), "")
		if d.DrainS > 0 {
			row("drain", "agent drain", fmt.Sprintf("%d in %.1f s = %.0f msg/s", d.DrainN, d.DrainS, d.AgentPerS), "")
			row("drain", "CPU agent / mosquitto while draining", fmt.Sprintf("%.0f%% / %.0f%% of one core", d.AgentCPUDrainPct, d.MosquittoCPUDrainPct), "")
		}
		if d.BaselineS > 0 {
			row("drain", "raw paho baseline", fmt.Sprintf("%.1f s = %.0f msg/s (%d B payload)", d.BaselineS, d.BaselinePerS, r.PayloadBytes), "")
			row("drain", "ratio agent / baseline", fmt.Sprintf("%.2f", d.Ratio), ">= 0.9: "+verdict(d.Ratio >= 0.9))
		}
		row("drain", "agent peak RSS feed / drain", mb(d.AgentPeakRSSFeed)+" / "+mb(d.AgentPeakRSSDrain), "")
		row("drain", "agent peak anonymous RSS feed / drain", mb(d.AgentPeakAnonFeed)+" / "+mb(d.AgentPeakAnonDrain), "<= 48 MiB: "+verdict(max(d.AgentPeakAnonFeed, d.AgentPeakAnonDrain) <= 48*mib))
	}
	f := r.Footprint
	row("footprint", "binary size", mb(f.BinaryBytes), "<= 20 MiB: "+verdict(f.BinaryBytes <= 20*mib))
	if f.FreshIdleS > 0 {
		row("footprint", fmt.Sprintf("fresh agent, %d stations idle: CPU (%.0f s)", r.Params.Scanners, f.FreshIdleS),
			fmt.Sprintf("%.2f%% of one core", f.FreshIdleCPUPct), "< 0.5%: "+verdict(f.FreshIdleCPUPct < 0.5))
		row("footprint", "fresh agent: start-up to /readyz, RSS", fmt.Sprintf("%.3f s, %s", f.FreshIdleStartup, mb(f.FreshIdleRSS)), "")
	}
	if f.PeakRSS > 0 {
		row("footprint", "idle CPU (10 s)", fmt.Sprintf("%.2f%% of one core", f.IdleCPUPct), "")
		row("footprint", "idle RSS (anon / file)", fmt.Sprintf("%s (%s / %s)", mb(f.IdleRSS), mb(f.IdleRSSAnon), mb(f.IdleRSSFile)), "")
		row("footprint", "peak RSS whole run (peak anon)", fmt.Sprintf("%s (%s)", mb(f.PeakRSS), mb(f.PeakRSSAnon)), "<= 64 MiB: "+verdict(f.PeakRSS <= 64*mib))
	}
	tw.Flush()
	for _, e := range r.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}
