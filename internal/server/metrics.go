package server

import "github.com/prometheus/client_golang/prometheus"

// readMetrics count what reads return.
type readMetrics struct {
	events *prometheus.CounterVec // {method}
}

func newReadMetrics(reg prometheus.Registerer) *readMetrics {
	m := &readMetrics{events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "esd_read_events_total", Help: "Events sent to readers, by RPC.",
	}, []string{"method"})}
	reg.MustRegister(m.events)
	return m
}

// appendStreamMetrics count what AppendStream calls hold.
type appendStreamMetrics struct {
	inflight prometheus.Gauge
}

func newAppendStreamMetrics(reg prometheus.Registerer) *appendStreamMetrics {
	m := &appendStreamMetrics{inflight: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "esd_append_stream_inflight",
		Help: "Appends read from AppendStream calls and not yet answered, over all calls.",
	})}
	reg.MustRegister(m.inflight)
	return m
}
