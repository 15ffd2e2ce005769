package engine_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
)

// BenchmarkAppendLeasesElsewhere: what leases cost the appends of streams
// without one. 64 writers append to their own streams while one more
// appends to 1,000 other streams all along; with leases=1000 those other
// streams hold live leases and its appends carry their tokens, with
// leases=0 they are plain streams. Every append asks the leases (a
// read-locked map lookup in the stream's writer shard). Compare the two
// with benchstat:
//
//	go test -run '^$' -bench AppendLeasesElsewhere -count 6 ./internal/engine/ | tee /tmp/l.txt
func BenchmarkAppendLeasesElsewhere(b *testing.B) {
	for _, leased := range []int{0, 1000} {
		b.Run(fmt.Sprintf("leases=%d", leased), func(b *testing.B) {
			e := open(b, engine.Config{Shards: 2})
			ctx := context.Background()
			const others = 1000
			tokens := make([]uint64, others) // 0: no lease
			for i := range leased {
				l, err := e.Leases().Acquire(ctx, fmt.Sprintf("held-%d", i), "bench", 5*time.Minute, 0)
				if err != nil {
					b.Fatal(err)
				}
				tokens[i] = l.Token
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { // the holders at work, elsewhere
				defer close(done)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					s := fmt.Sprintf("held-%d", i%others)
					if _, err := e.Append(ctx, engine.AppendOp{Stream: s, Events: events("Fenced"), Token: tokens[i%others]}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			var next atomic.Int64
			b.SetParallelism(32) // 64 writers on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				s := fmt.Sprintf("free-%d", next.Add(1))
				for pb.Next() {
					if _, err := e.Append(ctx, engine.AppendOp{Stream: s, Expect: eslog.Expectation{Kind: eslog.ExpectAny}, Events: events("E")}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			close(stop)
			<-done
		})
	}
}
