package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Tests of StreamService.Subscribe over gRPC: exactly once across the
// catch-up -> live switch under concurrent writes (randomized), deletion,
// checkpoints of filtered subscriptions, clean ends (client cancel,
// connection closed, server shutdown), validation; and the benchmarks of
// catch-up throughput, live latency and the writer's cost of subscribers.
// The hub's own tests (small buffers, fallbacks, idle subscribers) are in
// internal/subscription.

// --- building requests ---

type subFrom func(*esdv1.SubscribeRequest)

var (
	subFromStart subFrom = func(r *esdv1.SubscribeRequest) {
		r.From = &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}}
	}
	subFromEnd subFrom = func(r *esdv1.SubscribeRequest) { r.From = &esdv1.SubscribeRequest_End{End: &emptypb.Empty{}} }
)

func subAfterRevision(rev uint64) subFrom {
	return func(r *esdv1.SubscribeRequest) {
		r.From = &esdv1.SubscribeRequest_AfterRevision{AfterRevision: rev}
	}
}

func subAfterPosition(pos uint64) subFrom {
	return func(r *esdv1.SubscribeRequest) {
		r.From = &esdv1.SubscribeRequest_AfterPosition{AfterPosition: pos}
	}
}

func subStream(name string, from ...subFrom) *esdv1.SubscribeRequest {
	return subWith(&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Stream{Stream: name}}, from)
}

func subCategory(c string, from ...subFrom) *esdv1.SubscribeRequest {
	return subWith(&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: c}}, from)
}

func subAll(f *esdv1.Filter, from ...subFrom) *esdv1.SubscribeRequest {
	return subWith(&esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}}, Filter: f}, from)
}

func subWith(r *esdv1.SubscribeRequest, from []subFrom) *esdv1.SubscribeRequest {
	for _, f := range from {
		f(r)
	}
	return r
}

// --- a running subscription, read by its own goroutine ---

// subClient is a Subscribe call whose messages a goroutine reads into
// msgs until the stream ends (err) or the test cancels it.
type subClient struct {
	req    *esdv1.SubscribeRequest
	cancel context.CancelFunc
	done   chan struct{} // closed when the stream has ended
	mu     sync.Mutex    // guards msgs and err
	msgs   []*esdv1.SubscribeResponse
	err    error // io.EOF for a stream that ended OK
}

// subscribe starts req on client; the subscription ends with the test.
func subscribe(t *testing.T, client esdv1.StreamServiceClient, req *esdv1.SubscribeRequest) *subClient {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	s := &subClient{req: req, cancel: cancel, done: make(chan struct{})}
	stream, err := client.Subscribe(ctx, req)
	if err != nil {
		cancel()
		t.Fatalf("subscribe %v: %v", req, err)
	}
	go s.read(stream)
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

func (s *subClient) read(stream grpc.ServerStreamingClient[esdv1.SubscribeResponse]) {
	defer close(s.done)
	for {
		m, err := stream.Recv()
		s.mu.Lock()
		if err != nil {
			s.err = err
			s.mu.Unlock()
			return
		}
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	}
}

func (s *subClient) snapshot() ([]*esdv1.SubscribeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*esdv1.SubscribeResponse(nil), s.msgs...), s.err
}

// events returns the events received so far.
func (s *subClient) events() []*esdv1.RecordedEvent {
	msgs, _ := s.snapshot()
	var out []*esdv1.RecordedEvent
	for _, m := range msgs {
		out = append(out, m.GetEvents().GetEvents()...)
	}
	return out
}

func (s *subClient) lastEventPos() uint64 {
	evs := s.events()
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].GetPosition()
}

func (s *subClient) caughtUp() (uint64, bool) {
	msgs, _ := s.snapshot()
	for _, m := range msgs {
		if cu := m.GetCaughtUp(); cu != nil {
			return cu.GetPosition(), true
		}
	}
	return 0, false
}

func (s *subClient) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// waitEnd waits for the stream to end and returns its error (io.EOF: OK).
func (s *subClient) waitEnd(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(rpcTimeout):
		t.Fatalf("subscription %v did not end", s.req)
	}
	_, err := s.snapshot()
	return err
}

// describeSub is a short form of what a subscription received.
func describeSub(msgs []*esdv1.SubscribeResponse) string {
	var b strings.Builder
	n := 0
	for _, m := range msgs {
		if n > 40 {
			fmt.Fprintf(&b, "... (%d messages)", len(msgs))
			break
		}
		switch {
		case m.GetEvents() != nil:
			for _, e := range m.GetEvents().GetEvents() {
				fmt.Fprintf(&b, "%d:%s@%d ", e.GetPosition(), e.GetStream(), e.GetRevision())
				n++
			}
		case m.GetCaughtUp() != nil:
			fmt.Fprintf(&b, "caught_up{%d} ", m.GetCaughtUp().GetPosition())
		case m.GetCheckpoint() != nil:
			fmt.Fprintf(&b, "checkpoint{%d} ", m.GetCheckpoint().GetPosition())
		case m.GetEnded() != nil:
			fmt.Fprintf(&b, "ended{%s} ", m.GetEnded().GetReason())
		}
		n++
	}
	return b.String()
}

// subscriptionsOpen is the server's count of open subscriptions.
func subscriptionsOpen(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	var sum float64
	for _, state := range []string{"catching_up", "live"} {
		for _, target := range []string{"stream", "category", "all"} {
			sum += testutil.MetricValue(t, g, "esd_subscriptions", map[string]string{"state": state, "target": target})
		}
	}
	return sum
}

// --- checking a delivery against the log ---

// subTarget says which events a subscription follows and from where.
type subTarget struct {
	req *esdv1.SubscribeRequest
	// floor: the last position before Subscribe was called; a start from
	// the end delivers nothing at or before it.
	floor uint64
}

