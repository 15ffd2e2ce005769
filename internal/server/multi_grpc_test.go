package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// streamsOnShards returns one stream name per shard of ts's writer, each
// starting with prefix, so that a test can make an AppendMulti span every
// shard. Names are returned in descending shard order, so that request
// order differs from the writer's locking order.
func streamsOnShards(t *testing.T, ts *testServer, prefix string) []string {
	t.Helper()
	n := ts.eng.Writer().Shards()
	byShard := make([]string, n)
	found := 0
	for i := 0; found < n; i++ {
		if i > 10000 {
			t.Fatal("no stream name found for some shard")
		}
		name := fmt.Sprintf("%s%d", prefix, i)
		if idx := ts.eng.Writer().ShardOf(name); byShard[idx] == "" {
			byShard[idx] = name
			found++
		}
	}
	out := make([]string, 0, n)
	for i := n - 1; i >= 0; i-- {
		out = append(out, byShard[i])
	}
	return out
}

func multiReq(entries ...*esdv1.AppendRequest) *esdv1.AppendMultiRequest {
	return &esdv1.AppendMultiRequest{Appends: entries}
}

// TestAppendMultiAtomicFailure: one entry whose condition fails (or that
// is refused otherwise) writes nothing anywhere, and the error names it.
func TestAppendMultiAtomicFailure(t *testing.T) {
	ts := newTestServer(t, withShards(4))
	ts.mustAppend(t, appendReq("elsewhere", xNoStream, event("Other", "")))
	takenID := ts.mustReadStream(t, "elsewhere")[0].GetId()

	tests := []struct {
		name   string
		failAt int
		// spoil turns entry failAt into the failing one.
		spoil  func(t *testing.T, stream string, e *esdv1.AppendRequest)
		code   codes.Code
		reason string
	}{
		{"wrong revision first", 0, func(_ *testing.T, _ string, e *esdv1.AppendRequest) { xExact(5).setAppend(e) },
			codes.Aborted, reasonWrongExpectedRevision},
		{"wrong revision last", 3, func(_ *testing.T, _ string, e *esdv1.AppendRequest) { xExact(5).setAppend(e) },
			codes.Aborted, reasonWrongExpectedRevision},
		{"pure condition fails", 2, func(_ *testing.T, _ string, e *esdv1.AppendRequest) {
			e.Events = nil
			xNoStream.setAppend(e)
		}, codes.Aborted, reasonWrongExpectedRevision},
		{"tombstoned entry", 1, func(t *testing.T, stream string, e *esdv1.AppendRequest) {
			ts.mustDelete(t, stream, true)
			xAny.setAppend(e)
		}, codes.FailedPrecondition, reasonStreamTombstoned},
		{"id stored on another stream", 3, func(_ *testing.T, _ string, e *esdv1.AppendRequest) {
			e.Events[1].Id = takenID
		}, codes.AlreadyExists, reasonEventIDConflict},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			streams := streamsOnShards(t, ts, fmt.Sprintf("atomic%d-", i))
			// Entries 0 and 2 exist (head 0); 1 and 3 are new, unless spoiled.
			var entries []*esdv1.AppendRequest
			for j, s := range streams {
				x := xNoStream
				if j%2 == 0 || j == tc.failAt {
					ts.mustAppend(t, appendReq(s, xNoStream, event("Seed", "")))
					x = xExact(0)
				}
				entries = append(entries, appendReq(s, x, events(2, "Multi")...))
			}
			failing := streams[tc.failAt]
			tc.spoil(t, failing, entries[tc.failAt])
			allBefore := ts.readAll(t)
			infoBefore := make([]*esdv1.StreamInfo, len(streams))
			for j, s := range streams {
				infoBefore[j] = ts.getStream(t, s)
			}

			_, err := ts.streams.AppendMulti(testCtx(t), multiReq(entries...))
			wantError(t, err, tc.code, tc.reason, failing)
			if tc.code == codes.Aborted {
				if d := conflictDetail(t, err); d.GetStream() != failing {
					t.Fatalf("detail names %q, want %q", d.GetStream(), failing)
				}
			}
			if diff := cmp.Diff(allBefore, ts.readAll(t), protocmp.Transform()); diff != "" {
				t.Fatalf("$all changed by a failed AppendMulti (-before +after):\n%s", diff)
			}
			for j, s := range streams {
				if diff := cmp.Diff(infoBefore[j], ts.getStream(t, s), protocmp.Transform()); diff != "" {
					t.Fatalf("stream %s changed by a failed AppendMulti (-before +after):\n%s", s, diff)
				}
				if infoBefore[j].GetCreated() == nil {
					_, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: s})
					wantError(t, err, codes.NotFound, reasonStreamNotFound, s)
				}
			}
		})
	}
}

