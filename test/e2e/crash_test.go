//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Shape of TestKill9KeepsAcknowledged. Each round runs a few seconds at
// most; the whole test stays well under a minute.
const (
	crashRounds      = 5
	crashStreams     = 50
	crashMinClients  = 16
	crashMaxClients  = 32
	crashMinKill     = 200 * time.Millisecond
	crashMaxKill     = 1500 * time.Millisecond
	crashMaxEvents   = 10 // events per append, at least 1
	crashMultiOneIn  = 6  // one call in this many is an AppendMulti
	crashCallTime    = 10 * time.Second
	crashStreamOneIn = 3 // one client in this many appends over AppendStream
	crashStreamBatch = 8 // appends a streaming client has in flight at most
)

// TestKill9KeepsAcknowledged proves durability, atomicity, gap-free
// positions and idempotency across kill -9. Each round, 16 to 32 gRPC
// clients append to 50 streams (1 to 10 events a call, client-chosen ids,
// exact expected revisions, some AppendMulti calls over 2 or 3 streams, some
// with a pure-condition entry; one client in three appends over one
// AppendStream call instead, up to 8 appends to different streams in
// flight on it at once) and record every acknowledged result; esd is
// SIGKILLed at a random moment and restarted on the same data directory, so
// later rounds recover a store that was itself recovered from a crash.
// After each restart:
//   - every acknowledged event is stored at exactly its acknowledged
//     stream, revision and position, with its id, type, data, metadata,
//     content type and tags (ReadStream and ReadAll);
//   - ReadAll's positions are 1..last_position without a gap; per stream,
//     revisions are contiguous and in position order; GetStream and
//     GetServerInfo agree with the reads (checkStore);
//   - an append in flight at the kill (no answer) is stored entirely or
//     not at all, across every stream of an AppendMulti;
//   - retrying it with the same ids and expected revisions stores it if it
//     was lost, or returns its original result if it was stored, and never
//     stores it twice;
//   - nothing is stored that no client sent.
//
// Set E2E_SEED to replay a run's choices (the kill moments still depend on
// timing).
func TestKill9KeepsAcknowledged(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("E2E_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("E2E_SEED=%q: %v", s, err)
		}
	}
	t.Logf("E2E_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	dir := t.TempDir()
	m := newCrashModel(crashStreams)
	var pending []*pendingAppend
	var totalAcked, totalPending, totalFound int
	for round := 0; ; round++ {
		shards := []int{1, 2, 3, 4, 8}[rng.IntN(5)] // a restart may change the shard count
		p := startESD(t, dir, "--shards", strconv.Itoa(shards))
		c := dial(t, p.Addr)
		if round > 0 {
			vstart := time.Now()
			m.verify(t, c, false) // as recovered: what was in flight may be there too
			if t.Failed() {
				t.Fatalf("round %d: the store recovered from kill -9 is wrong (see above)", round-1)
			}
			totalFound += m.resolve(t, c, pending)
			m.verify(t, c, true) // after the retries: exactly what was sent, once
			if t.Failed() {
				t.Fatalf("round %d: in-flight appends or their retries are wrong (see above)", round-1)
			}
			t.Logf("round %d: restarted, recovered store verified (%v)", round-1, time.Since(vstart).Round(time.Millisecond))
		}
		if round == crashRounds {
			p.Stop() // a store recovered from crashes also shuts down cleanly
			break
		}
		kill := crashMinKill + time.Duration(rng.Int64N(int64(crashMaxKill-crashMinKill)))
		clients := crashMinClients + rng.IntN(crashMaxClients-crashMinClients+1)
		start := time.Now()
		var acked int
		acked, pending = m.load(t, c, p, rng, clients, kill)
		totalAcked += acked
		totalPending += len(pending)
		inFlight := 0
		for _, pa := range pending {
			if pa.inFlight {
				inFlight++
			}
		}
		streamed := 0
		for _, pa := range pending {
			if pa.streamed {
				streamed++
			}
		}
		t.Logf("round %d: --shards %d, %d clients (%d over AppendStream), kill -9 after %v: %d events acknowledged (%d over AppendStream), %d calls unanswered (%d in flight at the kill; %d appends of AppendStream calls) (%v)",
			round, shards, clients, (clients+crashStreamOneIn-1)/crashStreamOneIn, kill, acked, m.streamedAcked.Swap(0), len(pending), inFlight, streamed, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("%d rounds: %d events acknowledged, %d calls unanswered at a kill, %d of those found stored after restart",
		crashRounds, totalAcked, totalPending, totalFound)
	if totalAcked == 0 {
		t.Errorf("no append was acknowledged in %d rounds: the test proved nothing", crashRounds)
	}
}

// crashStream is the test's knowledge of one stream.
type crashStream struct {
	name string
	mu   sync.Mutex // held by the one client appending to the stream; guards the fields below
	// events are stored and known to be: acknowledged, or found after a
	// restart. Nothing deletes, so revision i is events[i].
	events []sentEvent
	// poisoned: a call on this stream went unanswered; nobody appends to it
	// until a restart has told whether it was stored.
	poisoned bool
}

type crashModel struct {
	streams []*crashStream
	// streamedAcked counts the events acknowledged to streaming clients
	// (for the log).
	streamedAcked atomic.Int64
}

func newCrashModel(n int) *crashModel {
	m := &crashModel{}
	for i := range n {
		m.streams = append(m.streams, &crashStream{name: fmt.Sprintf("crash-%02d", i)})
	}
	return m
}

func (m *crashModel) names() []string {
	var out []string
	for _, s := range m.streams {
		out = append(out, s.name)
	}
	return out
}

// pendingAppend is a call whose answer never came: an Append (one entry),
// an AppendMulti, or an append of an AppendStream call (one entry,
// streamed).
type pendingAppend struct {
	multi    bool
	streamed bool
	entries  []pendingEntry
	err      error
	inFlight bool // sent before the kill (else it found esd dead)
}

type pendingEntry struct {
	s   *crashStream
	req *esdv1.AppendRequest
}

func (pa *pendingAppend) String() string {
	var b strings.Builder
	switch {
	case pa.multi:
		b.WriteString("AppendMulti")
	case pa.streamed:
		b.WriteString("AppendStream's append")
	default:
		b.WriteString("Append")
	}
	for _, e := range pa.entries {
		fmt.Fprintf(&b, " [%s expect %s, %d events]", e.s.name, expectString(e.req), len(e.req.GetEvents()))
	}
	return b.String()
}

func expectString(req *esdv1.AppendRequest) string {
	if req.GetNoStream() != nil {
		return "no-stream"
	}
	return strconv.FormatUint(req.GetExact(), 10)
}

// load runs clients against esd until it is SIGKILLed after kill, and
// returns the number of events acknowledged and the calls left unanswered.
func (m *crashModel) load(t *testing.T, c *client, p *esdProc, rng *rand.Rand, clients int, kill time.Duration) (int, []*pendingAppend) {
	var (
		killed  atomic.Bool
		acked   atomic.Int64
		mu      sync.Mutex // guards pending
		pending []*pendingAppend
		wg      sync.WaitGroup
	)
	for i := range clients {
		crng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		if i%crashStreamOneIn == 0 {
			wg.Go(func() {
				pas, n := m.streamCalls(t, c, crng, &killed)
				acked.Add(int64(n))
				m.streamedAcked.Add(int64(n))
				mu.Lock()
				pending = append(pending, pas...)
				mu.Unlock()
			})
			continue
		}
		wg.Go(func() {
			for {
				pa, n, ok := m.call(t, c, crng, &killed)
				acked.Add(int64(n))
				if pa != nil {
					mu.Lock()
					pending = append(pending, pa)
					mu.Unlock()
				}
				if !ok {
					return
				}
			}
		})
	}
	time.Sleep(kill) // picks the kill moment; nothing waits for a condition here
	killed.Store(true)
	p.Kill()
	wg.Wait()
	return int(acked.Load()), pending
}

// call makes one Append or AppendMulti on streams it locks, with exact
// expected revisions, and records the outcome: on success the events
// acknowledged (n); on failure the pending call, and ok false (the client
// stops: esd is dead).
func (m *crashModel) call(t *testing.T, c *client, rng *rand.Rand, killed *atomic.Bool) (pa *pendingAppend, n int, ok bool) {
	// Pick the streams; lock them in index order (no deadlock between
	// clients). One client at a time per stream keeps expected revisions exact.
	idx := []int{rng.IntN(len(m.streams))}
	multi := rng.IntN(crashMultiOneIn) == 0
	if multi {
		for len(idx) < 2+rng.IntN(2) {
			if i := rng.IntN(len(m.streams)); !slices.Contains(idx, i) {
				idx = append(idx, i)
			}
		}
		slices.Sort(idx)
	}
	var ss []*crashStream
	for _, i := range idx {
		s := m.streams[i]
		s.mu.Lock()
		defer s.mu.Unlock()
		ss = append(ss, s)
	}
	for _, s := range ss {
		if s.poisoned {
			return nil, 0, false // an earlier call failed: esd is dead
		}
	}

	pa = &pendingAppend{multi: multi}
	condition := -1 // in a multi, the entry that is a pure condition, if any
	if multi && rng.IntN(4) == 0 {
		condition = rng.IntN(len(ss))
	}
	for i, s := range ss {
		req := &esdv1.AppendRequest{Stream: s.name}
		if len(s.events) == 0 {
			req.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
		} else {
			req.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: uint64(len(s.events) - 1)}
		}
		if i != condition {
			for range 1 + rng.IntN(crashMaxEvents) {
				req.Events = append(req.Events, randomEvent(rng))
			}
		}
		pa.entries = append(pa.entries, pendingEntry{s: s, req: req})
	}

	ctx, cancel := context.WithTimeout(context.Background(), crashCallTime)
	defer cancel()
	pa.inFlight = !killed.Load()
	var results []*esdv1.AppendResponse
	var err error
	if multi {
		var resp *esdv1.AppendMultiResponse
		if resp, err = c.streams.AppendMulti(ctx, &esdv1.AppendMultiRequest{Appends: pendingReqs(pa)}); err == nil {
			results = resp.GetResults()
		}
	} else {
		var resp *esdv1.AppendResponse
		if resp, err = c.streams.Append(ctx, pa.entries[0].req); err == nil {
			results = []*esdv1.AppendResponse{resp}
		}
	}
	if err != nil {
		if !killed.Load() {
			t.Errorf("%v failed before the kill: %v (reason %q)", pa, err, reasonOf(err))
		} else if r := reasonOf(err); r != "" {
			t.Errorf("%v failed with reason %s (a server answer, not the kill): %v", pa, r, err)
		}
		pa.err = err
		for _, s := range ss {
			s.poisoned = true
		}
		return pa, 0, false
	}
	if len(results) != len(pa.entries) {
		t.Errorf("%v: %d results for %d entries", pa, len(results), len(pa.entries))
		return nil, 0, false
	}
	for i, e := range pa.entries {
		if msg := checkResult(len(e.s.events), e.req, results[i], false); msg != "" {
			t.Errorf("%v: entry %s: %s", pa, e.s.name, msg)
		}
		n += record(e, results[i])
	}
	return nil, n, true
}

// streamCalls appends over one AppendStream call until esd dies. Each
// round it locks 1 to crashStreamBatch streams (in index order, as call
// does), sends an append to each with exact expected revisions, all in
// flight at once, and records the answers as they come (in any order
// across the streams). It returns the appends left unanswered when the
// call broke, and the number of events acknowledged.
func (m *crashModel) streamCalls(t *testing.T, c *client, rng *rand.Rand, killed *atomic.Bool) (pending []*pendingAppend, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	call, err := c.streams.AppendStream(ctx)
	if err != nil {
		if !killed.Load() {
			t.Errorf("AppendStream failed before the kill: %v", err)
		}
		return nil, 0
	}
	for {
		var idx []int
		for k := 1 + rng.IntN(crashStreamBatch); len(idx) < k; {
			if i := rng.IntN(len(m.streams)); !slices.Contains(idx, i) {
				idx = append(idx, i)
			}
		}
		slices.Sort(idx)
		var ss []*crashStream
		for _, i := range idx {
			s := m.streams[i]
			s.mu.Lock()
			ss = append(ss, s)
		}
		unlock := func() {
			for _, s := range ss {
				s.mu.Unlock()
			}
		}
		for _, s := range ss {
			if s.poisoned {
				unlock()
				return pending, n // an earlier call failed: esd is dead
			}
		}

		sent := make(map[string]*pendingAppend) // by correlation id
		var sendErr error
		for j, s := range ss {
			req := &esdv1.AppendRequest{Stream: s.name}
			if len(s.events) == 0 {
				req.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
			} else {
				req.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: uint64(len(s.events) - 1)}
			}
			for range 1 + rng.IntN(crashMaxEvents) {
				req.Events = append(req.Events, randomEvent(rng))
			}
			id := strconv.Itoa(j)
			sent[id] = &pendingAppend{streamed: true, entries: []pendingEntry{{s: s, req: req}}, inFlight: !killed.Load()}
			if sendErr = call.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte(id), Append: req}); sendErr != nil {
				break // it may have gone out all the same
			}
		}
		var recvErr error
		for len(sent) > 0 && sendErr == nil {
			var a *esdv1.AppendStreamResponse
			if a, recvErr = call.Recv(); recvErr != nil {
				break
			}
			pa := sent[string(a.GetCorrelationId())]
			if pa == nil {
				t.Errorf("AppendStream answered correlation id %q, which no pending append has", a.GetCorrelationId())
				continue
			}
			delete(sent, string(a.GetCorrelationId()))
			e := pa.entries[0]
			if st := a.GetError(); st != nil {
				err := status.ErrorProto(st)
				t.Errorf("%v failed (a server answer, before or after the kill): %v (reason %q)", pa, err, reasonOf(err))
				e.s.poisoned = true // what it holds is unknown to the test: leave it alone
				continue
			}
			if msg := checkResult(len(e.s.events), e.req, a.GetSuccess(), false); msg != "" {
				t.Errorf("%v: %s", pa, msg)
			}
			n += record(e, a.GetSuccess())
		}
		if len(sent) == 0 {
			unlock()
			continue
		}
		// The call broke: esd is dead (or the test fails here).
		err := errors.Join(sendErr, recvErr)
		if !killed.Load() {
			t.Errorf("AppendStream broke before the kill: %v", err)
		}
		for _, pa := range sent {
			pa.err = err
			pa.entries[0].s.poisoned = true
			pending = append(pending, pa)
		}
		unlock()
		return pending, n
	}
}

