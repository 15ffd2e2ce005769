package writer

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
)

// fakeLog is an in-memory Store and Committer that models what eslog.Log
// does (internal/log/commit.go and read.go), for direct tests of the
// writer. What it models:
//
//   - stream states by name, new streams' ids from NewStreamID, and the
//     "$deleted" system stream (id 1) where each deletion is an event;
//   - the id index (IDLocation with AppendFirst/AppendLast), which
//     LookupIDs reads including writes applied but not yet durable;
//   - the id epoch: each commit that applies a write advances it, and a
//     write with CheckIDs is refused with *eslog.IDConflictError if one of
//     its ids was written by a commit after its LookupEpoch, or by an
//     earlier write of the same commit (the log's in-memory check; the
//     fake never forgets an epoch, so it never falls back to a full
//     lookup);
//   - applyEach (a refused write makes the later writes to its stream
//     eslog.ErrRetry) and applyAtomic (one refused write makes the others
//     eslog.ErrAborted, and nothing is applied);
//   - positions assigned in commit order, gap-free; commit times
//     max(Write.Time, the previous commit's time); Write.After,
//     FirstPosition, LastPosition and Created filled as the log fills
//     them;
//   - durability: a commit is durable once the test releases it (or at
//     once, unless holdSync), and it is published, its Durable done,
//     only when every earlier commit is durable too (the syncer's order);
//   - storage failure: a failed commit or sync fails every later one.
//
// Each Commit call is one commit of its own: the log may combine calls
// that meet at its commit lock into one batch (one epoch, one sync), which
// gives the same outcome as applying them one after the other.
//
// What the test controls: refusals of specific writes (refuse), commits
// made outside the writer (appendDirect, as another shard or node),
// hooks at the points where interleavings matter (after a lookup, after
// Pending, before a commit), durability (holdSync, release), failures
// (failNextCommit, releaseErr). It records every Commit call's writes
// (calls), the published positions in publishing order (pubOrder), and
// violations of what the log trusts the writer with (a write decided
// against a state that is not the stored one, an id stored twice, a
// deletion without its id); each test fails on a violation at cleanup.
type fakeLog struct {
	nextSID atomic.Uint64

	mu        sync.Mutex
	bell      chan struct{} // closed and replaced on every change
	streams   map[string]eslog.StreamState
	sys       eslog.StreamState
	ids       map[[16]byte]fakeID
	events    []fakeEvent // events[p-1] is at position p
	lastTime  int64
	epoch     uint64
	calls     []*fakeCommit // every Commit call, in order
	applied   []*fakeCommit // the calls that applied a write, in position order
	unpub     int           // applied[unpub:] are not published
	published uint64
	pubOrder  []uint64
	failed    error
	failNext  error
	holdSync  bool
	refusals  []refusal
	lookups   int

	beforeCommit func(writes []*eslog.Write) // called before a Commit takes the lock
	afterPending func()                      // called after Pending read, before it returns

	violations []string
}

type fakeID struct {
	loc   eslog.IDLocation
	epoch uint64 // the commit that wrote it
}

type fakeEvent struct {
	pos       uint64
	stream    string
	sid, rev  uint64
	id        [16]byte
	created   int64
	deletes   string // for an event of "$deleted": the stream it deletes
	tombstone bool
}

// fakeCommit is one Commit call.
type fakeCommit struct {
	atomic      bool
	writes      []eslog.Write // copies, as Commit left them (Err, positions)
	d           *fakeDurable  // nil: nothing applied
	first, last uint64        // positions of what it applied
	synced      bool
	syncErr     error
}

type fakeDurable struct {
	done chan struct{}
	err  error
}

func (d *fakeDurable) Done() <-chan struct{} { return d.done }
func (d *fakeDurable) Err() error            { return d.err }

type refusal struct {
	stream string
	err    error
}

var (
	_ Store     = (*fakeLog)(nil)
	_ Committer = (*fakeLog)(nil)
)

func newFakeLog(t *testing.T) *fakeLog {
	f := &fakeLog{
		bell:    make(chan struct{}),
		streams: make(map[string]eslog.StreamState),
		sys:     eslog.StreamState{ID: 1, Name: "$deleted"},
		ids:     make(map[[16]byte]fakeID),
	}
	f.nextSID.Store(16)
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, v := range f.violations {
			t.Errorf("fake log: %s", v)
		}
	})
	return f
}

func (f *fakeLog) ring() {
	close(f.bell)
	f.bell = make(chan struct{})
}

func (f *fakeLog) violate(format string, args ...any) {
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
}

