package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// noSnapshots is a schema version no test saves snapshots of: Load with
// it returns every visible event of a stream.
const noSnapshots = 9999

// history returns every visible event of the stream.
func history(t *testing.T, c *client.Client, stream string) []*esdv1.RecordedEvent {
	t.Helper()
	l, err := c.Load(context.Background(), stream, noSnapshots)
	if err != nil {
		t.Fatalf("load %s: %v", stream, err)
	}
	return l.Events
}

// between returns the ids of the events of the stream after revision
// after (-1: from the first) up to to.
func between(t *testing.T, c *client.Client, stream string, after int64, to uint64) []string {
	t.Helper()
	var ids []string
	for _, ev := range history(t, c, stream) {
		if int64(ev.GetRevision()) > after && ev.GetRevision() <= to {
			ids = append(ids, ev.GetId())
		}
	}
	return ids
}

func ids(events []*esdv1.RecordedEvent) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.GetId()
	}
	return out
}

// checkSurfaced fails unless err is a conflict carrying exactly the events
// appended after the state the decision saw up to the conflict's head.
func checkSurfaced(t *testing.T, c *client.Client, stream string, res client.Result[stock], err error) *client.Conflict {
	t.Helper()
	conflict, ok := client.IsWrongExpectedRevision(err)
	if !ok {
		t.Fatalf("err = %v, want a conflict", err)
	}
	if conflict.Truncated {
		t.Errorf("surfaced conflict is still truncated")
	}
	after := int64(res.State.Head)
	if !res.State.Exists {
		after = -1
	}
	want := between(t, c, stream, after, conflict.ActualHead)
	if got := ids(conflict.Events); !slices.Equal(got, want) {
		t.Errorf("conflict after revision %d carries %d events %v,\nwant the %d appended since up to head %d: %v",
			res.State.Head, len(got), got, len(want), conflict.ActualHead, want)
	}
	return conflict
}

