package group

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// testSeed is ESD_TEST_SEED when set, else a fresh one; the test logs it
// so that a failing run can be repeated.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ESD_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ESD_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (ESD_TEST_SEED=%d repeats it)", seed, seed)
	return seed
}

// TestByStreamOrderRandomized: by stream, the events of one stream go to
// one member at a time and in revision order: an event is delivered only
// once every earlier event of its stream is acknowledged, whatever the
// members do (ack, nack RETRY or RETRY_LATER, time out, acknowledge late,
// leave with events in hand) and while writers append.
func TestByStreamOrderRandomized(t *testing.T) {
	lowerTunables(t)
	seed := testSeed(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.Strategy, s.AckTimeout, s.MaxDeliveries, s.MaxInFlight = ByStream, 150*time.Millisecond, 1000, 40
	e.create(s)
	const streams, perStream = 6, 25

	var (
		mu       sync.Mutex
		acked    = map[string]uint64{} // stream -> revisions acknowledged, which are 0..n-1
		held     = map[string]uint64{} // stream -> the position delivered and not answered
		failures []string
		stale    int // deliveries of an event acknowledged meanwhile
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	stop := make(chan struct{})
	runMember := func(mem *Member, rng *rand.Rand, crashAfter int) {
		defer wg.Done()
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
			if crashAfter > 0 && n == crashAfter {
				mem.Leave() // with this delivery (and maybe more) in hand
				return
			}
			st, rev, pos := d.Event.Stream, d.Event.Revision, d.Event.Position
			mu.Lock()
			switch {
			case rev < acked[st]:
				stale++ // a copy queued before it was acknowledged
				mu.Unlock()
				mem.Ack(ids(d))
				continue
			case rev > acked[st]:
				fail("%s revision %d delivered (count %d) while revision %d is not acknowledged", st, rev, d.Count, acked[st])
			}
			if h, ok := held[st]; ok && h != pos {
				fail("%s: position %d delivered while %d is in flight", st, pos, h)
			}
			held[st] = pos
			switch x := rng.IntN(100); {
			case x < 75:
				delete(held, st)
				acked[st]++
				mu.Unlock()
				mem.Ack(ids(d))
			case x < 83:
				delete(held, st)
				mu.Unlock()
				mem.Nack(ids(d), NackRetry, "")
			case x < 88:
				delete(held, st)
				mu.Unlock()
				mem.Nack(ids(d), NackRetryLater, "")
			case x < 95:
				mu.Unlock() // ignored: it comes back after ack_timeout
			default:
				mu.Unlock()
				time.Sleep(s.AckTimeout + 50*time.Millisecond) // the case under test: acknowledged after ack_timeout, a copy may be queued
				mu.Lock()
				delete(held, st)
				if rev == acked[st] {
					acked[st]++
				}
				mu.Unlock()
				mem.Ack(ids(d))
			}
		}
	}
	for i := range 3 {
		wg.Add(1)
		crash := 0
		if i == 0 {
			crash = 30
		}
		go runMember(e.join("g"), rand.New(rand.NewPCG(seed, uint64(i))), crash)
	}
	var wwg sync.WaitGroup
	for w := range 2 {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
			left := map[string]int{}
			for k := w; k < streams; k += 2 {
				left[fmt.Sprintf("order-%d", k)] = perStream
			}
			for len(left) > 0 {
				for st, n := range left {
					k := min(n, 1+rng.IntN(4))
					if _, err := e.tryAppend(st, k); err != nil {
						t.Errorf("append: %v", err)
						return
					}
					if left[st] -= k; left[st] == 0 {
						delete(left, st)
					}
				}
			}
		}()
	}
	wwg.Wait()
	// The member that left is replaced.
	wg.Add(1)
	go runMember(e.join("g"), rand.New(rand.NewPCG(seed, 9)), 0)
	eventually(t, "every event acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range streams {
			if acked[fmt.Sprintf("order-%d", k)] != perStream {
				return false
			}
		}
		return true
	})
	last := e.l.LastPosition()
	eventually(t, "checkpoint at the end", func() bool { return e.info("g").Checkpoint == last })
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		t.Error(f)
	}
	info := e.info("g")
	t.Logf("%d deliveries, %d redeliveries, %d stale copies", info.Delivered, info.Redelivered, stale)
}

// TestByStreamHandsStreamOnWhenMemberLeaves: a stream's event in the
// hands of a member that leaves goes to another, first, before the
// stream's next events.
func TestByStreamHandsStreamOnWhenMemberLeaves(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.Strategy, s.AckTimeout = ByStream, 10*time.Second
	e.create(s)
	a := e.join("g")
	evs := e.appendN("order-1", 3)
	d := recv(t, a)
	if d.Event.Position != evs[0].pos {
		t.Fatalf("first delivery %d", d.Event.Position)
	}
	noDelivery(t, a, 100*time.Millisecond) // one at a time
	b := e.join("g")
	noDelivery(t, b, 100*time.Millisecond) // the stream is a's
	a.Leave()
	for i, ev := range evs {
		d := recv(t, b)
		want := 1
		if i == 0 {
			want = 2
		}
		if d.Event.Position != ev.pos || d.Count != want {
			t.Fatalf("b got %d count %d, want %d count %d", d.Event.Position, d.Count, ev.pos, want)
		}
		noDelivery(t, b, 50*time.Millisecond)
		b.Ack(ids(d))
	}
}
