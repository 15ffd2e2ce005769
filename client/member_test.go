package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
)

func createGroup(t *testing.T, c *client.Client, name, category string, strategy esdv1.GroupStrategy) {
	t.Helper()
	g := &esdv1.Group{Name: name, Target: &esdv1.Group_Category{Category: category}, Strategy: strategy, AckTimeout: durationpb.New(30 * time.Second)}
	if _, err := c.CreateGroup(context.Background(), g); err != nil {
		t.Fatal(err)
	}
}

func runMember(ctx context.Context, c *client.Client, group string, h client.Handler, opts ...client.MemberOption) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.RunMember(ctx, group, h, opts...) }()
	return done
}

func waitErr(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the member did not return")
		return nil
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMemberDrainsOnShutdown stops a member with handlers in flight: they
// finish, their acks reach the server before RunMember returns nil, and
// a second member gets every event the first did not acknowledge.
func TestMemberDrainsOnShutdown(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	c, srv := dial(t)
	createGroup(t, c, "jobs", "job", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	const n = 60
	for i := range n {
		appendN(t, c, fmt.Sprintf("job-%d", i), 1)
	}
	var (
		mu       sync.Mutex
		handled  = map[string]int{}
		running  atomic.Int32
		inflight atomic.Int32 // most handlers seen running at the drain
	)
	ctx, stop := context.WithCancel(context.Background())
	h := func(hctx context.Context, ev *esdv1.RecordedEvent) error {
		running.Add(1)
		defer running.Add(-1)
		time.Sleep(30 * time.Millisecond)
		if hctx.Err() != nil {
			return hctx.Err()
		}
		mu.Lock()
		handled[ev.GetId()]++
		k := len(handled)
		mu.Unlock()
		if k == 10 {
			inflight.Store(running.Load())
			stop()
		}
		return nil
	}
	if err := waitErr(t, runMember(ctx, c, "jobs", h, client.Concurrency(4), client.MemberName("first"))); err != nil {
		t.Fatalf("a drained member returned %v, want nil", err)
	}
	if running.Load() != 0 {
		t.Fatalf("%d handlers still running after RunMember returned", running.Load())
	}
	mu.Lock()
	first := len(handled)
	mu.Unlock()
	info, err := c.GetGroup(context.Background(), "jobs")
	if err != nil {
		t.Fatal(err)
	}
	if info.GetAcked() != uint64(first) || info.GetMembers() != 0 {
		t.Fatalf("after the drain: acked %d, members %d; want the %d handled (%d in flight at the stop), 0 members", info.GetAcked(), info.GetMembers(), first, inflight.Load())
	}

	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	done := runMember(ctx2, c, "jobs", func(_ context.Context, ev *esdv1.RecordedEvent) error {
		mu.Lock()
		handled[ev.GetId()]++
		mu.Unlock()
		return nil
	})
	eventually(t, "every event handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == n })
	eventually(t, "every event acknowledged", func() bool {
		info, err := c.GetGroup(context.Background(), "jobs")
		return err == nil && info.GetInFlight() == 0 && info.GetAcked() >= n
	})
	stop2()
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	goleak.VerifyNone(t, ignore)
}

// TestMemberKeepsEachStreamInOrder runs handlers concurrently: the events
// of one stream still come one after the other, in revision order.
func TestMemberKeepsEachStreamInOrder(t *testing.T) {
	c, _ := dial(t)
	createGroup(t, c, "ordered", "ord", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	const streams, per = 6, 10
	for r := range per {
		for s := range streams {
			if _, err := c.Append(context.Background(), fmt.Sprintf("ord-%d", s), client.After(uint64(max(r-1, 0)), r > 0), client.NewEvent("E", nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var (
		mu   sync.Mutex
		seen = map[string][]uint64{}
		busy = map[string]bool{}
		bad  []string
		n    int
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := runMember(ctx, c, "ordered", func(_ context.Context, ev *esdv1.RecordedEvent) error {
		mu.Lock()
		if busy[ev.GetStream()] {
			bad = append(bad, "two handlers at once on "+ev.GetStream())
		}
		busy[ev.GetStream()] = true
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		busy[ev.GetStream()] = false
		seen[ev.GetStream()] = append(seen[ev.GetStream()], ev.GetRevision())
		n++
		return nil
	}, client.Concurrency(4))
	eventually(t, "every event handled", func() bool { mu.Lock(); defer mu.Unlock(); return n >= streams*per })
	stop()
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatal(bad[0])
	}
	for s, revs := range seen {
		for i, r := range revs {
			if r != uint64(i) {
				t.Fatalf("%s handled in the order %v", s, revs)
			}
		}
	}
}

// TestMemberParksAndRetries nacks: an error is delivered again, a Park
// is parked with its reason, and ReplayParked hands it back.
func TestMemberParksAndRetries(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	createGroup(t, c, "picky", "pick", esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM)
	appendN(t, c, "pick-1", 2) // E0, E1
	var (
		mu       sync.Mutex
		attempts = map[string]int{}
		counts   []uint32
		joined   atomic.Value
		replayed = make(chan struct{}, 1)
	)
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	done := runMember(mctx, c, "picky", func(hctx context.Context, ev *esdv1.RecordedEvent) error {
		mu.Lock()
		attempts[ev.GetType()]++
		k := attempts[ev.GetType()]
		if ev.GetType() == "E0" {
			counts = append(counts, client.DeliveryCount(hctx))
		}
		mu.Unlock()
		switch {
		case ev.GetType() == "E0" && k == 1:
			return errors.New("not yet")
		case ev.GetType() == "E1" && k == 1:
			return client.Park(errors.New("cannot handle E1"))
		case ev.GetType() == "E1":
			replayed <- struct{}{}
		}
		return nil
	}, client.OnJoined(func(id string) { joined.Store(id) }))
	var parked []*esdv1.ParkedEvent
	eventually(t, "E1 parked", func() bool {
		parked = parked[:0]
		for p, err := range c.ListParked(ctx, "picky", 0) {
			if err != nil {
				t.Fatal(err)
			}
			parked = append(parked, p)
		}
		return len(parked) == 1
	})
	if parked[0].GetEvent().GetType() != "E1" || parked[0].GetReason() != "cannot handle E1" {
		t.Fatalf("parked %v, want E1 with its reason", parked[0])
	}
	mu.Lock()
	if attempts["E0"] != 2 || fmtS(counts) != "[1 2]" {
		t.Fatalf("E0 handled %d times, delivery counts %v; want 2 (a nack, then an ack), counts [1 2]", attempts["E0"], counts)
	}
	mu.Unlock()
	if id, _ := joined.Load().(string); id == "" {
		t.Fatal("OnJoined was not called with a member id")
	}
	if n, err := c.ReplayParked(ctx, "picky", 0); err != nil || n != 1 {
		t.Fatalf("ReplayParked = %d, %v; want 1", n, err)
	}
	select {
	case <-replayed:
	case <-time.After(10 * time.Second):
		t.Fatal("the replayed event did not come again")
	}
	stop()
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
}

// TestMemberOfAMissingOrDeletedGroupFails: GROUP_NOT_FOUND ends the
// member instead of a reconnection.
func TestMemberOfAMissingOrDeletedGroupFails(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	nop := func(context.Context, *esdv1.RecordedEvent) error { return nil }
	err := c.RunMember(ctx, "nobody", nop)
	if !client.IsNotFound(err) || client.ReasonOf(err) != client.ReasonGroupNotFound {
		t.Fatalf("member of a missing group: %v, want GROUP_NOT_FOUND", err)
	}
	createGroup(t, c, "doomed", "doom", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	done := runMember(ctx, c, "doomed", nop)
	eventually(t, "the member joined", func() bool {
		info, err := c.GetGroup(ctx, "doomed")
		return err == nil && info.GetMembers() == 1
	})
	groups, err := c.ListGroups(ctx)
	if err != nil || len(groups) != 1 || groups[0].GetGroup().GetName() != "doomed" {
		t.Fatalf("ListGroups = %v, %v", groups, err)
	}
	if err := c.DeleteGroup(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, done); client.ReasonOf(err) != client.ReasonGroupNotFound {
		t.Fatalf("member of a deleted group: %v, want GROUP_NOT_FOUND", err)
	}
}

func TestUpdateGroup(t *testing.T) {
	c, _ := dial(t)
	createGroup(t, c, "tuned", "tune", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	info, err := c.UpdateGroup(context.Background(), &esdv1.Group{Name: "tuned", Target: &esdv1.Group_Category{Category: "tune"}, MaxDeliveries: 3})
	if err != nil || info.GetGroup().GetMaxDeliveries() != 3 {
		t.Fatalf("UpdateGroup = %v, %v; want max deliveries 3", info, err)
	}
	_, err = c.CreateGroup(context.Background(), &esdv1.Group{Name: "tuned", Target: &esdv1.Group_Category{Category: "tune"}})
	if client.ReasonOf(err) != client.ReasonGroupExists {
		t.Fatalf("CreateGroup again: %v, want GROUP_EXISTS", err)
	}
}

// TestWaitForCheckpoint: a group without members does not reach an
// append's position before the timeout; with a member it does.
func TestWaitForCheckpoint(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	createGroup(t, c, "model", "item", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	res := appendN(t, c, "item-1", 3)
	pos := res[2].GetLastPosition()
	if cp, reached, err := c.WaitForCheckpoint(ctx, "model", pos, 100*time.Millisecond); err != nil || reached || cp >= pos {
		t.Fatalf("wait without members = %d, %v, %v; want not reached", cp, reached, err)
	}
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	done := runMember(mctx, c, "model", func(context.Context, *esdv1.RecordedEvent) error { return nil })
	if cp, reached, err := c.WaitForCheckpoint(ctx, "model", pos, 0); err != nil || !reached || cp < pos {
		t.Fatalf("wait with a member = %d, %v, %v; want reached, checkpoint ≥ %d", cp, reached, err, pos)
	}
	stop()
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.WaitForCheckpoint(ctx, "nobody", pos, 0); client.ReasonOf(err) != client.ReasonGroupNotFound {
		t.Fatalf("wait on a missing group: %v, want GROUP_NOT_FOUND", err)
	}
}

// TestMemberDrainTimeout: a handler still running past the drain timeout
// makes RunMember return ErrDrainTimeout, and
// has its context cancelled, and the member returns without waiting for
// it; its event is delivered again to the next member.
func TestMemberDrainTimeout(t *testing.T) {
	c, _ := dial(t)
	createGroup(t, c, "stuck", "stuck", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	appendN(t, c, "stuck-1", 1)
	started, cancelled := make(chan struct{}), make(chan struct{})
	ctx, stop := context.WithCancel(context.Background())
	done := runMember(ctx, c, "stuck", func(hctx context.Context, _ *esdv1.RecordedEvent) error {
		close(started)
		<-hctx.Done()
		close(cancelled)
		return hctx.Err()
	}, client.DrainTimeout(100*time.Millisecond))
	<-started
	stop()
	start := time.Now()
	err := waitErr(t, done)
	if !errors.Is(err, client.ErrDrainTimeout) || !strings.Contains(err.Error(), "handlers cut short: 1;") {
		t.Fatalf("RunMember returned %v, want ErrDrainTimeout with the handler cut short", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the member returned %v after its stop, want about the 100 ms drain timeout", d)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not cancelled past the drain timeout")
	}
	again := make(chan struct{}, 1)
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	done2 := runMember(ctx2, c, "stuck", func(context.Context, *esdv1.RecordedEvent) error {
		select {
		case again <- struct{}{}:
		default:
		}
		return nil
	})
	select {
	case <-again:
	case <-time.After(10 * time.Second):
		t.Fatal("the unacknowledged event was not delivered again")
	}
	stop2()
	if err := waitErr(t, done2); err != nil {
		t.Fatal(err)
	}
}

// TestMemberJoinOnce: with JoinOnce a member does not join again when the
// server stops (RunMember returns the call's error at once), and a first
// join that fails is not retried.
func TestMemberJoinOnce(t *testing.T) {
	t.Run("shutdown", func(t *testing.T) {
		c, srv := dial(t)
		createGroup(t, c, "once", "once", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
		appendN(t, c, "once-1", 1)
		handled := make(chan struct{}, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done := runMember(ctx, c, "once", func(context.Context, *esdv1.RecordedEvent) error {
			handled <- struct{}{}
			return nil
		}, client.JoinOnce())
		<-handled
		srv.Stop()
		err := waitErr(t, done)
		if !client.IsTemporary(err) || ctx.Err() != nil {
			t.Fatalf("RunMember returned %v (ctx %v), want the server's UNAVAILABLE before ctx ended", err, ctx.Err())
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		_, srv := dial(t)
		c, err := client.Dial(srv.Addr, client.WithRetries(100))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		srv.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err = c.RunMember(ctx, "once", func(context.Context, *esdv1.RecordedEvent) error { return nil }, client.JoinOnce())
		if !client.IsTemporary(err) || ctx.Err() != nil {
			t.Fatalf("RunMember returned %v (ctx %v), want UNAVAILABLE at once, without WithRetries' retries", err, ctx.Err())
		}
	})
}
