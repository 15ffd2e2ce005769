package server

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// Stream states of the expected-revision table.
const (
	stNever      = "never-written"
	stHead2      = "head-2"
	stSoftDelete = "soft-deleted"
	stTombstoned = "tombstoned"
)

// setUpState brings stream into state: never written; three events (head
// 2); three events then a soft delete; three events then a tombstone.
func (ts *testServer) setUpState(t *testing.T, stream, state string) {
	t.Helper()
	if state == stNever {
		return
	}
	ts.mustAppend(t, appendReq(stream, xNoStream, events(3, "Seeded")...))
	switch state {
	case stSoftDelete:
		ts.mustDelete(t, stream, false)
	case stTombstoned:
		ts.mustDelete(t, stream, true)
	}
}

// TestAppendExpectedRevision runs every expected-revision kind against
// every stream state: success with the right revisions and position, or
// the right error with a complete WrongExpectedRevision detail, and in
// every failure nothing written.
func TestAppendExpectedRevision(t *testing.T) {
	ts := newTestServer(t)
	type outcome struct {
		ok       bool
		firstRev uint64     // on success
		code     codes.Code // on failure
		reason   string
		head     uint64   // WrongExpectedRevision.actual_head
		exists   bool     // WrongExpectedRevision.stream_exists
		delta    []uint64 // revisions of events_since
	}
	okAt := func(rev uint64) outcome { return outcome{ok: true, firstRev: rev} }
	wrong := func(head uint64, exists bool, delta ...uint64) outcome {
		return outcome{code: codes.Aborted, reason: reasonWrongExpectedRevision, head: head, exists: exists, delta: delta}
	}
	tomb := outcome{code: codes.FailedPrecondition, reason: reasonStreamTombstoned}
	expects := []xrev{xAny, xUnset, xNoStream, xExists, xExact(2), xExact(1), xExact(3)}
	want := map[string][]outcome{
		//            any        unset      no_stream             stream_exists  exact 2         exact 1             exact 3
		stNever:      {okAt(0), okAt(0), okAt(0), wrong(0, false), wrong(0, false), wrong(0, false), wrong(0, false)},
		stHead2:      {okAt(3), okAt(3), wrong(2, true, 0, 1, 2), okAt(3), okAt(3), wrong(2, true, 2), wrong(2, true)},
		stSoftDelete: {okAt(3), okAt(3), okAt(3), wrong(0, false), wrong(0, false), wrong(0, false), wrong(0, false)},
		stTombstoned: {tomb, tomb, tomb, tomb, tomb, tomb, tomb},
	}
	for _, state := range []string{stNever, stHead2, stSoftDelete, stTombstoned} {
		for i, x := range expects {
			tc := want[state][i]
			t.Run(state+"/"+x.String(), func(t *testing.T) {
				stream := fmt.Sprintf("exp-%s-%s", state, x)
				ts.setUpState(t, stream, state)
				before := ts.lastPosition(t)
				ev := event("Tried", "x")
				resp, err := ts.streams.Append(testCtx(t), appendReq(stream, x, ev))
				if !tc.ok {
					wantError(t, err, tc.code, tc.reason, stream)
					if after := ts.lastPosition(t); after != before {
						t.Fatalf("failed append moved the last position from %d to %d", before, after)
					}
					if tc.code != codes.Aborted {
						return
					}
					d := conflictDetail(t, err)
					if d.GetStream() != stream || d.GetActualHead() != tc.head || d.GetStreamExists() != tc.exists {
						t.Fatalf("detail stream %q head %d exists %t, want %q %d %t",
							d.GetStream(), d.GetActualHead(), d.GetStreamExists(), stream, tc.head, tc.exists)
					}
					wantX := x
					if x == xUnset {
						wantX = xAny
					}
					if diff := cmp.Diff(wantX.proto(), d.GetExpected(), protocmp.Transform()); diff != "" {
						t.Fatalf("detail expected (-want +got):\n%s", diff)
					}
					if diff := cmp.Diff(tc.delta, revisionsOf(d.GetEventsSince())); diff != "" {
						t.Fatalf("events_since revisions (-want +got):\n%s", diff)
					}
					if d.GetTruncated() {
						t.Fatal("truncated delta")
					}
					return
				}
				if err != nil {
					t.Fatalf("append: %v", err)
				}
				wantResp := &esdv1.AppendResponse{
					FirstRevision: tc.firstRev, LastRevision: tc.firstRev,
					FirstPosition: before + 1, LastPosition: before + 1,
					StreamExists: true, CommitTime: resp.GetCommitTime(),
				}
				if diff := cmp.Diff(wantResp, resp, protocmp.Transform()); diff != "" {
					t.Fatalf("response (-want +got):\n%s", diff)
				}
				if resp.GetCommitTime() == nil {
					t.Fatal("no commit_time")
				}
				evs := ts.mustReadStream(t, stream)
				last := evs[len(evs)-1]
				if last.GetId() != ev.GetId() || last.GetRevision() != tc.firstRev || last.GetPosition() != before+1 ||
					!proto.Equal(last.GetCreated(), resp.GetCommitTime()) {
					t.Fatalf("read back %v", last)
				}
				if state == stSoftDelete && len(evs) != 1 {
					t.Fatalf("after re-append to a soft-deleted stream read %d events, want only the new one", len(evs))
				}
			})
		}
	}
}

