//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestGracefulShutdownKeepsAcknowledged sends SIGTERM while 16 gRPC clients
// append (client-chosen ids, exact expected revisions; each client owns two
// streams and writes one with Append or both with AppendMulti, on 4 writer
// shards) and proves the shutdown contract: esd exits 0; every call is
// answered OK or UNAVAILABLE (reason SHUTTING_DOWN, or none once the
// connection is gone), never cut or failed otherwise; once a client sees
// UNAVAILABLE it never sees OK again, and calls after esd exited fail
// UNAVAILABLE; after a restart every acknowledged append is stored at its
// acknowledged revision and position, and nothing that failed is.
func TestGracefulShutdownKeepsAcknowledged(t *testing.T) {
	const (
		clients  = 16
		minAcked = 300 // events acknowledged before SIGTERM
	)
	dir := t.TempDir()
	p := startESD(t, dir, "--shards", "4")
	c := dial(t, p.Addr)

	ctx, cancel := context.WithCancel(context.Background())
	var (
		signalled atomic.Bool
		acked     atomic.Int64
		wg        sync.WaitGroup
	)
	t.Cleanup(func() { cancel(); wg.Wait() }) // before esd is killed: clients may wait for it to exit
	type stream struct {
		name   string
		events []sentEvent // acknowledged
	}
	type clientState struct {
		streams          [2]*stream
		failures         []error
		ackedAfterSignal int // calls sent after SIGTERM and acknowledged
		inFlightAcked    int // calls sent before SIGTERM and acknowledged after it
	}
	states := make([]*clientState, clients)
	for i := range clients {
		cs := &clientState{streams: [2]*stream{{name: fmt.Sprintf("shutdown-%02d-a", i)}, {name: fmt.Sprintf("shutdown-%02d-b", i)}}}
		states[i] = cs
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		// call makes one Append (one stream) or AppendMulti (both).
		call := func(reqs []*esdv1.AppendRequest) ([]*esdv1.AppendResponse, error) {
			cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
			defer ccancel()
			if len(reqs) == 1 {
				r, err := c.streams.Append(cctx, reqs[0])
				return []*esdv1.AppendResponse{r}, err
			}
			r, err := c.streams.AppendMulti(cctx, &esdv1.AppendMultiRequest{Appends: reqs})
			return r.GetResults(), err
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				ss := cs.streams[:]
				if rng.IntN(3) != 0 {
					ss = ss[rng.IntN(2):][:1]
				}
				var reqs []*esdv1.AppendRequest
				for _, s := range ss {
					req := &esdv1.AppendRequest{Stream: s.name}
					if len(s.events) == 0 {
						req.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
					} else {
						req.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: uint64(len(s.events) - 1)}
					}
					for range 1 + rng.IntN(5) {
						req.Events = append(req.Events, randomEvent(rng))
					}
					reqs = append(reqs, req)
				}
				before := signalled.Load()
				resps, err := call(reqs)
				if ctx.Err() != nil {
					return // the test is over
				}
				if err == nil {
					if len(cs.failures) > 0 {
						t.Errorf("%s: call acknowledged after an earlier one failed with %v", ss[0].name, cs.failures[0])
					}
					if len(resps) != len(reqs) {
						t.Errorf("%s: %d results for %d appends", ss[0].name, len(resps), len(reqs))
						return
					}
					switch {
					case before:
						cs.ackedAfterSignal++
					case signalled.Load():
						cs.inFlightAcked++
					}
					for k, s := range ss {
						if msg := checkResult(len(s.events), reqs[k], resps[k], false); msg != "" {
							t.Errorf("%s: %s", s.name, msg)
						}
						for j, ev := range reqs[k].Events {
							s.events = append(s.events, sentEvent{ev: ev, stream: s.name,
								revision: resps[k].GetFirstRevision() + uint64(j), position: resps[k].GetFirstPosition() + uint64(j)})
						}
						acked.Add(int64(len(reqs[k].Events)))
					}
					continue
				}
				if !signalled.Load() {
					t.Errorf("%s: call failed before SIGTERM: %v", ss[0].name, err)
					return
				}
				if status.Code(err) != codes.Unavailable || (reasonOf(err) != "" && reasonOf(err) != "SHUTTING_DOWN") {
					t.Errorf("%s: call during shutdown failed with %v (reason %q), want UNAVAILABLE/SHUTTING_DOWN", ss[0].name, err, reasonOf(err))
				}
				cs.failures = append(cs.failures, err)
				// Once esd is gone, the same call fails the same way.
				select {
				case <-p.done:
				case <-ctx.Done():
					return
				}
				if _, err = call(reqs); status.Code(err) != codes.Unavailable {
					t.Errorf("%s: call after esd exited: %v, want UNAVAILABLE", ss[0].name, err)
				}
				cs.failures = append(cs.failures, err)
				return
			}
		})
	}

	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("%d acknowledged events", minAcked), func() bool { return acked.Load() >= minAcked })
	signalled.Store(true)
	p.Stop() // SIGTERM; asserts exit code 0
	wg.Wait()

	logs := p.logs.String()
	for _, msg := range []string{`"msg":"server stopped"`, `"msg":"store closed"`} {
		if !strings.Contains(logs, msg) {
			t.Errorf("esd's shutdown log lacks %s", msg)
		}
	}
	if strings.Contains(logs, "grace period over") {
		t.Errorf("esd cut RPCs at shutdown: the grace period ran out")
	}
	reasons := map[string]int{}
	afterSignal, inFlight := 0, 0
	var names []string
	for _, cs := range states {
		if len(cs.failures) == 0 {
			t.Errorf("%s: no call failed, though the client kept appending until esd exited", cs.streams[0].name)
		}
		for _, err := range cs.failures {
			reasons[status.Code(err).String()+"/"+reasonOf(err)]++
		}
		afterSignal += cs.ackedAfterSignal
		inFlight += cs.inFlightAcked
		names = append(names, cs.streams[0].name, cs.streams[1].name)
	}
	t.Logf("%d events acknowledged; calls acknowledged after SIGTERM: %d in flight at the signal, %d sent after it; failures by code/reason: %v",
		acked.Load(), inFlight, afterSignal, reasons)

	// Restart: exactly what was acknowledged is there.
	p2 := startESD(t, dir)
	c2 := dial(t, p2.Addr)
	v := checkStore(t, c2, names)
	total := 0
	for _, cs := range states {
		for _, s := range cs.streams {
			got := v.byStream[s.name]
			total += len(s.events)
			for i, want := range s.events {
				var rec *esdv1.RecordedEvent
				if i < len(got) {
					rec = got[i]
				}
				if msg := want.matches(rec); msg != "" {
					t.Errorf("%s revision %d (acknowledged at position %d): %s", s.name, i, want.position, msg)
				}
			}
			if len(got) > len(s.events) {
				t.Errorf("%s holds %d events, only %d were acknowledged: an append that failed at shutdown was stored (%v)",
					s.name, len(got), len(s.events), idsOf(got[len(s.events):]))
			}
		}
	}
	if len(v.all) != total {
		t.Errorf("$all holds %d events, %d were acknowledged", len(v.all), total)
	}
	p2.Stop()
}
