package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/subscription"
)

// TestScavengeSnapshotsAndRetry: a scavenge removes a soft-deleted
// stream's hidden events and its snapshots of hidden revisions (the one
// of a visible revision stays, and loads), Load and the conflict delta
// of a stale append read only visible events, and a retry of an append
// whose events it removed is answered as the original append was (same
// positions and revisions, no commit time) without writing anything.
func TestScavengeSnapshotsAndRetry(t *testing.T) {
	e := open(t, engine.Config{Shards: 2})
	ctx := context.Background()
	first := engine.AppendOp{Stream: "acct-1", Events: events("Opened", "Deposited", "Deposited"), ClientIDs: 3}
	orig, err := e.Append(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: "acct-1", Revision: 2, Type: "Balance", Data: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Delete(ctx, engine.DeleteOp{Stream: "acct-1", Mode: eslog.DeleteSoft}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "acct-1", Events: events("Opened", "Deposited")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: "acct-1", Revision: 4, Type: "Balance", Data: []byte("4")}); err != nil {
		t.Fatal(err)
	}
	before := e.Stats()
	if _, err := e.Scavenge(); !errors.Is(err, engine.ErrNoScavenge) {
		t.Fatalf("Scavenge before any: %v, want ErrNoScavenge", err)
	}
	if _, err := e.StartScavenge(0); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitScavenge(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := e.Scavenge()
	if err != nil || j.State != eslog.ScavengeDone || j.EventsRemoved != 3 || j.StreamsDone != 1 || j.Fraction() != 1 {
		t.Fatalf("scavenge: %+v, %v", j, err)
	}
	if got := e.Stats(); got != before {
		t.Fatalf("stats %+v, were %+v", got, before)
	}
	infos, err := e.Snapshots().List(ctx, "acct-1")
	if err != nil || len(infos) != 1 || infos[0].Revision != 4 {
		t.Fatalf("snapshots after the scavenge: %+v, %v; want the one of revision 4", infos, err)
	}
	// Load: the snapshot of revision 4, and nothing after it; without
	// snapshots (schema 9), the visible events 3 and 4 only.
	for _, tc := range []struct {
		schema uint32
		snap   bool
		revs   []uint64
	}{{0, true, nil}, {9, false, []uint64{3, 4}}} {
		var revs []uint64
		snapped := false
		_, err := e.Load(ctx, "acct-1", tc.schema, func(*snapshot.Snapshot) error { snapped = true; return nil },
			func(v *eslog.EventView) error { revs = append(revs, v.Revision()); return nil })
		if err != nil || snapped != tc.snap || !slices.Equal(revs, tc.revs) {
			t.Fatalf("Load schema %d: snapshot %v, revisions %v, %v", tc.schema, snapped, revs, err)
		}
	}
	// The conflict delta of a stale append lists the visible events after
	// the expected revision.
	_, err = e.Append(ctx, engine.AppendOp{Stream: "acct-1", Expect: exact(3), Events: events("Late")})
	var c *engine.ConflictError
	if !errors.As(err, &c) || len(c.EventsSince) != 1 || c.EventsSince[0].Revision != 4 {
		t.Fatalf("stale append after the scavenge: %v", err)
	}
	// The retry: same ids, same expectation.
	again, err := e.Append(ctx, first)
	if err != nil {
		t.Fatalf("retry of a scavenged append: %v", err)
	}
	if again.FirstPosition != orig.FirstPosition || again.LastPosition != orig.LastPosition ||
		again.FirstRevision != orig.FirstRevision || again.LastRevision != orig.LastRevision || again.CommitTime != 0 {
		t.Fatalf("retry answered %+v; the original %+v (commit time 0 expected)", again.AppendResult, orig.AppendResult)
	}
	if got := e.Stats(); got != before {
		t.Fatalf("the retry wrote: stats %+v, were %+v", got, before)
	}
}

// TestScavengeOneAtATimeStopAndResume: a second start while one runs is
// refused; a stop leaves it stopped; a new one started and interrupted by
// a close goes on when the store is opened again, and completes.
func TestScavengeOneAtATimeStopAndResume(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := engine.Open(engine.Config{Dir: dir, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		name := fmt.Sprintf("cart-%d", i)
		for range 3 {
			if _, err := e.Append(ctx, engine.AppendOp{Stream: name, Events: events("Added", "Added", "Removed")}); err != nil {
				t.Fatal(err)
			}
		}
		if i%2 == 0 {
			if _, err := e.Delete(ctx, engine.DeleteOp{Stream: name, Mode: eslog.DeleteTombstone}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// At 50 keys a second, the 30 streams' 270 events and their index
	// entries take seconds.
	j, err := e.StartScavenge(50)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.StartScavenge(0); !errors.Is(err, engine.ErrScavengeRunning) {
		t.Fatalf("second start: %v, want ErrScavengeRunning", err)
	}
	stopped, err := e.StopScavenge(ctx)
	if err != nil || stopped.ID != j.ID || stopped.State != eslog.ScavengeStopped {
		t.Fatalf("stop: %+v, %v", stopped, err)
	}
	j, err = e.StartScavenge(50)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = engine.Open(engine.Config{Dir: dir, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	resumed, err := e.Scavenge()
	if err != nil || resumed.ID != j.ID || resumed.State != eslog.ScavengeRunning || resumed.KeysRemoved == 0 {
		t.Fatalf("after reopening: %+v, %v; want %s running, resumed with keys removed", resumed, err, j.ID)
	}
	if _, err := e.StopScavenge(ctx); err != nil { // the rest at full speed
		t.Fatal(err)
	}
	j, err = e.StartScavenge(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WaitScavenge(ctx); err != nil {
		t.Fatal(err)
	}
	if j, err = e.Scavenge(); err != nil || j.State != eslog.ScavengeDone || j.StreamsDone != 30 {
		t.Fatalf("last run: %+v, %v", j, err)
	}
	for i := range 60 {
		var n int
		err := e.Log().ReadStream(ctx, eslog.StreamQuery{Stream: fmt.Sprintf("cart-%d", i)}, func(*eslog.RecordedEvent) error { n++; return nil })
		if i%2 == 0 && !errors.Is(err, eslog.ErrStreamTombstoned) || i%2 == 1 && (err != nil || n != 9) {
			t.Fatalf("cart-%d: %d events, %v", i, n, err)
		}
	}
}

// posSink collects the positions a subscription delivers, slowly, so
// that its catch-up spans the scavenge.
type posSink struct {
	mu     sync.Mutex
	pos    []uint64
	during func() bool // whether a scavenge is under way, part done
	spans  bool        // an event came while during held
}

func (s *posSink) Event(v *eslog.EventView) error {
	s.mu.Lock()
	s.pos = append(s.pos, v.Position)
	n := len(s.pos)
	s.mu.Unlock()
	if n%5 == 0 {
		time.Sleep(time.Millisecond)
		if s.during() {
			s.mu.Lock()
			s.spans = true
			s.mu.Unlock()
		}
	}
	return nil
}
func (s *posSink) Flush(uint64) error    { return nil }
func (s *posSink) CaughtUp(uint64) error { return nil }
func (s *posSink) Ended(string) error    { return nil }

func (s *posSink) last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pos) == 0 {
		return 0
	}
	return s.pos[len(s.pos)-1]
}

// TestSubscriptionAcrossScavenge: a subscription to $all from the start,
// catching up while a scavenge removes half the streams' events and
// appends go on, then live, delivers every visible event exactly once,
// in position order, and none of the removed ones: what a read of $all
// returns afterwards.
func TestSubscriptionAcrossScavenge(t *testing.T) {
	e := open(t, engine.Config{Shards: 2})
	ctx := context.Background()
	for i := range 100 {
		name := fmt.Sprintf("order-%d", i)
		if _, err := e.Append(ctx, engine.AppendOp{Stream: name, Events: events("A", "B", "A", "A", "B", "A", "B", "B", "A", "A")}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := e.Delete(ctx, engine.DeleteOp{Stream: name, Mode: eslog.DeleteSoft}); err != nil {
				t.Fatal(err)
			}
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := &posSink{during: func() bool {
		j, err := e.Scavenge()
		return err == nil && j.State == eslog.ScavengeRunning && j.EventsRemoved > 0
	}}
	subErr := make(chan error, 1)
	go func() { subErr <- e.Subscribe(sctx, subscription.Request{Target: subscription.TargetAll}, k) }()
	if _, err := e.StartScavenge(1000); err != nil { // 500 events and 50 entries: half a second
		t.Fatal(err)
	}
	for i := range 200 {
		if _, err := e.Append(ctx, engine.AppendOp{Stream: fmt.Sprintf("live-%d", i%5), Events: events("C")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.WaitScavenge(ctx); err != nil {
		t.Fatal(err)
	}
	if j, err := e.Scavenge(); err != nil || j.State != eslog.ScavengeDone || j.EventsRemoved != 500 {
		t.Fatalf("scavenge %+v, %v", j, err)
	}
	last := e.Log().LastPosition()
	deadline := time.Now().Add(10 * time.Second)
	for k.last() < last {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription reached %d, not %d", k.last(), last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-subErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("subscription: %v", err)
	}
	var want []uint64
	if err := e.Log().ReadAll(ctx, eslog.AllQuery{}, func(ev *eslog.RecordedEvent) error {
		want = append(want, ev.Position)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.spans {
		t.Fatal("the subscription's catch-up did not overlap the scavenge: the test tests nothing")
	}
	if !slices.Equal(k.pos, want) {
		t.Fatalf("the subscription delivered %d positions, $all has %d visible; they differ", len(k.pos), len(want))
	}
}
