package engine_test

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/streammeta"
)

var (
	scavEvents  = flag.Int("scavenge.events", 1_000_000, "BenchmarkScavengeUnderLoad: events in the store")
	scavRate    = flag.Int("scavenge.rate", engine.DefaultScavengeRate, "BenchmarkScavengeUnderLoad: the scavenge's keys a second")
	scavWindows = flag.Duration("scavenge.window", 5*time.Second, "BenchmarkScavengeUnderLoad: length of each window without a scavenge")
)

// BenchmarkScavengeUnderLoad: a store of -scavenge.events small events
// (JSON of about 90 bytes, half of it random hex) in streams of 50,
// appended 50 at a time, half of them hidden: half the "order-" streams
// soft-deleted, and the older half of every "cart-" stream hidden by its
// category's default max count of 25. The store is written two days
// before the scavenge (agedEngine), so that the ids of the hidden events
// are past the idempotency window and go too.
//
// The shrink: the store is flushed and measured (its live tables, and
// all it takes on disk), scavenged with nothing else running, and
// measured again.
//
// The appends: on a fresh such store, 16 writers append one event at a
// time to their own streams all along; their throughput is measured in a
// first window, then while a scavenge runs (to its end, compaction
// included). The control is the same run on another fresh store with no
// scavenge, its second window lasting as long: the ratio compares the
// second windows. (The first windows show how much the two runs differ
// by chance.) Run once:
//
//	go test -run '^$' -bench ScavengeUnderLoad -benchtime 1x -timeout 30m ./internal/engine/
//	go test ... -args -scavenge.events=200000 -scavenge.rate=100000
func BenchmarkScavengeUnderLoad(b *testing.B) {
	for range b.N {
		scavengeShrink(b)
		took, with := scavengeUnderLoad(b, 0)
		_, without := scavengeUnderLoad(b, took)
		b.ReportMetric(without[0], "appends/s-1st-control")
		b.ReportMetric(without[1], "appends/s-2nd-control")
		b.ReportMetric(with[0], "appends/s-1st")
		b.ReportMetric(with[1], "appends/s-scavenging")
		b.ReportMetric(with[1]/without[1], "scavenging/control")
		// Each run's second window against its own first: what is left of
		// the ratio once the runs' chance difference is taken out.
		norm := (with[1] / with[0]) / (without[1] / without[0])
		b.ReportMetric(norm, "scavenging/control-normalized")
		b.Logf("appends/s: control %.0f then %.0f; with a scavenge %.0f then %.0f while it ran (%v): ratio %.2f, %.2f normalized by the first windows",
			without[0], without[1], with[0], with[1], took.Round(time.Millisecond), with[1]/without[1], norm)
	}
}

// agedEngine opens an engine whose clock runs two days behind until now()
// is called, with esd's idempotency window: the store written before
// that is two days old when the scavenge runs, as the data a scavenge
// removes usually is, so that it also removes the ids of the hidden
// events.
func agedEngine(b *testing.B) (e *engine.Engine, now func()) {
	var behind atomic.Int64
	behind.Store(int64(48 * time.Hour))
	e = open(b, engine.Config{Shards: 2, IdempotencyWindow: engine.DefaultIdempotencyWindow,
		Clock: func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }})
	return e, func() { behind.Store(0) }
}

// scavengeStore writes the benchmark's store to e.
func scavengeStore(b *testing.B, e *engine.Engine) {
	ctx := context.Background()
	const perStream = 50
	streams := *scavEvents / perStream
	start := time.Now()
	name := func(i int) string {
		if i%2 == 0 {
			return fmt.Sprintf("order-%d", i)
		}
		return fmt.Sprintf("cart-%d", i)
	}
	parallel(b, 16, streams, func(i int) error {
		rng := rand.New(rand.NewPCG(uint64(i), 1))
		evs := make([]eslog.Event, perStream)
		for j := range evs {
			evs[j] = eslog.Event{ID: eslog.NewEventID(), Type: "ItemAdded", Data: smallEvent(rng)}
		}
		_, err := e.Append(ctx, engine.AppendOp{Stream: name(i), Events: evs})
		return err
	})
	parallel(b, 16, streams/4, func(i int) error {
		_, err := e.Delete(ctx, engine.DeleteOp{Stream: name(4 * i), Mode: eslog.DeleteSoft})
		return err
	})
	if _, err := e.StreamMetadata().Set(ctx, streammeta.Target{Name: "cart", Category: true}, streammeta.Expected{},
		streammeta.Metadata{Limits: eslog.Limits{MaxCount: perStream / 2}}); err != nil {
		b.Fatal(err)
	}
	b.Logf("store of %d events in %d streams, half hidden (deleted, or by a max count), written in %v", streams*perStream, streams, time.Since(start).Round(time.Millisecond))
}

