package subscription

import (
	"context"
	"errors"
	"fmt"
	"testing"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/google/uuid"
)

// TestCatchUpThroughIndexes: subscriptions that catch up from the store
// through the category and type indexes, over appends small enough that
// the category index holds a copy of each event and appends large enough
// that it holds one range entry for all of them, with types in runs
// within an append. Each starts from the start or after a position
// anywhere, also inside a large append or a run of one type, and must get
// every event of its target after it exactly once, in order (checked
// against an unfiltered read of $all, which uses no index).
func TestCatchUpThroughIndexes(t *testing.T) {
	l := openLog(t)
	// Events typed in runs: Deposited x k, Withdrawn x k, ...
	runs := func(n, k int) []eslog.Event {
		evs := make([]eslog.Event, n)
		for i := range evs {
			typ := []string{"Deposited", "Withdrawn", "DepositedLate"}[i/k%3]
			evs[i] = eslog.Event{ID: uuid.New(), Type: typ, Data: fmt.Appendf(nil, `{"n":%d}`, i)}
		}
		return evs
	}
	var bounds []uint64 // interesting start positions: inside large appends and at their edges
	for i, op := range []struct {
		stream string
		n, k   int
	}{
		{"acc-1", 1, 1}, {"noise-1", 5, 2}, {"acc-1", 30, 7}, {"acc-2", 3, 1}, {"noise-1", 40, 40},
		{"acc-2", 8, 3}, {"acc-1", 7, 7}, {"noise-2", 9, 1}, {"acc-3", 100, 25}, {"acc-1", 2, 1},
	} {
		w, err := newWrite(l, op.stream, runs(op.n, op.k), eslog.DeleteNone)
		if err != nil {
			t.Fatal(err)
		}
		ws := []*eslog.Write{w}
		if i == 4 { // one atomic commit of a large append and this one
			w2, err := newWrite(l, "acc-4", runs(12, 5), eslog.DeleteNone)
			if err != nil {
				t.Fatal(err)
			}
			ws = []*eslog.Write{w2, w}
		}
		if err := commitWrites(l, len(ws) > 1, ws...); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			bounds = append(bounds, ws[0].FirstPosition, ws[0].FirstPosition+6)
		}
		bounds = append(bounds, w.FirstPosition-1, w.FirstPosition, w.FirstPosition+uint64(op.n)/2, w.LastPosition-1, w.LastPosition)
	}
	final := readAll(t, l, eslog.AllQuery{})

	// A hub made now holds nothing: every history comes from the store.
	h := newHub(l, Options{BufferEvents: 4}, nil)
	var reqs []Request
	for _, base := range []Request{
		{Target: TargetCategory, Name: "acc"},
		{Target: TargetAll, StreamPrefixes: []string{"acc-"}, CheckpointEvery: 5},
		{Target: TargetAll, TypePrefixes: []string{"Deposited"}, CheckpointEvery: 5},
		{Target: TargetAll, TypePrefixes: []string{"Withdrawn"}, StreamPrefixes: []string{"acc-3"}},
	} {
		r := base
		r.Start = FromStart
		reqs = append(reqs, r)
		for _, p := range bounds {
			r.Start, r.After = AfterPosition, p
			reqs = append(reqs, r)
		}
	}
	for _, req := range reqs {
		sink := &testSink{}
		sub := startSub(t, h, req, sink)
		waitUntil(t, fmt.Sprintf("caught_up of %+v", req), func() bool { return sink.has('c') || sub.ended() })
		if err := sub.stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("subscription %+v: %v", req, err)
		}
		if msg := checkDelivery(target{req: req}, sink.snapshot(), final, nil); msg != "" {
			t.Fatalf("subscription %+v: %s\ngot: %s", req, msg, describe(sink.snapshot()))
		}
	}
}
