package writer

import (
	"errors"
	"strconv"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the writer's figures.
type metrics struct {
	requests  *prometheus.CounterVec   // {op, result}
	latency   *prometheus.HistogramVec // {op}
	events    prometheus.Counter
	conflicts prometheus.Counter
	roundOps  prometheus.Histogram
}

// newMetrics makes the writer's metrics and registers them, with a gauge
// of each shard's queue depth, with reg (nil: not registered).
func newMetrics(reg prometheus.Registerer, w *Writer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_writer_requests_total",
			Help: "Write requests (append, append_multi, delete, truncate: a scavenge making retention limits durable) by outcome: ok, or the error reason.",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "esd_writer_request_duration_seconds",
			Help:    "Time from a write request reaching the writer to its durable answer (fsync included).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"op"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_writer_appended_events_total", Help: "Events acknowledged to clients (idempotent retries excluded).",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_writer_conflicts_total", Help: "Writes refused because the expected revision did not hold.",
		}),
		roundOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "esd_writer_round_requests",
			Help:    "Requests a shard decided in one round (one commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.requests, m.latency, m.events, m.conflicts, m.roundOps)
	for _, s := range w.shards {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "esd_writer_queue_depth",
			Help:        "Requests waiting in a shard's queue.",
			ConstLabels: prometheus.Labels{"shard": strconv.Itoa(s.idx)},
		}, func() float64 { return float64(len(s.in)) }))
	}
	return m
}

func (m *metrics) observe(op string, err error, events int, start time.Time) {
	m.requests.WithLabelValues(op, Reason(err)).Inc()
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	var wr *eslog.WrongRevisionError
	switch {
	case err == nil:
		m.events.Add(float64(events))
	case errors.As(err, &wr):
		m.conflicts.Inc()
	}
}