// Store.

func (f *fakeLog) State(name string) (eslog.StreamState, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.streams[name]
	return st, ok, nil
}

func (f *fakeLog) LookupIDs(ids [][16]byte) ([]eslog.IDLocation, error) {
	f.mu.Lock()
	out := make([]eslog.IDLocation, len(ids))
	for i, id := range ids {
		if e, ok := f.ids[id]; ok {
			out[i] = e.loc
		}
	}
	f.lookups++
	f.mu.Unlock()
	return out, nil
}

func (f *fakeLog) IDEpoch() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch
}

func (f *fakeLog) NewStreamID() uint64 { return f.nextSID.Add(1) - 1 }

func (f *fakeLog) WaitPublished(ctx context.Context, pos uint64) error {
	for {
		f.mu.Lock()
		published, failed, bell := f.published, f.failed, f.bell
		f.mu.Unlock()
		switch {
		case published >= pos:
			return nil
		case failed != nil:
			return failed
		}
		select {
		case <-bell:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (f *fakeLog) CommitTime(pos uint64) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pos == 0 || pos > uint64(len(f.events)) {
		return 0, fmt.Errorf("%w: no event at position %d", eslog.ErrCorrupt, pos)
	}
	return f.events[pos-1].created, nil
}

// Committer.

func (f *fakeLog) Commit(writes []*eslog.Write, atomic bool) (Durable, error) {
	f.mu.Lock()
	hook := f.beforeCommit
	f.mu.Unlock()
	if hook != nil {
		hook(writes)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.commitLocked(writes, atomic)
	if c == nil || c.d == nil { // no typed nil in the interface
		return nil, err
	}
	return c.d, err
}

func (f *fakeLog) Pending() Durable {
	f.mu.Lock()
	var d Durable
	if n := len(f.applied); n > 0 {
		select {
		case <-f.applied[n-1].d.done:
		default:
			d = f.applied[n-1].d
		}
	}
	hook := f.afterPending
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return d
}

// commitLocked is the log's commitLocked for one Commit call.
func (f *fakeLog) commitLocked(writes []*eslog.Write, atomic bool) (*fakeCommit, error) {
	c := &fakeCommit{atomic: atomic}
	defer func() {
		for _, w := range writes {
			c.writes = append(c.writes, *w)
		}
		f.calls = append(f.calls, c)
		f.ring()
	}()
	if f.failed != nil {
		return c, f.failed
	}
	if err := f.failNext; err != nil {
		f.failNext = nil
		for _, w := range writes {
			w.Err = err
		}
		f.failed = fmt.Errorf("%w: %w", eslog.ErrStorageFailed, err)
		return c, f.failed
	}
	cs := &fakeCommitState{pos: uint64(len(f.events)) + 1, now: f.lastTime, epoch: f.epoch + 1, seen: make(map[[16]byte]bool)}
	c.first = cs.pos
	var n int
	if atomic {
		n = f.applyAtomic(cs, writes)
	} else {
		n = f.applyEach(cs, writes)
	}
	if n == 0 {
		return c, nil
	}
	c.last = cs.pos - 1
	f.lastTime, f.epoch = cs.now, cs.epoch
	c.d = &fakeDurable{done: make(chan struct{})}
	f.applied = append(f.applied, c)
	c.synced = !f.holdSync
	f.advance()
	return c, nil
}

type fakeCommitState struct {
	pos   uint64
	now   int64
	epoch uint64
	seen  map[[16]byte]bool // client ids written by this commit
}

func (f *fakeLog) applyEach(cs *fakeCommitState, writes []*eslog.Write) int {
	var failed []uint64
	n := 0
	for _, w := range writes {
		w.Err = nil
		if slices.Contains(failed, w.State.ID) {
			w.Err = eslog.ErrRetry
			continue
		}
		if w.CheckIDs {
			if err := f.checkIDs(cs, w); err != nil {
				w.Err = err
				failed = append(failed, w.State.ID)
				continue
			}
		}
		f.apply(cs, w)
		n++
	}
	return n
}

func (f *fakeLog) applyAtomic(cs *fakeCommitState, writes []*eslog.Write) int {
	for _, w := range writes {
		w.Err = nil
		if !w.CheckIDs {
			continue
		}
		if err := f.checkIDs(cs, w); err != nil {
			w.Err = err
			for _, other := range writes {
				if other.Err == nil {
					other.Err = eslog.ErrAborted
				}
			}
			return 0
		}
	}
	for _, w := range writes {
		f.apply(cs, w)
	}
	return len(writes)
}

// checkIDs is the log's checkIDs, plus the refusals the test injected:
// the log refuses only writes with CheckIDs.
func (f *fakeLog) checkIDs(cs *fakeCommitState, w *eslog.Write) error {
	for i, r := range f.refusals {
		if r.stream == w.State.Name {
			f.refusals = slices.Delete(f.refusals, i, i+1)
			return r.err
		}
	}
	for i := range w.Events {
		id := w.Events[i].ID
		if cs.seen[id] {
			return &eslog.IDConflictError{Stream: w.State.Name, ID: id}
		}
		if e, ok := f.ids[id]; ok && e.epoch > w.LookupEpoch {
			return &eslog.IDConflictError{Stream: w.State.Name, ID: id}
		}
	}
	for i := range w.Events {
		cs.seen[w.Events[i].ID] = true
	}
	return nil
}

// apply is the log's fakeCommitState.apply.
func (f *fakeLog) apply(cs *fakeCommitState, w *eslog.Write) {
	s := w.State
	cur, stored := f.streams[s.Name]
	switch {
	case w.New && stored:
		f.violate("write to %q is New, but the stream is stored (id %d)", s.Name, cur.ID)
	case w.New && s.ID < 16:
		f.violate("new stream %q has id %d, not one from NewStreamID", s.Name, s.ID)
	case !w.New && !stored:
		f.violate("write to %q (id %d) is not New, but the stream was never stored", s.Name, s.ID)
	case !w.New && !sameDecisionState(cur, s):
		f.violate("write to %q decided against %+v; stored: %+v", s.Name, s, cur)
	}
	if stored && cur.Tombstoned {
		f.violate("write to tombstoned stream %q", s.Name)
	}
	t := w.Time
	if t == 0 {
		t = time.Now().UnixNano()
	}
	cs.now = max(cs.now, t)
	w.FirstPosition = cs.pos
	w.Created = cs.now
	if n := uint64(len(w.Events)); n > 0 {
		rev := s.NextRevision()
		first, last := rev, rev+n-1
		for i := range w.Events {
			id := w.Events[i].ID
			if e, dup := f.ids[id]; dup {
				f.violate("event id %s stored twice: at %d and %d", eslog.FormatID(id), e.loc.Position, cs.pos)
			}
			f.ids[id] = fakeID{epoch: cs.epoch, loc: eslog.IDLocation{Found: true, StreamID: s.ID, Revision: rev,
				Position: cs.pos, AppendFirst: first, AppendLast: last}}
			f.events = append(f.events, fakeEvent{pos: cs.pos, stream: s.Name, sid: s.ID, rev: rev, id: id, created: cs.now})
			rev++
			cs.pos++
		}
		if !s.Written || s.Created == 0 {
			s.Created = cs.now
		}
		s.Written = true
		s.Head = rev - 1
		s.LastPosition = cs.pos - 1
	}
	switch w.Delete {
	case eslog.DeleteNone:
	case eslog.DeleteTruncate:
		if !s.Exists() || w.TruncateTo > s.Head || w.TruncateTo <= s.TruncateBefore {
			f.violate("truncate of %q to %d at head %d, truncate-before %d, exists %v", s.Name, w.TruncateTo, s.Head, s.TruncateBefore, s.Exists())
		}
		s.TruncateBefore = max(s.TruncateBefore, min(w.TruncateTo, s.Head)) // as the log
		w.FirstPosition = 0
	default:
		f.delete(cs, &s, w)
	}
	s.Updated = cs.now
	f.streams[s.Name] = s
	w.After = s
	w.LastPosition = s.LastPosition
}

// sameDecisionState reports whether a write's State agrees with the
// stored state in what decisions rest on (a prediction has no times).
func sameDecisionState(stored, decided eslog.StreamState) bool {
	return stored.ID == decided.ID && stored.Written == decided.Written && stored.Head == decided.Head &&
		stored.TruncateBefore == decided.TruncateBefore && stored.Tombstoned == decided.Tombstoned
}

func (f *fakeLog) delete(cs *fakeCommitState, s *eslog.StreamState, w *eslog.Write) {
	mode, id := w.Delete, w.DeletionID
	if id == ([16]byte{}) {
		f.violate("deletion of %q without a DeletionID (invariant 5)", s.Name)
		id = eslog.NewEventID()
	}
	if mode == eslog.DeleteTombstone {
		s.Tombstoned = true
		s.TruncateBefore = s.NextRevision()
	} else {
		s.TruncateBefore = s.Head + 1
	}
	rev := f.sys.NextRevision()
	if e, dup := f.ids[id]; dup {
		f.violate("deletion id %s stored twice: at %d and %d", eslog.FormatID(id), e.loc.Position, cs.pos)
	}
	f.ids[id] = fakeID{epoch: cs.epoch, loc: eslog.IDLocation{Found: true, StreamID: 1, Revision: rev, Position: cs.pos,
		AppendFirst: rev, AppendLast: rev}}
	f.events = append(f.events, fakeEvent{pos: cs.pos, stream: f.sys.Name, sid: 1, rev: rev, id: id, created: cs.now,
		deletes: s.Name, tombstone: mode == eslog.DeleteTombstone})
	if !f.sys.Written {
		f.sys.Created = cs.now
	}
	f.sys.Written, f.sys.Head, f.sys.LastPosition, f.sys.Updated = true, rev, cs.pos, cs.now
	s.LastPosition = cs.pos
	cs.pos++
}

// advance publishes the durable commits at the head of the unpublished
// ones, in position order, as the log's syncer does: a commit durable
// before an earlier one waits for it.
func (f *fakeLog) advance() {
	for ; f.unpub < len(f.applied); f.unpub++ {
		c := f.applied[f.unpub]
		if !c.synced {
			break
		}
		if c.syncErr != nil && f.failed == nil {
			f.failed = fmt.Errorf("%w: %w", eslog.ErrStorageFailed, c.syncErr)
		}
		if f.failed != nil {
			c.d.err = f.failed
		} else {
			f.published = c.last
			f.pubOrder = append(f.pubOrder, c.last)
		}
		close(c.d.done)
	}
	f.ring()
}

// Test controls.

// hold makes commits wait for release to be durable (on) or makes every
// commit durable at once (off, the default; turning it off releases
// every held commit).
func (f *fakeLog) hold(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holdSync = on
	if !on {
		for _, c := range f.applied {
			c.synced = true
		}
		f.advance()
	}
}

// release makes the k-th applied commit (1-based) durable; it is
// published when the earlier ones are.
func (f *fakeLog) release(k int) { f.releaseErr(k, nil) }

// releaseErr makes the k-th applied commit's sync fail with err (nil:
// succeed).
func (f *fakeLog) releaseErr(k int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.applied[k-1]
	c.synced, c.syncErr = true, err
	f.advance()
}

// refuse makes the log refuse the next write to stream that it checks
// (one with CheckIDs) with err, as it refuses one whose ids it cannot
// accept or cannot look up.
func (f *fakeLog) refuse(stream string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refusals = append(f.refusals, refusal{stream: stream, err: err})
}

// failNextCommit makes the next Commit fail as a storage failure (nothing
// applied, every later Commit failing too).
func (f *fakeLog) failNextCommit(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

func (f *fakeLog) setBeforeCommit(h func([]*eslog.Write)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beforeCommit = h
}

func (f *fakeLog) setAfterPending(h func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.afterPending = h
}

// appendDirect commits an append of events with ids to stream outside
// the writer, as another shard or node would; it returns the write. It
// may run on any goroutine (from a hook, say).
func (f *fakeLog) appendDirect(stream string, ids ...[16]byte) (eslog.Write, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.streams[stream]
	w := &eslog.Write{State: st, Events: events(ids...), CheckIDs: true, LookupEpoch: f.epoch, Time: f.lastTime}
	if !ok {
		w.State = eslog.StreamState{ID: f.NewStreamID(), Name: stream}
		w.New = true
	}
	_, err := f.commitLocked([]*eslog.Write{w}, false)
	if err == nil {
		err = w.Err
	}
	return *w, err
}

// Inspection.

func (f *fakeLog) Published() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.published
}

func (f *fakeLog) publishOrder() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pubOrder)
}

// commitCalls returns the Commit calls so far.
func (f *fakeLog) commitCalls() []*fakeCommit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeLog) appliedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

