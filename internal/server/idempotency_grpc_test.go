package server

import (
	"fmt"
	"sync"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// withIDs returns copies of evs carrying the given ids.
func withIDs(ids ...string) []*esdv1.ProposedEvent {
	out := make([]*esdv1.ProposedEvent, len(ids))
	for i, id := range ids {
		out[i] = &esdv1.ProposedEvent{Id: id, Type: "Idem", Data: []byte("data " + id)}
	}
	return out
}

// TestIdempotentAppend: a retry (same ids, same order, same stream)
// returns the original response and stores nothing; partial or foreign
// reuse of ids is EVENT_ID_CONFLICT; all of it also after a restart.
func TestIdempotentAppend(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	a, b, c := newID(), newID(), newID()
	ts.mustAppend(t, appendReq("idem-1", xNoStream, event("First", ""))) // the ids land at revisions 1, 2
	orig := ts.mustAppend(t, appendReq("idem-1", xExact(0), withIDs(a, b)...))
	if orig.GetFirstRevision() != 1 || orig.GetLastRevision() != 2 || orig.GetCommitTime() == nil {
		t.Fatalf("original append: %v", orig)
	}
	ts.mustAppend(t, appendReq("idem-1", xAny, withIDs(c)...)) // the stream moves on
	count := len(ts.readAll(t))

	retries := func(t *testing.T) {
		for _, x := range []xrev{xExact(0), xAny, xUnset, xExact(7), xNoStream, xExists} {
			t.Run("retry with "+x.String(), func(t *testing.T) {
				got, err := ts.streams.Append(testCtx(t), appendReq("idem-1", x, withIDs(a, b)...))
				if err != nil {
					t.Fatalf("retry: %v", err)
				}
				if diff := cmp.Diff(orig, got, protocmp.Transform()); diff != "" {
					t.Fatalf("retry answered differently (-original +retry):\n%s", diff)
				}
			})
		}
		refusals := []struct {
			name   string
			stream string
			ids    []string
			code   codes.Code
			reason string
		}{
			{"some ids stored, some new", "idem-1", []string{a, b, newID()}, codes.AlreadyExists, reasonEventIDConflict},
			{"a new id then stored ones", "idem-1", []string{newID(), a, b}, codes.AlreadyExists, reasonEventIDConflict},
			{"stored ids in another order", "idem-1", []string{b, a}, codes.AlreadyExists, reasonEventIDConflict},
			{"ids of two appends and a new one", "idem-1", []string{b, c, newID()}, codes.AlreadyExists, reasonEventIDConflict},
			// b and c sit at consecutive revisions but were stored by two
			// appends: no append had these ids, so this is no retry (the
			// "original result" would mix two commits).
			{"ids of two appends", "idem-1", []string{b, c}, codes.AlreadyExists, reasonEventIDConflict},
			{"ids stored on another stream", "idem-2", []string{a, b}, codes.AlreadyExists, reasonEventIDConflict},
			{"one id stored on another stream", "idem-2", []string{newID(), c}, codes.AlreadyExists, reasonEventIDConflict},
			{"an id twice in one request", "idem-3", []string{a, a}, codes.InvalidArgument, reasonInvalidArgument},
		}
		for _, tc := range refusals {
			t.Run(tc.name, func(t *testing.T) {
				_, err := ts.streams.Append(testCtx(t), appendReq(tc.stream, xAny, withIDs(tc.ids...)...))
				wantError(t, err, tc.code, tc.reason, tc.stream)
				if tc.code == codes.InvalidArgument {
					if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != "events[1].id" {
						t.Fatalf("BadRequest %v, want events[1].id", br)
					}
				}
			})
		}
		if n := len(ts.readAll(t)); n != count {
			t.Fatalf("$all holds %d events, want still %d", n, count)
		}
		if got := ts.getStream(t, "idem-2"); got.GetCreated() != nil {
			t.Fatalf("a refused append created idem-2: %v", got)
		}
	}
	retries(t)
	ts.restart()
	t.Run("after restart", retries)
}

// TestIdempotentAppendMulti: a retried AppendMulti returns the original
// results; one that repeats only some of its entries' ids is refused.
func TestIdempotentAppendMulti(t *testing.T) {
	ts := newTestServer(t, withShards(4))
	streams := streamsOnShards(t, ts, "midem-")
	var entries []*esdv1.AppendRequest
	for _, s := range streams {
		entries = append(entries, appendReq(s, xNoStream, withIDs(newID(), newID())...))
	}
	orig, err := ts.streams.AppendMulti(testCtx(t), multiReq(entries...))
	if err != nil {
		t.Fatal(err)
	}
	count := len(ts.readAll(t))
	check := func(t *testing.T) {
		got, err := ts.streams.AppendMulti(testCtx(t), multiReq(entries...))
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if diff := cmp.Diff(orig, got, protocmp.Transform()); diff != "" {
			t.Fatalf("retry answered differently (-original +retry):\n%s", diff)
		}
		mixed := proto.Clone(multiReq(entries...)).(*esdv1.AppendMultiRequest)
		mixed.Appends[2].Events = withIDs(newID()) // new events; the other entries repeat
		xAny.setAppend(mixed.Appends[2])
		_, err = ts.streams.AppendMulti(testCtx(t), mixed)
		wantError(t, err, codes.AlreadyExists, reasonEventIDConflict, "")
		if n := len(ts.readAll(t)); n != count {
			t.Fatalf("$all holds %d events, want still %d", n, count)
		}
	}
	check(t)
	ts.restart()
	t.Run("after restart", check)
}

// TestIdempotentConcurrentRetry: a retry sent while the original is in
// flight yields one stored copy and two equal responses, whether the two
// meet in one writer round or not.
func TestIdempotentConcurrentRetry(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 10
	}
	ts := newTestServer(t, withShards(2))
	for i := range rounds {
		stream := fmt.Sprintf("twice-%d", i%3)
		req := appendReq(stream, xAny, withIDs(newID(), newID(), newID())...)
		var (
			wg    sync.WaitGroup
			resps [2]*esdv1.AppendResponse
			errs  [2]error
			start = make(chan struct{})
		)
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resps[j], errs[j] = ts.streams.Append(testCtx(t), req)
			}()
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: %v, %v", i, errs[0], errs[1])
		}
		if diff := cmp.Diff(resps[0], resps[1], protocmp.Transform()); diff != "" {
			t.Fatalf("round %d: the two answers differ:\n%s", i, diff)
		}
		evs := ts.mustReadStream(t, stream)
		n := 0
		for _, e := range evs {
			for _, pe := range req.GetEvents() {
				if e.GetId() == pe.GetId() {
					n++
				}
			}
		}
		if n != 3 {
			t.Fatalf("round %d: %d copies of the 3 events stored", i, n)
		}
	}
	if n := len(ts.readAll(t)); n != 3*rounds {
		t.Fatalf("$all holds %d events, want %d", n, 3*rounds)
	}
}

