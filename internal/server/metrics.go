package server

import (
	"errors"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/prometheus/client_golang/prometheus"
)

// writerMetrics are the writer's figures.
type writerMetrics struct {
	reg       prometheus.Registerer
	requests  *prometheus.CounterVec   // {op, result}
	latency   *prometheus.HistogramVec // {op}
	events    prometheus.Counter
	conflicts prometheus.Counter
	roundOps  prometheus.Histogram
}

func newWriterMetrics(reg prometheus.Registerer) *writerMetrics {
	m := &writerMetrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_writer_requests_total",
			Help: "Write requests (append, append_multi, delete) by outcome: ok, or the error reason.",
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
			Help:    "Requests a shard decided in one round (one Pebble commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.events, m.conflicts, m.roundOps)
	return m
}

// watchQueues exports each shard's queue depth.
func (m *writerMetrics) watchQueues(w *Writer) {
	for _, s := range w.shards {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "esd_writer_queue_depth",
			Help:        "Requests waiting in a shard's queue.",
			ConstLabels: prometheus.Labels{"shard": shardLabel(s.idx)},
		}, func() float64 { return float64(len(s.in)) }))
	}
}

func (m *writerMetrics) observe(op string, err error, events int, start time.Time) {
	m.requests.WithLabelValues(op, reasonOf(err)).Inc()
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	var wr *eslog.WrongRevisionError
	switch {
	case err == nil:
		m.events.Add(float64(events))
	case errors.As(err, &wr):
		m.conflicts.Inc()
	}
}

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