// TestUpdateConcurrentWriters runs 32 writers taking stock from one
// aggregate, each command in its own goroutine slot, under each conflict
// policy, with and without the state cache: no update is lost (the
// stream's final stock is the initial stock minus what the successful
// commands took, one event per success), the stock is never negative at
// any revision, and every command succeeded, was refused for lack of
// stock, or returned a conflict its policy allowed (carrying exactly the
// events since its decision).
func TestUpdateConcurrentWriters(t *testing.T) {
	c, _ := dial(t)
	const (
		writers  = 32
		commands = 8 // per writer
		initial  = 400
	)
	cases := []struct {
		name       string
		cache      int
		maxRetries int
		policy     client.ConflictPolicy
		// conflicts: a command may end in a conflict
		conflicts bool
	}{
		{name: "retry", cache: -1, maxRetries: 1000},
		{name: "retry-cached", cache: 16, maxRetries: 1000},
		{name: "retry-bounded-cached", cache: 16, maxRetries: 2, conflicts: true},
		{name: "surface", cache: -1, policy: client.SurfaceConflicts, conflicts: true},
		{name: "surface-cached", cache: 16, policy: client.SurfaceConflicts, conflicts: true},
		// Retries conflicts with a single event only.
		{name: "policy-cached", cache: 16, maxRetries: 1000, conflicts: true,
			policy: func(c *client.Conflict) bool { return len(c.Events) == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			stream := "stock-" + tc.name
			if _, err := c.Append(ctx, stream, client.NoStream(), stocked(initial)); err != nil {
				t.Fatal(err)
			}
			agg := newStockAggregate(c)
			agg.CacheSize, agg.MaxRetries, agg.OnConflict = tc.cache, tc.maxRetries, tc.policy
			agg.Encode = nil // snapshots have their own test
			var (
				taken, succeeded, refused, conflicted atomic.Int64
				mu                                    sync.Mutex
				appended                              = map[uint64]int64{} // position -> quantity
				wg                                    sync.WaitGroup
			)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					for range commands {
						n := 1 + rng.Int64N(3)
						res, err := agg.Update(ctx, stream, take(n))
						switch {
						case err == nil:
							if res.Append == nil {
								t.Errorf("success without an append response")
								return
							}
							succeeded.Add(1)
							taken.Add(n)
							mu.Lock()
							appended[res.Append.GetFirstPosition()] = n
							mu.Unlock()
						case errors.Is(err, errInsufficient):
							refused.Add(1)
						case tc.conflicts:
							checkSurfaced(t, c, stream, res, err)
							conflicted.Add(1)
						default:
							t.Errorf("update: %v", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}

			// The stream: one Taken per success, at the positions the
			// successes were answered, the stock never negative.
			evs := history(t, c, stream)
			var s stock
			for _, ev := range evs {
				var err error
				if s, err = applyStock(s, ev); err != nil {
					t.Fatalf("the stream's history: %v", err)
				}
				if ev.GetType() == "Taken" {
					if _, ok := appended[ev.GetPosition()]; !ok {
						t.Errorf("event at position %d is no answered command's", ev.GetPosition())
					}
				}
			}
			if got, want := int64(len(evs)-1), succeeded.Load(); got != want {
				t.Errorf("%d Taken events, want one per success: %d", got, want)
			}
			if want := initial - taken.Load(); s.Qty != want {
				t.Errorf("final stock %d, want %d - %d = %d (a lost update)", s.Qty, initial, taken.Load(), want)
			}
			st, err := agg.Load(ctx, stream)
			if err != nil || st.Value != s || st.Head != uint64(len(evs)-1) {
				t.Errorf("Load = %+v, %v; want %+v at %d", st, err, s, len(evs)-1)
			}
			total := succeeded.Load() + refused.Load() + conflicted.Load()
			if total != writers*commands {
				t.Errorf("%d outcomes, want %d", total, writers*commands)
			}
			if succeeded.Load() == 0 {
				t.Errorf("no command succeeded")
			}
			if !tc.conflicts && refused.Load() == 0 {
				t.Errorf("no command was refused: the test demands more than the stock to prove the invariant")
			}
			t.Logf("%d succeeded (taking %d), %d refused, %d conflicts returned; final stock %d",
				succeeded.Load(), taken.Load(), refused.Load(), conflicted.Load(), s.Qty)
		})
	}
}

// interfere returns a decide function that appends events to the stream
// the first `rounds` times it is called, as another writer would between
// the aggregate's load and its append, then takes n.
func interfere(t *testing.T, c *client.Client, stream string, events, rounds int, n int64) func(stock) ([]*esdv1.ProposedEvent, error) {
	calls := 0
	return func(s stock) ([]*esdv1.ProposedEvent, error) {
		if calls++; calls <= rounds {
			for range events {
				if _, err := c.Append(context.Background(), stream, client.Any(), stocked(1)); err != nil {
					t.Error(err)
				}
			}
		}
		return take(n)(s)
	}
}

// TestUpdateSurfacesExactlyTheEventsSince: a surfaced conflict carries
// every event appended since the decision's state, also when there are
// more than the server's conflict delta holds (16 events).
func TestUpdateSurfacesExactlyTheEventsSince(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	for _, others := range []int{1, 16, 17, 40} {
		for _, cache := range []int{-1, 8} { // -1: no cache
			t.Run(fmt.Sprintf("%d-events-cache-%d", others, cache), func(t *testing.T) {
				stream := fmt.Sprintf("stock-surface%d-%d", others, cache)
				if _, err := c.Append(ctx, stream, client.NoStream(), stocked(10)); err != nil {
					t.Fatal(err)
				}
				agg := newStockAggregate(c)
				agg.OnConflict, agg.CacheSize = client.SurfaceConflicts, cache
				if _, err := agg.Update(ctx, stream, take(1)); err != nil { // loads, and fills the cache
					t.Fatal(err)
				}
				res, err := agg.Update(ctx, stream, interfere(t, c, stream, others, 1, 1))
				conflict := checkSurfaced(t, c, stream, res, err)
				if len(conflict.Events) != others || conflict.ActualHead != res.State.Head+uint64(others) {
					t.Errorf("conflict: %d events, head %d; want %d events after %d", len(conflict.Events), conflict.ActualHead, others, res.State.Head)
				}
				if res.Retries != 0 {
					t.Errorf("Retries = %d under SurfaceConflicts", res.Retries)
				}
			})
		}
	}
}

// TestUpdateRetriesFoldTheEventsSince: a retried conflict decides again
// on the state with the other writer's events in, whether they came in
// the conflict (folded) or not (truncated: loaded again); and after
// MaxRetries conflicts the error is still the conflict, complete.
func TestUpdateRetriesFoldTheEventsSince(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	for _, others := range []int{3, 40} {
		t.Run(fmt.Sprintf("%d-events", others), func(t *testing.T) {
			stream := fmt.Sprintf("stock-retry%d", others)
			if _, err := c.Append(ctx, stream, client.NoStream(), stocked(5)); err != nil {
				t.Fatal(err)
			}
			agg := newStockAggregate(c)
			res, err := agg.Update(ctx, stream, interfere(t, c, stream, others, 1, 5))
			if err != nil {
				t.Fatal(err)
			}
			// Decided again with the other writer's stock in: 5 + others - 5.
			if res.Retries != 1 || res.State.Value.Qty != int64(others) || res.State.Head != uint64(others+1) {
				t.Errorf("result %+v, want 1 retry, stock %d at revision %d", res, others, others+1)
			}
			if st, err := agg.Load(ctx, stream); err != nil || st != res.State {
				t.Errorf("Load = %+v, %v; want the state Update returned, %+v", st, err, res.State)
			}
		})
	}
	t.Run("exhausted", func(t *testing.T) {
		stream := "stock-exhausted"
		if _, err := c.Append(ctx, stream, client.NoStream(), stocked(5)); err != nil {
			t.Fatal(err)
		}
		agg := newStockAggregate(c)
		agg.MaxRetries = 2
		res, err := agg.Update(ctx, stream, interfere(t, c, stream, 20, 3, 1))
		checkSurfaced(t, c, stream, res, err)
		if res.Retries != 2 {
			t.Errorf("Retries = %d, want 2", res.Retries)
		}
	})
}

// TestUpdateDecideErrors: decide's error comes back as it is and nothing
// is appended; a decision of no events appends nothing; a refusal that
// rested on a stale cached state is decided again on the current one.
func TestUpdateDecideErrors(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	stream := "stock-decide"
	if _, err := c.Append(ctx, stream, client.NoStream(), stocked(1)); err != nil {
		t.Fatal(err)
	}
	agg := newStockAggregate(c)
	agg.CacheSize = 4

	if _, err := agg.Update(ctx, stream, take(2)); !errors.Is(err, errInsufficient) {
		t.Fatalf("take 2 of 1: %v, want errInsufficient", err)
	}
	res, err := agg.Update(ctx, stream, func(stock) ([]*esdv1.ProposedEvent, error) { return nil, nil })
	if err != nil || res.Append != nil || res.State.Head != 0 || res.State.Value.Qty != 1 {
		t.Fatalf("no events: %+v, %v; want nothing appended, stock 1 at revision 0", res, err)
	}
	if n := len(history(t, c, stream)); n != 1 {
		t.Fatalf("the stream has %d events, want 1", n)
	}

	// Another writer restocks: the cached state (stock 1) would refuse.
	if _, err := c.Append(ctx, stream, client.Exact(0), stocked(5)); err != nil {
		t.Fatal(err)
	}
	res, err = agg.Update(ctx, stream, take(2))
	if err != nil || res.State.Value.Qty != 4 || res.Retries != 0 {
		t.Fatalf("take 2 after a restock: %+v, %v; want stock 4, no retry counted", res, err)
	}

	// A missing stream is New(): taking from it is refused, stocking it
	// creates it.
	if _, err := agg.Update(ctx, "stock-none", take(1)); !errors.Is(err, errInsufficient) {
		t.Fatalf("take from a missing stream: %v", err)
	}
	res, err = agg.Update(ctx, "stock-none", func(stock) ([]*esdv1.ProposedEvent, error) {
		return []*esdv1.ProposedEvent{stocked(3)}, nil
	})
	if err != nil || !res.State.Exists || res.State.Head != 0 || res.State.Value.Qty != 3 {
		t.Fatalf("stock a missing stream: %+v, %v", res, err)
	}
}

// TestUpdateSavesAdvisedSnapshots: with the category's policy at every
// 10 events, the aggregate saves snapshots in the background as advised,
// and a fresh aggregate's Load starts from the latest; an Encode that
// fails never fails a command.
func TestUpdateSavesAdvisedSnapshots(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	if err := c.SetSnapshotPolicy(ctx, "snapstock", &esdv1.SnapshotPolicy{Every: 10}); err != nil {
		t.Fatal(err)
	}
	const stream = "snapstock-1"
	if _, err := c.Append(ctx, stream, client.NoStream(), stocked(100)); err != nil {
		t.Fatal(err)
	}
	agg := newStockAggregate(c)
	var mu sync.Mutex
	var saved []uint64
	agg.OnSnapshot = func(_ string, rev uint64, err error) {
		if err != nil {
			t.Errorf("snapshot at %d: %v", rev, err)
		}
		mu.Lock()
		saved = append(saved, rev)
		mu.Unlock()
	}
	for range 35 {
		if _, err := agg.Update(ctx, stream, take(1)); err != nil {
			t.Fatal(err)
		}
		agg.Wait() // each advice is taken before the next command: one save per 10 events
	}
	if len(saved) != 3 {
		t.Errorf("snapshots saved at %v, want 3 (every 10 of 36 events)", saved)
	}
	l, err := c.Load(ctx, stream, 0)
	if err != nil || l.Snapshot == nil || l.Snapshot.GetRevision() != saved[len(saved)-1] || l.Snapshot.GetType() != "stock" {
		t.Fatalf("Load after saves: %+v, %v; want the snapshot at %d", l, err, saved[len(saved)-1])
	}

	fresh := newStockAggregate(c)
	var decoded atomic.Int64
	decode := fresh.Decode
	fresh.Decode = func(b []byte) (stock, error) { decoded.Add(1); return decode(b) }
	st, err := fresh.Load(ctx, stream)
	if err != nil || st.Value.Qty != 65 || st.Head != 35 || decoded.Load() != 1 {
		t.Fatalf("fresh Load = %+v, %v (decoded %d snapshots); want stock 65 at 35 from the snapshot", st, err, decoded.Load())
	}

	// A snapshot of another type is not decoded: the stream is replayed.
	other := newStockAggregate(c)
	other.SnapshotType = "stock-v2"
	var otherDecoded atomic.Int64
	otherDecode := other.Decode
	other.Decode = func(b []byte) (stock, error) { otherDecoded.Add(1); return otherDecode(b) }
	st, err = other.Load(ctx, stream)
	if err != nil || st.Value.Qty != 65 || st.Head != 35 || otherDecoded.Load() != 0 {
		t.Fatalf("Load ignoring the snapshot = %+v, %v (decoded %d snapshots); want stock 65 at 35, none decoded", st, err, otherDecoded.Load())
	}

	broken := newStockAggregate(c)
	broken.Encode = func(stock) ([]byte, error) { return nil, errors.New("cannot encode") }
	var failures atomic.Int64
	broken.OnSnapshot = func(_ string, _ uint64, err error) {
		if err != nil {
			failures.Add(1)
		}
	}
	for range 10 {
		if _, err := broken.Update(ctx, stream, take(1)); err != nil {
			t.Fatalf("update with a failing Encode: %v", err)
		}
		broken.Wait()
	}
	if failures.Load() == 0 {
		t.Errorf("no snapshot failure reported, want the advised saves' encode errors")
	}
	if l, err := c.Load(ctx, stream, 0); err != nil || l.Snapshot.GetRevision() != saved[len(saved)-1] {
		t.Errorf("a failing Encode saved a snapshot: %+v, %v", l.Snapshot, err)
	}
}
