package benchstat

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"slices"
	"text/tabwriter"
	"time"
)

// Workloads of esctl bench whose reports have lines of their own.
const (
	WorkloadAppend     = "append"
	WorkloadContention = "contention"
	WorkloadReadStream = "read-stream"
)

// Output formats of Print.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatJSONL = "jsonl"
)

// Histogram is a log-linear latency histogram in the manner of HDR
// histograms: values below 2^histSubBits ns are exact, above that each
// power of two is cut into 2^histSubBits buckets, so a reported value is at
// most 1/128 (0.8%) above the true one. Recording is a few instructions
// and no allocation; the fixed array (58 KiB) makes merging trivial.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      uint64 // ns; overflows only after ~580 years of summed latency
	min, max uint64 // ns; meaningful when n > 0
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	// Level 0 holds [0, histSub); level s+1 holds values shifted right by s,
	// for s up to 64-histSubBits-1.
	histBuckets = (64 - histSubBits + 1) * histSub
)

func histBucket(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return (shift+1)*histSub + int(v>>shift) - histSub
}

// histHigh is the largest value that falls in bucket i.
func histHigh(i int) uint64 {
	if i < 2*histSub {
		return uint64(i) // levels 0 and 1 are exact
	}
	shift := i/histSub - 1
	low := uint64(i%histSub+histSub) << shift
	return low + (uint64(1) << shift) - 1
}

// Record adds one value; a negative one counts as 0.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[histBucket(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Quantile returns the value at or below which a fraction q of the
// recorded values lie (q in [0, 1]), never above the largest recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank <= 1 {
		return time.Duration(h.min) // the smallest value, known exactly
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			v := histHigh(i)
			v = max(min(v, h.max), h.min)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Mean is the mean of the recorded values (0 if none).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}

// Max is the largest recorded value (0 if none).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Stats are one client's counters. Each client owns its own, so the
// hot path takes no lock; they are merged when the run ends.
type Stats struct {
	Ops       int64 // calls made (for reads: whole reads)
	Events    int64 // events written or read
	Successes int64 // contention: appends that won
	Conflicts int64 // contention: appends refused for a wrong expected revision
	Retries   int64 // contention: calls repeated after a conflict
	Errors    map[string]int64
	Lat       Histogram
}

// Error keys of failures a bench finds itself, beside the server's reasons.
const (
	ErrRevisionMismatch = "REVISION_MISMATCH" // an append's first revision was not the expected next one
	ErrOutOfOrder       = "OUT_OF_ORDER"      // a read returned revisions or positions not in order, or a gap
	ErrShortRead        = "SHORT_READ"        // a read of a prepared stream did not return all its events
	ErrMissingDetail    = "MISSING_DETAIL"    // WRONG_EXPECTED_REVISION without the WrongExpectedRevision detail
)

// AddError counts one failure under key.
func (s *Stats) AddError(key string) {
	if s.Errors == nil {
		s.Errors = make(map[string]int64)
	}
	s.Errors[key]++
}

// Merge adds o's counts to s.
func (s *Stats) Merge(o *Stats) {
	s.Ops += o.Ops
	s.Events += o.Events
	s.Successes += o.Successes
	s.Conflicts += o.Conflicts
	s.Retries += o.Retries
	for k, v := range o.Errors {
		if s.Errors == nil {
			s.Errors = make(map[string]int64)
		}
		s.Errors[k] += v
	}
	s.Lat.Merge(&o.Lat)
}

// ErrorCount is the number of failures under every key.
func (s *Stats) ErrorCount() int64 {
	var n int64
	for _, v := range s.Errors {
		n += v
	}
	return n
}

// Report is what a run prints; -o json prints it as one object with
// these snake_case keys.
type Report struct {
	// ServerName names the server's product before its version in the
	// table ("esd"); it is not in the JSON.
	ServerName string `json:"-"`

	Workload      string `json:"workload"`
	Addr          string `json:"addr"`
	ServerVersion string `json:"server_version,omitempty"`
	Clients       int    `json:"clients"`
	Conns         int    `json:"conns"`
	Batch         int    `json:"batch,omitempty"`
	Size          int    `json:"size"`
	ClientIDs     bool   `json:"client_ids"`
	Streams       int    `json:"streams,omitempty"`
	Streaming     bool   `json:"streaming,omitempty"` // esd's AppendStream instead of unary calls
	Inflight      int    `json:"inflight,omitempty"`  // appends in flight per client when streaming
	Keys          int    `json:"keys,omitempty"`
	// DeltaEvents is the conflict_delta_events the contention workload
	// asked for; nil when unset (the server's default).
	DeltaEvents  *int    `json:"delta_events,omitempty"`
	StreamPrefix string  `json:"stream_prefix,omitempty"`
	Stream       string  `json:"stream,omitempty"`
	Prepared     int     `json:"prepared,omitempty"`
	Count        int64   `json:"count,omitempty"`
	Repeat       int     `json:"repeat,omitempty"`
	DurationSec  float64 `json:"duration_sec"`
	WarmupSec    float64 `json:"warmup_sec"`
	ElapsedSec   float64 `json:"elapsed_sec"`

	Ops            int64            `json:"ops"`
	Events         int64            `json:"events"`
	Errors         int64            `json:"errors"`
	ErrorsByReason map[string]int64 `json:"errors_by_reason,omitempty"`
	OpsPerSec      float64          `json:"ops_per_sec"`
	EventsPerSec   float64          `json:"events_per_sec"`
	P50Ms          float64          `json:"p50_ms"`
	P90Ms          float64          `json:"p90_ms"`
	P99Ms          float64          `json:"p99_ms"`
	MaxMs          float64          `json:"max_ms"`
	MeanMs         float64          `json:"mean_ms"`

	// Set for the contention workload only (a nil embedded pointer adds no
	// keys to the JSON; exported so that encoding/json can also decode it).
	*ContentionReport
}