func (tg subTarget) matches(stream, typ string) bool {
	switch t := tg.req.GetTarget().(type) {
	case *esdv1.SubscribeRequest_Stream:
		return stream == t.Stream
	case *esdv1.SubscribeRequest_Category:
		return eslog.Category(stream) == t.Category
	default:
		f := tg.req.GetFilter()
		return subHasPrefix(stream, f.GetStreamPrefixes()) && subHasPrefix(typ, f.GetEventTypePrefixes())
	}
}

func subHasPrefix(s string, prefixes []string) bool {
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

// subTruth is an event as its writer knew it: enough to check an event
// that was deleted before the check (readable no more).
type subTruth struct {
	id, stream, typ string
	rev             uint64
}

// checkSubscription checks one subscription's messages against the log:
// final is every visible event of $all after the writers stopped; hidden
// the events written and deleted since (a subscriber may have received
// them, if it got to them before their deletion). See
// TestSubscribeExactlyOnceRandomized for what is checked. It returns a
// description of the first problem, or "".
func checkSubscription(tg subTarget, msgs []*esdv1.SubscribeResponse, final []*esdv1.RecordedEvent, hidden map[uint64]subTruth) string {
	var (
		caughtUp                   = -1
		cuPos, lastPos, checkpoint uint64
		lastEvent                  uint64
		got                        []*esdv1.RecordedEvent
		history                    int // events before caught_up
	)
	_, isStream := tg.req.GetTarget().(*esdv1.SubscribeRequest_Stream)
	for i, m := range msgs {
		switch {
		case m.GetCaughtUp() != nil:
			if caughtUp >= 0 {
				return fmt.Sprintf("message %d: a second caught_up", i)
			}
			caughtUp, cuPos, history = i, m.GetCaughtUp().GetPosition(), len(got)
			if cuPos < lastPos {
				return fmt.Sprintf("message %d: caught_up{%d} behind position %d delivered", i, cuPos, lastPos)
			}
		case m.GetCheckpoint() != nil:
			p := m.GetCheckpoint().GetPosition()
			if p < checkpoint || p < lastEvent {
				return fmt.Sprintf("message %d: checkpoint{%d} after checkpoint %d / event %d", i, p, checkpoint, lastEvent)
			}
			checkpoint, lastPos = p, max(lastPos, p)
		case m.GetEnded() != nil:
			return fmt.Sprintf("message %d: unexpected ended{%s}", i, m.GetEnded().GetReason())
		case m.GetEvents() != nil:
			if len(m.GetEvents().GetEvents()) == 0 {
				return fmt.Sprintf("message %d: an empty events message", i)
			}
			for _, e := range m.GetEvents().GetEvents() {
				if e.GetPosition() <= lastPos {
					return fmt.Sprintf("message %d: event %d:%s@%d at or before position %d (a duplicate or out of order)",
						i, e.GetPosition(), e.GetStream(), e.GetRevision(), lastPos)
				}
				if caughtUp >= 0 && e.GetPosition() <= cuPos {
					return fmt.Sprintf("message %d: live event %d at or before caught_up{%d}", i, e.GetPosition(), cuPos)
				}
				if !tg.matches(e.GetStream(), e.GetType()) {
					return fmt.Sprintf("message %d: event %d:%s (%s) is not of the target", i, e.GetPosition(), e.GetStream(), e.GetType())
				}
				lastPos, lastEvent = e.GetPosition(), e.GetPosition()
				got = append(got, e)
			}
		default:
			return fmt.Sprintf("message %d: empty", i)
		}
	}
	if caughtUp < 0 {
		return "no caught_up"
	}
	for _, e := range got[:history] {
		if e.GetPosition() > cuPos {
			return fmt.Sprintf("history event %d after caught_up{%d}", e.GetPosition(), cuPos)
		}
	}
	var after uint64 // events of the target after it are due
	afterRev := int64(-1)
	switch f := tg.req.GetFrom().(type) {
	case *esdv1.SubscribeRequest_End:
		after = cuPos
		if history > 0 {
			if got[0].GetPosition() <= tg.floor {
				return fmt.Sprintf("from end: history event %d at or before position %d when Subscribe was called", got[0].GetPosition(), tg.floor)
			}
			after = got[0].GetPosition() - 1
		}
	case *esdv1.SubscribeRequest_AfterPosition:
		after = f.AfterPosition
	case *esdv1.SubscribeRequest_AfterRevision:
		afterRev = int64(f.AfterRevision)
	}
	var want []*esdv1.RecordedEvent
	for _, e := range final {
		if e.GetPosition() > after && int64(e.GetRevision()) > afterRev && tg.matches(e.GetStream(), e.GetType()) {
			want = append(want, e)
		}
	}
	i := 0
	for _, g := range got {
		if i < len(want) && want[i].GetPosition() < g.GetPosition() {
			return fmt.Sprintf("missing event %d:%s@%d (next received: %d)", want[i].GetPosition(), want[i].GetStream(), want[i].GetRevision(), g.GetPosition())
		}
		if i < len(want) && want[i].GetPosition() == g.GetPosition() {
			if !proto.Equal(want[i], g) {
				return fmt.Sprintf("received %v, the log has %v", g, want[i])
			}
			i++
			continue
		}
		h, ok := hidden[g.GetPosition()]
		switch {
		case !ok:
			return fmt.Sprintf("received event %d:%s@%d, which the log does not have", g.GetPosition(), g.GetStream(), g.GetRevision())
		case h != subTruth{id: g.GetId(), stream: g.GetStream(), typ: g.GetType(), rev: g.GetRevision()}:
			return fmt.Sprintf("received %v, the writer wrote %+v there (deleted since)", g, h)
		case g.GetPosition() <= after:
			return fmt.Sprintf("received event %d before the start %d", g.GetPosition(), after)
		}
	}
	if i < len(want) {
		return fmt.Sprintf("missing %d events from %d:%s@%d on", len(want)-i, want[i].GetPosition(), want[i].GetStream(), want[i].GetRevision())
	}
	if isStream && len(got) > 0 { // contiguous revisions (the streams followed are never deleted)
		next := got[0].GetRevision()
		switch tg.req.GetFrom().(type) {
		case *esdv1.SubscribeRequest_AfterRevision:
			next = uint64(afterRev + 1)
		case *esdv1.SubscribeRequest_Start, nil:
			next = 0
		}
		for _, g := range got {
			if g.GetRevision() != next {
				return fmt.Sprintf("revision %d, want %d", g.GetRevision(), next)
			}
			next++
		}
	}
	return ""
}

// --- 1. exactly once, in order, across the catch-up -> live switch ---

var subSeed = flag.Uint64("sub.seed", 0, "seed of TestSubscribeExactlyOnceRandomized's first run (0: from the clock)")

// TestSubscribeExactlyOnceRandomized is the central invariant over gRPC:
// while writers append concurrently (several streams and categories, some
// AppendMulti, deletions of other streams), subscribers start at random
// moments, to $all (filtered or not), a category or a stream, from the
// start, the end, or after a position or revision. Each must receive
// every event of its target after its start exactly once, in position
// order (for a stream, contiguous revisions), equal to what ReadAll
// returns after the writers stopped; exactly one caught_up, history at or
// before its position and live events after it; nothing of another
// target; checkpoints never behind what was delivered. Events deleted by
// the end (of the streams being deleted) may or may not have been
// received by a subscriber of $all, depending on whether it got to them
// before their deletion, but if received they are the ones written.
// The seed is in the subtest's name; -sub.seed=N replays it.
func TestSubscribeExactlyOnceRandomized(t *testing.T) {
	old := checkpointEvery
	checkpointEvery = 3 // filtered subscriptions checkpoint all the time
	t.Cleanup(func() { checkpointEvery = old })
	runs, ops, subs := 30, 40, 8
	if testutil.RaceEnabled {
		runs, ops, subs = 20, 15, 6
	}
	base := *subSeed
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	for r := range runs {
		seed := base + uint64(r)
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { subRandomRun(t, seed, ops, subs) }) {
			break // one failing seed is enough to replay
		}
	}
}

