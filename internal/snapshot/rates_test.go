package snapshot

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)

func near(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))+1e-12
}

// TestLoadRateDecay: a stream alone in the sketch reads its exact decayed
// count: n loads count n, half a half-life later n/sqrt 2, a half-life
// later n/2; its rate is the count over tau.
func TestLoadRateDecay(t *testing.T) {
	hl := time.Minute
	r := newLoadRates(hl, 1024, t0)
	for range 10 {
		r.add("order-1", t0)
	}
	tau := hl.Seconds() / math.Ln2
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{0, 10}, {hl / 2, 10 / math.Sqrt2}, {hl, 5}, {10 * hl, 10.0 / 1024}} {
		if got := r.count("order-1", t0.Add(c.at)); !near(got, c.want, 1e-9) {
			t.Errorf("count after %v: %g, want %g", c.at, got, c.want)
		}
		if got := r.rate("order-1", t0.Add(c.at)); !near(got, c.want/tau, 1e-9) {
			t.Errorf("rate after %v: %g, want %g", c.at, got, c.want/tau)
		}
	}
	if got := r.count("order-2", t0); got != 0 {
		t.Errorf("a stream never loaded counts %g", got)
	}
	// A steady rate: one load a second for 20 half-lives reads about 1/s.
	r = newLoadRates(10*time.Second, 1024, t0)
	for i := range 200 {
		r.add("hot", t0.Add(time.Duration(i)*time.Second))
	}
	if got := r.rate("hot", t0.Add(199*time.Second)); math.Abs(got-1) > 0.05 {
		t.Errorf("steady 1 load/s reads %g loads/s", got)
	}
}

// TestLoadRateRenormalize: moving the landmark (every renormAfter taus)
// changes no estimate beyond float rounding.
func TestLoadRateRenormalize(t *testing.T) {
	hl := time.Second
	tau := hl.Seconds() / math.Ln2
	r := newLoadRates(hl, 64, t0)
	step := time.Duration(tau * 1e9 * 7) // seven taus
	want := 0.0
	for i := range 30 { // 210 taus: several renormalizations
		at := t0.Add(time.Duration(i) * step)
		want = want*math.Exp(-7) + 1
		r.add("s", at)
		if got := r.count("s", at); !near(got, want, 1e-9) {
			t.Fatalf("step %d: count %g, want %g", i, got, want)
		}
	}
	if r.cur.Load().landmark == t0.UnixNano() {
		t.Fatal("the landmark never moved")
	}
}

// TestLoadRateBound checks the documented bound on many streams sharing a
// small sketch: no estimate is below the true decayed count, and at most
// a fraction exp(-depth) (1.8%; 5% allowed) is above it by more than
// e/width of the total decayed count.
func TestLoadRateBound(t *testing.T) {
	const width, streams = 256, 2000
	hl := time.Minute
	r := newLoadRates(hl, width, t0)
	tau := hl.Seconds() / math.Ln2
	rng := rand.New(rand.NewPCG(1, 2))
	truth := make([]float64, streams)
	end := t0.Add(10 * time.Minute)
	total := 0.0
	for i := range streams {
		n := rng.IntN(20) // Zipf-like: a few hot ones
		if i < 20 {
			n = 500
		}
		for range n {
			at := t0.Add(time.Duration(rng.Int64N(int64(10 * time.Minute))))
			r.add(fmt.Sprint("s-", i), at)
			w := math.Exp(-end.Sub(at).Seconds() / tau)
			truth[i] += w
			total += w
		}
	}
	slack := math.E / width * total
	over := 0
	for i := range streams {
		got := r.count(fmt.Sprint("s-", i), end)
		if got < truth[i]*(1-1e-9) {
			t.Fatalf("stream %d: estimate %g below the true count %g", i, got, truth[i])
		}
		if got-truth[i] > slack {
			over++
		}
	}
	if float64(over) > 0.05*streams {
		t.Fatalf("%d of %d estimates above the bound (true + %g)", over, streams, slack)
	}
	t.Logf("%d of %d estimates above true + e/width*total = true + %.1f", over, streams, slack)
}

// TestLoadRatePersist: the encoded sketch restores the same estimates; a
// sketch of another half-life or width is not restored.
func TestLoadRatePersist(t *testing.T) {
	r := newLoadRates(time.Minute, 128, t0)
	for i := range 50 {
		r.add(fmt.Sprint("s-", i%7), t0.Add(time.Duration(i)*time.Second))
	}
	v := r.encode()
	back := newLoadRates(time.Minute, 128, t0.Add(time.Hour))
	if ok, err := back.restore(v); !ok || err != nil {
		t.Fatalf("restore: %t %v", ok, err)
	}
	at := t0.Add(2 * time.Minute)
	for i := range 7 {
		name := fmt.Sprint("s-", i)
		if a, b := r.count(name, at), back.count(name, at); a != b {
			t.Fatalf("%s: %g before, %g restored", name, a, b)
		}
	}
	for _, other := range []*loadRates{newLoadRates(time.Second, 128, t0), newLoadRates(time.Minute, 64, t0)} {
		if ok, err := other.restore(v); ok || err != nil {
			t.Fatalf("restored into another shape: %t %v", ok, err)
		}
	}
	if _, err := back.restore(v[:len(v)-1]); err == nil {
		t.Fatal("a truncated sketch restored")
	}
}

// TestHashNameStable: the sketch is stored, so the hash must not change
// between processes or versions.
func TestHashNameStable(t *testing.T) {
	if got := hashName("order-1"); got != 0xedf23fc2e07fa9d3 {
		t.Fatalf("hashName(order-1) = %#x: changing it scrambles stored load rates", got)
	}
}