// checkResult checks the answer r to req against the number of events
// its stream held before (known). A replay returns the original result,
// whose first revision the caller checks itself.
func checkResult(known int, req *esdv1.AppendRequest, r *esdv1.AppendResponse, replay bool) string {
	k := uint64(len(req.GetEvents()))
	if k == 0 { // a pure condition: the head, no positions
		if r.GetStreamExists() != (known > 0) || (known > 0 && r.GetLastRevision() != uint64(known-1)) || r.GetFirstPosition() != 0 || r.GetLastPosition() != 0 {
			return fmt.Sprintf("condition-only result %v, stream has %d events", r, known)
		}
		return ""
	}
	switch {
	case !replay && r.GetFirstRevision() != uint64(known):
		return fmt.Sprintf("first revision %d, want %d", r.GetFirstRevision(), known)
	case r.GetLastRevision() != r.GetFirstRevision()+k-1:
		return fmt.Sprintf("revisions %d..%d for %d events", r.GetFirstRevision(), r.GetLastRevision(), k)
	case r.GetFirstPosition() == 0 || r.GetLastPosition() != r.GetFirstPosition()+k-1:
		return fmt.Sprintf("positions %d..%d for %d events (one append's events take consecutive positions)", r.GetFirstPosition(), r.GetLastPosition(), k)
	case !r.GetStreamExists() || r.GetCommitTime() == nil:
		return fmt.Sprintf("result %v lacks stream_exists or commit_time", r)
	}
	return ""
}