// TestAppendMultiSuccess: every entry written in one commit, results in
// request order, pure conditions answered with the head.
func TestAppendMultiSuccess(t *testing.T) {
	ts := newTestServer(t, withShards(4))
	streams := streamsOnShards(t, ts, "ok-")
	ts.fill(t, streams[1], 3, "Seed") // head 2
	ts.fill(t, streams[3], 5, "Seed") // head 4: the pure condition
	before := ts.lastPosition(t)
	entries := []*esdv1.AppendRequest{
		appendReq(streams[0], xNoStream, events(2, "A")...),
		appendReq(streams[1], xExact(2), events(3, "B")...),
		appendReq(streams[2], xAny, events(1, "C")...),
		appendReq(streams[3], xExact(4)),
	}
	resp, err := ts.streams.AppendMulti(testCtx(t), multiReq(entries...))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResults()) != len(entries) {
		t.Fatalf("%d results for %d entries", len(resp.GetResults()), len(entries))
	}
	wantFirst := []uint64{0, 3, 0}
	var positions []uint64
	commit := resp.GetResults()[0].GetCommitTime()
	for i, e := range entries[:3] {
		r := resp.GetResults()[i]
		n := uint64(len(e.GetEvents()))
		if r.GetFirstRevision() != wantFirst[i] || r.GetLastRevision() != wantFirst[i]+n-1 || !r.GetStreamExists() ||
			r.GetLastPosition()-r.GetFirstPosition()+1 != n || !proto.Equal(r.GetCommitTime(), commit) || commit == nil {
			t.Fatalf("result %d: %v (want revisions from %d, %d events, commit time %v)", i, r, wantFirst[i], n, commit)
		}
		evs := ts.mustReadStream(t, e.GetStream())
		got := evs[len(evs)-int(n):]
		for j, ev := range got {
			if ev.GetId() != e.GetEvents()[j].GetId() || ev.GetRevision() != r.GetFirstRevision()+uint64(j) ||
				ev.GetPosition() != r.GetFirstPosition()+uint64(j) {
				t.Fatalf("entry %d event %d stored as %v, result %v", i, j, ev, r)
			}
			positions = append(positions, ev.GetPosition())
		}
	}
	cond := resp.GetResults()[3]
	if cond.GetLastRevision() != 4 || !cond.GetStreamExists() || cond.GetFirstPosition() != 0 || cond.GetLastPosition() != 0 {
		t.Fatalf("pure condition result %v, want head 4", cond)
	}
	// One commit: the six events take the six positions after before.
	seen := make(map[uint64]bool)
	for _, p := range positions {
		if p <= before || p > before+6 || seen[p] {
			t.Fatalf("positions %v, want each of %d..%d once", positions, before+1, before+6)
		}
		seen[p] = true
	}
	if lp := ts.lastPosition(t); lp != before+6 {
		t.Fatalf("last position %d, want %d", lp, before+6)
	}

	// Only conditions: nothing written, the heads returned.
	resp, err = ts.streams.AppendMulti(testCtx(t), multiReq(appendReq(streams[1], xExact(5)), appendReq(streams[2], xExists),
		appendReq("ok-never", xNoStream)))
	if err != nil {
		t.Fatal(err)
	}
	wantHeads := []*esdv1.AppendResponse{
		{FirstRevision: 5, LastRevision: 5, StreamExists: true},
		{FirstRevision: 0, LastRevision: 0, StreamExists: true},
		{},
	}
	if diff := cmp.Diff(wantHeads, resp.GetResults(), cmpProto); diff != "" {
		t.Fatalf("results of conditions only (-want +got):\n%s", diff)
	}
	_, err = ts.streams.AppendMulti(testCtx(t), multiReq(appendReq(streams[1], xExact(5)), appendReq(streams[2], xExact(1))))
	wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, streams[2])
	if lp := ts.lastPosition(t); lp != before+6 {
		t.Fatalf("conditions moved the last position to %d", lp)
	}

	// The same stream twice is refused before anything is decided.
	_, err = ts.streams.AppendMulti(testCtx(t), multiReq(
		appendReq(streams[0], xAny, event("X", "")), appendReq(streams[0], xAny, event("Y", ""))))
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	if br := badRequest(err); br == nil || len(br.GetFieldViolations()) != 1 || br.GetFieldViolations()[0].GetField() != "appends[1].stream" {
		t.Fatalf("BadRequest %v, want appends[1].stream", br)
	}
	if lp := ts.lastPosition(t); lp != before+6 {
		t.Fatalf("refused AppendMulti moved the last position to %d", lp)
	}
}

