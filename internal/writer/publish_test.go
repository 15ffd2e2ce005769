package writer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestAnswersWaitForPublishInOrder: two shards each have a commit in
// flight (shard A read Pending before shard B committed), and the later
// commit becomes durable first. Neither answer comes before its commit's
// Durable is done, which is only once every earlier position is durable:
// the positions are published in order, gap-free, and each answer comes
// with its position published.
func TestAnswersWaitForPublishInOrder(t *testing.T) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 2})
	ctx := testCtx(t)
	names := streamsOnShards(t, w, "p")
	f.hold(true)

	// Shard A decides, reads Pending (nothing in flight) and is stopped
	// there until shard B has committed.
	entered, goOn := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	f.setAfterPending(func() {
		if once.CompareAndSwap(false, true) {
			close(entered)
			<-goOn
		}
	})
	answers := make([]chan outcome, 2)
	send := func(i int, op AppendOp) {
		answers[i] = make(chan outcome, 1)
		go func() {
			var o outcome
			o.res, o.err = w.Append(ctx, op)
			o.pub = f.Published()
			answers[i] <- o
		}()
	}
	opA := appendOf(names[0], xAny, id(1), id(2))
	opB := appendOf(names[1], xAny, id(3))
	send(0, opA)
	<-entered
	send(1, opB)
	f.waitApplied(t, 1) // B's commit: position 1
	close(goOn)
	f.waitApplied(t, 2) // A's commit: positions 2..3
	// Both shards have answered their requests (with a commit to wait for).
	eventually(t, "shards answered", func() bool { return w.inflight.Load() == 0 })

	f.release(2) // the later commit is durable first
	for i, ch := range answers {
		select {
		case o := <-ch:
			t.Fatalf("request %d answered (%+v, %v) before its commit was published (published %d)", i, o.res, o.err, o.pub)
		default:
		}
	}
	f.mu.Lock()
	if f.published != 0 || len(f.pubOrder) != 0 {
		t.Fatalf("published %d (%v) with position 1 not durable", f.published, f.pubOrder)
	}
	select {
	case <-f.applied[1].d.done:
		t.Fatal("the later commit is done before the earlier one is durable")
	default:
	}
	f.mu.Unlock()

	f.release(1)
	a, b := <-answers[0], <-answers[1]
	if a.err != nil || b.err != nil {
		t.Fatalf("answers: %v, %v", a.err, b.err)
	}
	if b.res.FirstPosition != 1 || a.res.FirstPosition != 2 || a.res.LastPosition != 3 {
		t.Fatalf("positions: A %+v, B %+v", a.res, b.res)
	}
	checkStored(t, f, opA, a.res)
	checkStored(t, f, opB, b.res)
	if a.pub < a.res.LastPosition || b.pub < b.res.LastPosition {
		t.Fatalf("answered at published %d and %d", a.pub, b.pub)
	}
	if got := f.publishOrder(); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("published %v, want [1 3]", got)
	}
}

// TestPublishOrderUnderLoad: appends and AppendMultis from many
// goroutines over several shards, while the fake makes the commits in
// flight durable in random order. Every answer comes with its positions
// published; the answered positions are every stored position once,
// each holding the answered event; the positions are published in
// commit order, every commit once.
func TestPublishOrderUnderLoad(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			testPublishOrderUnderLoad(t, seed)
		})
	}
}

func testPublishOrderUnderLoad(t *testing.T, seed uint64) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 4})
	ctx := testCtx(t)
	f.hold(true)

	// The releaser makes a random commit in flight durable, whenever there
	// is one.
	stop := make(chan struct{})
	var releaserDone sync.WaitGroup
	var outOfOrder int
	releaserDone.Add(1)
	go func() {
		defer releaserDone.Done()
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			f.mu.Lock()
			var cand []int
			for k, c := range f.applied {
				if !c.synced {
					cand = append(cand, k+1)
				}
			}
			bell := f.bell
			f.mu.Unlock()
			if len(cand) == 0 {
				select {
				case <-bell:
					continue
				case <-stop:
					return
				}
			}
			k := cand[rng.IntN(len(cand))]
			if k != cand[0] {
				outOfOrder++
			}
			f.release(k)
		}
	}()

	const workers, perWorker = 8, 25
	streams := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var nextID atomic.Int64
	type answered struct {
		op  AppendOp
		out outcome
	}
	results := make([][]answered, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)+2))
			newOp := func(stream string) AppendOp {
				ids := make([][16]byte, 1+rng.IntN(3))
				for i := range ids {
					ids[i] = id(int(nextID.Add(1)))
				}
				return appendOf(stream, xAny, ids...)
			}
			for range perWorker {
				if rng.IntN(4) == 0 {
					i := rng.IntN(len(streams))
					j := (i + 1 + rng.IntN(len(streams)-1)) % len(streams)
					ops := []AppendOp{newOp(streams[i]), newOp(streams[j])}
					res, err := w.AppendMulti(ctx, ops)
					pub := f.Published()
					for k := range ops {
						var o outcome
						if err == nil {
							o.res = res[k]
						}
						o.err, o.pub = err, pub
						results[g] = append(results[g], answered{ops[k], o})
					}
					continue
				}
				op := newOp(streams[rng.IntN(len(streams))])
				var o outcome
				o.res, o.err = w.Append(ctx, op)
				o.pub = f.Published()
				results[g] = append(results[g], answered{op, o})
			}
		}()
	}
	wg.Wait()
	close(stop)
	releaserDone.Wait()

	stored := f.stored()
	seen := make([]bool, len(stored)+1)
	for _, rs := range results {
		for _, a := range rs {
			if a.out.err != nil {
				t.Fatalf("append to %s: %v", a.op.Stream, a.out.err)
			}
			if a.out.pub < a.out.res.LastPosition {
				t.Fatalf("append to %s answered %+v at published position %d", a.op.Stream, a.out.res, a.out.pub)
			}
			checkStored(t, f, a.op, a.out.res)
			for p := a.out.res.FirstPosition; p <= a.out.res.LastPosition; p++ {
				if seen[p] {
					t.Fatalf("position %d answered twice", p)
				}
				seen[p] = true
			}
		}
	}
	for p := 1; p < len(seen); p++ {
		if !seen[p] {
			t.Fatalf("position %d stored but answered to no one", p)
		}
	}
	// Each stream's revisions are 0, 1, 2, ... in position order.
	next := make(map[string]uint64)
	for _, e := range stored {
		if e.rev != next[e.stream] {
			t.Fatalf("%s@%d at %d, want revision %d", e.stream, e.rev, e.pos, next[e.stream])
		}
		next[e.stream]++
	}
	// Every commit published once, in commit order, gap-free.
	f.mu.Lock()
	defer f.mu.Unlock()
	var want []uint64
	var last uint64
	for _, c := range f.applied {
		if c.first != last+1 || c.last < c.first {
			t.Fatalf("commit at %d..%d after one ending at %d", c.first, c.last, last)
		}
		last = c.last
		want = append(want, c.last)
	}
	if !slices.Equal(f.pubOrder, want) || f.published != uint64(len(stored)) {
		t.Fatalf("published %v (last %d), want %v", f.pubOrder, f.published, want)
	}
	t.Logf("%d commits, %d made durable out of order", len(f.applied), outOfOrder)
}
