package group

import "github.com/prometheus/client_golang/prometheus"

// metrics are the consumer groups' figures (summed over groups: group
// names are not labels).
type metrics struct {
	running     prometheus.Gauge
	members     prometheus.Gauge
	delivered   prometheus.Counter
	redelivered prometheus.Counter
	acked       prometheus.Counter
	parked      prometheus.Counter
	lag         prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, m *Manager) *metrics {
	mt := &metrics{
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_groups_running", Help: "Consumer groups with members (running a dispatcher).",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_group_members", Help: "Members connected to consumer groups.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_group_deliveries_total", Help: "Events delivered to group members (redeliveries included).",
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_group_redeliveries_total", Help: "Deliveries of an event delivered before (after a timeout, a nack or a member leaving).",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_group_acks_total", Help: "Events acknowledged by group members.",
		}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_group_parked_total", Help: "Events parked (max deliveries reached, or nacked with PARK).",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "esd_group_checkpoint_lag_events",
			Help:    "Positions between the last position and a group's checkpoint when it is stored.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12),
		}),
	}
	if reg != nil {
		reg.MustRegister(mt.running, mt.members, mt.delivered, mt.redelivered, mt.acked, mt.parked, mt.lag,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "esd_group_parked_events", Help: "Events in the parked lists of all groups.",
			}, func() float64 { return float64(m.parkedTotal()) }))
	}
	return mt
}

func (m *Manager) parkedTotal() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, g := range m.groups {
		g.mu.Lock()
		n += g.parked
		g.mu.Unlock()
	}
	return n
}