// TestAppendMultiConcurrent: AppendMultis over overlapping stream sets,
// in any order, race single appends; nothing deadlocks (every call has a
// deadline), every AppendMulti is all or nothing, and each one's events
// take contiguous positions.
func TestAppendMultiConcurrent(t *testing.T) {
	const nStreams = 8
	multiWorkers, singleWorkers, opsPerWorker := 8, 4, 25
	if testing.Short() {
		opsPerWorker = 10
	}
	ts := newTestServer(t, withShards(4))
	names := make([]string, nStreams)
	var (
		mu        sync.Mutex
		successes []success
		committed [][]string          // the ids of each successful AppendMulti
		failedIDs = map[string]bool{} // ids of failed calls: never stored
	)
	for i := range names {
		names[i] = fmt.Sprintf("cc-%d", i)
		ev := event("Seed", "")
		resp := ts.mustAppend(t, appendReq(names[i], xNoStream, ev))
		successes = append(successes, success{stream: names[i], ids: []string{ev.GetId()}, resp: resp})
	}
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	defer cancel()
	learn := func(known []xrev, err error) error {
		st := status.Convert(err)
		for _, d := range st.Details() {
			if w, ok := d.(*esdv1.WrongExpectedRevision); ok {
				for i, n := range names {
					if n == w.GetStream() {
						known[i] = xExact(w.GetActualHead())
					}
				}
				return nil
			}
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("deadline passed: deadlock? %w", err)
		}
		return err
	}
	fail := func(evs []*esdv1.ProposedEvent) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			failedIDs[e.GetId()] = true
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, multiWorkers+singleWorkers)
	for w := range multiWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			known := make([]xrev, nStreams)
			for i := range known {
				known[i] = xExact(0)
			}
			for range opsPerWorker {
				pick := rng.Perm(nStreams)[:2+rng.IntN(3)]
				var entries []*esdv1.AppendRequest
				var all []*esdv1.ProposedEvent
				for _, s := range pick {
					x := xAny
					if rng.IntN(2) == 0 {
						x = known[s]
					}
					evs := events(1+rng.IntN(2), fmt.Sprintf("M%d", w))
					if rng.IntN(5) == 0 { // a pure condition
						evs = nil
					}
					entries = append(entries, appendReq(names[s], x, evs...))
					all = append(all, evs...)
				}
				resp, err := ts.streams.AppendMulti(ctx, multiReq(entries...))
				if err != nil {
					fail(all)
					if err := learn(known, err); err != nil {
						errc <- fmt.Errorf("AppendMulti: %w", err)
						return
					}
					continue
				}
				var ids []string
				mu.Lock()
				for i, e := range entries {
					r := resp.GetResults()[i]
					known[pick[i]] = xExact(r.GetLastRevision())
					if len(e.GetEvents()) == 0 {
						continue
					}
					s := success{stream: e.GetStream(), resp: r}
					for _, ev := range e.GetEvents() {
						s.ids = append(s.ids, ev.GetId())
						ids = append(ids, ev.GetId())
					}
					successes = append(successes, s)
				}
				if len(ids) > 0 {
					committed = append(committed, ids)
				}
				mu.Unlock()
			}
		}()
	}
	for w := range singleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			known := make([]xrev, nStreams)
			for i := range known {
				known[i] = xExact(0)
			}
			for range opsPerWorker * 2 {
				s := rng.IntN(nStreams)
				evs := events(1, fmt.Sprintf("S%d", w))
				resp, err := ts.streams.Append(ctx, appendReq(names[s], known[s], evs...))
				if err != nil {
					fail(evs)
					if err := learn(known, err); err != nil {
						errc <- fmt.Errorf("Append: %w", err)
						return
					}
					continue
				}
				known[s] = xExact(resp.GetLastRevision())
				mu.Lock()
				successes = append(successes, success{stream: names[s], ids: []string{evs[0].GetId()}, resp: resp})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d AppendMultis committed, %d writes acknowledged, %d events refused", len(committed), len(successes), len(failedIDs))
	checkAcknowledged(t, ts, successes) // also: $all holds nothing else, so no refused id
	pos := make(map[string]uint64)
	for _, e := range ts.readAll(t) {
		pos[e.GetId()] = e.GetPosition()
		if failedIDs[e.GetId()] {
			t.Fatalf("event %s of a failed call is stored at position %d", e.GetId(), e.GetPosition())
		}
	}
	for _, ids := range committed {
		lo, hi := pos[ids[0]], pos[ids[0]]
		for _, id := range ids {
			lo, hi = min(lo, pos[id]), max(hi, pos[id])
		}
		if hi-lo+1 != uint64(len(ids)) {
			t.Fatalf("an AppendMulti's %d events span positions %d..%d: not one commit", len(ids), lo, hi)
		}
	}
}