// ContentionReport holds the contention workload's own results.
type ContentionReport struct {
	Successes         int64   `json:"successes"`
	Conflicts         int64   `json:"conflicts"`
	Retries           int64   `json:"retries"`
	SuccessesPerSec   float64 `json:"successes_per_sec"`
	ConflictsPerSec   float64 `json:"conflicts_per_sec"`
	RetriesPerSuccess float64 `json:"retries_per_success"`
}

// Fill sets the report's results from the merged stats of a run that took
// elapsed.
func (r *Report) Fill(s *Stats, elapsed time.Duration) {
	sec := elapsed.Seconds()
	r.ElapsedSec = round3(sec)
	r.Ops, r.Events, r.Errors = s.Ops, s.Events, s.ErrorCount()
	if len(s.Errors) > 0 {
		r.ErrorsByReason = s.Errors
	}
	r.OpsPerSec = round3(perSec(s.Ops, sec))
	r.EventsPerSec = round3(perSec(s.Events, sec))
	r.P50Ms = ms(s.Lat.Quantile(0.50))
	r.P90Ms = ms(s.Lat.Quantile(0.90))
	r.P99Ms = ms(s.Lat.Quantile(0.99))
	r.MaxMs = ms(s.Lat.Max())
	r.MeanMs = ms(s.Lat.Mean())
	if r.Workload == WorkloadContention {
		c := &ContentionReport{
			Successes:       s.Successes,
			Conflicts:       s.Conflicts,
			Retries:         s.Retries,
			SuccessesPerSec: round3(perSec(s.Successes, sec)),
			ConflictsPerSec: round3(perSec(s.Conflicts, sec)),
		}
		if s.Successes > 0 {
			c.RetriesPerSuccess = round3(float64(s.Retries) / float64(s.Successes))
		}
		r.ContentionReport = c
	}
}

func perSec(n int64, sec float64) float64 {
	if sec <= 0 {
		return 0
	}
	return float64(n) / sec
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// Print prints the report to w: KEY VALUE lines in the table format, the
// report as one JSON object in json (indented) and jsonl (one line).
func (r *Report) Print(w io.Writer, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case FormatJSONL:
		return json.NewEncoder(w).Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	server := r.Addr
	if r.ServerVersion != "" {
		name := r.ServerVersion
		if r.ServerName != "" {
			name = r.ServerName + " " + name
		}
		server += " (" + name + ")"
	}
	row("workload", "%s", r.Workload)
	row("server", "%s", server)
	row("clients", "%d on %d connections", r.Clients, r.Conns)
	ids := "made by the client"
	if !r.ClientIDs {
		ids = "made by the server"
	}
	switch r.Workload {
	case WorkloadAppend:
		if r.Streaming {
			row("calls", "one AppendStream per client, up to %d appends in flight on it (one per stream)", r.Inflight)
			row("batch", "%d events per append, %d bytes each, ids %s", r.Batch, r.Size, ids)
		} else {
			row("batch", "%d events per call, %d bytes each, ids %s", r.Batch, r.Size, ids)
		}
		row("streams", "%d named %s-N", r.Streams, r.StreamPrefix)
	case WorkloadContention:
		row("batch", "%d events per call, %d bytes each, ids %s", r.Batch, r.Size, ids)
		row("keys", "%d streams named %s-N", r.Keys, r.StreamPrefix)
		if r.DeltaEvents != nil {
			row("conflicts", "list at most %d events since the expected revision", *r.DeltaEvents)
		}
	case WorkloadReadStream:
		row("stream", "%s", r.Stream)
	}
	if r.Prepared > 0 {
		row("prepared", "%d events of %d bytes", r.Prepared, r.Size)
	}
	run := fmt.Sprintf("%gs after %gs warmup, elapsed %.3fs", r.DurationSec, r.WarmupSec, r.ElapsedSec)
	if r.Repeat > 0 {
		run = fmt.Sprintf("%d reads per client after %gs warmup, elapsed %.3fs", r.Repeat, r.WarmupSec, r.ElapsedSec)
	}
	if r.Count > 0 {
		run += fmt.Sprintf(", at most %d calls", r.Count)
	}
	row("run", "%s", run)
	row("ops", "%d (%.1f/s)", r.Ops, r.OpsPerSec)
	row("events", "%d (%.1f/s)", r.Events, r.EventsPerSec)
	if c := r.ContentionReport; c != nil {
		row("successes", "%d (%.1f/s)", c.Successes, c.SuccessesPerSec)
		row("conflicts", "%d (%.1f/s)", c.Conflicts, c.ConflictsPerSec)
		row("retries", "%d (%.3f per success)", c.Retries, c.RetriesPerSuccess)
	}
	row("errors", "%d", r.Errors)
	for _, k := range slices.Sorted(maps.Keys(r.ErrorsByReason)) {
		row("", "%s %d", k, r.ErrorsByReason[k])
	}
	row("latency", "p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms  mean %.3fms",
		r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.MeanMs)
	return tw.Flush()
}
