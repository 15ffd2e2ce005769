//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestSubscriberResumesAcrossKill9: subscribers to $all and to a category
// follow the log while writers append, esd is killed with -9 three times
// and restarted on the same store, and each subscriber resumes after the
// last position it received, as a read model does. In the end each has
// received exactly what the store holds for its target, once, in position
// order, including every acknowledged event: nothing is lost or repeated
// across the kills and the resumptions.
func TestSubscriberResumesAcrossKill9(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()

	var (
		mu    sync.Mutex
		acked = map[uint64]string{} // position -> id, of acknowledged events
	)
	subs := []*resumingSub{
		{name: "$all", req: func() *esdv1.SubscribeRequest {
			return &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}}}
		}},
		{name: "category sub", req: func() *esdv1.SubscribeRequest {
			return &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: "sub"}}
		}},
	}
	const rounds = 3
	for round := 0; round <= rounds; round++ {
		p := startESD(t, dir)
		c := dial(t, p.Addr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var wg sync.WaitGroup
		for _, s := range subs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.err == nil {
					s.follow(ctx, c, round == rounds)
				}
			}()
		}
		if round == rounds { // the last start: no writers, no kill; the subscribers catch up
			wg.Wait()
			cancel()
			p.Stop()
			break
		}
		for w := range 4 {
			wrng := rand.New(rand.NewPCG(seed, uint64(round*10+w)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					stream := fmt.Sprintf("sub-%d", wrng.IntN(10))
					if wrng.IntN(4) == 0 {
						stream = fmt.Sprintf("other-%d", wrng.IntN(3)) // in $all, not in the category
					}
					req := &esdv1.AppendRequest{Stream: stream}
					for range 1 + wrng.IntN(5) {
						req.Events = append(req.Events, &esdv1.ProposedEvent{Id: uuid.NewString(), Type: "Resumed", Data: []byte("x")})
					}
					resp, err := c.streams.Append(ctx, req)
					if err != nil {
						return // killed
					}
					mu.Lock()
					for i, e := range req.Events {
						acked[resp.GetFirstPosition()+uint64(i)] = e.GetId()
					}
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond) // picks the kill moment; nothing waits for a condition here
		p.Kill()
		wg.Wait()
		cancel()
	}

	// The store as it is now, read whole.
	p := startESD(t, dir)
	all, err := dial(t, p.Addr).readAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		if s.err != nil {
			t.Errorf("%s: %v", s.name, s.err)
		}
		var want []*esdv1.RecordedEvent
		for _, e := range all {
			if s.name == "$all" || strings.HasPrefix(e.GetStream(), "sub-") {
				want = append(want, e)
			}
		}
		if len(s.got) != len(want) {
			t.Errorf("%s: received %d events, the store holds %d", s.name, len(s.got), len(want))
		}
		for i := range min(len(s.got), len(want)) {
			if g, w := s.got[i], want[i]; g.GetPosition() != w.GetPosition() || g.GetId() != w.GetId() {
				t.Fatalf("%s: event %d received: position %d id %s; the store's: position %d id %s",
					s.name, i, g.GetPosition(), g.GetId(), w.GetPosition(), w.GetId())
			}
		}
		t.Logf("%s: %d events received over %d subscriptions", s.name, len(s.got), s.subscriptions)
	}
	stored := map[uint64]string{}
	for _, e := range all {
		stored[e.GetPosition()] = e.GetId()
	}
	for pos, id := range acked {
		if stored[pos] != id {
			t.Errorf("acknowledged event %s at position %d: the store has %q", id, pos, stored[pos])
		}
	}
	if len(acked) == 0 {
		t.Fatal("no append was acknowledged")
	}
}

// resumingSub is a subscriber that keeps its own position and subscribes
// again after it, as a read model does.
type resumingSub struct {
	name          string
	req           func() *esdv1.SubscribeRequest
	got           []*esdv1.RecordedEvent
	subscriptions int
	err           error // what went wrong, other than esd being killed
}

// follow subscribes after the last position received (from the start the
// first time) and records what comes, checking that positions increase,
// until the stream fails (esd was killed) or, with untilCaughtUp, the
// caught_up marker.
func (s *resumingSub) follow(ctx context.Context, c *client, untilCaughtUp bool) {
	req := s.req()
	if n := len(s.got); n > 0 {
		req.From = &esdv1.SubscribeRequest_AfterPosition{AfterPosition: s.got[n-1].GetPosition()}
	} else {
		req.From = &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}}
	}
	stream, err := c.streams.Subscribe(ctx, req)
	if err != nil {
		if untilCaughtUp {
			s.err = err
		}
		return
	}
	s.subscriptions++
	for {
		m, err := stream.Recv()
		if err != nil {
			if untilCaughtUp {
				s.err = fmt.Errorf("before caught_up: %w", err)
			}
			return
		}
		if m.GetCaughtUp() != nil && untilCaughtUp {
			return
		}
		for _, e := range m.GetEvents().GetEvents() {
			if n := len(s.got); n > 0 && e.GetPosition() <= s.got[n-1].GetPosition() {
				s.err = fmt.Errorf("position %d after %d", e.GetPosition(), s.got[n-1].GetPosition())
				return
			}
			s.got = append(s.got, e)
		}
	}
}
