package subscription

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	"github.com/google/uuid"
	"go.uber.org/goleak"
)

// This file holds the harness of the hub's tests: a real log on
// t.TempDir(), writes straight into it (as the server's writer makes
// them), a Sink that records what it gets and can be made to block, and
// the checks of what a subscriber received.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait of a test, so that a deadlock fails the
// test instead of hanging it.
const waitTimeout = 30 * time.Second

// openLog opens a log on a fresh directory and closes it at the end of
// the test (after the subscriptions the test started have ended: their
// cleanups are registered later, so they run first).
func openLog(t *testing.T) *eslog.Log {
	t.Helper()
	l, err := eslog.Open(t.TempDir(), eslog.Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close log: %v", err)
		}
	})
	return l
}

// newHub makes a hub over l and installs it as l's publish hook, as the
// server does; after, when not nil, runs after each Publish.
func newHub(l *eslog.Log, opts Options, after func(h *Hub)) *Hub {
	h := NewHub(l, opts)
	l.OnPublish(func(evs []eslog.Committed) {
		h.Publish(evs)
		if after != nil {
			after(h)
		}
	})
	return h
}

// --- writing ---

// newEvents makes n events typed typ with fresh ids.
func newEvents(n int, typ string) []eslog.Event {
	evs := make([]eslog.Event, n)
	for i := range evs {
		evs[i] = eslog.Event{ID: uuid.New(), Type: typ, Data: fmt.Appendf(nil, `{"n":%d}`, i)}
	}
	return evs
}

// newWrite prepares a write of evs (or a deletion) to stream as the
// stream's writer would: the caller owns the stream (no other goroutine
// writes it concurrently).
func newWrite(l *eslog.Log, stream string, evs []eslog.Event, del eslog.DeleteMode) (*eslog.Write, error) {
	s, ok, err := l.State(stream)
	if err != nil {
		return nil, err
	}
	w := &eslog.Write{State: s, Events: evs, Delete: del, CheckIDs: true, LookupEpoch: l.IDEpoch()}
	if !ok {
		w.State = eslog.StreamState{ID: l.NewStreamID(), Name: stream}
		w.New = true
	}
	return w, nil
}

// commitWrites commits ws (atomically or not) and waits until they are
// published.
func commitWrites(l *eslog.Log, atomic bool, ws ...*eslog.Write) error {
	tk, err := l.Commit(ws, atomic)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.Err != nil {
			return fmt.Errorf("write to %s: %w", w.State.Name, w.Err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return tk.Wait(ctx)
}

// write appends n events typed typ to stream and returns the write.
func write(t *testing.T, l *eslog.Log, stream string, n int, typ string) *eslog.Write {
	t.Helper()
	w, err := newWrite(l, stream, newEvents(n, typ), eslog.DeleteNone)
	if err == nil {
		err = commitWrites(l, false, w)
	}
	if err != nil {
		t.Fatalf("append %d to %s: %v", n, stream, err)
	}
	return w
}

// writeMany appends perCommit events to each of streams in turn, commits
// times over.
func writeMany(t *testing.T, l *eslog.Log, commits, perCommit int, typ string, streams ...string) {
	t.Helper()
	for i := range commits {
		write(t, l, streams[i%len(streams)], perCommit, typ)
	}
}

// deleteStream soft-deletes or tombstones stream; it returns the position
// of the deletion.
func deleteStream(t *testing.T, l *eslog.Log, stream string, mode eslog.DeleteMode) uint64 {
	t.Helper()
	w, err := newWrite(l, stream, nil, mode)
	if err == nil {
		err = commitWrites(l, false, w)
	}
	if err != nil {
		t.Fatalf("delete %s: %v", stream, err)
	}
	return w.LastPosition
}

// readAll reads the visible events of $all that q selects.
func readAll(t *testing.T, l *eslog.Log, q eslog.AllQuery) []*eslog.RecordedEvent {
	t.Helper()
	var out []*eslog.RecordedEvent
	err := l.ReadAll(context.Background(), q, func(e *eslog.RecordedEvent) error { out = append(out, e); return nil }, nil)
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	return out
}

// --- the sink ---

// item is one thing a subscription delivered.
type item struct {
	kind   byte   // 'e' event, 'k' checkpoint, 'c' caught up, 'x' ended
	pos    uint64 // the event's position, the checkpoint's, or caught up's
	rev    uint64
	stream string
	typ    string
	id     [16]byte
	reason string // ended
}

func (it item) String() string {
	switch it.kind {
	case 'e':
		return fmt.Sprintf("event{%d %s@%d %s}", it.pos, it.stream, it.rev, it.typ)
	case 'k':
		return fmt.Sprintf("checkpoint{%d}", it.pos)
	case 'c':
		return fmt.Sprintf("caught_up{%d}", it.pos)
	default:
		return fmt.Sprintf("ended{%s}", it.reason)
	}
}

func eventItem(e *eslog.RecordedEvent) item {
	return item{kind: 'e', pos: e.Position, rev: e.Revision, stream: e.Stream, typ: e.Type, id: e.ID}
}

// testSink records what a subscription delivers. Arm makes Event (or
// CaughtUp) block until Release, to play a subscriber that reads slowly.
type testSink struct {
	mu         sync.Mutex // guards everything below
	items      []item
	gate       chan struct{} // Event blocks while it is open
	gateCaught chan struct{} // CaughtUp blocks while it is open
	blocked    int           // calls waiting at a gate
	// stall, when set, is called before each event is recorded (from the
	// subscription's goroutine), to slow the subscriber down.
	stall func()
}

var _ Sink = (*testSink)(nil)

func (s *testSink) wait(gate chan struct{}) {
	if gate == nil {
		return
	}
	s.mu.Lock()
	s.blocked++
	s.mu.Unlock()
	<-gate
	s.mu.Lock()
	s.blocked--
	s.mu.Unlock()
}

func (s *testSink) Event(v *eslog.EventView) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	s.wait(g)
	if s.stall != nil {
		s.stall()
	}
	it := item{kind: 'e', pos: v.Position, rev: v.Revision(), stream: v.Stream, typ: string(v.Type()), id: v.ID()}
	s.mu.Lock()
	s.items = append(s.items, it)
	s.mu.Unlock()
	return nil
}

func (s *testSink) Flush(checkpoint uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if checkpoint != 0 {
		s.items = append(s.items, item{kind: 'k', pos: checkpoint})
	}
	return nil
}

func (s *testSink) CaughtUp(position uint64) error {
	s.mu.Lock()
	g := s.gateCaught
	s.items = append(s.items, item{kind: 'c', pos: position})
	s.mu.Unlock()
	s.wait(g)
	return nil
}

func (s *testSink) Ended(reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, item{kind: 'x', reason: reason})
	return nil
}

