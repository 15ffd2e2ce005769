package subscription

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
)

var hubSeed = flag.Uint64("hub.seed", 0, "seed of TestHubExactlyOnceRandomized's first run (0: from the clock)")

// TestHubExactlyOnceRandomized is the central invariant on the hub with a
// tiny buffer, so that the catch-up -> live switch and the fallbacks to
// the log happen all the time: writers append (some commits span two
// streams atomically) and delete other streams while subscribers start at
// random moments, for random targets and starts, and some read slowly.
// Some appends are large (one category-index entry for all their events)
// with types in runs. Each must get every event of its target exactly
// once, in order, with one caught_up, compared with the log read after
// the writers stopped.
// The seed is in the subtest's name; -hub.seed=N replays it.
func TestHubExactlyOnceRandomized(t *testing.T) {
	runs, ops := 24, 60
	if testutil.RaceEnabled {
		runs, ops = 20, 30
	}
	base := *hubSeed
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	for r := range runs {
		seed := base + uint64(r)
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { hubRandomRun(t, seed, ops) }) {
			break // one failing seed is enough to replay
		}
	}
}

// hubRandomRun is one run: 3 writers of ops commits each, 6 subscribers.
func hubRandomRun(t *testing.T, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	l := openLog(t)
	opts := Options{BufferEvents: 4 + rng.IntN(60), BufferBytes: 1<<10 + rng.IntN(16<<10)}
	if rng.IntN(3) == 0 { // the ring grows (from 8 slots) while subscribers read it
		opts.BufferEvents = 100 + rng.IntN(400)
		old := initialRingSlots
		initialRingSlots = 8
		t.Cleanup(func() { initialRingSlots = old })
	}
	h := newHub(l, opts, nil)
	t.Logf("seed %d: buffer %d events, %d bytes", seed, opts.BufferEvents, opts.BufferBytes)

	const writers = 3
	// Writer w owns its streams: a-w, b-w, and for w 0 also a and b (whole
	// names of categories a and b); t-w-k are the ones it deletes.
	owned := func(w int) []string {
		s := []string{fmt.Sprintf("a-%d", w), fmt.Sprintf("b-%d", w)}
		if w == 0 {
			s = append(s, "a", "b")
		}
		return s
	}
	var (
		committed atomic.Int64 // commits done, to start subscribers at random moments
		hiddenMu  sync.Mutex
		written   = make(map[uint64]item) // every event appended to a t- stream
		errs      = make(chan error, writers)
		done      = make(chan struct{}) // the writers have stopped
		wg        sync.WaitGroup
	)
	record := func(ws ...*eslog.Write) {
		hiddenMu.Lock()
		defer hiddenMu.Unlock()
		for _, w := range ws {
			rev := w.State.NextRevision()
			for i, e := range w.Events {
				p := w.FirstPosition + uint64(i)
				written[p] = item{kind: 'e', pos: p, rev: rev + uint64(i), stream: w.State.Name, typ: e.Type, id: e.ID}
			}
		}
	}
	for w := range writers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			streams := owned(w)
			tmp, tmpState := 0, 0 // tmp stream t-w-tmp: 0 none, 1 written, 2 soft-deleted
			for range ops {
				var err error
				switch k := wrng.IntN(10); {
				case k < 6: // an append to one stream
					typ := "Small"
					if wrng.IntN(3) == 0 {
						typ = "Big"
					}
					evs := newEvents(1+wrng.IntN(5), typ)
					if wrng.IntN(4) == 0 { // one category-index entry for all of them, and runs of two types
						evs = newEvents(8+wrng.IntN(40), typ)
						for i := range evs {
							if i/5%2 == 1 { // runs of 5: typ, BigRun, typ, ...
								evs[i].Type = "BigRun"
							}
						}
					}
					var wr *eslog.Write
					if wr, err = newWrite(l, streams[wrng.IntN(len(streams))], evs, eslog.DeleteNone); err == nil {
						err = commitWrites(l, false, wr)
					}
				case k < 8: // two streams atomically
					i := wrng.IntN(len(streams))
					j := (i + 1 + wrng.IntN(len(streams)-1)) % len(streams)
					var w1, w2 *eslog.Write
					if w1, err = newWrite(l, streams[i], newEvents(1+wrng.IntN(3), "Multi"), eslog.DeleteNone); err != nil {
						break
					}
					if w2, err = newWrite(l, streams[j], newEvents(1+wrng.IntN(3), "Big"), eslog.DeleteNone); err != nil {
						break
					}
					err = commitWrites(l, true, w1, w2)
				default: // a stream of category t: written, deleted, written again
					name := fmt.Sprintf("t-%d-%d", w, tmp)
					var wr *eslog.Write
					if tmpState == 1 && wrng.IntN(2) == 0 {
						mode := eslog.DeleteSoft
						if wrng.IntN(3) == 0 {
							mode = eslog.DeleteTombstone
						}
						if wr, err = newWrite(l, name, nil, mode); err == nil {
							err = commitWrites(l, false, wr)
						}
						tmpState = 2
						if mode == eslog.DeleteTombstone {
							tmp, tmpState = tmp+1, 0
						}
					} else {
						if wr, err = newWrite(l, name, newEvents(1+wrng.IntN(4), "Tmp"), eslog.DeleteNone); err == nil {
							if err = commitWrites(l, false, wr); err == nil {
								record(wr)
							}
						}
						tmpState = 1
					}
				}
				if err != nil {
					errs <- err
					return
				}
				committed.Add(1)
			}
		}()
	}

	// Subscribers, each started once the writers have made a random number
	// of commits.
	type sub struct {
		tg   target
		sink *testSink
		run  *runningSub
	}
	var subs []*sub
	nsubs := 6
	starts := make([]int64, nsubs)
	for i := range starts {
		starts[i] = int64(rng.IntN(writers * ops))
	}
	for i := range nsubs {
		if !testutil.Poll(waitTimeout, func() bool { return committed.Load() >= starts[i] || len(errs) > 0 }) {
			t.Fatal("writers stalled")
		}
		req := randomRequest(rng, l)
		sink := &testSink{}
		if rng.IntN(2) == 0 { // a slow reader: now and then waits until the log has moved on
			srng := rand.New(rand.NewPCG(seed, uint64(100+i)))
			ahead := uint64(opts.BufferEvents)
			sink.stall = func() {
				if srng.IntN(20) != 0 {
					return
				}
				want := l.LastPosition() + ahead
				for {
					ch := l.Published()
					if l.LastPosition() >= want {
						return
					}
					select {
					case <-ch:
					case <-done:
						return
					}
				}
			}
		}
		tg := target{req: req, floor: l.LastPosition()}
		subs = append(subs, &sub{tg: tg, sink: sink, run: startSub(t, h, req, sink)})
	}
	wg.Wait()
	close(done)
	select {
	case err := <-errs:
		t.Fatalf("writer: %v", err)
	default:
	}

	// One last event in every followed stream, once every subscriber has
	// taken its start, so that each has something to wait for.
	for i, s := range subs {
		if !testutil.Poll(waitTimeout, func() bool { return s.sink.has('c') || s.run.ended() }) {
			t.Fatalf("subscriber %d (%+v): no caught_up; got %s", i, s.tg.req, describe(s.sink.snapshot()))
		}
	}

	var last []*eslog.Write
	for w := range writers {
		for _, s := range owned(w) {
			wr, err := newWrite(l, s, newEvents(1, "BigEnd"), eslog.DeleteNone)
			if err != nil {
				t.Fatal(err)
			}
			last = append(last, wr)
		}
	}
	if err := commitWrites(l, true, last...); err != nil {
		t.Fatal(err)
	}
	final := readAll(t, l, eslog.AllQuery{})
	visible := make(map[uint64]bool, len(final))
	for _, e := range final {
		visible[e.Position] = true
	}
	hidden := make(map[uint64]item)
	for p, it := range written {
		if !visible[p] {
			hidden[p] = it
		}
	}
	deadline := time.Now().Add(waitTimeout) // for all the subscribers: one stuck is enough
	for i, s := range subs {
		var wantLast uint64
		for _, e := range final {
			if s.tg.matches(e.Stream, e.Type) {
				wantLast = e.Position
			}
		}
		if !testutil.Poll(time.Until(deadline), func() bool { return s.sink.lastEventPos() >= wantLast || s.run.ended() }) {
			t.Errorf("subscriber %d (%+v) did not get position %d; got %s", i, s.tg.req, wantLast, describe(s.sink.snapshot()))
			continue
		}
		endedEarly := s.run.ended()
		if err := s.run.stop(); endedEarly {
			t.Errorf("subscriber %d (%+v) ended by itself: %v", i, s.tg.req, err)
		}
		got := s.sink.snapshot()
		if msg := checkDelivery(s.tg, got, final, hidden); msg != "" {
			t.Errorf("subscriber %d (%+v): %s\ngot: %s", i, s.tg.req, msg, describe(got))
		}
	}
}

