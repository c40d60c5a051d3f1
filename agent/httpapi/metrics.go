package httpapi

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/scanagent/scanagent/agent/status"
	"github.com/scanagent/scanagent/buffer"
)

// newRegistry builds the agent's private Prometheus registry: the Go and
// process collectors, the MQTT acknowledgement latency histogram, and the
// rest read from the status snapshot at each scrape, so /metrics, /status
// and P/health always agree.
func newRegistry(version string, src Source, ackLatency prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		statusCollector{version: version, src: src},
	)
	if ackLatency != nil {
		reg.MustRegister(ackLatency)
	}
	return reg
}

// NewAckLatency is the histogram of publish-to-PUBACK times, for the
// uplink to observe and /metrics to serve.
func NewAckLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "scanagent_mqtt_ack_latency_seconds",
		Help:    "Time from publishing a scan to its PUBACK.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("scanagent_"+name, help, labels, nil)
}

var (
	mBuild          = desc("build_info", "Version of the running agent (value 1).", "version", "goversion")
	mStart          = desc("start_time_seconds", "When the agent started, Unix time.")
	mScans          = desc("scans_accepted_total", "Scans made durable.", "station")
	mInvalid        = desc("scans_invalid_total", "Accepted scans with valid=false, by reason.", "station", "reason")
	mSuppressed     = desc("scans_suppressed_total", "Double reads suppressed within dedup_window.", "station")
	mNotAccepted    = desc("scans_not_accepted_total", "Scans read but not made durable, by reason.", "station", "reason")
	mWeights        = desc("scan_weights_total", "Scans by weight status (stations with a scale).", "station", "status")
	mFeedback       = desc("feedback_total", "Operator feedback signals, by result.", "station", "result")
	mFramesRejected = desc("scanner_frames_rejected_total", "Scanner frames discarded, by reason.", "station", "reason")
	mScaleFrames    = desc("scale_frames_total", "Scale frames, by result (ok or why no reading).", "station", "result")
	mDeviceUp       = desc("device_connected", "1 when the device's port is open.", "station", "device", "port")
	mDeviceState    = desc("device_state", "The device's state (1 for the current one).", "station", "device", "state")
	mDepth          = desc("buffer_depth", "Scans waiting for delivery.")
	mBytes          = desc("buffer_bytes", "Bytes of the scans waiting, as counted against max_bytes.")
	mOldest         = desc("buffer_oldest_age_seconds", "Age of the oldest scan waiting.")
	mFull           = desc("buffer_full", "1 when buffer.max_bytes is reached.")
	mAppended       = desc("buffer_appended_total", "Records appended since start.")
	mAckedBuf       = desc("buffer_acked_total", "Records acknowledged (delivered) since start.")
	mDropped        = desc("buffer_dropped_total", "Records removed without delivery, by reason.", "reason")
	mRejectedBuf    = desc("buffer_rejected_total", "Appends refused, by reason.", "reason")
	mSync           = desc("buffer_sync_seconds", "Journal write and sync per group commit.")
	mQuarantined    = desc("buffer_quarantined", "Stores and journal segments moved aside as damaged.")
	mParked         = desc("buffer_parked", "Scans taken out of the queue without delivery (buffer export --parked).")
	mRestored       = desc("buffer_restored_total", "Damaged store records restored from their journal copy since start.")
	mCopiedBack     = desc("buffer_copied_back_total", "Records copied back into the journal from the store since start (a journal segment was damaged or missing).")
	mJournalOnly    = desc("buffer_journal_only", "Records durable in the journal alone, waiting for their acknowledgement for less than buffer.spill_after.")
	mSpilled        = desc("buffer_spilled_total", "Records copied into the store since start because they waited longer than buffer.spill_after.")
	mJournalDamaged = desc("buffer_journal_damaged_total", "Damaged or missing journal segments found since start.")
	mUnrecoverable  = desc("buffer_unrecoverable", "Scans of which both copies were damaged or missing (reported until unrecoverable.jsonl is removed).")
	mBufferOpen     = desc("buffer_open", "1 when the buffer is open (scans are accepted), 0 while it cannot open.")
	mFreeBytes      = desc("buffer_disk_free_bytes", "Free space on the buffer's filesystem.")
	mDiskLow        = desc("buffer_disk_low", "1 while new scans are refused for lack of disk space.")
	mReserve        = desc("buffer_disk_reserve_bytes", "Disk space held in reserve for the store's flushes and compactions.")
	mPoison         = desc("mqtt_parked_total", "Scans parked because the broker ended every session that carried them.")
	mConnected      = desc("mqtt_connected", "1 when connected to a broker.")
	mUplinkState    = desc("mqtt_state", "The uplink's state (1 for the current one).", "state")
	mPublished      = desc("mqtt_published_total", "Scan publishes sent.")
	mAcked          = desc("mqtt_acked_total", "Scan publishes acknowledged by the broker.")
	mSessions       = desc("mqtt_sessions_total", "MQTT sessions opened (connects and reconnects).")
	mMalformed      = desc("mqtt_malformed_total", "Buffer records that could not be published.")
	mUnreceipted    = desc("mqtt_unreceipted", "Scans published and not yet receipted (mqtt.receipts).")
	mOldestUnrcpt   = desc("mqtt_oldest_unreceipted_age_seconds", "Time since the oldest unreceipted scan was published.")
	mReceipted      = desc("mqtt_receipted_total", "Scans deleted on a receipt.")
	mRepublished    = desc("mqtt_republished_total", "Scans published again for want of a receipt.")
	mBadReceipts    = desc("mqtt_bad_receipts_total", "Receipts ignored, by reason.", "reason")
	mRSS            = desc("memory_peak_rss_bytes", "Peak resident set size (Linux).")
	mWorkflow       = desc("workflow_events_total", "Workflow events by kind: sign_in, logout, opened, closed_label, closed_control, closed_idle, weight_mismatch, cancelled, no_operator, ... (docs/WORKFLOWS.md).", "station", "event")
	mReceptacleOpen = desc("receptacle_open", "1 while a receptacle or bag session is open at the station.", "station")
	mReceptacleItem = desc("receptacle_items", "Items counted in the station's open receptacle or bag session.", "station")
	mOperator       = desc("operator_signed_in", "1 while an operator is signed in at the station.", "station")
	mDispatches     = desc("dispatches", "Dispatches tracked, by state: complete, incomplete (highest receptacle seen, some missing), open (highest not seen yet).", "state")
)