// arm makes the next Event calls block until release.
func (s *testSink) arm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
	}
}

func (s *testSink) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
	if s.gateCaught != nil {
		close(s.gateCaught)
		s.gateCaught = nil
	}
}

func (s *testSink) blockedNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blocked
}

func (s *testSink) snapshot() []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]item(nil), s.items...)
}

// lastEventPos is the position of the last event received (0: none).
func (s *testSink) lastEventPos() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.items) - 1; i >= 0; i-- {
		if s.items[i].kind == 'e' {
			return s.items[i].pos
		}
	}
	return 0
}

func (s *testSink) has(kind byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.items {
		if it.kind == kind {
			return true
		}
	}
	return false
}

// --- running subscriptions ---

// runningSub is a Hub.Subscribe running in its own goroutine.
type runningSub struct {
	sink   *testSink
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Subscribe's result, once done is closed
}

// startSub runs h.Subscribe(req) until the test ends (or stop).
func startSub(t *testing.T, h *Hub, req Request, sink *testSink) *runningSub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningSub{sink: sink, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = h.Subscribe(ctx, req, sink)
	}()
	t.Cleanup(func() {
		sink.release()
		if err := r.stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("subscription %+v: %v", req, err)
		}
	})
	return r
}

// stop cancels the subscription and returns Subscribe's result.
func (r *runningSub) stop() error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(waitTimeout):
		return errors.New("Subscribe did not return after its ctx ended")
	}
}

// ended reports whether Subscribe has returned.
func (r *runningSub) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitUntil polls cond until it holds, failing the test after
// waitTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, waitTimeout, what, cond)
}

// --- checks ---

// target says which events a subscription follows.
type target struct {
	req Request
	// floor, for a start from the end, is the last position before
	// Subscribe was called: events before caught_up (committed while the
	// subscription started) must come after it.
	floor uint64
}

func (tg target) matches(stream, typ string) bool {
	switch tg.req.Target {
	case TargetStream:
		return stream == tg.req.Name
	case TargetCategory:
		return eslog.Category(stream) == tg.req.Name
	default:
		return hasAnyPrefix(stream, tg.req.StreamPrefixes) && hasAnyPrefix(typ, tg.req.TypePrefixes)
	}
}

