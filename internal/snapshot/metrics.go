package snapshot

import "github.com/prometheus/client_golang/prometheus"

// metrics are the snapshots' figures (summed over streams: stream names
// are not labels).
type metrics struct {
	loads       *prometheus.CounterVec // {snapshot="hit"|"miss"}
	replayed    prometheus.Histogram
	saves       *prometheus.CounterVec // {result="saved"|"stale"}
	pruned      *prometheus.CounterVec // {cause}
	advised     *prometheus.CounterVec // {policy, source}
	cacheMisses prometheus.Counter
}

// Causes of esd_snapshot_pruned_total.
const (
	causeRetention = "retention" // a newer save left it beyond --snapshot-retention
	causeUnusable  = "unusable"  // a soft delete had made it unusable; a save pruned it
	causeRequest   = "request"   // DeleteSnapshots
	causeTombstone = "tombstone" // its stream was tombstoned
)

func newMetrics(reg prometheus.Registerer, s *Store) *metrics {
	m := &metrics{
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_snapshot_loads_total",
			Help: "Loads (SnapshotService.Load) answered, by whether they started from a snapshot (hit) or replayed the whole stream (miss).",
		}, []string{"snapshot"}),
		replayed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "esd_snapshot_load_replayed_events",
			Help:    "Events a load sent after its snapshot (all of the stream's, without one).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 12),
		}),
		saves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_snapshot_saves_total",
			Help: "SaveSnapshot calls that stored their snapshot (saved), or stored nothing because the stream holds enough newer ones (stale).",
		}, []string{"result"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_snapshot_pruned_total",
			Help: "Snapshots removed, by cause: retention, unusable (below a soft delete), request (DeleteSnapshots), tombstone.",
		}, []string{"cause"}),
		advised: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_snapshot_advised_total",
			Help: "Answers that advised a snapshot, by the rule that advised it (every, dynamic) and the RPC (append, load).",
		}, []string{"policy", "source"}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_snapshot_advice_cache_misses_total",
			Help: "Appends whose stream's latest snapshot revision was not in the advice cache and was read from the store.",
		}),
	}
	for _, l := range []string{"hit", "miss"} {
		m.loads.WithLabelValues(l)
	}
	for _, l := range []string{"saved", "stale"} {
		m.saves.WithLabelValues(l)
	}
	for _, l := range []string{causeRetention, causeUnusable, causeRequest, causeTombstone} {
		m.pruned.WithLabelValues(l)
	}
	if reg != nil {
		reg.MustRegister(m.loads, m.replayed, m.saves, m.pruned, m.advised, m.cacheMisses,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "esd_snapshot_advice_cache_streams",
				Help: "Streams whose latest snapshot revision the advice cache holds.",
			}, func() float64 { return float64(s.cache.len()) }))
	}
	return m
}
