package group

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// waitResult is what a WaitCheckpoint call running in a goroutine
// returned.
type waitResult struct {
	cp  uint64
	err error
}

// startWait runs WaitCheckpoint in a goroutine; the test reads its answer
// from the channel.
func (e *env) startWait(ctx context.Context, name string, pos uint64) <-chan waitResult {
	out := make(chan waitResult, 1)
	go func() {
		cp, err := e.m.WaitCheckpoint(ctx, name, pos)
		out <- waitResult{cp, err}
	}()
	return out
}

func answer(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitFor):
		t.Fatalf("WaitCheckpoint: no answer within %v", waitFor)
	}
	return waitResult{}
}

func noAnswer(t *testing.T, ch <-chan waitResult, d time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("WaitCheckpoint answered %d, %v; want it still waiting", r.cp, r.err)
	case <-time.After(d):
	}
}

// waiting is the number of WaitCheckpoint calls registered on a group.
func (e *env) waiting(name string) int {
	e.m.mu.Lock()
	g := e.m.groups[name]
	e.m.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.waiters)
}

// TestWaitCheckpointReturnsOnceAcked: a wait for a position answers only
// once the event there (and every one before it) is acknowledged, without
// waiting for the checkpoint to be stored; a position already passed
// answers at once.
func TestWaitCheckpointReturnsOnceAcked(t *testing.T) {
	old := saveEvery
	saveEvery = time.Hour // the stored checkpoint does not move during the test
	t.Cleanup(func() { saveEvery = old })
	e := newEnv(t)
	e.create(settings("g", "order"))
	evs := e.appendN("order-1", 3)
	mem := e.join("g")
	ds := []Delivery{recv(t, mem), recv(t, mem), recv(t, mem)}

	ch := e.startWait(context.Background(), "g", evs[1].pos)
	eventually(t, "the call waiting", func() bool { return e.waiting("g") == 1 })
	mem.Ack(ids(ds[1])) // the later one first: the checkpoint stays before evs[0]
	noAnswer(t, ch, 100*time.Millisecond)
	mem.Ack(ids(ds[0]))
	r := answer(t, ch)
	if r.err != nil || r.cp != evs[1].pos {
		t.Fatalf("WaitCheckpoint(%d) = %d, %v; want %d", evs[1].pos, r.cp, r.err, evs[1].pos)
	}
	if cp, _ := e.storedCheckpoint("g"); cp >= evs[1].pos {
		t.Fatalf("stored checkpoint %d: the wait should not have needed it", cp)
	}
	if cp, err := e.m.WaitCheckpoint(context.Background(), "g", evs[0].pos); err != nil || cp != evs[1].pos {
		t.Errorf("WaitCheckpoint of a passed position = %d, %v; want %d at once", cp, err, evs[1].pos)
	}
	if e.waiting("g") != 0 {
		t.Errorf("%d waiters left", e.waiting("g"))
	}
	mem.Leave()
}

// TestWaitCheckpointPositionOutsideTarget: a position of a stream the
// group does not follow is passed once the group takes a later event of
// its own from its target (its checkpoint is then just below that one).
func TestWaitCheckpointPositionOutsideTarget(t *testing.T) {
	e := newEnv(t)
	e.create(settings("g", "order"))
	mem := e.join("g") // live: the foreign event is not covered by a catch-up
	mine := e.appendN("order-1", 1)
	mem.Ack(ids(recv(t, mem)))
	eventually(t, "checkpoint at the group's event", func() bool { return e.info("g").Checkpoint == mine[0].pos })
	other := e.appendN("invoice-1", 1)

	ch := e.startWait(context.Background(), "g", other[0].pos)
	noAnswer(t, ch, 100*time.Millisecond)
	later := e.appendN("order-1", 1)
	d := recv(t, mem)
	// The group has seen an event after it, so every event of the group up
	// to the foreign position is finished, even while that one is not.
	if r := answer(t, ch); r.err != nil || r.cp != other[0].pos {
		t.Fatalf("WaitCheckpoint(%d) = %d, %v; want %d", other[0].pos, r.cp, r.err, other[0].pos)
	}
	ch = e.startWait(context.Background(), "g", later[0].pos)
	noAnswer(t, ch, 50*time.Millisecond) // delivered, not acknowledged
	mem.Ack(ids(d))
	if r := answer(t, ch); r.err != nil || r.cp != later[0].pos {
		t.Fatalf("WaitCheckpoint(%d) = %d, %v; want %d", later[0].pos, r.cp, r.err, later[0].pos)
	}
	mem.Leave()
}

