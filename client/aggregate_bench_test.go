package client_test

import (
	"context"
	"fmt"
	"math/rand/v2"
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
//   - update: Update loads each aggregate (Load: snapshot and events
//     after it), decides, appends at Exact(head);
//   - cached: Update with CacheSize 1,000, which appends on the state
//     its last command left (a stale state costs a conflict);
//   - raw: Append of the same event at Any, no load, no check.
//
// The fsync rate of a shared machine drifts by several times within
// minutes, so the three run in turn (each first in turn) in 10 rounds of
// b.N/10 commands each, and each figure is its kind's commands over its kind's time in all
// rounds: the ratios compare like with like. Rerun:
//
//	go test -run '^$' -bench BenchmarkUpdate -benchtime 10000x -count 2 ./client/
func BenchmarkUpdate(b *testing.B) {
	const (
		workers    = 32
		aggregates = 1000
		rounds     = 10
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
		k.ok += ok.Load()
		k.retried += retried.Load()
	}
	b.ResetTimer()
	for r := range rounds {
		// Each kind goes first in turn: the store's background work
		// (flushes, compactions) after one kind's writes slows the next.
		for i := range kinds {
			run(kinds[(r+i)%len(kinds)], int64(b.N+rounds-1)/rounds, uint64(r))
		}
	}
	b.StopTimer()
	perSec := map[string]float64{}
	for _, k := range kinds {
		perSec[k.name] = float64(k.ok) / k.elapsed.Seconds()
		b.ReportMetric(perSec[k.name], k.name+"_cmds/s")
	}
	b.ReportMetric(float64(kinds[1].retried)/float64(max(kinds[1].ok, 1)), "cached_retries/cmd")
	b.ReportMetric(perSec["update"]/perSec["raw"], "update/raw")
	b.ReportMetric(perSec["cached"]/perSec["raw"], "cached/raw")
}
