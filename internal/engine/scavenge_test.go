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
	"github.com/esdhq/esd/internal/streammeta"
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

// fakeClock is an engine clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) tick(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// runScavenge runs a scavenge at full speed to its end, and returns it.
func runScavenge(t *testing.T, e *engine.Engine) eslog.ScavengeJob {
	t.Helper()
	if _, err := e.StartScavenge(1 << 30); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitScavenge(context.Background()); err != nil {
		t.Fatal(err)
	}
	j, err := e.Scavenge()
	if err != nil || j.State != eslog.ScavengeDone {
		t.Fatalf("scavenge %+v, %v", j, err)
	}
	return j
}

// streamRevisions reads the revisions of stream name.
func streamRevisions(t *testing.T, e *engine.Engine, name string) []uint64 {
	t.Helper()
	var revs []uint64
	if err := e.Log().ReadStream(context.Background(), eslog.StreamQuery{Stream: name}, func(ev *eslog.RecordedEvent) error {
		revs = append(revs, ev.Revision)
		return nil
	}); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return revs
}

// revSink collects the revisions a stream subscription delivers, and
// its ending.
type revSink struct {
	mu    sync.Mutex
	revs  []uint64
	ended string
}

func (s *revSink) Event(v *eslog.EventView) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revs = append(s.revs, v.Revision())
	return nil
}
func (s *revSink) Flush(uint64) error    { return nil }
func (s *revSink) CaughtUp(uint64) error { return nil }
func (s *revSink) Ended(reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = reason
	return nil
}

