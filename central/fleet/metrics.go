package fleet

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The series per hub, each labelled site and agent (docs/FLEET.md). Seven
// per hub, so a thousand hubs are seven thousand series; a hub offline and
// not seen for longer than the view's forget time is dropped.
var (
	descUp = prometheus.NewDesc("scanagent_fleet_hub_online",
		"1 when the hub's retained status is online, 0 when offline.", []string{"site", "agent"}, nil)
	descSince = prometheus.NewDesc("scanagent_fleet_hub_state_since_timestamp_seconds",
		"When the hub went online or offline (Unix time).", []string{"site", "agent"}, nil)
	descBacklog = prometheus.NewDesc("scanagent_fleet_hub_backlog_scans",
		"Scans waiting in the hub's buffer, as of its last health.", []string{"site", "agent"}, nil)
	descOldest = prometheus.NewDesc("scanagent_fleet_hub_backlog_oldest_age_seconds",
		"Age of the hub's oldest waiting scan: its last health's figure plus the time since, while the backlog is not empty.", []string{"site", "agent"}, nil)
	descUnreceipted = prometheus.NewDesc("scanagent_fleet_hub_unreceipted_scans",
		"Scans published and not yet receipted (hubs with mqtt.receipts on).", []string{"site", "agent"}, nil)
	descDevErr = prometheus.NewDesc("scanagent_fleet_hub_devices_in_error",
		"Devices whose retained state is error.", []string{"site", "agent"}, nil)
	descLastSeen = prometheus.NewDesc("scanagent_fleet_hub_last_seen_timestamp_seconds",
		"The latest sign of the hub: a live message, its last health's time or its status's since (Unix time).", []string{"site", "agent"}, nil)

	descHubs = prometheus.NewDesc("scanagent_fleet_hubs",
		"Hubs in the view, by state.", []string{"state"}, nil)
	descStale = prometheus.NewDesc("scanagent_fleet_stale_status_ignored_total",
		"Statuses ignored as older than the one held (a late Last Will of an old session).", nil, nil)
	descBad = prometheus.NewDesc("scanagent_fleet_unreadable_messages_total",
		"Messages under the prefix that could not be read.", nil, nil)
	descConnected = prometheus.NewDesc("scanagent_fleet_broker_connected",
		"1 while the fleet view is connected to the broker.", nil, nil)
)

type collector struct {
	v         *View
	connected func() bool
	now       func() time.Time
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descSince, descBacklog, descOldest, descUnreceipted, descDevErr, descLastSeen,
		descHubs, descStale, descBad, descConnected} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	hubs := c.v.Snapshot(c.now())
	n := map[string]float64{"online": 0, "offline": 0}
	g := func(d *prometheus.Desc, v float64, h Hub) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, h.Site, h.Agent)
	}
	for _, h := range hubs {
		n[h.State]++
		up := 0.0
		if h.State == "online" {
			up = 1
		}
		g(descUp, up, h)
		g(descSince, unix(h.Since), h)
		g(descBacklog, float64(h.Backlog), h)
		g(descOldest, h.BacklogOldestAge, h)
		if h.Unreceipted != nil {
			g(descUnreceipted, float64(*h.Unreceipted), h)
		}
		g(descDevErr, float64(h.DevicesInError), h)
		g(descLastSeen, unix(h.LastSeen), h)
	}
	for state, v := range n {
		ch <- prometheus.MustNewConstMetric(descHubs, prometheus.GaugeValue, v, state)
	}
	cn := c.v.Counts()
	ch <- prometheus.MustNewConstMetric(descStale, prometheus.CounterValue, float64(cn.Stale))
	ch <- prometheus.MustNewConstMetric(descBad, prometheus.CounterValue, float64(cn.Bad))
	conn := 0.0
	if c.connected != nil && c.connected() {
		conn = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, conn)
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// MetricsHandler serves the view's metrics (a private registry, with the
// process's own Go metrics). connected may be nil.
func MetricsHandler(v *View, connected func() bool) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{v: v, connected: connected, now: time.Now})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