func subRandomRun(t *testing.T, seed uint64, ops, nsubs int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	ts := newTestServer(t, withShards(1+rng.IntN(3)))
	ctx := testCtx(t)
	followed := []string{"acct-1", "acct-2", "acct", "order-1", "order-2", "user-1"}
	const writers = 4
	var (
		done     atomic.Int64 // operations done, to start subscribers at random moments
		truthMu  sync.Mutex
		tmpTruth = make(map[uint64]subTruth) // every event written to a tmp stream
		errs     = make(chan error, writers)
		wg       sync.WaitGroup
	)
	record := func(req *esdv1.AppendRequest, resp *esdv1.AppendResponse) {
		truthMu.Lock()
		defer truthMu.Unlock()
		for i, e := range req.GetEvents() {
			tmpTruth[resp.GetFirstPosition()+uint64(i)] = subTruth{id: e.GetId(), stream: req.GetStream(), typ: e.GetType(), rev: resp.GetFirstRevision() + uint64(i)}
		}
	}
	for w := range writers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			tmp, tmpState := 0, 0 // tmp-w-k: 0 not written, 1 written, 2 soft-deleted
			for range ops {
				var err error
				switch k := wrng.IntN(10); {
				case k < 6:
					typ := []string{"Small", "Big", "Other"}[wrng.IntN(3)]
					_, err = ts.streams.Append(ctx, appendReq(followed[wrng.IntN(len(followed))], xAny, events(1+wrng.IntN(4), typ)...))
				case k < 8:
					perm := wrng.Perm(len(followed))
					var entries []*esdv1.AppendRequest
					for _, i := range perm[:2+wrng.IntN(2)] {
						entries = append(entries, appendReq(followed[i], xAny, events(1+wrng.IntN(3), "Big")...))
					}
					_, err = ts.streams.AppendMulti(ctx, multiReq(entries...))
				default:
					name := fmt.Sprintf("tmp-%d-%d", w, tmp)
					if tmpState == 1 && wrng.IntN(2) == 0 {
						tomb := wrng.IntN(3) == 0
						_, err = ts.streams.DeleteStream(ctx, deleteReq(name, xAny, tomb))
						tmpState = 2
						if tomb {
							tmp, tmpState = tmp+1, 0
						}
					} else {
						req := appendReq(name, xAny, events(1+wrng.IntN(4), "Tmp")...)
						var resp *esdv1.AppendResponse
						if resp, err = ts.streams.Append(ctx, req); err == nil {
							record(req, resp)
						}
						tmpState = 1
					}
				}
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}

	// Subscribers at random moments.
	var subs []*subClient
	var targets []subTarget
	for range nsubs {
		at := int64(rng.IntN(writers * ops))
		eventually(t, "the writers to go on", func() bool { return done.Load() >= at || len(errs) > 0 })
		req := subRandomRequest(t, rng, ts)
		targets = append(targets, subTarget{req: req, floor: ts.log.LastPosition()})
		subs = append(subs, subscribe(t, ts.streams, req))
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("writer: %v", err)
	default:
	}
	for i, s := range subs {
		eventually(t, fmt.Sprintf("subscriber %d's caught_up", i), func() bool { _, ok := s.caughtUp(); return ok || s.ended() })
	}
	// One last event in every followed stream, after every subscriber has
	// taken its start: each has something to wait for.
	var last []*esdv1.AppendRequest
	for _, s := range followed {
		last = append(last, appendReq(s, xAny, events(1, "BigEnd")...))
	}
	if _, err := ts.streams.AppendMulti(ctx, multiReq(last...)); err != nil {
		t.Fatal(err)
	}

	final := ts.readAll(t)
	visible := make(map[uint64]bool)
	for _, e := range final {
		visible[e.GetPosition()] = true
	}
	hidden := make(map[uint64]subTruth)
	for p, tr := range tmpTruth {
		if !visible[p] {
			hidden[p] = tr
		}
	}
	deadline := time.Now().Add(rpcTimeout) // for all the subscribers: one stuck is enough
	for i, s := range subs {
		tg := targets[i]
		var wantLast uint64
		for _, e := range final {
			if tg.matches(e.GetStream(), e.GetType()) {
				wantLast = e.GetPosition()
			}
		}
		testutil.Poll(time.Until(deadline), func() bool { return s.lastEventPos() >= wantLast || s.ended() })
		msgs, err := s.snapshot()
		if err != nil {
			t.Errorf("subscriber %d (%v) ended: %v; got %s", i, tg.req, err, describeSub(msgs))
			continue
		}
		if msg := checkSubscription(tg, msgs, final, hidden); msg != "" {
			t.Errorf("subscriber %d (%v): %s\ngot: %s", i, tg.req, msg, describeSub(msgs))
		}
		// For a stream, also against ReadStream.
		if st, ok := tg.req.GetTarget().(*esdv1.SubscribeRequest_Stream); ok {
			if _, fromStart := tg.req.GetFrom().(*esdv1.SubscribeRequest_Start); fromStart {
				want := ts.mustReadStream(t, st.Stream)
				got := s.events()
				if len(got) != len(want) {
					t.Errorf("subscriber %d: %d events of %s, ReadStream has %d", i, len(got), st.Stream, len(want))
				}
				for j := range min(len(got), len(want)) {
					if !proto.Equal(got[j], want[j]) {
						t.Errorf("subscriber %d: event %d is %v, ReadStream has %v", i, j, got[j], want[j])
						break
					}
				}
			}
		}
		s.cancel()
	}
}