func (f *fakeLog) stored() []fakeEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

func (f *fakeLog) idLocation(id [16]byte) (eslog.IDLocation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.ids[id]
	return e.loc, ok
}

// waitFor blocks until cond (called with f.mu held) holds.
func (f *fakeLog) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		ok, bell := cond(), f.bell
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-bell:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitApplied blocks until n commits have applied writes.
func (f *fakeLog) waitApplied(t *testing.T, n int) {
	t.Helper()
	f.waitFor(t, fmt.Sprintf("%d applied commits", n), func() bool { return len(f.applied) >= n })
}

// Helpers shared by the writer's tests.

// eventually spins (yielding, not sleeping) until cond holds: for
// conditions of the writer that nothing signals, such as a queue depth.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestWriter starts a writer on f; at cleanup it makes every held
// commit durable and closes the writer.
func newTestWriter(t *testing.T, f *fakeLog, cfg Config) *Writer {
	w := New(f, f, cfg)
	t.Cleanup(func() {
		f.hold(false)
		w.Close()
	})
	return w
}

// id makes a client event id from n.
func id(n int) [16]byte {
	var b [16]byte
	copy(b[:], fmt.Sprintf("id-%013d", n))
	return b
}

func events(ids ...[16]byte) []eslog.Event {
	out := make([]eslog.Event, len(ids))
	for i, x := range ids {
		out[i] = eslog.Event{ID: x, Type: "Tested", Data: []byte(fmt.Sprintf("event %d", i))}
	}
	return out
}

