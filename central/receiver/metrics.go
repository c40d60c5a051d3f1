package receiver

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg          *prometheus.Registry
	stored       prometheus.Counter
	duplicates   prometheus.Counter
	rejected     *prometheus.CounterVec
	states       *prometheus.CounterVec
	batches      prometheus.Counter
	batchSeconds prometheus.Histogram
	batchSize    prometheus.Histogram
	receipts     prometheus.Counter
	receiptFails prometheus.Counter
	dbErrors     prometheus.Counter
	abandoned    prometheus.Counter
	connected    prometheus.Gauge
	sessions     prometheus.Counter

	// The receptacle and cancel events (workflow.go), by kind.
	workflowStored     *prometheus.CounterVec
	workflowDuplicates *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		stored: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_events_stored_total",
			Help: "Scan events inserted into the scans table (new rows)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_events_duplicate_total",
			Help: "Scan events received again whose id was already stored (ON CONFLICT DO NOTHING); still receipted."}),
		workflowStored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanreceiver_workflow_events_stored_total",
			Help: "Receptacle and cancel events inserted into the receptacles and cancels tables (new rows), by kind: receptacle, cancel."}, []string{"kind"}),
		workflowDuplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanreceiver_workflow_events_duplicate_total",
			Help: "Receptacle and cancel events received again whose id was already stored; still receipted. By kind: receptacle, cancel."}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanreceiver_events_rejected_total",
			Help: "Messages stored in the rejected table instead, by reason."}, []string{"reason"}),
		states: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scanreceiver_agent_messages_total",
			Help: "Agent status, health, device and dispatch messages stored in the agents, devices and dispatches tables, by kind (dispatch_expired: the agent forgot a dispatch)."}, []string{"kind"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_batches_total",
			Help: "Batches committed."}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scanreceiver_batch_seconds",
			Help:    "Time to commit a batch, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "scanreceiver_batch_messages",
			Help:    "Messages per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
		receipts: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_receipts_published_total",
			Help: "Receipts the broker acknowledged."}),
		receiptFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_receipts_failed_total",
			Help: "Receipts not published (no session, or no PUBACK); the agents send those scans again after their receipt timeout."}),
		dbErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_db_errors_total",
			Help: "Failed database writes (each retried; nothing is acknowledged meanwhile)."}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_batches_abandoned_total",
			Help: "Batches given up unwritten because the MQTT session they came in ended (the broker sends them again)."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "scanreceiver_mqtt_connected",
			Help: "1 while the MQTT session is up."}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{Name: "scanreceiver_mqtt_sessions_total",
			Help: "MQTT sessions started."}),
	}
	for _, kind := range []string{"receptacle", "cancel"} {
		m.workflowStored.WithLabelValues(kind)
		m.workflowDuplicates.WithLabelValues(kind)
	}
	m.reg.MustRegister(m.stored, m.duplicates, m.workflowStored, m.workflowDuplicates, m.rejected, m.states, m.batches, m.batchSeconds, m.batchSize,
		m.receipts, m.receiptFails, m.dbErrors, m.abandoned, m.connected, m.sessions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Stats are the receiver's running totals.
type Stats struct {
	Stored, Duplicates, Rejected, Batches, Receipts uint64
}

type stats struct {
	stored, duplicates, rejected, batches, receipts atomic.Uint64
}

// Stats returns the totals so far.
func (r *Receiver) Stats() Stats {
	return Stats{r.stats.stored.Load(), r.stats.duplicates.Load(), r.stats.rejected.Load(), r.stats.batches.Load(), r.stats.receipts.Load()}
}

// Handler serves /metrics (Prometheus) and /healthz: 200 "ok" when the
// MQTT session is up and the database answers, else 503 saying why.
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, req *http.Request) {
		var problems []string
		if s := r.cur.Load(); s == nil || s.isLost() {
			msg := "mqtt: not connected"
			if e := r.lastConnErr.Load(); e != nil {
				msg += ": " + *e
			}
			problems = append(problems, msg)
		}
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		if err := r.st.Ping(ctx); err != nil {
			problems = append(problems, "postgres: "+err.Error())
		} else if !r.migrated.Load() {
			problems = append(problems, "postgres: schema not migrated yet")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(strings.Join(problems, "\n") + "\n"))
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