// subRandomRequest picks a target and a start at random.
func subRandomRequest(t *testing.T, rng *rand.Rand, ts *testServer) *esdv1.SubscribeRequest {
	var req *esdv1.SubscribeRequest
	switch k := rng.IntN(20); {
	case k < 6:
		req = subAll(nil)
	case k < 7:
		req = subAll(&esdv1.Filter{StreamPrefixes: []string{"order-"}}) // through the category index
	case k < 8:
		req = subAll(&esdv1.Filter{StreamPrefixes: []string{"acc", "user"}}) // a scan
	case k < 9:
		req = subAll(&esdv1.Filter{EventTypePrefixes: []string{"Big"}}) // through the type index
	case k < 14:
		req = subCategory([]string{"acct", "order", "user"}[rng.IntN(3)])
	default:
		req = subStream([]string{"acct-1", "acct", "order-2", "user-1"}[rng.IntN(4)])
	}
	switch k := rng.IntN(4); {
	case k == 0:
		subFromStart(req)
	case k == 1:
		subFromEnd(req)
	case req.GetStream() != "":
		if info := ts.getStream(t, req.GetStream()); info.GetExists() {
			subAfterRevision(uint64(rng.IntN(int(info.GetHead()) + 1)))(req)
		}
	default:
		if p := ts.log.LastPosition(); p > 0 {
			subAfterPosition(uint64(rng.IntN(int(p) + 1)))(req)
		}
	}
	return req
}

// --- 3. deletion ---

// TestSubscribeStreamDeleted: a subscription to a stream ends when the
// stream is deleted, after the events before the deletion: ended with the
// reason, then the RPC ends OK. A tombstoned stream cannot be subscribed
// to.
func TestSubscribeStreamDeleted(t *testing.T) {
	for _, tombstone := range []bool{false, true} {
		reason := map[bool]string{false: "STREAM_DELETED", true: "STREAM_TOMBSTONED"}[tombstone]
		t.Run(reason, func(t *testing.T) {
			ts := newTestServer(t)
			ts.fill(t, "del-1", 3, "Early")
			ts.fill(t, "other-1", 2, "Noise")
			s := subscribe(t, ts.streams, subStream("del-1"))
			eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok })
			ts.fill(t, "del-1", 2, "Live")
			eventually(t, "the live events", func() bool { return len(s.events()) == 5 })
			ts.mustDelete(t, "del-1", tombstone)
			if err := s.waitEnd(t); !errors.Is(err, io.EOF) {
				t.Fatalf("the RPC ended with %v, want OK", err)
			}
			msgs, _ := s.snapshot()
			last := msgs[len(msgs)-1]
			if last.GetEnded().GetReason() != reason || len(s.events()) != 5 {
				t.Fatalf("got %s, want 5 events then ended{%s}", describeSub(msgs), reason)
			}
			eventually(t, "the server to drop the subscription", func() bool { return subscriptionsOpen(t, ts.reg) == 0 })

			// Subscribing to it now: a tombstoned stream is NOT_FOUND (a
			// soft-deleted one: TestSubscribeStreamNotYetWritten).
			if tombstone {
				stream, err := ts.streams.Subscribe(testCtx(t), subStream("del-1"))
				if err == nil {
					_, err = stream.Recv()
				}
				wantError(t, err, codes.NotFound, "STREAM_TOMBSTONED", "del-1")
			}
		})
	}
}

// TestSubscribeStreamRecreatedBefore: a stream deleted and written again
// before the subscription began is followed: history shows only its
// visible events, and its deletion does not end the subscription.
func TestSubscribeStreamRecreatedBefore(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *esdv1.SubscribeRequest
		want []uint64
	}{
		{"from start", subStream("re-1"), []uint64{3, 4}},
		{"after revision 1", subStream("re-1", subAfterRevision(1)), []uint64{3, 4}},
		{"after revision 3", subStream("re-1", subAfterRevision(3)), []uint64{4}},
		{"from end", subStream("re-1", subFromEnd), nil},
		{"category", subCategory("re"), []uint64{3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			ts.fill(t, "re-1", 3, "Old")
			ts.mustDelete(t, "re-1", false)
			ts.fill(t, "re-1", 2, "New") // revisions 3 and 4
			s := subscribe(t, ts.streams, tc.req)
			eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok || s.ended() })
			if got := revisionsOf(s.events()); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("history revisions %v, want %v", got, tc.want)
			}
			resp := ts.mustAppend(t, appendReq("re-1", xAny, event("Newer", "")))
			eventually(t, "the live event", func() bool { return s.lastEventPos() == resp.GetLastPosition() || s.ended() })
			if msgs, err := s.snapshot(); err != nil || s.ended() {
				t.Fatalf("the subscription ended (%v): %s", err, describeSub(msgs))
			}
			s.cancel()
		})
	}
}