// TestAppendMultiConflictDeltaLimit: the conflict delta of an AppendMulti
// follows the conflict_delta_events of the entry that failed.
func TestAppendMultiConflictDeltaLimit(t *testing.T) {
	ts := newTestServer(t)
	ts.fill(t, "mdelta-a", 5, "A")
	ts.fill(t, "mdelta-b", 5, "B")
	limit := func(n uint32) *uint32 { return &n }
	tests := []struct {
		name       string
		limA, limB *uint32
		want       []uint64
	}{
		{"failing entry unset, other 0", limit(0), nil, revs(2, 4)},
		{"failing entry 2", nil, limit(2), revs(2, 3)},
		{"failing entry 0", nil, limit(0), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := appendReq("mdelta-a", xExact(4), event("A", ""))
			a.ConflictDeltaEvents = tc.limA
			b := appendReq("mdelta-b", xExact(1), event("B", ""))
			b.ConflictDeltaEvents = tc.limB
			_, err := ts.streams.AppendMulti(testCtx(t), multiReq(a, b))
			wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, "mdelta-b")
			if diff := cmp.Diff(tc.want, revisionsOf(conflictDetail(t, err).GetEventsSince())); diff != "" {
				t.Fatalf("events_since revisions (-want +got):\n%s", diff)
			}
			if got, want := conflictDetail(t, err).GetTruncated(), len(tc.want) < 3; got != want { // the head is revision 4
				t.Fatalf("truncated %t, want %t", got, want)
			}
		})
	}
}
