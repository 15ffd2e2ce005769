package group

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// tracker is what the members of a randomized run did, and what the
// writers wrote to the group's target.
type tracker struct {
	mu         sync.Mutex
	target     map[uint64][16]byte // positions written to the target
	acks       map[uint64]int      // acks the members sent, by position
	deliveries int
	stale      int // deliveries of an event acknowledged before
	failures   []string
	checkpoint uint64 // the highest checkpoint seen
	late       sync.WaitGroup
}

func newTracker() *tracker {
	return &tracker{target: map[uint64][16]byte{}, acks: map[uint64]int{}}
}

func (tr *tracker) fail(format string, args ...any) {
	if len(tr.failures) < 20 {
		tr.failures = append(tr.failures, fmt.Sprintf(format, args...))
	}
}

// sawCheckpoint checks a checkpoint the group reports: it never goes
// back, and every event of the target up to it was acknowledged (the
// members record an ack before they send it, so what the group counts
// acknowledged the tracker has).
func (tr *tracker) sawCheckpoint(cp uint64, where string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if cp < tr.checkpoint {
		tr.fail("%s: checkpoint %d went back from %d", where, cp, tr.checkpoint)
	}
	tr.checkpoint = max(tr.checkpoint, cp)
	for pos := range tr.target {
		if pos <= cp && tr.acks[pos] == 0 {
			tr.fail("%s: checkpoint %d passed position %d, never acknowledged", where, cp, pos)
		}
	}
}

func (tr *tracker) allAcked() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for pos := range tr.target {
		if tr.acks[pos] == 0 {
			return false
		}
	}
	return true
}

func (tr *tracker) lastTarget() uint64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Max(slices.Collect(func(yield func(uint64) bool) {
		for p := range tr.target {
			if !yield(p) {
				return
			}
		}
	}))
}

// member runs one member of a randomized run: it acknowledges most
// deliveries, nacks some, ignores some (they time out), acknowledges some
// late; with crashAfter > 0 it leaves after that many deliveries, with
// what it holds unacknowledged; with ackAll it acknowledges everything.
func (tr *tracker) member(mem *Member, rng *rand.Rand, crashAfter int, ackAll bool, stop <-chan struct{}, ackTimeout time.Duration) {
	n := 0
	for {
		var d Delivery
		select {
		case d = <-mem.Deliveries():
			mem.Sent()
		case <-mem.Done():
			return
		case <-stop:
			mem.Leave()
			return
		}
		n++
		if crashAfter > 0 && n >= crashAfter {
			mem.Leave()
			return
		}
		pos := d.Event.Position
		tr.mu.Lock()
		tr.deliveries++
		if id, ok := tr.target[pos]; ok && id != d.Event.ID {
			tr.fail("position %d delivered with id %x, written with %x", pos, d.Event.ID, id)
		}
		if d.Event.Stream[:4] != "acc-" {
			tr.fail("position %d of stream %s delivered: not the target", pos, d.Event.Stream)
		}
		if tr.acks[pos] > 0 {
			tr.stale++
		}
		x := rng.IntN(100)
		if ackAll {
			x = 0
		}
		switch {
		case x < 80:
			tr.acks[pos]++
			tr.mu.Unlock()
			mem.Ack(ids(d))
		case x < 85:
			tr.mu.Unlock()
			mem.Nack(ids(d), NackRetry, "")
		case x < 88:
			tr.mu.Unlock()
			mem.Nack(ids(d), NackRetryLater, "")
		case x < 96:
			tr.mu.Unlock() // ignored
		default:
			tr.mu.Unlock()
			late := ackTimeout + time.Duration(rng.IntN(50))*time.Millisecond
			tr.late.Add(1)
			go func() {
				defer tr.late.Done()
				time.Sleep(late) // the case under test: an ack after ack_timeout, the event maybe out again
				tr.mu.Lock()
				tr.acks[pos]++
				tr.mu.Unlock()
				mem.Ack(ids(d))
			}()
		}
	}
}