// TestSubscribeStreamNotYetWritten: a stream subscription may begin before
// its stream has an event (the proto: "it need not exist yet"), or while
// it is soft-deleted: caught_up, then its events live. The log holding
// other events must not change that.
func TestSubscribeStreamNotYetWritten(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, ts *testServer)
	}{
		{"never written", func(t *testing.T, ts *testServer) { ts.fill(t, "other-1", 2, "Noise") }},
		{"soft-deleted", func(t *testing.T, ts *testServer) {
			ts.fill(t, "new-1", 2, "Old")
			ts.mustDelete(t, "new-1", false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			tc.setup(t, ts)
			s := subscribe(t, ts.streams, subStream("new-1"))
			eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok || s.ended() })
			if msgs, err := s.snapshot(); s.ended() {
				t.Fatalf("the subscription ended with %v after %s; want caught_up, then live events", err, describeSub(msgs))
			}
			resp := ts.mustAppend(t, appendReq("new-1", xAny, event("New", "")))
			eventually(t, "the live event", func() bool { return s.lastEventPos() == resp.GetLastPosition() })
		})
	}
}

// --- 4. filtered subscriptions and checkpoints ---

// TestSubscribeFilteredCheckpoints: a filtered subscription to $all whose
// filter matches nothing for a long time gets checkpoints (positions
// never going back, no events) during the history and while live; then a
// matching event arrives live, after every checkpoint.
func TestSubscribeFilteredCheckpoints(t *testing.T) {
	old := checkpointEvery
	checkpointEvery = 5
	t.Cleanup(func() { checkpointEvery = old })
	for _, tc := range []struct {
		name   string
		filter *esdv1.Filter
		stream string // where the matching event goes
		typ    string
	}{
		{"stream prefix, scanned", &esdv1.Filter{StreamPrefixes: []string{"zzmatch"}}, "zzmatch-1", "Any"},
		{"stream prefix, category index", &esdv1.Filter{StreamPrefixes: []string{"zzmatch-"}}, "zzmatch-1", "Any"},
		{"type prefix, type index", &esdv1.Filter{EventTypePrefixes: []string{"ZzMatch"}}, "noise-9", "ZzMatched"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			for i := range 5 {
				ts.fill(t, fmt.Sprintf("noise-%d", i), 10, "Noise")
			}
			s := subscribe(t, ts.streams, subAll(tc.filter))
			eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok })
			cu, _ := s.caughtUp()
			if cu != 50 {
				t.Fatalf("caught_up{%d}, want 50", cu)
			}
			// Live: 60 more events that do not match, in appends of 3.
			var lastNoise uint64
			for i := range 20 {
				lastNoise = ts.mustAppend(t, appendReq(fmt.Sprintf("noise-%d", i%5), xAny, events(3, "Noise")...)).GetLastPosition()
			}
			liveCheckpoint := func() uint64 {
				msgs, _ := s.snapshot()
				var p uint64
				for _, m := range msgs {
					if c := m.GetCheckpoint(); c != nil && c.GetPosition() > cu {
						p = c.GetPosition()
					}
				}
				return p
			}
			eventually(t, "a live checkpoint", func() bool { return liveCheckpoint() > lastNoise-5 })
			resp := ts.mustAppend(t, appendReq(tc.stream, xAny, event(tc.typ, "")))
			eventually(t, "the matching event", func() bool { return s.lastEventPos() == resp.GetLastPosition() })

			msgs, _ := s.snapshot()
			var checkpoints []uint64
			var evs int
			for _, m := range msgs {
				switch {
				case m.GetCheckpoint() != nil:
					p := m.GetCheckpoint().GetPosition()
					if len(checkpoints) > 0 && p < checkpoints[len(checkpoints)-1] {
						t.Fatalf("checkpoint %d after %d: %s", p, checkpoints[len(checkpoints)-1], describeSub(msgs))
					}
					if evs > 0 {
						t.Fatalf("checkpoint after the matching event: %s", describeSub(msgs))
					}
					checkpoints = append(checkpoints, p)
				case m.GetEvents() != nil:
					evs += len(m.GetEvents().GetEvents())
				}
			}
			if evs != 1 || len(checkpoints) < 2 || checkpoints[len(checkpoints)-1] >= resp.GetLastPosition() {
				t.Fatalf("got %s; want checkpoints in the history and live, then the one event", describeSub(msgs))
			}
			if checkpoints[0] > cu {
				t.Errorf("no checkpoint during the history: %s", describeSub(msgs))
			}
		})
	}
}

// TestSubscribeCheckpointsOnlyForFilteredAll: the proto sends checkpoints
// to filtered $all subscriptions only ("filtered all only"); a stream or
// category subscriber must never get one, however much of the log it
// passes over.
func TestSubscribeCheckpointsOnlyForFilteredAll(t *testing.T) {
	old := checkpointEvery
	checkpointEvery = 5
	t.Cleanup(func() { checkpointEvery = old })
	ts := newTestServer(t)
	for _, tc := range []struct {
		name string
		req  *esdv1.SubscribeRequest
	}{{"stream", subStream("cp-1")}, {"category", subCategory("cp")}, {"all", subAll(nil)}} {
		req := tc.req
		t.Run(tc.name, func(t *testing.T) {
			s := subscribe(t, ts.streams, req)
			eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok })
			// More events of other streams than a batch of the buffer holds,
			// then one of the target.
			ts.fill(t, "noise-1", 600, "Noise")
			resp := ts.mustAppend(t, appendReq("cp-1", xAny, event("Mine", "")))
			eventually(t, "the event", func() bool { return s.lastEventPos() == resp.GetLastPosition() })
			msgs, _ := s.snapshot()
			for _, m := range msgs {
				if m.GetCheckpoint() != nil {
					t.Fatalf("a checkpoint for an unfiltered subscription: %s", describeSub(msgs))
				}
			}
			s.cancel()
		})
	}
}

