//go:build unix

package client_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
)

// BenchmarkAppendPipelined and BenchmarkAppendUnary append single small
// events from 64 goroutines, each to its own stream, over one client.
// Besides the wall time they report the process's CPU time an append
// (client and in-process server together), which other loads on the
// machine disturb less. The store is in $TMPDIR: TMPDIR=/dev/shm takes
// the disk's fsync latency, and other programs' disk traffic, out of the
// comparison.
func BenchmarkAppendPipelined(b *testing.B) { benchmarkAppend(b, true) }

func BenchmarkAppendUnary(b *testing.B) { benchmarkAppend(b, false) }

func benchmarkAppend(b *testing.B, pipelined bool) {
	srv, _ := startCounted(b, nil)
	c := dialTo(b, srv, client.WithPipelining(pipelined))
	var worker atomic.Int32
	data := []byte(`{"n":1}`)
	// RunParallel runs parallelism × GOMAXPROCS goroutines.
	b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
	b.ReportAllocs()
	cpu0 := cpuTime(b)
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
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