// TestScavengeEnforcesLimits: a scavenge removes what every kind of
// retention limit hides (max count, max age, truncate before, a
// category's default, a stream's own over its category's) with the
// snapshots of those revisions, keeps every visible event, keeps the
// newest event of a stream whose limits hide all (so that it still
// exists, at the same head), and makes the cut durable: lifting the
// limits afterwards shows nothing older. Appends and expected revisions
// go on as before, a stream subscription is not ended, and a second
// scavenge finds nothing to do.
func TestScavengeEnforcesLimits(t *testing.T) {
	clock := newFakeClock()
	tick := clock.tick
	e := open(t, engine.Config{Shards: 2, Clock: clock.now})
	ctx := context.Background()
	meta := e.StreamMetadata()
	setLimits := func(name string, category bool, lim eslog.Limits) {
		t.Helper()
		if _, err := meta.Set(ctx, streammeta.Target{Name: name, Category: category}, streammeta.Expected{}, streammeta.Metadata{Limits: lim}); err != nil {
			t.Fatal(err)
		}
	}
	streams := []string{"count-1", "age-1", "trunc-1", "cat-1", "cat-2", "cat-3", "free-1", "old-1"}
	for _, name := range streams {
		for range 10 { // a second apart: revisions 0..9
			if _, err := e.Append(ctx, engine.AppendOp{Stream: name, Events: events("E")}); err != nil {
				t.Fatal(err)
			}
			tick(time.Second)
		}
	}
	// Snapshots of revisions the limits will hide, and of the head.
	for _, name := range []string{"count-1", "age-1"} {
		for _, rev := range []uint64{2, 9} {
			if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: name, Revision: rev, Type: "S", Data: []byte("s")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Commit times: stream k's revision r at 10k+r s from the start; now
	// is 80 s in. age-1 (k=1) keeps what is at most 15 s old, from 65 s:
	// none of its; old-1 (k=7) keeps 2 s, from 78 s: revisions 8 and 9.
	setLimits("count-1", false, eslog.Limits{MaxCount: 3})
	setLimits("age-1", false, eslog.Limits{MaxAge: 15 * time.Second})
	setLimits("trunc-1", false, eslog.Limits{TruncateBefore: 6})
	setLimits("cat", true, eslog.Limits{MaxCount: 4})
	setLimits("cat-3", false, eslog.Limits{MaxCount: 8})
	setLimits("old-1", false, eslog.Limits{MaxAge: 2 * time.Second})
	// first visible revision, as the limits say, for each stream
	want := map[string]uint64{"count-1": 7, "age-1": 10, "trunc-1": 6, "cat-1": 6, "cat-2": 6, "cat-3": 2, "free-1": 0, "old-1": 8}
	revisions := func(name string) []uint64 { t.Helper(); return streamRevisions(t, e, name) }
	span := func(from, to uint64) []uint64 {
		var out []uint64
		for r := from; r < to; r++ {
			out = append(out, r)
		}
		return out
	}
	var positions []uint64 // of the visible events, before
	if err := e.Log().ReadAll(ctx, eslog.AllQuery{}, func(ev *eslog.RecordedEvent) error {
		positions = append(positions, ev.Position)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range streams {
		if got := revisions(name); !slices.Equal(got, span(want[name], 10)) {
			t.Fatalf("%s before: %v, want from %d", name, got, want[name])
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := &revSink{}
	subErr := make(chan error, 1)
	go func() {
		subErr <- e.Subscribe(sctx, subscription.Request{Target: subscription.TargetStream, Name: "count-1"}, sub)
	}()

	// Removed: count-1 7, age-1 9 (its head stays), trunc-1 6, cat-1 and
	// cat-2 6 each, cat-3 2, old-1 8.
	if j := runScavenge(t, e); j.StreamsTruncated != 7 || j.EventsRemoved != 44 {
		t.Fatalf("scavenge: %+v; want 7 streams truncated, 44 events removed", j)
	}
	// Lift every limit: what was hidden is gone, for good.
	for _, name := range []string{"count-1", "age-1", "trunc-1", "cat-3", "old-1"} {
		setLimits(name, false, eslog.Limits{})
	}
	setLimits("cat", true, eslog.Limits{})
	want["age-1"] = 9 // the head, kept
	for _, name := range streams {
		if got := revisions(name); !slices.Equal(got, span(want[name], 10)) {
			t.Fatalf("%s after, limits lifted: %v, want from %d", name, got, want[name])
		}
		st, ok, err := e.Log().State(name)
		if err != nil || !ok || !st.Exists() || st.Head != 9 {
			t.Fatalf("%s: %+v, %v, %v; want existing at head 9", name, st, ok, err)
		}
	}
	var after []uint64
	if err := e.Log().ReadAll(ctx, eslog.AllQuery{}, func(ev *eslog.RecordedEvent) error {
		if ev.Stream != "$deleted" && ev.Stream != "age-1" {
			after = append(after, ev.Position)
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	var kept []uint64 // the visible positions before, but age-1's none
	for _, p := range positions {
		if ev, ok, err := e.Log().EventAt(p); err == nil && ok && ev.Stream != "$deleted" && ev.Stream != "age-1" {
			kept = append(kept, p)
		}
	}
	if !slices.Equal(after, kept) {
		t.Fatalf("visible positions after the scavenge %v, before %v", after, kept)
	}
	for _, name := range []string{"count-1", "age-1"} {
		infos, err := e.Snapshots().List(ctx, name)
		if err != nil || len(infos) != 1 || infos[0].Revision != 9 {
			t.Fatalf("%s snapshots: %+v, %v; want the one of revision 9", name, infos, err)
		}
	}
	// Appends: expected revisions are about the head, as before.
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "count-1", Expect: exact(9), Events: events("E")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sub.mu.Lock()
		revs, ended := slices.Clone(sub.revs), sub.ended
		sub.mu.Unlock()
		if ended != "" {
			t.Fatalf("the subscription to count-1 ended: %s", ended)
		}
		if slices.Equal(revs, []uint64{7, 8, 9, 10}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the subscription to count-1 delivered %v, want [7 8 9 10]", revs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-subErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("subscription: %v", err)
	}
	if j := runScavenge(t, e); j.StreamsTruncated != 0 || j.EventsRemoved != 0 {
		t.Fatalf("second scavenge: %+v; want nothing to do", j)
	}
}

// TestScavengeRacesLimitRaise: a limit raised while a scavenge makes the
// limits' cut durable either comes first, and the scavenge keeps what it
// shows, or comes after the truncate, and shows what is left: what a
// read finds once the raise has returned stays, however the two
// interleave. (A truncate decided under the old limit and written after
// the raise would take events the raise had shown.)
func TestScavengeRacesLimitRaise(t *testing.T) {
	e := open(t, engine.Config{Shards: 2})
	ctx := context.Background()
	meta := e.StreamMetadata()
	setCount := func(name string, n uint64) {
		t.Helper()
		if _, err := meta.Set(ctx, streammeta.Target{Name: name}, streammeta.Expected{}, streammeta.Metadata{Limits: eslog.Limits{MaxCount: n}}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) []uint64 { t.Helper(); return streamRevisions(t, e, name) }
	const streams = 40
	both := [2]int{} // streams that saw the truncate first, the raise first
	for round := range 3 {
		names := make([]string, streams)
		for k := range names {
			names[k] = fmt.Sprintf("race%d-%d", round, k)
			if _, err := e.Append(ctx, engine.AppendOp{Stream: names[k], Events: events("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")}); err != nil {
				t.Fatal(err)
			}
			setCount(names[k], 2)
		}
		if _, err := e.StartScavenge(1 << 30); err != nil {
			t.Fatal(err)
		}
		seen := make([][]uint64, streams)
		for k, name := range names {
			setCount(name, 8)
			seen[k] = read(name)
		}
		if err := e.WaitScavenge(ctx); err != nil {
			t.Fatal(err)
		}
		for k, name := range names {
			got := read(name)
			if !slices.Equal(got, seen[k]) {
				t.Fatalf("%s: %v once the raise returned, %v after the scavenge", name, seen[k], got)
			}
			switch len(got) {
			case 2:
				both[0]++
			case 8:
				both[1]++
			default:
				t.Fatalf("%s: revisions %v, want the last 2 or 8", name, got)
			}
		}
	}
	t.Logf("streams truncated first: %d, raised first: %d", both[0], both[1])
}

// TestScavengeForgetsOldRetries: with an idempotency window of an hour,
// a scavenge removes the ids of hidden events committed over an hour
// ago, and only those: a retry of their append is then a new append
// (written again on a soft-deleted stream, where its expectation holds;
// refused as a conflict where it does not), while a retry of a younger
// scavenged append is still answered as the original was.
func TestScavengeForgetsOldRetries(t *testing.T) {
	clock := newFakeClock()
	tick := clock.tick
	e := open(t, engine.Config{Shards: 2, IdempotencyWindow: time.Hour, Clock: clock.now})
	ctx := context.Background()
	mustAppend := func(op engine.AppendOp) engine.AppendResult {
		t.Helper()
		r, err := e.Append(ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	del := func(name string) {
		t.Helper()
		if _, err := e.Delete(ctx, engine.DeleteOp{Stream: name, Mode: eslog.DeleteSoft}); err != nil {
			t.Fatal(err)
		}
	}
	oldNew := engine.AppendOp{Stream: "old-1", Expect: eslog.Expectation{Kind: eslog.ExpectNoStream}, Events: events("A", "B", "C"), ClientIDs: 3}
	mustAppend(oldNew)
	del("old-1")
	mustAppend(engine.AppendOp{Stream: "old-2", Events: events("A", "B", "C")})
	oldExact := engine.AppendOp{Stream: "old-2", Expect: exact(2), Events: events("D"), ClientIDs: 1}
	mustAppend(oldExact)
	del("old-2")
	tick(2 * time.Hour)
	young := engine.AppendOp{Stream: "young-1", Events: events("A", "B"), ClientIDs: 2}
	orig := mustAppend(young)
	del("young-1")
	tick(time.Minute)

	if j := runScavenge(t, e); j.EventsRemoved != 9 || j.IDsRemoved != 7 {
		t.Fatalf("scavenge %+v; want 9 events and the 7 old ones' ids removed", j)
	}
	// Young: answered as the original append, nothing written.
	last := e.Log().LastPosition()
	again := mustAppend(young)
	if again.FirstPosition != orig.FirstPosition || again.LastRevision != orig.LastRevision || e.Log().LastPosition() != last {
		t.Fatalf("retry of the young append: %+v, the original %+v", again.AppendResult, orig.AppendResult)
	}
	// Old, no_stream on the soft-deleted stream: a new append.
	re := mustAppend(oldNew)
	if re.FirstRevision != 3 || re.FirstPosition <= last {
		t.Fatalf("retry of the old append: %+v; want it written again at revision 3", re.AppendResult)
	}
	if revs := streamRevisions(t, e, "old-1"); !slices.Equal(revs, []uint64{3, 4, 5}) {
		t.Fatalf("old-1 reads %v; want the events once, at 3..5", revs)
	}
	// Old, an exact revision that no longer holds: a conflict.
	var c *engine.ConflictError
	if _, err := e.Append(ctx, oldExact); !errors.As(err, &c) {
		t.Fatalf("retry of the old exact append: %v, want a conflict", err)
	}
}