// TestWaitCheckpointParked: a parked event counts as finished.
func TestWaitCheckpointParked(t *testing.T) {
	e := newEnv(t)
	e.create(settings("g", "order"))
	evs := e.appendN("order-1", 1)
	mem := e.join("g")
	d := recv(t, mem)
	ch := e.startWait(context.Background(), "g", evs[0].pos)
	noAnswer(t, ch, 50*time.Millisecond)
	mem.Nack(ids(d), NackPark, "bad")
	if r := answer(t, ch); r.err != nil || r.cp != evs[0].pos {
		t.Fatalf("WaitCheckpoint = %d, %v; want %d", r.cp, r.err, evs[0].pos)
	}
	mem.Leave()
}

// TestWaitCheckpointEnds: a wait ends with ctx (taking its waiter out),
// with ErrNotFound for a missing group or one deleted while it waits, and
// with ErrClosed when the manager closes.
func TestWaitCheckpointEnds(t *testing.T) {
	e := newEnv(t)
	e.create(settings("g", "order"))
	e.create(settings("h", "order"))
	evs := e.appendN("order-1", 1)

	if _, err := e.m.WaitCheckpoint(context.Background(), "missing", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing group: %v, want ErrNotFound", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if cp, err := e.m.WaitCheckpoint(ctx, "g", evs[0].pos); !errors.Is(err, context.DeadlineExceeded) || cp != 0 {
		t.Errorf("no member, ctx ends: %d, %v; want 0, deadline exceeded", cp, err)
	}
	if n := e.waiting("g"); n != 0 {
		t.Errorf("%d waiters left after ctx ended", n)
	}

	ch := e.startWait(context.Background(), "g", evs[0].pos)
	eventually(t, "the call waiting", func() bool { return e.waiting("g") == 1 })
	if err := e.m.Delete("g"); err != nil {
		t.Fatal(err)
	}
	if r := answer(t, ch); !errors.Is(r.err, ErrNotFound) {
		t.Errorf("group deleted while waiting: %v, want ErrNotFound", r.err)
	}

	ch = e.startWait(context.Background(), "h", evs[0].pos)
	eventually(t, "the call waiting", func() bool { return e.waiting("h") == 1 })
	e.m.Close()
	if r := answer(t, ch); !errors.Is(r.err, ErrClosed) {
		t.Errorf("manager closed while waiting: %v, want ErrClosed", r.err)
	}
	if _, err := e.m.WaitCheckpoint(context.Background(), "h", evs[0].pos); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// TestWaitCheckpointConcurrent: many waiters on different positions each
// answer once their position is passed, not before; the frontier starts
// from the stored checkpoint after a restart.
func TestWaitCheckpointConcurrent(t *testing.T) {
	e := newEnv(t)
	e.create(settings("g", "order"))
	evs := e.appendN("order-1", 10)
	mem := e.join("g")
	var ds []Delivery
	for range evs {
		ds = append(ds, recv(t, mem))
	}
	const perPosition = 5
	var wg sync.WaitGroup
	acked := make([]chan struct{}, len(evs)) // closed before event i is acknowledged
	for i := range acked {
		acked[i] = make(chan struct{})
	}
	errs := make(chan error, len(evs)*perPosition)
	for i, ev := range evs {
		for range perPosition {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cp, err := e.m.WaitCheckpoint(context.Background(), "g", ev.pos)
				select {
				case <-acked[i]:
				default:
					errs <- errors.New("answered before its event was acknowledged")
					return
				}
				if err != nil || cp < ev.pos {
					errs <- err
				}
			}()
		}
	}
	eventually(t, "every call waiting", func() bool { return e.waiting("g") == len(evs)*perPosition })
	for i, d := range ds {
		close(acked[i])
		mem.Ack(ids(d))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("waiter: %v", err)
	}
	mem.Leave()
	last := evs[len(evs)-1].pos
	eventually(t, "checkpoint stored", func() bool { cp, _ := e.storedCheckpoint("g"); return cp == last })
	e.reopen()
	if cp, err := e.m.WaitCheckpoint(context.Background(), "g", last); err != nil || cp != last {
		t.Errorf("after reopen: %d, %v; want %d at once", cp, err, last)
	}
}
