package client_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
	"github.com/esdhq/esd/internal/testutil/esdtest"
)

// BenchmarkUpdate measures Aggregate.Update commands per second against
// raw appends of the same event, in one process against one in-process
// esd (esdtest: a real store with fsync), 32 workers taking 1 from random
// ones of 1,000 stock aggregates (each kind its own 1,000, so that one
// kind's writes do not make another's cache stale), b.N commands of each
// kind:
//
//   - update: Update without its cache (CacheSize -1) loads each
//     aggregate (Load: snapshot and events after it), decides, appends at
//     Exact(head);
//   - cached: Update with its cache (the default), which appends on the state
//     its last command left (a stale state costs a conflict), the cache
//     warmed by a Load of each aggregate before the clock starts;
//   - raw: Append of the same event at Any, no load, no check.
//
// The fsync rate of a shared machine drifts by several times within
// minutes, so the three run in turn (in each of their 6 orders in turn)
// in 60 rounds of b.N/60 commands each. Each kind's cmds/s is its commands over its time
// in all rounds; the ratios (update/raw, cached/raw) are the medians over
// the rounds of the kind's rate over raw's in the same round, which
// compare the kinds under the same conditions. Rerun:
//
//	go test -run '^$' -bench BenchmarkUpdate -benchtime 10000x -count 2 ./client/
func BenchmarkUpdate(b *testing.B) {
	const (
		workers    = 32
		aggregates = 1000
		rounds     = 60 // a multiple of the 6 orders of the 3 kinds
	)
	srv := esdtest.Start(b)
	c, err := client.Dial(srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	aggregatesOf := func(kind string) []string {
		streams := make([]string, aggregates)
		for i := range streams {
			streams[i] = fmt.Sprintf("benchstock-%s%d", kind, i)
			if _, err := c.Append(ctx, streams[i], client.NoStream(), stocked(1<<40)); err != nil {
				b.Fatal(err)
			}
		}
		return streams
	}
	loading := newStockAggregate(c)
	loading.CacheSize = -1
	cached := newStockAggregate(c)
	cached.CacheSize = aggregates
	defer loading.Wait()
	defer cached.Wait()

	type kind struct {
		name    string
		streams []string
		command func(stream string) (retries int, err error)
		elapsed time.Duration
		ok      int64
		retried int64
		rates   []float64 // commands/s of each round
	}
	update := func(a *client.Aggregate[stock]) func(string) (int, error) {
		return func(stream string) (int, error) {
			res, err := a.Update(ctx, stream, take(1))
			return res.Retries, err
		}
	}
	kinds := []*kind{
		{name: "update", streams: aggregatesOf("update"), command: update(loading)},
		{name: "cached", streams: aggregatesOf("cached"), command: update(cached)},
		{name: "raw", streams: aggregatesOf("raw"), command: func(stream string) (int, error) {
			_, err := c.Append(ctx, stream, client.Any(), client.JSONEvent("Taken", qty{1}))
			return 0, err
		}},
	}
	// run runs n commands of k over the workers.
	run := func(k *kind, n int64, seed uint64) {
		var next, ok, retried atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), seed))
				for next.Add(1) <= n {
					r, err := k.command(k.streams[rng.IntN(aggregates)])
					if err != nil {
						b.Error(err)
						return
					}
					ok.Add(1)
					retried.Add(int64(r))
				}
			}()
		}
		wg.Wait()
		k.elapsed += time.Since(start)
		k.rates = append(k.rates, float64(ok.Load())/time.Since(start).Seconds())
		k.ok += ok.Load()
		k.retried += retried.Load()
	}
	// A service that runs for long holds its hot aggregates' states: the
	// cache starts warm (one Load each, as their first commands would
	// do), so that the figure is its steady state, not 1,000 first loads.
	for _, stream := range kinds[1].streams {
		if _, err := cached.Load(ctx, stream); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	// The rounds take the 6 orders of the kinds in turn: what one kind
	// leaves behind (the store's flushes and compactions after its
	// writes) slows the next, so each kind follows each other as often.
	orders := [][3]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}, {1, 0, 2}}
	for r := range rounds {
		for _, i := range orders[r%len(orders)] {
			run(kinds[i], int64(b.N+rounds-1)/rounds, uint64(r))
		}
	}
	b.StopTimer()
	perSec := map[string]float64{}
	for _, k := range kinds {
		perSec[k.name] = float64(k.ok) / k.elapsed.Seconds()
		b.ReportMetric(perSec[k.name], k.name+"_cmds/s")
	}
	b.ReportMetric(float64(kinds[1].retried)/float64(max(kinds[1].ok, 1)), "cached_retries/cmd")
	// The ratios: the median over the rounds of a kind's rate over raw's
	// in the same round, seconds apart, where the machine was alike.
	ratio := func(k *kind) float64 {
		rs := make([]float64, len(k.rates))
		for i := range rs {
			rs[i] = k.rates[i] / kinds[2].rates[i]
		}
		slices.Sort(rs)
		return rs[len(rs)/2]
	}
	b.ReportMetric(ratio(kinds[0]), "update/raw")
	b.ReportMetric(ratio(kinds[1]), "cached/raw")
}