// TestAppendNoEvents: an append without events writes nothing, checks
// the expected revision and reports the head.
func TestAppendNoEvents(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		state  string
		x      xrev
		ok     bool
		head   uint64
		exists bool
	}{
		{stNever, xAny, true, 0, false},
		{stNever, xNoStream, true, 0, false},
		{stNever, xExists, false, 0, false},
		{stHead2, xAny, true, 2, true},
		{stHead2, xExact(2), true, 2, true},
		{stHead2, xExists, true, 2, true},
		{stHead2, xExact(1), false, 0, false},
		{stHead2, xNoStream, false, 0, false},
		{stSoftDelete, xNoStream, true, 0, false},
		{stSoftDelete, xExact(2), false, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.state+"/"+tc.x.String(), func(t *testing.T) {
			stream := fmt.Sprintf("check-%s-%s", tc.state, tc.x)
			ts.setUpState(t, stream, tc.state)
			before := ts.lastPosition(t)
			resp, err := ts.streams.Append(testCtx(t), appendReq(stream, tc.x))
			if after := ts.lastPosition(t); after != before {
				t.Fatalf("pure check moved the last position from %d to %d", before, after)
			}
			if !tc.ok {
				wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, stream)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetLastRevision() != tc.head || resp.GetStreamExists() != tc.exists ||
				resp.GetFirstPosition() != 0 || resp.GetLastPosition() != 0 || resp.GetCommitTime() != nil {
				t.Fatalf("response %v, want head %d exists %t and no positions or commit time", resp, tc.head, tc.exists)
			}
			if got := ts.getStream(t, stream); tc.state == stNever && got.GetCreated() != nil {
				t.Fatalf("a pure check created the stream: %v", got)
			}
		})
	}
}

func revisionsOf(evs []*esdv1.RecordedEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.GetRevision())
	}
	return out
}

func revs(from, to uint64) []uint64 {
	var out []uint64
	for r := from; r <= to; r++ {
		out = append(out, r)
	}
	return out
}

