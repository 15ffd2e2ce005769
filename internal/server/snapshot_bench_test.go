package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/test/bufconn"
)

// Snapshot benchmarks (README, Snapshots):
//
//	go test -run '^$' -bench 'SnapshotLoad|AppendAdvice' -benchtime 2s ./internal/server/
//
// BenchmarkSnapshotLoad compares a Load from a snapshot with the read a
// client without one makes: on a 100,000-event stream with a snapshot 50
// events behind its head, against a full replay (ReadStream of every
// event); on a 1,000-event stream with a snapshot 100 behind, against a
// ReadStream of those 100 events. BenchmarkAppendAdvice compares appends
// with a snapshot policy (every N and dynamic, so that each append reads
// the advice cache and the load-rate sketch) and without.

// snapBenchFill writes n events of about 100 bytes to stream in the log in
// dir, directly (1,000 a commit), before a server opens it.
func snapBenchFill(b *testing.B, dir, stream string, n int) {
	b.Helper()
	l, err := eslog.Open(dir, eslog.Options{CacheBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}()
	data := []byte(`{"item":"` + strings.Repeat("x", 80) + `","qty":1}`)
	for n > 0 {
		s, ok, err := l.State(stream)
		if err != nil {
			b.Fatal(err)
		}
		w := &eslog.Write{State: s}
		if !ok {
			w.State, w.New = eslog.StreamState{ID: l.NewStreamID(), Name: stream}, true
		}
		for range min(1000, n) {
			w.Events = append(w.Events, eslog.Event{ID: eslog.NewEventID(), Type: "ItemAdded", ContentType: "application/json", Data: data})
		}
		n -= len(w.Events)
		tk, err := l.Commit([]*eslog.Write{w}, false)
		if err != nil {
			b.Fatal(err)
		}
		if err := tk.Wait(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// benchLoad loads stream once, draining every message; it returns the
// events received.
func benchLoad(b *testing.B, c esdv1.SnapshotServiceClient, stream string) int {
	rs, err := c.Load(b.Context(), &esdv1.LoadRequest{Stream: stream, SchemaVersion: 1})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		m, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(m.GetEvents().GetEvents())
	}
}

func benchRead(b *testing.B, c esdv1.StreamServiceClient, req *esdv1.ReadStreamRequest) int {
	rs, err := c.ReadStream(b.Context(), req)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		m, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(m.GetEvents())
	}
}

func BenchmarkSnapshotLoad(b *testing.B) {
	for _, c := range []struct {
		name   string
		events int
		behind int
	}{{"100k", 100_000, 50}, {"1k", 1_000, 100}} {
		dir := b.TempDir()
		stream := "bench-" + c.name
		snapBenchFill(b, dir, stream, c.events)
		ts := startSnapBenchServer(b, dir, snapshot.Config{})
		head := uint64(c.events - 1)
		snapRev := head - uint64(c.behind)
		if _, err := ts.snaps.SaveSnapshot(b.Context(), &esdv1.SaveSnapshotRequest{
			Stream: stream, Revision: snapRev, Type: "CartState", SchemaVersion: 1, Data: []byte(strings.Repeat("s", 1024)),
		}); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/load-from-snapshot", func(b *testing.B) {
			for b.Loop() {
				if n := benchLoad(b, ts.snaps, stream); n != c.behind {
					b.Fatalf("load sent %d events, want %d", n, c.behind)
				}
			}
		})
		if c.events == 100_000 {
			b.Run(c.name+"/full-replay", func(b *testing.B) {
				for b.Loop() {
					if n := benchRead(b, ts.streams, &esdv1.ReadStreamRequest{Stream: stream}); n != c.events {
						b.Fatalf("read %d events", n)
					}
				}
			})
		} else {
			from := snapRev + 1
			b.Run(fmt.Sprintf("%s/read-%d", c.name, c.behind), func(b *testing.B) {
				for b.Loop() {
					if n := benchRead(b, ts.streams, &esdv1.ReadStreamRequest{Stream: stream, FromRevision: &from}); n != c.behind {
						b.Fatalf("read %d events", n)
					}
				}
			})
		}
	}
}

// snapBenchServer is a server on a store for a benchmark, with clients.
type snapBenchServer struct {
	streams esdv1.StreamServiceClient
	snaps   esdv1.SnapshotServiceClient
}

// startSnapBenchServer starts a server on the store in dir, stopped at the
// end of the benchmark.
func startSnapBenchServer(b *testing.B, dir string, cfg snapshot.Config) *snapBenchServer {
	b.Helper()
	reg := prometheus.NewRegistry()
	eng, err := engine.Open(engine.Config{Dir: dir, Registerer: reg, CacheBytes: 64 << 20, Shards: 2, Snapshots: cfg})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(eng, Config{Version: "test"}, zap.NewNop(), reg)
	if err != nil {
		_ = eng.Close()
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &subServer{log: eng.Log(), reg: reg, lis: bufconn.Listen(4 << 20), cancel: cancel, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(ctx, s.lis) }()
	b.Cleanup(func() {
		s.cancel()
		if err := <-s.served; err != nil {
			b.Errorf("serve: %v", err)
		}
		if err := eng.Close(); err != nil {
			b.Errorf("close engine: %v", err)
		}
	})
	conn := s.dial(b)
	return &snapBenchServer{streams: esdv1.NewStreamServiceClient(conn), snaps: esdv1.NewSnapshotServiceClient(conn)}
}

// BenchmarkAppendAdvice: 16 concurrent appenders of one event to 1,000
// streams, on two servers run in turn (A/B, the order alternating): one
// without a snapshot policy (off), one with a policy that applies to
// every stream (on: every 1,000 events and dynamic, so that each append
// reads the advice cache and the load-rate sketch). An op is a round of
// 2,000 appends on each; it reports both rates and the loss of on
// against off, over all rounds.
func BenchmarkAppendAdvice(b *testing.B) {
	off := startSnapBenchServer(b, b.TempDir(), snapshot.Config{})
	on := startSnapBenchServer(b, b.TempDir(), snapshot.Config{Default: snapshot.Policy{Every: 1000, ReplayThreshold: 1_000_000}})
	data := []byte(strings.Repeat("x", 100))
	const workers, perRound = 16, 2000
	round := func(srv *snapBenchServer, advised bool) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1); i <= perRound; i = next.Add(1) {
					resp, err := srv.streams.Append(b.Context(), &esdv1.AppendRequest{
						Stream: fmt.Sprintf("adv%d-%d", i%10, i%1000),
						Events: []*esdv1.ProposedEvent{{Type: "E", Data: data}},
					})
					if err != nil {
						b.Error(err)
						return
					}
					if advised != (resp.GetEventsSinceSnapshot() > 0) {
						b.Errorf("advice %d with the policy on: %t", resp.GetEventsSinceSnapshot(), advised)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	round(off, false) // warm both: streams created, advice cached
	round(on, true)
	var tOff, tOn time.Duration
	n := 0
	for b.Loop() {
		if n%2 == 0 {
			tOff += round(off, false)
			tOn += round(on, true)
		} else {
			tOn += round(on, true)
			tOff += round(off, false)
		}
		n++
	}
	rOff := float64(n*perRound) / tOff.Seconds()
	rOn := float64(n*perRound) / tOn.Seconds()
	b.ReportMetric(rOff, "off_appends/s")
	b.ReportMetric(rOn, "on_appends/s")
	b.ReportMetric(100*(1-rOn/rOff), "loss_%")
	b.ReportMetric(0, "ns/op")
}