// statusCollector turns a status snapshot into metrics. It is unchecked
// (Describe sends nothing): label values such as stations change with the
// configuration.
type statusCollector struct {
	version string
	src     Source
}

func (statusCollector) Describe(chan<- *prometheus.Desc) {}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Status()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	byLabel := func(d *prometheus.Desc, m map[string]uint64, labels ...string) {
		for k, v := range m {
			counter(d, v, append(labels, k)...)
		}
	}
	gauge(mBuild, 1, c.version, runtime.Version())
	if !s.Started.IsZero() {
		gauge(mStart, float64(s.Started.UnixNano())/1e9)
	}
	for _, st := range s.Stations {
		cn := st.Counters
		counter(mScans, cn.Scans, st.ID)
		byLabel(mInvalid, cn.InvalidByReason, st.ID)
		counter(mSuppressed, cn.Suppressed, st.ID)
		byLabel(mNotAccepted, cn.NotAccepted, st.ID)
		byLabel(mWeights, cn.Weights, st.ID)
		byLabel(mFeedback, cn.Feedback, st.ID)
		byLabel(mFramesRejected, cn.Rejected, st.ID)
		byLabel(mWorkflow, cn.Workflow, st.ID)
		if w := st.Workflow; w != nil {
			gauge(mOperator, boolFloat(w.Operator != ""), st.ID)
			gauge(mReceptacleOpen, boolFloat(w.Receptacle != nil), st.ID)
			items := 0
			if w.Receptacle != nil {
				items = w.Receptacle.Items
			}
			gauge(mReceptacleItem, float64(items), st.ID)
		}
		device(ch, st.ID, "scanner", st.Scanner)
		if st.Scale != nil {
			device(ch, st.ID, "scale", st.Scale.Device)
			byLabel(mScaleFrames, st.Scale.Frames, st.ID)
		}
	}
	if d := s.Dispatches; d != nil {
		gauge(mDispatches, float64(d.Complete), "complete")
		gauge(mDispatches, float64(d.Incomplete), "incomplete")
		gauge(mDispatches, float64(d.Tracked-d.Complete-d.Incomplete), "open")
	}
	b := s.Buffer
	gauge(mDepth, float64(b.Depth))
	gauge(mBytes, float64(b.Bytes))
	gauge(mOldest, b.OldestAge)
	gauge(mFull, boolFloat(b.Full))
	counter(mAppended, b.Appended)
	counter(mAckedBuf, b.Acked)
	byLabel(mDropped, b.Dropped)
	byLabel(mRejectedBuf, b.Rejected)
	gauge(mQuarantined, float64(b.Quarantined))
	gauge(mParked, float64(b.Parked))
	counter(mRestored, b.Restored)
	counter(mCopiedBack, b.CopiedBack)
	counter(mJournalDamaged, b.JournalDamaged)
	gauge(mJournalOnly, float64(b.JournalOnly))
	counter(mSpilled, b.Spilled)
	gauge(mUnrecoverable, float64(b.Unrecoverable))
	gauge(mBufferOpen, boolFloat(s.BufferOpen))
	gauge(mFreeBytes, float64(b.FreeBytes))
	gauge(mDiskLow, boolFloat(b.DiskLow))
	gauge(mReserve, float64(b.ReserveBytes))
	if b.Sync.Buckets != nil {
		buckets := map[float64]uint64{}
		for i, bound := range buffer.LatencyBounds {
			buckets[bound] = b.Sync.Buckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(mSync, b.Sync.Count, b.Sync.Sum, buckets)
	}
	m := s.MQTT
	gauge(mConnected, boolFloat(m.Connected))
	for _, st := range status.UplinkStates {
		gauge(mUplinkState, boolFloat(m.State == st), st)
	}
	counter(mPublished, m.Published)
	counter(mAcked, m.Acked)
	counter(mSessions, m.Sessions)
	counter(mMalformed, m.Malformed)
	counter(mPoison, m.Parked)
	if r := m.Receipts; r != nil {
		gauge(mUnreceipted, float64(r.Unreceipted))
		gauge(mOldestUnrcpt, r.OldestAge)
		counter(mReceipted, r.Receipted)
		counter(mRepublished, r.Republished)
		byLabel(mBadReceipts, r.Bad)
	}
	if s.Process.PeakRSSBytes > 0 {
		gauge(mRSS, float64(s.Process.PeakRSSBytes))
	}
}

func device(ch chan<- prometheus.Metric, station, kind string, d status.Device) {
	ch <- prometheus.MustNewConstMetric(mDeviceUp, prometheus.GaugeValue, boolFloat(d.State == "connected"), station, kind, d.Port)
	for _, state := range []string{"connected", "disconnected", "error"} {
		ch <- prometheus.MustNewConstMetric(mDeviceState, prometheus.GaugeValue, boolFloat(d.State == state), station, kind, state)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
