package subscription

import "github.com/prometheus/client_golang/prometheus"

// metrics are the subscriptions' figures.
type metrics struct {
	active    *prometheus.GaugeVec // {target, state}
	delivered prometheus.Counter
	lag       prometheus.Histogram
	fallbacks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, h *Hub) *metrics {
	m := &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "esd_subscriptions",
			Help: "Subscriptions open, by target (stream, category, all) and state (catching_up: reading history from the log; live).",
		}, []string{"target", "state"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_subscription_events_delivered_total", Help: "Events handed to subscribers.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "esd_subscription_lag_events",
			Help:    "How many positions a live subscriber was behind the newest event when it took a batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_subscription_fallbacks_total",
			Help: "Times a live subscriber fell behind the buffer of recent events and read the log to catch up.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.active, m.delivered, m.lag, m.fallbacks,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "esd_subscription_buffer_events", Help: "Recent events held for live subscribers.",
			}, func() float64 { n, _ := h.buffered(); return float64(n) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "esd_subscription_buffer_bytes", Help: "Memory of the buffer of recent events held for live subscribers (its slots, and its events' records and names).",
			}, func() float64 { _, b := h.buffered(); return float64(b) }),
		)
	}
	return m
}