// record adds an acknowledged entry's events to its stream, at the
// revisions and positions the server gave, and returns how many.
func record(e pendingEntry, r *esdv1.AppendResponse) int {
	for i, ev := range e.req.GetEvents() {
		e.s.events = append(e.s.events, sentEvent{
			ev: ev, stream: e.s.name,
			revision: r.GetFirstRevision() + uint64(i),
			position: r.GetFirstPosition() + uint64(i),
		})
	}
	return len(e.req.GetEvents())
}

// resolve runs on a restarted esd before anything else writes: it finds
// out whether each unanswered call was stored (entirely, or not at all),
// retries it with the same ids and expected revisions, and checks the
// retry stores it once: the original result for a stored call, a new
// append for a lost one. It returns how many calls had been stored.
func (m *crashModel) resolve(t *testing.T, c *client, pending []*pendingAppend) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	found := 0
	for _, pa := range pending {
		// What each stream holds beyond what is known.
		var stored, lost []string
		extras := make([][]*esdv1.RecordedEvent, len(pa.entries))
		for i, e := range pa.entries {
			got, err := c.readStream(ctx, e.s.name)
			// Not found is no failure for a stream with no acknowledged event.
			if err != nil && (len(e.s.events) > 0 || reasonOf(err) != "STREAM_NOT_FOUND") {
				t.Fatalf("ReadStream %s: %v", e.s.name, err)
			}
			known := len(e.s.events)
			if len(got) < known {
				t.Fatalf("%s: %d events after restart, but %d were acknowledged", e.s.name, len(got), known)
			}
			extra := got[known:]
			extras[i] = extra
			k := len(e.req.GetEvents())
			switch {
			case k == 0 && len(extra) == 0: // a pure condition stores nothing
			case k == 0:
				t.Errorf("%v: stream %s, a pure condition, holds %d events nobody acknowledged", pa, e.s.name, len(extra))
			case len(extra) == 0:
				lost = append(lost, e.s.name)
			case len(extra) != k:
				t.Errorf("%v: stream %s holds %d of the call's %d events: a partial append (%v)", pa, e.s.name, len(extra), k, idsOf(extra))
			default:
				for j, rec := range extra {
					want := sentEvent{ev: e.req.GetEvents()[j], stream: e.s.name, revision: uint64(known + j), position: extra[0].GetPosition() + uint64(j)}
					if msg := want.matches(rec); msg != "" {
						t.Errorf("%v: stream %s: unacknowledged event %d stored wrongly: %s", pa, e.s.name, j, msg)
					}
				}
				stored = append(stored, e.s.name)
			}
		}
		if len(stored) > 0 && len(lost) > 0 {
			t.Errorf("%v: not atomic: stored on %v, lost on %v", pa, stored, lost)
		}
		if len(stored) > 0 {
			found++
		}

		// Retry with the same ids and expected revisions.
		var results []*esdv1.AppendResponse
		var err error
		if pa.multi {
			var resp *esdv1.AppendMultiResponse
			if resp, err = c.streams.AppendMulti(ctx, &esdv1.AppendMultiRequest{Appends: pendingReqs(pa)}); err == nil {
				results = resp.GetResults()
			}
		} else {
			var resp *esdv1.AppendResponse
			if resp, err = c.streams.Append(ctx, pa.entries[0].req); err == nil {
				results = []*esdv1.AppendResponse{resp}
			}
		}
		if err != nil {
			t.Errorf("retry after restart of %v (stored: %v, lost: %v; it failed with %v at the kill): %v (reason %q)",
				pa, stored, lost, pa.err, err, reasonOf(err))
			continue
		}
		if len(results) != len(pa.entries) {
			t.Errorf("retry of %v: %d results for %d entries", pa, len(results), len(pa.entries))
			continue
		}
		for i, e := range pa.entries {
			r := results[i]
			if extra := extras[i]; len(extra) > 0 && len(e.req.GetEvents()) > 0 {
				// Stored before the kill: the original result, nothing new.
				if r.GetFirstRevision() != extra[0].GetRevision() || r.GetFirstPosition() != extra[0].GetPosition() ||
					r.GetLastPosition() != extra[len(extra)-1].GetPosition() {
					t.Errorf("retry of %v: entry %s was stored at revision %d position %d..%d, the retry answered %v (want the original result)",
						pa, e.s.name, extra[0].GetRevision(), extra[0].GetPosition(), extra[len(extra)-1].GetPosition(), r)
				}
				if msg := checkResult(len(e.s.events), e.req, r, true); msg != "" {
					t.Errorf("retry of %v: entry %s: %s", pa, e.s.name, msg)
				}
			} else if msg := checkResult(len(e.s.events), e.req, r, false); msg != "" {
				t.Errorf("retry of %v: entry %s: %s", pa, e.s.name, msg)
			}
			record(e, r)
			e.s.poisoned = false
		}
	}
	return found
}