var (
	xAny      = eslog.Expectation{Kind: eslog.ExpectAny}
	xNoStream = eslog.Expectation{Kind: eslog.ExpectNoStream}
	xExists   = eslog.Expectation{Kind: eslog.ExpectExists}
)

func xExact(rev uint64) eslog.Expectation {
	return eslog.Expectation{Kind: eslog.ExpectExact, Revision: rev}
}

// appendOf is an append of events with client ids.
func appendOf(stream string, expect eslog.Expectation, ids ...[16]byte) AppendOp {
	return AppendOp{Stream: stream, Expect: expect, Events: events(ids...), ClientIDs: len(ids)}
}

// streamsOnShards returns one stream name per shard, names[i] on shard i.
func streamsOnShards(t *testing.T, w *Writer, prefix string) []string {
	t.Helper()
	names := make([]string, w.Shards())
	found := 0
	for i := 0; found < len(names); i++ {
		if i > 100000 {
			t.Fatal("no stream name found for some shard")
		}
		name := fmt.Sprintf("%s%d", prefix, i)
		if s := w.ShardOf(name); names[s] == "" {
			names[s] = name
			found++
		}
	}
	return names
}

// outcome is one request's answer.
type outcome struct {
	res AppendResult
	err error
	pub uint64 // the published position when the answer came
}

