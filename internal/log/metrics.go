package log

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// logMetrics are the log's own figures plus Pebble's, read at scrape time.
type logMetrics struct {
	reg          prometheus.Registerer
	cs           []prometheus.Collector
	events       prometheus.Counter
	bytes        prometheus.Counter
	commitWrites prometheus.Histogram
	syncSeconds  prometheus.Histogram
}

func newLogMetrics(reg prometheus.Registerer, l *Log) *logMetrics {
	m := &logMetrics{
		reg: reg,
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_log_appended_events_total", Help: "Events written to the log (system events included).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "esd_log_appended_bytes_total", Help: "Bytes of event records written to the log.",
		}),
		commitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "esd_log_commit_writes",
			Help:    "Stream writes per Pebble commit (group commit across shards).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "esd_log_sync_wait_duration_seconds",
			Help:    "Time from applying a commit to its WAL fsync completing.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.cs = []prometheus.Collector{
		m.events, m.bytes, m.commitWrites, m.syncSeconds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "esd_log_last_position", Help: "The last published (durable, visible) position of $all.",
		}, func() float64 { return float64(l.LastPosition()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "esd_log_streams", Help: "Streams with visible events.",
		}, func() float64 { return float64(l.Stats().Streams) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "esd_log_events", Help: "Visible events over all streams.",
		}, func() float64 { return float64(l.Stats().Events) }),
		&pebbleCollector{l: l},
	}
	if reg != nil {
		for _, c := range m.cs {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *logMetrics) commit(writes, events, bytes int) {
	m.commitWrites.Observe(float64(writes))
	m.events.Add(float64(events))
	m.bytes.Add(float64(bytes))
}

func (m *logMetrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.cs {
		m.reg.Unregister(c)
	}
}

var (
	pebbleDiskBytes    = prometheus.NewDesc("esd_pebble_disk_bytes", "Bytes Pebble takes on disk.", nil, nil)
	pebbleReadAmp      = prometheus.NewDesc("esd_pebble_read_amplification", "Pebble's read amplification (sublevels over all levels).", nil, nil)
	pebbleL0Sublevels  = prometheus.NewDesc("esd_pebble_l0_sublevels", "Sublevels in L0; many mean compaction is behind.", nil, nil)
	pebbleMemtable     = prometheus.NewDesc("esd_pebble_memtable_bytes", "Bytes in Pebble's memtables.", nil, nil)
	pebbleWALBytes     = prometheus.NewDesc("esd_pebble_wal_written_bytes_total", "Bytes written to Pebble's WAL.", nil, nil)
	pebbleCompactions  = prometheus.NewDesc("esd_pebble_compactions_total", "Pebble compactions.", nil, nil)
	pebbleCompactDebt  = prometheus.NewDesc("esd_pebble_compaction_debt_bytes", "Estimated bytes Pebble must compact to reach a stable state.", nil, nil)
	pebbleFlushes      = prometheus.NewDesc("esd_pebble_flushes_total", "Pebble memtable flushes.", nil, nil)
	pebbleCacheBytes   = prometheus.NewDesc("esd_pebble_block_cache_bytes", "Bytes in Pebble's block cache.", nil, nil)
	pebbleCacheHits    = prometheus.NewDesc("esd_pebble_block_cache_hits_total", "Pebble block cache hits.", nil, nil)
	pebbleCacheMisses  = prometheus.NewDesc("esd_pebble_block_cache_misses_total", "Pebble block cache misses.", nil, nil)
	pebbleTables       = prometheus.NewDesc("esd_pebble_tables", "Live sstables.", nil, nil)
	pebbleFsyncs       = prometheus.NewDesc("esd_pebble_wal_fsyncs_total", "WAL fsyncs (one serves every commit written meanwhile).", nil, nil)
	pebbleFsyncSeconds = prometheus.NewDesc("esd_pebble_wal_fsync_seconds_total", "Time spent in WAL fsyncs.", nil, nil)
)

// pebbleCollector reads db.Metrics() at scrape time.
type pebbleCollector struct{ l *Log }

func (c *pebbleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pebbleDiskBytes, pebbleReadAmp, pebbleL0Sublevels, pebbleMemtable, pebbleWALBytes,
		pebbleCompactions, pebbleCompactDebt, pebbleFlushes, pebbleCacheBytes, pebbleCacheHits, pebbleCacheMisses, pebbleTables,
		pebbleFsyncs, pebbleFsyncSeconds} {
		ch <- d
	}
}

func (c *pebbleCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.l.db.Metrics()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	var tables int64
	for i := range m.Levels {
		tables += m.Levels[i].TablesCount
	}
	gauge(pebbleDiskBytes, float64(m.DiskSpaceUsage()))
	gauge(pebbleReadAmp, float64(m.ReadAmp()))
	gauge(pebbleL0Sublevels, float64(m.Levels[0].Sublevels))
	gauge(pebbleMemtable, float64(m.MemTable.Size))
	counter(pebbleWALBytes, float64(m.WAL.BytesWritten))
	counter(pebbleCompactions, float64(m.Compact.Count))
	gauge(pebbleCompactDebt, float64(m.Compact.EstimatedDebt))
	counter(pebbleFlushes, float64(m.Flush.Count))
	gauge(pebbleCacheBytes, float64(m.BlockCache.Size))
	counter(pebbleCacheHits, float64(m.BlockCache.Hits))
	counter(pebbleCacheMisses, float64(m.BlockCache.Misses))
	gauge(pebbleTables, float64(tables))
	if h := m.LogWriter.FsyncLatency; h != nil { // Pebble's histogram has no name: read its totals
		var d dto.Metric
		if h.Write(&d) == nil && d.Histogram != nil {
			counter(pebbleFsyncs, float64(d.Histogram.GetSampleCount()))
			counter(pebbleFsyncSeconds, d.Histogram.GetSampleSum()/1e9) // observed in nanoseconds
		}
	}
}