// verify checks the store (checkStore) and that it holds every event the
// model knows, where the model says; with exact, nothing else.
func (m *crashModel) verify(t *testing.T, c *client, exact bool) {
	t.Helper()
	v := checkStore(t, c, m.names())
	total := 0
	for _, s := range m.streams {
		got := v.byStream[s.name]
		total += len(s.events)
		for i, want := range s.events {
			var rec *esdv1.RecordedEvent
			if i < len(got) {
				rec = got[i]
			}
			if msg := want.matches(rec); msg != "" {
				t.Errorf("%s revision %d (acknowledged at position %d, id %s): %s", s.name, i, want.position, want.ev.GetId(), msg)
			}
			if byID := v.byID[want.ev.GetId()]; byID == nil || byID.GetPosition() != want.position {
				t.Errorf("%s revision %d: id %s not in $all at position %d (found %v)", s.name, i, want.ev.GetId(), want.position, byID)
			}
		}
		if exact && len(got) > len(s.events) {
			t.Errorf("%s holds %d events, but only %d were sent and acknowledged (or retried): extra %v",
				s.name, len(got), len(s.events), idsOf(got[len(s.events):]))
		}
	}
	if exact && len(v.all) != total {
		t.Errorf("$all holds %d events, the clients stored %d", len(v.all), total)
	}
	for _, ev := range v.all {
		if !strings.HasPrefix(ev.GetStream(), "crash-") {
			t.Errorf("$all holds an event of %s, a stream no client wrote: %v", ev.GetStream(), ev)
		}
	}
}