// TestConflictDelta: the WrongExpectedRevision detail carries the events
// after the expected revision, at most 16 (or the request's
// conflict_delta_events) and about 4 KiB, so that the status fits in 8 KiB
// of metadata.
func TestConflictDelta(t *testing.T) {
	ts := newTestServer(t)
	ts.fill(t, "delta-1", 20, "Counted")
	stored := ts.mustReadStream(t, "delta-1")

	big := func(n int) *esdv1.ProposedEvent {
		return &esdv1.ProposedEvent{Id: newID(), Type: "Big", Data: []byte(strings.Repeat("b", n))}
	}
	ts.mustAppend(t, appendReq("delta-big", xNoStream,
		big(1500), big(1500), big(1500), big(5000), big(100), big(100)))
	storedBig := ts.mustReadStream(t, "delta-big")
	ts.fill(t, "delta-del", 3, "Deleted") // revisions 0..2, deleted
	ts.mustDelete(t, "delta-del", false)
	ts.fill(t, "delta-del", 2, "Visible") // revisions 3, 4
	storedDel := append(make([]*esdv1.RecordedEvent, 3), ts.mustReadStream(t, "delta-del")...)
	limit := func(n uint32) *uint32 { return &n }

	tests := []struct {
		name      string
		stream    string
		x         xrev
		limit     *uint32 // conflict_delta_events; nil: unset
		stored    []*esdv1.RecordedEvent
		want      []uint64
		truncated bool
	}{
		{"16 of 17 after exact 2", "delta-1", xExact(2), nil, stored, revs(3, 18), true},
		{"exactly 16 after exact 3", "delta-1", xExact(3), nil, stored, revs(4, 19), false},
		{"2 after exact 17", "delta-1", xExact(17), nil, stored, revs(18, 19), false},
		{"from the start for no_stream", "delta-1", xNoStream, nil, stored, revs(0, 15), true},
		{"nothing after a revision past the head", "delta-1", xExact(25), nil, stored, nil, false},
		{"cut at 4 KiB", "delta-big", xExact(0), nil, storedBig, revs(1, 2), true},
		{"a first event over 4 KiB is left out", "delta-big", xExact(2), nil, storedBig, nil, true},
		{"small rest", "delta-big", xExact(3), nil, storedBig, revs(4, 5), false},
		{"deleted events left out", "delta-del", xExact(1), nil, storedDel, revs(3, 4), false},
		{"deleted events left out for no_stream", "delta-del", xNoStream, nil, storedDel, revs(3, 4), false},
		{"limit 0: none", "delta-1", xExact(2), limit(0), stored, nil, true},
		{"limit 0, no_stream: none", "delta-1", xNoStream, limit(0), stored, nil, true},
		{"limit 3", "delta-1", xExact(2), limit(3), stored, revs(3, 5), true},
		{"limit 3 not reached", "delta-1", xExact(17), limit(3), stored, revs(18, 19), false},
		{"limit above 16 is 16", "delta-1", xExact(2), limit(1000), stored, revs(3, 18), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := appendReq(tc.stream, tc.x, event("Late", ""))
			req.ConflictDeltaEvents = tc.limit
			_, err := ts.streams.Append(testCtx(t), req)
			wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, tc.stream)
			d := conflictDetail(t, err)
			if diff := cmp.Diff(tc.want, revisionsOf(d.GetEventsSince())); diff != "" {
				t.Fatalf("events_since revisions (-want +got):\n%s", diff)
			}
			if d.GetTruncated() != tc.truncated {
				t.Fatalf("truncated %t, want %t", d.GetTruncated(), tc.truncated)
			}
			for _, e := range d.GetEventsSince() {
				if !proto.Equal(tc.stored[e.GetRevision()], e) {
					t.Fatalf("delta event at revision %d differs from the stored one", e.GetRevision())
				}
			}
			// grpc-status-details-bin travels base64-encoded: 5 KiB of
			// status is under 7 KiB of metadata.
			if n := proto.Size(status.Convert(err).Proto()); n > 5<<10 {
				t.Fatalf("status of %d bytes, want at most 5 KiB", n)
			}
		})
	}
	// The detail of a failed conditional delete carries the delta too.
	_, err := ts.streams.DeleteStream(testCtx(t), deleteReq("delta-1", xExact(17), false))
	wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, "delta-1")
	if got := revisionsOf(conflictDetail(t, err).GetEventsSince()); !cmp.Equal(got, revs(18, 19)) {
		t.Fatalf("delete's delta %v", got)
	}
}

// success is one acknowledged append of the race test.
type success struct {
	stream string
	ids    []string
	resp   *esdv1.AppendResponse
}

