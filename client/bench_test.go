package client_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/esdhq/esd/client"
)

// BenchmarkAppendPipelined and BenchmarkAppendUnary append single small
// events from 64 goroutines, each to its own stream, over one client.
func BenchmarkAppendPipelined(b *testing.B) { benchmarkAppend(b, true) }

func BenchmarkAppendUnary(b *testing.B) { benchmarkAppend(b, false) }

func benchmarkAppend(b *testing.B, pipelined bool) {
	srv, _ := startCounted(b, nil)
	c := dialTo(b, srv, client.WithPipelining(pipelined))
	var worker atomic.Int32
	data := []byte(`{"n":1}`)
	b.SetParallelism(max(64/testingProcs(), 1))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		stream := fmt.Sprintf("bench-%d", worker.Add(1))
		for pb.Next() {
			if _, err := c.Append(context.Background(), stream, client.Any(), client.NewEvent("Tick", data)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// testingProcs is GOMAXPROCS, which RunParallel multiplies its
// parallelism by.
func testingProcs() int { return runtime.GOMAXPROCS(0) }