// TestIDRaceAcrossShards: two appends to streams of different shards
// that carry the same new id race; exactly one wins and the other is
// EVENT_ID_CONFLICT, and appends queued behind the loser on its stream
// are decided again, not lost or misnumbered.
func TestIDRaceAcrossShards(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 15
	}
	ts := newTestServer(t, withShards(2))
	pair := streamsOnShards(t, ts, "idrace-")
	var (
		mu        sync.Mutex
		successes []success
		conflicts int
	)
	record := func(stream string, evs []*esdv1.ProposedEvent, resp *esdv1.AppendResponse) {
		s := success{stream: stream, resp: resp}
		for _, e := range evs {
			s.ids = append(s.ids, e.GetId())
		}
		mu.Lock()
		successes = append(successes, s)
		mu.Unlock()
	}
	for i := range rounds {
		shared := newID()
		var wg sync.WaitGroup
		start := make(chan struct{})
		wins := make(chan bool, 2)
		for _, stream := range pair {
			wg.Add(2)
			go func() { // the contender
				defer wg.Done()
				<-start
				evs := withIDs(newID(), shared)
				resp, err := ts.streams.Append(testCtx(t), appendReq(stream, xAny, evs...))
				if err != nil {
					if msg := errorMismatch(err, codes.AlreadyExists, reasonEventIDConflict, stream); msg != "" {
						t.Error(msg)
					}
					wins <- false
					return
				}
				record(stream, evs, resp)
				wins <- true
			}()
			go func() { // a bystander on the same stream
				defer wg.Done()
				<-start
				evs := events(1+i%2, "Bystander")
				resp, err := ts.streams.Append(testCtx(t), appendReq(stream, xAny, evs...))
				if err != nil {
					t.Errorf("bystander: %v", err)
					return
				}
				record(stream, evs, resp)
			}()
		}
		close(start)
		wg.Wait()
		close(wins)
		won := 0
		for w := range wins {
			if w {
				won++
			} else {
				conflicts++
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d appends of one id won", i, won)
		}
	}
	t.Logf("%d id conflicts", conflicts)
	checkAcknowledged(t, ts, successes)
}
