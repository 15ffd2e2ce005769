package benchstat

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// histError is the Histogram's promised bound on relative error.
const histError = 1.0 / histSub

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	values := []uint64{0, 1, 127, 128, 255, 256, 257, 1000, 1 << 20, 123456789, 1 << 40, 1<<62 + 12345, math.MaxUint64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, r.Uint64()>>r.IntN(64))
	}
	for _, v := range values {
		i := histBucket(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucket(%d) = %d out of range", v, i)
		}
		hi := histHigh(i)
		if hi < v {
			t.Errorf("value %d above its bucket's high %d", v, hi)
		}
		if float64(hi-v) > float64(v)*histError {
			t.Errorf("value %d: bucket high %d off by more than %.2f%%", v, hi, 100*histError)
		}
		if i > 0 && histHigh(i-1) >= v {
			t.Errorf("value %d also fits bucket %d (high %d)", v, i-1, histHigh(i-1))
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	t.Parallel()
	near := func(t *testing.T, name string, got, want time.Duration) {
		t.Helper()
		if got < want || float64(got-want) > float64(want)*histError {
			t.Errorf("%s = %v, want %v (at most %.2f%% above)", name, got, want, 100*histError)
		}
	}
	t.Run("1..1000ms", func(t *testing.T) {
		var h Histogram
		for i := 1000; i >= 1; i-- { // order must not matter
			h.Record(time.Duration(i) * time.Millisecond)
		}
		near(t, "p50", h.Quantile(0.50), 500*time.Millisecond)
		near(t, "p90", h.Quantile(0.90), 900*time.Millisecond)
		near(t, "p99", h.Quantile(0.99), 990*time.Millisecond)
		if got := h.Quantile(1); got != time.Second {
			t.Errorf("p100 = %v, want the max 1s", got)
		}
		if got := h.Quantile(0); got != time.Millisecond {
			t.Errorf("p0 = %v, want the min 1ms", got)
		}
		if got := h.Mean(); got != 500500*time.Microsecond {
			t.Errorf("mean = %v", got)
		}
	})
	t.Run("small values are exact", func(t *testing.T) {
		var h Histogram
		for i := range 100 {
			h.Record(time.Duration(i))
		}
		if got := h.Quantile(0.5); got != 49 {
			t.Errorf("p50 = %d, want 49", got)
		}
		if got := h.Quantile(0.99); got != 98 {
			t.Errorf("p99 = %d, want 98", got)
		}
	})
	t.Run("one value", func(t *testing.T) {
		var h Histogram
		h.Record(1234567 * time.Nanosecond)
		for _, q := range []float64{0, 0.5, 0.99, 1} {
			if got := h.Quantile(q); got != 1234567 {
				t.Errorf("q%v = %d, want the only value", q, got)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		var h Histogram
		if h.Quantile(0.5) != 0 || h.Mean() != 0 {
			t.Error("empty Histogram reports values")
		}
	})
	t.Run("skewed", func(t *testing.T) {
		var h Histogram
		for range 990 {
			h.Record(time.Millisecond)
		}
		for range 10 {
			h.Record(time.Second)
		}
		near(t, "p99", h.Quantile(0.99), time.Millisecond)
		near(t, "p99.1", h.Quantile(0.991), time.Second)
	})
	t.Run("negative clamps to zero", func(t *testing.T) {
		var h Histogram
		h.Record(-5)
		if h.Quantile(1) != 0 {
			t.Error("negative duration not clamped")
		}
	})
}

func TestHistogramMerge(t *testing.T) {
	t.Parallel()
	var all, a, b Histogram
	for i := 1; i <= 2000; i++ {
		d := time.Duration(i) * 7 * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var merged Histogram
	merged.Merge(&a)
	merged.Merge(&b)
	merged.Merge(&Histogram{}) // empty merges are no-ops
	if merged != all {
		t.Errorf("merged Histogram differs from the whole: n %d/%d min %d/%d max %d/%d",
			merged.n, all.n, merged.min, all.min, merged.max, all.max)
	}
}

func TestStatsMerge(t *testing.T) {
	t.Parallel()
	a := &Stats{Ops: 3, Events: 6, Successes: 2, Conflicts: 1, Retries: 1}
	a.AddError("X")
	b := &Stats{Ops: 4, Events: 8}
	b.AddError("X")
	b.AddError("Y")
	var total Stats
	total.Merge(a)
	total.Merge(b)
	if total.Ops != 7 || total.Events != 14 || total.Successes != 2 || total.Conflicts != 1 || total.Retries != 1 {
		t.Errorf("merged %+v", total)
	}
	if total.Errors["X"] != 2 || total.Errors["Y"] != 1 || total.ErrorCount() != 3 {
		t.Errorf("errors %v", total.Errors)
	}
}