// checkDelivery checks what a subscription received (got) against the
// log: final is every visible event after the writers stopped, hidden
// holds the events written but deleted by then (which a subscriber may
// or may not have received, depending on whether it looked at them
// before their deletion). It checks: exactly one caught_up; history at
// or before its position, live events after it; nothing of another
// target; positions strictly increasing; every visible event of the
// target after the start exactly once, equal to the log's; for a stream,
// contiguous revisions; checkpoints non-decreasing and never ahead of a
// later event. It returns a description of the first problem, or "".
func checkDelivery(tg target, got []item, final []*eslog.RecordedEvent, hidden map[uint64]item) string {
	var (
		caughtUp   = -1
		cuPos      uint64
		lastPos    uint64 // the last event's, or checkpoint's
		lastEvent  uint64
		lastRev    = int64(-1)
		gotEvents  []item
		checkpoint uint64
	)
	if tg.req.Target == TargetStream && tg.req.Start == AfterRevision {
		lastRev = int64(tg.req.After)
	}
	for i, it := range got {
		switch it.kind {
		case 'c':
			if caughtUp >= 0 {
				return fmt.Sprintf("item %d: a second caught_up (%v), the first at item %d", i, it, caughtUp)
			}
			caughtUp, cuPos = i, it.pos
			if cuPos < lastPos {
				return fmt.Sprintf("item %d: caught_up{%d} behind position %d already delivered", i, cuPos, lastPos)
			}
			if tg.req.Start == FromEnd && len(gotEvents) > 0 && gotEvents[0].pos <= tg.floor {
				return fmt.Sprintf("from end: history events before caught_up from %v, at or before position %d when it was called", gotEvents[0], tg.floor)
			}
		case 'k':
			if it.pos < checkpoint || it.pos < lastEvent {
				return fmt.Sprintf("item %d: checkpoint{%d} after checkpoint %d / event %d", i, it.pos, checkpoint, lastEvent)
			}
			checkpoint = it.pos
			lastPos = max(lastPos, it.pos)
		case 'x':
			return fmt.Sprintf("item %d: unexpected %v", i, it)
		case 'e':
			if it.pos <= lastPos {
				return fmt.Sprintf("item %d: %v at or before position %d (a duplicate or out of order)", i, it, lastPos)
			}
			if caughtUp >= 0 && it.pos <= cuPos {
				return fmt.Sprintf("item %d: live %v at or before caught_up{%d}", i, it, cuPos)
			}
			if !tg.matches(it.stream, it.typ) {
				return fmt.Sprintf("item %d: %v is not of the target", i, it)
			}
			if tg.req.Target == TargetStream {
				if int64(it.rev) <= lastRev {
					return fmt.Sprintf("item %d: %v: revision not after %d", i, it, lastRev)
				}
				lastRev = int64(it.rev)
			}
			lastPos, lastEvent = it.pos, it.pos
			gotEvents = append(gotEvents, it)
		}
	}
	if caughtUp < 0 {
		return "no caught_up"
	}
	for _, it := range got[:caughtUp] {
		if it.kind == 'e' && it.pos > cuPos {
			return fmt.Sprintf("history %v after caught_up{%d}", it, cuPos)
		}
	}
	// The start: after what position (and revision) must events come.
	var after uint64
	switch tg.req.Start {
	case FromEnd:
		// live events after caught_up; history, if any, from the first
		after = cuPos
		if len(gotEvents) > 0 && gotEvents[0].pos <= cuPos {
			after = gotEvents[0].pos - 1
		}
	case AfterPosition:
		after = tg.req.After
	}
	var want []item
	for _, e := range final {
		if e.Position <= after || !tg.matches(e.Stream, e.Type) {
			continue
		}
		if tg.req.Target == TargetStream && tg.req.Start == AfterRevision && e.Revision <= tg.req.After {
			continue
		}
		want = append(want, eventItem(e))
	}
	i := 0
	for _, g := range gotEvents {
		if i < len(want) && want[i].pos < g.pos {
			return fmt.Sprintf("missing %v (next received: %v)", want[i], g)
		}
		if i < len(want) && want[i].pos == g.pos {
			if want[i] != g {
				return fmt.Sprintf("received %v, the log has %v", g, want[i])
			}
			i++
			continue
		}
		h, ok := hidden[g.pos]
		switch {
		case !ok:
			return fmt.Sprintf("received %v, which the log does not have", g)
		case h != g:
			return fmt.Sprintf("received %v, the log had %v (deleted since)", g, h)
		case g.pos <= after:
			return fmt.Sprintf("received %v, before the start %d", g, after)
		}
	}
	if i < len(want) {
		return fmt.Sprintf("missing %d events from %v on", len(want)-i, want[i])
	}
	if tg.req.Target == TargetStream {
		// contiguous revisions (the streams followed are never deleted)
		next := uint64(0)
		switch {
		case tg.req.Start == AfterRevision:
			next = tg.req.After + 1
		case tg.req.Start == FromEnd && len(gotEvents) > 0:
			next = gotEvents[0].rev
		}
		for _, g := range gotEvents {
			if g.rev != next {
				return fmt.Sprintf("revision %d, want %d (%v)", g.rev, next, g)
			}
			next++
		}
	}
	return ""
}

// describe is a short form of a delivery for failure messages.
func describe(got []item) string {
	var b strings.Builder
	for i, it := range got {
		if i == 40 {
			fmt.Fprintf(&b, " ... (%d in all)", len(got))
			break
		}
		b.WriteString(it.String())
		b.WriteByte(' ')
	}
	return b.String()
}

// hasAnyPrefix is the test's own statement of the filter rule (an empty
// list matches everything), apart from the code under test.
func hasAnyPrefix(s string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