func smallEvent(rng *rand.Rand) []byte {
	return fmt.Appendf(nil, `{"sku":"%016x","qty":%d,"price":%d,"ref":"%016x"}`, rng.Uint64(), rng.IntN(10), rng.IntN(100000), rng.Uint64())
}

func scavengeShrink(b *testing.B) {
	e, now := agedEngine(b)
	scavengeStore(b, e)
	now()
	ctx := context.Background()
	if err := e.Log().Flush(); err != nil {
		b.Fatal(err)
	}
	tables, disk := e.Log().TableBytes(), e.DiskBytes()
	spaces, err := e.Log().TableBytesBySpace()
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := e.StartScavenge(*scavRate); err != nil {
		b.Fatal(err)
	}
	if err := e.WaitScavenge(ctx); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	j, err := e.Scavenge()
	if err != nil || j.State != eslog.ScavengeDone {
		b.Fatalf("scavenge %+v, %v", j, err)
	}
	if j.EventsRemoved != uint64(*scavEvents/2) {
		b.Fatalf("removed %d events, want half of %d", j.EventsRemoved, *scavEvents)
	}
	tablesAfter, diskAfter := e.Log().TableBytes(), e.DiskBytes()
	spacesAfter, err := e.Log().TableBytesBySpace()
	if err != nil {
		b.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(spaces))
	var bySpace strings.Builder
	for _, name := range names {
		if n := spaces[name]; n >= 1<<20 || spacesAfter[name] >= 1<<20 {
			fmt.Fprintf(&bySpace, " %s %.1f -> %.1f MiB;", name, float64(n)/(1<<20), float64(spacesAfter[name])/(1<<20))
		}
	}
	b.Logf("tables by key space (1 MiB or more):%s", bySpace.String())
	shrink := 1 - float64(tablesAfter)/float64(tables)
	b.ReportMetric(float64(tables)/(1<<20), "MiB-tables-before")
	b.ReportMetric(float64(tablesAfter)/(1<<20), "MiB-tables-after")
	b.ReportMetric(100*shrink, "%shrunk")
	b.ReportMetric(took.Seconds(), "s-scavenge-alone")
	b.Logf("scavenge alone: %d streams truncated, %d ids, %d events, %d keys, %d bytes of keys and values removed in %v at %d keys/s; tables %d -> %d bytes (%.1f%% less); disk %d -> %d bytes (%.1f%% less)",
		j.StreamsTruncated, j.IDsRemoved, j.EventsRemoved, j.KeysRemoved, j.BytesRemoved, took.Round(time.Millisecond), j.KeysPerSecond,
		tables, tablesAfter, 100*shrink, disk, diskAfter, 100*(1-float64(diskAfter)/float64(disk)))
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
}

// scavengeUnderLoad measures the appends of 16 writers on a fresh store
// in a first window, then in a second: while a scavenge runs when control
// is 0, else for control without one. It returns how long the second
// window lasted and the appends a second of each.
func scavengeUnderLoad(b *testing.B, control time.Duration) (time.Duration, [2]float64) {
	e, now := agedEngine(b)
	scavengeStore(b, e)
	now()
	ctx := context.Background()
	var (
		appended atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			s := fmt.Sprintf("live-%d", w)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := e.Append(ctx, engine.AppendOp{Stream: s, Events: []eslog.Event{{ID: eslog.NewEventID(), Type: "ItemAdded", Data: smallEvent(rng)}}}); err != nil {
					b.Error(err)
					return
				}
				appended.Add(1)
			}
		}()
	}
	var rates [2]float64
	window := func(i int, run func()) time.Duration {
		n0, t0 := appended.Load(), time.Now()
		run()
		d := time.Since(t0)
		rates[i] = float64(appended.Load()-n0) / d.Seconds()
		return d
	}
	window(0, func() { time.Sleep(*scavWindows) })
	took := window(1, func() {
		if control > 0 {
			time.Sleep(control)
			return
		}
		if _, err := e.StartScavenge(*scavRate); err != nil {
			b.Fatal(err)
		}
		if err := e.WaitScavenge(ctx); err != nil {
			b.Fatal(err)
		}
	})
	close(stop)
	wg.Wait()
	if control == 0 {
		if j, err := e.Scavenge(); err != nil || j.State != eslog.ScavengeDone {
			b.Fatalf("scavenge %+v, %v", j, err)
		}
	}
	if err := e.Close(); err != nil {
		b.Fatal(err)
	}
	return took, rates
}

// parallel runs fn(0..n-1) on workers goroutines.
func parallel(b *testing.B, workers, n int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}