// appendRound queues ops at their shard (all one shard) while it is held,
// in order, then lets it go: the shard decides them in one round. before,
// if not nil, runs just before the shard is let go.
func appendRound(t *testing.T, w *Writer, f *fakeLog, before func(), ops ...AppendOp) []outcome {
	t.Helper()
	ctx := testCtx(t)
	shard := w.ShardOf(ops[0].Stream)
	release, err := w.Hold(shard)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]outcome, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		if w.ShardOf(op.Stream) != shard {
			t.Fatalf("op %d: stream %s is not on shard %d", i, op.Stream, shard)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].res, out[i].err = w.Append(ctx, op)
			out[i].pub = f.Published()
		}()
		eventually(t, fmt.Sprintf("op %d queued", i), func() bool { return w.QueueDepth(shard) == i+1 })
	}
	if before != nil {
		before()
	}
	release()
	wg.Wait()
	return out
}

// mustAppend appends and fails the test on error.
func mustAppend(t *testing.T, w *Writer, op AppendOp) AppendResult {
	t.Helper()
	r, err := w.Append(testCtx(t), op)
	if err != nil {
		t.Fatalf("append to %s: %v", op.Stream, err)
	}
	return r
}

// checkStored checks that r, an append's answer, is what f stored: the
// op's events, in order, at r's positions and revisions.
func checkStored(t *testing.T, f *fakeLog, op AppendOp, r AppendResult) {
	t.Helper()
	evs := f.stored()
	if r.LastPosition-r.FirstPosition+1 != uint64(len(op.Events)) || r.LastRevision-r.FirstRevision+1 != uint64(len(op.Events)) {
		t.Fatalf("append to %s: result %+v for %d events", op.Stream, r, len(op.Events))
	}
	for i := range op.Events {
		p := r.FirstPosition + uint64(i)
		if p == 0 || p > uint64(len(evs)) {
			t.Fatalf("append to %s: position %d not stored (last %d)", op.Stream, p, len(evs))
		}
		e := evs[p-1]
		if e.stream != op.Stream || e.rev != r.FirstRevision+uint64(i) || e.id != op.Events[i].ID {
			t.Fatalf("append to %s: position %d holds %s@%d id %s, want %s@%d id %s", op.Stream, p, e.stream, e.rev,
				eslog.FormatID(e.id), op.Stream, r.FirstRevision+uint64(i), eslog.FormatID(op.Events[i].ID))
		}
	}
}