// --- 5. clean ends ---

// TestSubscribeClientCancel: a client that cancels mid-stream (during a
// long history, and while live) ends its subscription on the server.
func TestSubscribeClientCancel(t *testing.T) {
	ts := newTestServer(t)
	n := 20000
	if testutil.RaceEnabled {
		n = 5000
	}
	ts.fill(t, "hist-1", n, "History")
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live=%t", live), func(t *testing.T) {
			s := subscribe(t, ts.streams, subAll(nil))
			if live {
				eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok })
			} else {
				eventually(t, "some history", func() bool { return len(s.events()) > 0 })
			}
			s.cancel()
			if err := s.waitEnd(t); status.Code(err) != codes.Canceled {
				t.Fatalf("ended with %v, want Canceled", err)
			}
			eventually(t, "the server to drop the subscription", func() bool { return subscriptionsOpen(t, ts.reg) == 0 })
		})
	}
	// The server goes on.
	s := subscribe(t, ts.streams, subStream("hist-1", subFromEnd))
	eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok })
}

// TestSubscribeConnectionClosed: a client connection closed abruptly
// with subscriptions on it (live, and in the middle of a history the
// client does not read) ends them on the server.
func TestSubscribeConnectionClosed(t *testing.T) {
	srv := startSubServer(t, t.TempDir())
	// gRPC's default windows (64 KiB): the history the client does not
	// read soon blocks the server's Send.
	conn := srv.dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	client := esdv1.NewStreamServiceClient(conn)
	other := esdv1.NewStreamServiceClient(srv.dial(t))
	ctx := testCtx(t)
	for range 4 {
		if _, err := other.Append(ctx, appendReq("hist-1", xAny, events(500, "History")...)); err != nil {
			t.Fatal(err)
		}
	}
	var streams []grpc.ServerStreamingClient[esdv1.SubscribeResponse]
	for _, req := range []*esdv1.SubscribeRequest{subStream("hist-1", subFromEnd), subCategory("hist", subFromEnd), subAll(nil), subAll(nil, subFromEnd)} {
		st, err := client.Subscribe(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil { // history or caught_up: it runs
			t.Fatal(err)
		}
		streams = append(streams, st) // kept open until the connection closes
	}
	_ = streams
	eventually(t, "the subscriptions to be open", func() bool { return subscriptionsOpen(t, srv.reg) == 4 })
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the server to drop the subscriptions", func() bool { return subscriptionsOpen(t, srv.reg) == 0 })
	// The server goes on.
	s := subscribe(t, other, subAll(nil, subFromEnd))
	eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok })
	resp, err := other.Append(ctx, appendReq("hist-1", xAny, event("After", "")))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "a live event", func() bool { return s.lastEventPos() == resp.GetLastPosition() })
}

// TestSubscribeShutdown: at shutdown every subscriber (live, or reading a
// history) gets ended{SHUTTING_DOWN}, then the status
// UNAVAILABLE/SHUTTING_DOWN; new subscriptions are refused.
func TestSubscribeShutdown(t *testing.T) {
	ts := newTestServer(t)
	ts.fill(t, "shut-1", 3, "Early")
	var subs []*subClient
	for _, req := range []*esdv1.SubscribeRequest{subStream("shut-1"), subCategory("shut"), subAll(nil), subStream("nobody-1", subFromEnd)} {
		s := subscribe(t, ts.streams, req)
		eventually(t, "caught_up", func() bool { _, ok := s.caughtUp(); return ok || s.ended() })
		subs = append(subs, s)
	}
	eventually(t, "the subscriptions to be live", func() bool { return subscriptionsOpen(t, ts.reg) == 4 })
	if err := ts.stopServing(); err != nil {
		t.Fatalf("serve: %v", err)
	}
	for _, s := range subs {
		err := s.waitEnd(t)
		if msg := errorMismatch(err, codes.Unavailable, "SHUTTING_DOWN", ""); msg != "" {
			t.Errorf("%v: %s", s.req, msg)
		}
		msgs, _ := s.snapshot()
		if len(msgs) == 0 || msgs[len(msgs)-1].GetEnded().GetReason() != "SHUTTING_DOWN" {
			t.Errorf("%v: got %s, want ended{SHUTTING_DOWN} last", s.req, describeSub(msgs))
		}
	}
}

// --- 6. validation ---

// TestSubscribeValidation: bad targets and from/filter combinations are
// INVALID_ARGUMENT naming the field.
func TestSubscribeValidation(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct {
		name  string
		req   *esdv1.SubscribeRequest
		field string
	}{
		{"no target", &esdv1.SubscribeRequest{}, "target"},
		{"after_revision with a category", subCategory("order", subAfterRevision(3)), "after_revision"},
		{"after_revision with all", subAll(nil, subAfterRevision(3)), "after_revision"},
		{"after_position with a stream", subStream("order-1", subAfterPosition(3)), "after_position"},
		{"filter with a stream", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Stream{Stream: "order-1"}, Filter: &esdv1.Filter{StreamPrefixes: []string{"o"}}}, "filter"},
		{"filter with a category", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: "order"}, Filter: &esdv1.Filter{}}, "filter"},
		{"category with a dash", subCategory("order-1"), "category"},
		{"empty category", subCategory(""), "category"},
		{"empty stream", subStream(""), "stream"},
		{"stream with a control character", subStream("bad\x01"), "stream"},
		{"category with a control character", subCategory("bad\x01"), "category"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := ts.streams.Subscribe(testCtx(t), tc.req)
			if err == nil {
				_, err = stream.Recv()
			}
			wantError(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "")
			var fields []string
			for _, v := range badRequest(err).GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
			if len(fields) == 0 || !strings.HasPrefix(fields[0], tc.field) {
				t.Fatalf("bad fields %v, want %s", fields, tc.field)
			}
		})
	}
}