// randomRequest picks a target and a start: all (filtered or not), a
// category, a stream; from the start, the end, after a position or
// revision at most the current one.
func randomRequest(rng *rand.Rand, l *eslog.Log) Request {
	var r Request
	switch k := rng.IntN(10); {
	case k < 3:
		r.Target = TargetAll
	case k < 4:
		r.Target = TargetAll
		if rng.IntN(2) == 0 {
			r.StreamPrefixes = []string{"a-"} // the category index
		} else {
			r.TypePrefixes = []string{"Big"} // the type index
		}
		r.CheckpointEvery = 1 + rng.IntN(10)
	case k < 6:
		r.Target, r.Name = TargetCategory, []string{"a", "b"}[rng.IntN(2)]
	default:
		r.Target, r.Name = TargetStream, []string{"a-0", "a-1", "b-2", "a", "b"}[rng.IntN(5)]
	}
	switch k := rng.IntN(4); {
	case k == 0:
		r.Start = FromStart
	case k == 1:
		r.Start = FromEnd
	case r.Target == TargetStream:
		s, ok, _ := l.State(r.Name)
		if ok && s.Written {
			r.Start, r.After = AfterRevision, uint64(rng.IntN(int(s.Head)+1))
		}
	default:
		if p := l.LastPosition(); p > 0 {
			r.Start, r.After = AfterPosition, uint64(rng.IntN(int(p)+1))
		}
	}
	return r
}