// TestAtLeastOnceRandomized: writers append to a category (and to another
// one) while three members handle the group's events at random; in each
// round a member leaves with events in hand and another joins, and the
// round ends with a restart (manager and log) with the members
// connected. Throughout, the checkpoint never goes back and never passes
// an event no member acknowledged; in the end every event of the target
// was acknowledged, nothing is in flight or parked, and the stored
// checkpoint is at the last event of the target.
func TestAtLeastOnceRandomized(t *testing.T) {
	lowerTunables(t)
	memberQueue = 4 // members often without room
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	e := newEnv(t)
	s := settings("acc", "acc")
	s.AckTimeout, s.MaxDeliveries, s.MaxInFlight = 150*time.Millisecond, 1000, 8+rng.IntN(40)
	if rng.IntN(2) == 1 {
		s.Strategy = ByStream
	}
	t.Logf("strategy %d, max_in_flight %d", s.Strategy, s.MaxInFlight)
	e.create(s)
	tr := newTracker()
	const rounds, perRound = 3, 150
	for r := range rounds + 1 {
		final := r == rounds
		stop := make(chan struct{})
		var mwg sync.WaitGroup
		startMember := func(crashAfter int) {
			mem := e.join("acc")
			mrng := rand.New(rand.NewPCG(seed, rng.Uint64()))
			mwg.Add(1)
			go func() {
				defer mwg.Done()
				tr.member(mem, mrng, crashAfter, final, stop, s.AckTimeout)
			}()
		}
		for i := range 3 {
			crash := 0
			if i == 0 && !final {
				crash = 10 + rng.IntN(30)
			}
			startMember(crash)
		}
		// A monitor checks the checkpoint as it moves.
		mon := make(chan struct{})
		var monWG sync.WaitGroup
		monWG.Add(1)
		go func() {
			defer monWG.Done()
			for {
				select {
				case <-mon:
					return
				case <-time.After(5 * time.Millisecond):
				}
				info, err := e.m.Get("acc")
				if err != nil {
					t.Errorf("get: %v", err)
					return
				}
				tr.sawCheckpoint(info.Checkpoint, fmt.Sprintf("round %d", r))
			}
		}()
		if !final {
			var wwg sync.WaitGroup
			for w := range 2 {
				wwg.Add(1)
				wrng := rand.New(rand.NewPCG(seed, rng.Uint64()))
				go func() {
					defer wwg.Done()
					for written := 0; written < perRound/2; {
						stream := fmt.Sprintf("acc-%d", wrng.IntN(5))
						if wrng.IntN(5) == 0 {
							stream = fmt.Sprintf("other-%d", w)
						}
						evs, err := e.tryAppend(stream, 1+wrng.IntN(3))
						if err != nil {
							t.Errorf("append: %v", err)
							return
						}
						if stream[:4] != "acc-" {
							continue
						}
						tr.mu.Lock()
						for _, ev := range evs {
							tr.target[ev.pos] = ev.id
						}
						tr.mu.Unlock()
						written += len(evs)
					}
				}()
			}
			wwg.Wait()
			startMember(0) // in place of the one that leaves
			// Picks the reopen moment (the members go on meanwhile);
			// nothing waits for a condition here.
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		} else {
			eventually(t, "every event acknowledged", tr.allAcked)
			last := tr.lastTarget()
			eventually(t, "nothing in flight, checkpoint at the end", func() bool {
				i := e.info("acc")
				return i.InFlight == 0 && i.Checkpoint >= last
			})
		}
		close(mon)
		monWG.Wait()
		before := e.info("acc").Checkpoint
		tr.sawCheckpoint(before, fmt.Sprintf("round %d before restart", r))
		e.reopen() // the members are still in: Close ends them
		close(stop)
		mwg.Wait()
		after := e.info("acc")
		if after.Checkpoint < before {
			t.Errorf("round %d: stored checkpoint %d after restart, %d before", r, after.Checkpoint, before)
		}
		tr.sawCheckpoint(after.Checkpoint, fmt.Sprintf("round %d after restart", r))
		if after.Parked != 0 {
			t.Errorf("round %d: %d parked", r, after.Parked)
		}
	}
	tr.late.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, f := range tr.failures {
		t.Error(f)
	}
	last := uint64(0)
	for p := range tr.target {
		last = max(last, p)
	}
	if cp, _ := e.storedCheckpoint("acc"); cp < last {
		t.Errorf("stored checkpoint %d, last event of the target %d", cp, last)
	}
	acks := 0
	for _, n := range tr.acks {
		acks += n
	}
	t.Logf("%d events of the target, %d deliveries, %d acks (%d of events acknowledged before)", len(tr.target), tr.deliveries, acks, tr.stale)
}