// randomEvent makes an event with a client-chosen id and some of every
// field, data from a few bytes to about 1 KiB.
func randomEvent(rng *rand.Rand) *esdv1.ProposedEvent {
	pad := make([]byte, rng.IntN(1024))
	for i := range pad {
		pad[i] = 'a' + byte(rng.IntN(26))
	}
	ev := &esdv1.ProposedEvent{
		Id:   uuid.NewString(),
		Type: []string{"ItemAdded", "ItemRemoved", "PriceChanged"}[rng.IntN(3)],
		Data: fmt.Appendf(nil, `{"n":%d,"pad":%q}`, rng.Uint32(), pad),
	}
	if rng.IntN(2) == 0 {
		ev.ContentType = "application/json"
	}
	if rng.IntN(3) == 0 {
		ev.Metadata = fmt.Appendf(nil, `{"correlation":%q}`, uuid.NewString())
	}
	if rng.IntN(4) == 0 {
		ev.Tags = []string{"crash", fmt.Sprintf("t%d", rng.IntN(10))}
	}
	return ev
}

func pendingReqs(pa *pendingAppend) []*esdv1.AppendRequest {
	var reqs []*esdv1.AppendRequest
	for _, e := range pa.entries {
		reqs = append(reqs, e.req)
	}
	return reqs
}

func idsOf(evs []*esdv1.RecordedEvent) []string {
	var ids []string
	for _, ev := range evs {
		ids = append(ids, fmt.Sprintf("%s@%d", ev.GetId(), ev.GetPosition()))
	}
	return ids
}
