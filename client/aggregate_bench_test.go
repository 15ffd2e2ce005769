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
// ones of 1,000 stock aggregates:
//
//   - update: Update loads each aggregate (Load: snapshot and events
//     after it), decides, appends at Exact(head);
//   - update-cached: Update with CacheSize 1,000, so it appends on the
//     state its last command left (a stale state costs a conflict);
//   - raw-append: Append of the same event at Any, no load, no check.
//
// A run measures the three in turn; -count repeats each before the next,
// so to interleave them, run the test binary several times:
//
//	go test -c -o /tmp/client.test ./client/
//	for i in 1 2 3; do /tmp/client.test -test.run '^$' -test.bench BenchmarkUpdate -test.benchtime 10000x; done
func BenchmarkUpdate(b *testing.B) {
	const (
		workers    = 32
		aggregates = 1000
	)
	srv := esdtest.Start(b)
	c, err := client.Dial(srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	streams := make([]string, aggregates)
	for i := range streams {
		streams[i] = fmt.Sprintf("benchstock-%d", i)
		if _, err := c.Append(ctx, streams[i], client.NoStream(), stocked(1<<40)); err != nil {
			b.Fatal(err)
		}
	}

	// run spreads b.N commands over the workers and reports the
	// successful ones per second and the conflicts retried per command.
	run := func(b *testing.B, command func(stream string) (retries int, err error)) {
		var next, ok, retried atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), uint64(b.N)))
				for next.Add(1) <= int64(b.N) {
					r, err := command(streams[rng.IntN(aggregates)])
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
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(ok.Load())/elapsed.Seconds(), "cmds/s")
		b.ReportMetric(float64(retried.Load())/float64(b.N), "retries/cmd")
	}

	for _, cache := range []int{0, aggregates} {
		name := "update"
		if cache > 0 {
			name = "update-cached"
		}
		agg := newStockAggregate(c)
		agg.CacheSize = cache
		b.Run(name, func(b *testing.B) {
			run(b, func(stream string) (int, error) {
				res, err := agg.Update(ctx, stream, take(1))
				return res.Retries, err
			})
		})
		agg.Wait()
	}
	b.Run("raw-append", func(b *testing.B) {
		run(b, func(stream string) (int, error) {
			_, err := c.Append(ctx, stream, client.Any(), client.JSONEvent("Taken", qty{1}))
			return 0, err
		})
	})
}