// --- a bare server for benchmarks and extra connections ---

// subServer is the real server on bufconn for tests and benchmarks that
// need several client connections (testServer has one) or a testing.B.
type subServer struct {
	log    *eslog.Log
	reg    *prometheus.Registry
	lis    *bufconn.Listener
	cancel context.CancelFunc
	served chan error
}

// startSubServer opens the log in dir and serves it until the test ends.
func startSubServer(tb testing.TB, dir string) *subServer {
	tb.Helper()
	reg := prometheus.NewRegistry()
	eng, err := engine.Open(engine.Config{Dir: dir, Registerer: reg, CacheBytes: 64 << 20, Shards: 2})
	if err != nil {
		tb.Fatal(err)
	}
	l := eng.Log()
	srv, err := New(eng, Config{Version: "test"}, zap.NewNop(), reg)
	if err != nil {
		_ = eng.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &subServer{log: l, reg: reg, lis: bufconn.Listen(4 << 20), cancel: cancel, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(ctx, s.lis) }()
	tb.Cleanup(func() {
		s.cancel()
		if err := <-s.served; err != nil {
			tb.Errorf("serve: %v", err)
		}
		if err := eng.Close(); err != nil {
			tb.Errorf("close engine: %v", err)
		}
	})
	return s
}

// dial opens a client connection (with large windows, for the
// benchmarks; opts come after), closed at the end of the test (closing
// it before is harmless).
func (s *subServer) dial(tb testing.TB, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(16 << 20),
	}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// --- 7. benchmarks ---

// subBenchEvents is the size of BenchmarkSubscribeCatchUp's history:
// ESD_BENCH_EVENTS, default 1,000,000.
func subBenchEvents(b *testing.B) int {
	n := 1_000_000
	if v := os.Getenv("ESD_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("ESD_BENCH_EVENTS=%q: want a positive number", v)
		}
	}
	return n
}

// subBenchFill writes n events into the log in dir directly (appends of
// 500 events of about 100 bytes, ten appends to ten streams a commit),
// as the writer would, before a server opens it.
func subBenchFill(b *testing.B, dir string, n int) {
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
	data := []byte(strings.Repeat("x", 100))
	const per, streams = 500, 1000
	for k := 0; n > 0; k++ {
		var ws []*eslog.Write
		for j := 0; j < 10 && n > 0; j++ {
			name := fmt.Sprintf("bench%d-%d", (k*10+j)%10, (k*10+j)%streams)
			s, ok, err := l.State(name)
			if err != nil {
				b.Fatal(err)
			}
			w := &eslog.Write{State: s}
			if !ok {
				w.State, w.New = eslog.StreamState{ID: l.NewStreamID(), Name: name}, true
			}
			for range min(per, n) {
				w.Events = append(w.Events, eslog.Event{ID: eslog.NewEventID(), Type: "BenchEvent", ContentType: "application/json", Data: data})
			}
			n -= len(w.Events)
			ws = append(ws, w)
		}
		tk, err := l.Commit(ws, false)
		if err != nil {
			b.Fatal(err)
		}
		for _, w := range ws {
			if w.Err != nil {
				b.Fatal(w.Err)
			}
		}
		if err := tk.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubscribeCatchUp: a subscription to $all from the start over a
// history of ESD_BENCH_EVENTS events, from Subscribe to caught_up.
func BenchmarkSubscribeCatchUp(b *testing.B) {
	n := subBenchEvents(b)
	dir := b.TempDir()
	start := time.Now()
	subBenchFill(b, dir, n)
	b.Logf("filled %d events in %v", n, time.Since(start).Round(time.Millisecond))
	srv := startSubServer(b, dir)
	client := esdv1.NewStreamServiceClient(srv.dial(b))
	var bytes int64
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := client.Subscribe(ctx, subAll(nil))
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			m, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if m.GetCaughtUp() != nil {
				break
			}
			got += len(m.GetEvents().GetEvents())
			bytes += int64(proto.Size(m))
		}
		cancel()
		if got != n {
			b.Fatalf("%d events before caught_up, want %d", got, n)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(n)*float64(b.N)/sec, "events/s")
	b.ReportMetric(float64(bytes)/sec/(1<<20), "MiB/s")
	b.ReportMetric(0, "ns/op") // an op is the whole history: events/s says it
}

// subLatencySubscribers is the number of live subscribers of
// BenchmarkLiveLatency; subLatencyRounds the appends per op.
const (
	subLatencySubscribers = 100
	subLatencyRounds      = 200
)

// BenchmarkLiveLatency: 100 subscribers to $all (over 10 connections),
// one event appended at a time: the time from the append's return to
// each subscriber's Recv of the event (negative when the subscriber has
// it before the appender has its answer), and from the append's call.
// Each op is 200 appends, each waited for by every subscriber.
func BenchmarkLiveLatency(b *testing.B) {
	srv := startSubServer(b, b.TempDir())
	writer := esdv1.NewStreamServiceClient(srv.dial(b))
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex             // guards recvAt
		recvAt   = map[uint64][]int64{} // position -> Recv times (unix ns)
		received atomic.Int64
		allIn    = make(chan struct{}, 1)
	)
	b.Cleanup(func() { cancel(); wg.Wait() })
	var clients []esdv1.StreamServiceClient
	for range 10 {
		clients = append(clients, esdv1.NewStreamServiceClient(srv.dial(b)))
	}
	for i := range subLatencySubscribers {
		stream := subscribeLive(b, ctx, clients[i%len(clients)], subAll(nil, subFromEnd))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := stream.Recv()
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				for _, e := range m.GetEvents().GetEvents() {
					mu.Lock()
					recvAt[e.GetPosition()] = append(recvAt[e.GetPosition()], now)
					mu.Unlock()
					if received.Add(1)%subLatencySubscribers == 0 {
						allIn <- struct{}{}
					}
				}
			}
		}()
	}
	rounds := subLatencyRounds
	if testutil.RaceEnabled {
		rounds = 20
	}
	var fromReturn, fromCall []float64 // µs
	for b.Loop() {
		for range rounds {
			req := appendReq("latency-1", xAny, event("Tick", "x"))
			called := time.Now().UnixNano()
			resp, err := writer.Append(ctx, req)
			returned := time.Now().UnixNano()
			if err != nil {
				b.Fatal(err)
			}
			<-allIn
			mu.Lock()
			for _, at := range recvAt[resp.GetLastPosition()] {
				fromReturn = append(fromReturn, float64(at-returned)/1e3)
				fromCall = append(fromCall, float64(at-called)/1e3)
			}
			delete(recvAt, resp.GetLastPosition())
			mu.Unlock()
		}
	}
	b.ReportMetric(subPercentile(fromReturn, 50), "p50_us")
	b.ReportMetric(subPercentile(fromReturn, 99), "p99_us")
	b.ReportMetric(subPercentile(fromCall, 50), "p50_from_call_us")
	b.ReportMetric(subPercentile(fromCall, 99), "p99_from_call_us")
}