// TestAppendRace: goroutines append to a few streams with exact expected
// revisions learned from conflict details. Exactly one append wins each
// revision; revisions and positions are gap-free; every acknowledged
// event is stored once, where its response said.
func TestAppendRace(t *testing.T) {
	workers, streams, target := 32, 4, 240 // target: appends that win
	if testutil.RaceEnabled {
		target = 80
	}
	if testing.Short() {
		workers, target = 16, 40
	}
	for _, shards := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) {
			ts := newTestServer(t, withShards(shards))
			var (
				mu        sync.Mutex
				successes []success
				wins      atomic.Int64
				conflicts atomic.Int64
				wg        sync.WaitGroup
			)
			ctx := testCtx(t)
			errc := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					known := make([]xrev, streams) // what this worker believes of each stream
					for i := range known {
						known[i] = xNoStream
					}
					for wins.Load() < int64(target) {
						s := rng.IntN(streams)
						stream := fmt.Sprintf("race-%d", s)
						evs := events(1+rng.IntN(3), fmt.Sprintf("W%d", w))
						resp, err := ts.streams.Append(ctx, appendReq(stream, known[s], evs...))
						if err != nil {
							st := status.Convert(err)
							var d *esdv1.WrongExpectedRevision
							for _, det := range st.Details() {
								if x, ok := det.(*esdv1.WrongExpectedRevision); ok {
									d = x
								}
							}
							if st.Code() != codes.Aborted || d == nil {
								errc <- fmt.Errorf("append to %s: %w", stream, err)
								return
							}
							conflicts.Add(1)
							if d.GetStreamExists() {
								known[s] = xExact(d.GetActualHead())
							} else {
								known[s] = xNoStream
							}
							continue
						}
						wins.Add(1)
						known[s] = xExact(resp.GetLastRevision())
						ids := make([]string, len(evs))
						for i, e := range evs {
							ids[i] = e.GetId()
						}
						mu.Lock()
						successes = append(successes, success{stream: stream, ids: ids, resp: resp})
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
			t.Logf("%d appends won, %d conflicts", len(successes), conflicts.Load())
			checkAcknowledged(t, ts, successes)
		})
	}
}

// checkAcknowledged checks that successes tile every stream's revisions
// from 0 without gap or overlap, and that $all holds exactly their events,
// at contiguous positions from 1, each where its response said.
func checkAcknowledged(t *testing.T, ts *testServer, successes []success) {
	t.Helper()
	byStream := make(map[string][]success)
	for _, s := range successes {
		if n := uint64(len(s.ids)); s.resp.GetLastRevision()-s.resp.GetFirstRevision()+1 != n ||
			s.resp.GetLastPosition()-s.resp.GetFirstPosition()+1 != n {
			t.Fatalf("response %v for %d events", s.resp, n)
		}
		byStream[s.stream] = append(byStream[s.stream], s)
	}
	type place struct {
		stream   string
		rev, pos uint64
	}
	want := make(map[string]place) // event id -> where the responses put it
	total := 0
	for stream, ss := range byStream {
		sort.Slice(ss, func(i, j int) bool { return ss[i].resp.GetFirstRevision() < ss[j].resp.GetFirstRevision() })
		next := uint64(0)
		for _, s := range ss {
			if s.resp.GetFirstRevision() != next {
				t.Fatalf("stream %s: an append acknowledged at revision %d, want %d (two winners or a gap)",
					stream, s.resp.GetFirstRevision(), next)
			}
			for i, id := range s.ids {
				if _, dup := want[id]; dup {
					t.Fatalf("id %s acknowledged twice", id)
				}
				want[id] = place{stream, next + uint64(i), s.resp.GetFirstPosition() + uint64(i)}
			}
			next = s.resp.GetLastRevision() + 1
			total += len(s.ids)
		}
		evs := ts.mustReadStream(t, stream)
		if uint64(len(evs)) != next {
			t.Fatalf("stream %s holds %d events, %d acknowledged", stream, len(evs), next)
		}
		for i, e := range evs {
			p, ok := want[e.GetId()]
			if !ok || e.GetRevision() != uint64(i) || p.rev != uint64(i) || p.pos != e.GetPosition() || p.stream != stream {
				t.Fatalf("stream %s revision %d: stored %v, acknowledged %+v", stream, i, e, p)
			}
		}
	}
	all := ts.readAll(t)
	if len(all) != total {
		t.Fatalf("$all holds %d events, %d acknowledged", len(all), total)
	}
	lastRev := make(map[string]uint64)
	for i, e := range all {
		if e.GetPosition() != uint64(i+1) {
			t.Fatalf("$all event %d at position %d: positions not contiguous from 1", i, e.GetPosition())
		}
		p := want[e.GetId()]
		if p.stream != e.GetStream() || p.rev != e.GetRevision() || p.pos != e.GetPosition() {
			t.Fatalf("$all position %d holds %v, acknowledged as %+v", e.GetPosition(), e, p)
		}
		if r, seen := lastRev[e.GetStream()]; seen && e.GetRevision() != r+1 {
			t.Fatalf("stream %s: revision %d follows %d in $all", e.GetStream(), e.GetRevision(), r)
		}
		lastRev[e.GetStream()] = e.GetRevision()
	}
	if lp := ts.lastPosition(t); lp != uint64(total) {
		t.Fatalf("last position %d, want %d", lp, total)
	}
}
