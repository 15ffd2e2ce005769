package testutil

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqs_total", Help: "h"}, []string{"op", "result"})
	open := prometheus.NewGauge(prometheus.GaugeOpts{Name: "open", Help: "h"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lat", Help: "h"}, []string{"op"})
	reg.MustRegister(reqs, open, lat)
	reqs.WithLabelValues("append", "ok").Add(3)
	reqs.WithLabelValues("append", "conflict").Add(1)
	reqs.WithLabelValues("delete", "ok").Add(5)
	open.Set(7)
	lat.WithLabelValues("append").Observe(1)
	lat.WithLabelValues("append").Observe(2)
	lat.WithLabelValues("delete").Observe(3)

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"reqs_total", map[string]string{"op": "append", "result": "ok"}, 3},
		{"reqs_total", map[string]string{"op": "append"}, 4},
		{"reqs_total", nil, 9},
		{"reqs_total", map[string]string{"op": "read"}, 0},
		{"reqs_total", map[string]string{"shard": "1"}, 0},
		{"open", nil, 7},
		{"lat", map[string]string{"op": "append"}, 2},
		{"lat", nil, 3},
		{"missing", nil, 0},
	} {
		if got := MetricValue(t, reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("MetricValue(%s, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !Poll(time.Second, func() bool { return n.Add(1) >= 5 }) {
		t.Fatal("Poll: a condition that holds at the fifth check was not seen")
	}
	start := time.Now()
	if Poll(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll: a condition that never holds was reported as held")
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Errorf("Poll gave up after %v, before its 20ms", el)
	}
}

func TestEventually(t *testing.T) {
	deadline := time.Now().Add(10 * time.Millisecond)
	Eventually(t, 10*time.Second, "the deadline", func() bool { return time.Now().After(deadline) })
}