// subscribeLive subscribes with req (from the end: no history) and reads
// its first message, which must be caught_up.
func subscribeLive(tb testing.TB, ctx context.Context, c esdv1.StreamServiceClient, req *esdv1.SubscribeRequest) grpc.ServerStreamingClient[esdv1.SubscribeResponse] {
	tb.Helper()
	stream, err := c.Subscribe(ctx, req)
	if err != nil {
		tb.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetCaughtUp() == nil {
		tb.Fatalf("%v: first message %v, %v; want caught_up", req, m, err)
	}
	return stream
}

func subPercentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

// BenchmarkAppendWithSubscribers: the writer's throughput (16 concurrent
// appenders of one event each, over 4 connections) with no subscriber,
// and with 100 idle subscribers (to streams nobody writes) plus 10
// active ones (to $all, reading everything). Each op is 4,000 appends.
func BenchmarkAppendWithSubscribers(b *testing.B) {
	for _, tc := range []struct {
		name         string
		idle, active int
	}{{"none", 0, 0}, {"100idle10active", 100, 10}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := startSubServer(b, b.TempDir())
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			b.Cleanup(func() { cancel(); wg.Wait() })
			var clients []esdv1.StreamServiceClient
			for range 4 {
				clients = append(clients, esdv1.NewStreamServiceClient(srv.dial(b)))
			}
			var delivered atomic.Int64
			for i := range tc.idle + tc.active {
				req := subStream(fmt.Sprintf("idle-%d", i), subFromEnd)
				if i >= tc.idle {
					req = subAll(nil, subFromEnd)
				}
				stream := subscribeLive(b, ctx, clients[i%len(clients)], req)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						m, err := stream.Recv()
						if err != nil {
							return
						}
						delivered.Add(int64(len(m.GetEvents().GetEvents())))
					}
				}()
			}
			perOp := 4000
			if testutil.RaceEnabled {
				perOp = 200
			}
			const appenders = 16
			total := 0
			for b.Loop() {
				var next atomic.Int64
				var awg sync.WaitGroup
				errs := make(chan error, appenders)
				for g := range appenders {
					awg.Add(1)
					go func() {
						defer awg.Done()
						client := clients[g%len(clients)]
						for next.Add(1) <= int64(perOp) {
							if _, err := client.Append(ctx, appendReq(fmt.Sprintf("w-%d", g), xAny, event("Bench", "x"))); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				awg.Wait()
				select {
				case err := <-errs:
					b.Fatal(err)
				default:
				}
				total += perOp
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(0, "ns/op")
			if tc.active > 0 { // every active subscriber got every event
				want := int64(total * tc.active)
				testutil.Poll(rpcTimeout, func() bool { return delivered.Load() >= want })
				if got := delivered.Load(); got != want {
					b.Fatalf("active subscribers got %d events, want %d", got, want)
				}
			}
		})
	}
}

// idleSubscribers is how many subscriptions TestIdleSubscribersCost opens.
const idleSubscribers = 2000

// TestIdleSubscribersCost: 2,000 live subscriptions to streams nobody
// writes (over 10 connections) cost little: the heap and stacks they add,
// client and server sides together since both run here, stay under 48
// KiB per subscription (about 30 KiB measured, half of it goroutine
// stacks; a subscriber's batch buffer of 50 KiB used to be allocated up
// front); writes elsewhere wake none of them (the hub's tests).
func TestIdleSubscribersCost(t *testing.T) {
	srv := startSubServer(t, t.TempDir())
	var conns []esdv1.StreamServiceClient
	for range 10 {
		conns = append(conns, esdv1.NewStreamServiceClient(srv.dial(t)))
	}
	// A call on each connection first, so that the connections' one-time
	// costs are not counted.
	for _, c := range conns {
		if _, err := c.GetStream(context.Background(), &esdv1.GetStreamRequest{Stream: "warm-1"}); err != nil {
			t.Fatal(err)
		}
	}
	memInUse := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse
	}
	before, goroutines := memInUse(), runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var streams []grpc.ServerStreamingClient[esdv1.SubscribeResponse]
	for i := range idleSubscribers {
		streams = append(streams, subscribeLive(t, ctx, conns[i%len(conns)], subStream(fmt.Sprintf("idle-%d", i), subFromEnd)))
	}
	per := (int64(memInUse()) - int64(before)) / idleSubscribers
	t.Logf("%d idle subscriptions: %d bytes each (heap and stacks, client and server), %d goroutines each",
		idleSubscribers, per, (runtime.NumGoroutine()-goroutines)/idleSubscribers)
	if per > 48<<10 {
		t.Errorf("an idle subscription costs %d bytes, want at most 48 KiB", per)
	}
	cancel()
	for _, s := range streams {
		if _, err := s.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("after cancel: %v, want Canceled", err)
		}
	}
	eventually(t, "the server to drop the subscriptions", func() bool { return subscriptionsOpen(t, srv.reg) == 0 })
}
