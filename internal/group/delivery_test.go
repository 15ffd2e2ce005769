package group

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/subscription"
)

// These tests pin the delivery rules of one group: ack timeouts and
// max_deliveries, the nack actions, max_in_flight, strategies, updates.

// TestAckTimeoutRedeliversThenParks: a delivery nobody acknowledges comes
// back after ack_timeout with delivery counts 2, 3; after max_deliveries
// it is parked (count and reason kept) and the checkpoint moves past it.
func TestAckTimeoutRedeliversThenParks(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.AckTimeout, s.MaxDeliveries = 150*time.Millisecond, 3
	e.create(s)
	evs := e.appendN("order-1", 2)
	start := time.Now()
	mem := e.join("g")
	first, second := recv(t, mem), recv(t, mem)
	if first.Event.Position != evs[0].pos || first.Count != 1 || second.Event.Position != evs[1].pos || second.Count != 1 {
		t.Fatalf("first deliveries %d/%d, %d/%d; want %d/1, %d/1", first.Event.Position, first.Count,
			second.Event.Position, second.Count, evs[0].pos, evs[1].pos)
	}
	mem.Ack(ids(second))
	for want := 2; want <= 3; want++ {
		d := recv(t, mem)
		if d.Event.Position != evs[0].pos || d.Count != want {
			t.Fatalf("redelivery: position %d count %d, want %d count %d", d.Event.Position, d.Count, evs[0].pos, want)
		}
		if el, least := time.Since(start), time.Duration(want-1)*s.AckTimeout; el < least {
			t.Fatalf("delivery %d after %v, want not before %v", want, el, least)
		}
	}
	eventually(t, "the event parked", func() bool { return e.info("g").Parked == 1 })
	eventually(t, "the checkpoint past the parked event", func() bool { return e.info("g").Checkpoint == evs[1].pos })
	ps := e.parked("g")
	if len(ps) != 1 || ps[0].Position != evs[0].pos || ps[0].DeliveryCount != 3 || ps[0].Event == nil || ps[0].Event.ID != evs[0].id {
		t.Fatalf("parked list %+v, want position %d with count 3", ps, evs[0].pos)
	}
	if !strings.Contains(ps[0].Reason, "not acknowledged after 3 deliveries") {
		t.Errorf("parked reason %q", ps[0].Reason)
	}
	if time.Since(ps[0].ParkedAt) > time.Minute || ps[0].ParkedAt.Before(start) {
		t.Errorf("parked at %v, test started %v", ps[0].ParkedAt, start)
	}
	noDelivery(t, mem, 3*s.AckTimeout) // parked: out of delivery
	info := e.info("g")
	if info.InFlight != 0 || info.Delivered != 4 || info.Redelivered != 2 || info.Acked != 1 || info.Members != 1 {
		t.Errorf("info %+v, want in_flight 0, delivered 4, redelivered 2, acked 1, members 1", info)
	}
	mem.Leave()
	eventually(t, "the checkpoint stored", func() bool { cp, _ := e.storedCheckpoint("g"); return cp == evs[1].pos })
}

// TestNackActions: RETRY redelivers at once, RETRY_LATER not before
// ack_timeout, PARK parks at once with the reason given; a nack at
// max_deliveries parks; unknown ids are ignored.
func TestNackActions(t *testing.T) {
	lowerTunables(t)
	t.Run("retry", func(t *testing.T) {
		e := newEnv(t)
		s := settings("g", "order")
		s.AckTimeout = 5 * time.Second
		e.create(s)
		ev := e.appendN("order-1", 1)[0]
		mem := e.join("g")
		d := recv(t, mem)
		start := time.Now()
		mem.Nack(ids(d), NackRetry, "again")
		d = recv(t, mem)
		if d.Event.Position != ev.pos || d.Count != 2 {
			t.Fatalf("after RETRY: position %d count %d, want %d count 2", d.Event.Position, d.Count, ev.pos)
		}
		if el := time.Since(start); el > s.AckTimeout/2 {
			t.Fatalf("RETRY redelivered after %v: not at once", el)
		}
		mem.Ack(ids(d))
		eventually(t, "checkpoint", func() bool { return e.info("g").Checkpoint == ev.pos })
	})
	t.Run("retry goes to another member", func(t *testing.T) {
		e := newEnv(t)
		e.create(settings("g", "order"))
		a, b := e.join("g"), e.join("g")
		e.appendN("order-1", 1)
		d := recv(t, a)
		a.Nack(ids(d), NackRetry, "")
		d2 := recv(t, b) // round robin: the next member
		if d2.Event.ID != d.Event.ID || d2.Count != 2 {
			t.Fatalf("member b got count %d of %x, want count 2 of %x", d2.Count, d2.Event.ID, d.Event.ID)
		}
	})
	t.Run("retry later", func(t *testing.T) {
		e := newEnv(t)
		s := settings("g", "order")
		s.AckTimeout = 300 * time.Millisecond
		e.create(s)
		ev := e.appendN("order-1", 1)[0]
		mem := e.join("g")
		d := recv(t, mem)
		start := time.Now()
		mem.Nack(ids(d), NackRetryLater, "")
		noDelivery(t, mem, s.AckTimeout*2/3)
		d = recv(t, mem)
		if el := time.Since(start); el < s.AckTimeout {
			t.Fatalf("RETRY_LATER redelivered after %v, before ack_timeout %v", el, s.AckTimeout)
		}
		if d.Event.Position != ev.pos || d.Count != 2 {
			t.Fatalf("after RETRY_LATER: position %d count %d", d.Event.Position, d.Count)
		}
		if info := e.info("g"); info.InFlight != 1 {
			t.Errorf("in_flight %d, want 1", info.InFlight)
		}
	})
	t.Run("park", func(t *testing.T) {
		e := newEnv(t)
		e.create(settings("g", "order"))
		evs := e.appendN("order-1", 3)
		mem := e.join("g")
		d0, d1, d2 := recv(t, mem), recv(t, mem), recv(t, mem)
		mem.Nack(ids(d0), NackPark, "bad data")
		mem.Nack(ids(d1), NackPark, "")
		mem.Ack(ids(d2))
		eventually(t, "two parked", func() bool { return e.info("g").Parked == 2 })
		ps := e.parked("g")
		if len(ps) != 2 || ps[0].Position != evs[0].pos || ps[1].Position != evs[1].pos {
			t.Fatalf("parked %+v", ps)
		}
		if ps[0].Reason != "bad data" || ps[0].DeliveryCount != 1 || ps[1].Reason != "parked by a member" {
			t.Errorf("parked reasons %q (count %d), %q", ps[0].Reason, ps[0].DeliveryCount, ps[1].Reason)
		}
		eventually(t, "checkpoint past parked", func() bool { return e.info("g").Checkpoint == evs[2].pos })
		noDelivery(t, mem, 200*time.Millisecond)
	})
	t.Run("nack at max deliveries parks", func(t *testing.T) {
		e := newEnv(t)
		s := settings("g", "order")
		s.MaxDeliveries = 2
		e.create(s)
		ev := e.appendN("order-1", 1)[0]
		mem := e.join("g")
		mem.Nack(ids(recv(t, mem)), NackRetry, "one")
		d := recv(t, mem)
		if d.Count != 2 {
			t.Fatalf("count %d, want 2", d.Count)
		}
		mem.Nack(ids(d), NackRetryLater, "two")
		eventually(t, "parked", func() bool { return e.info("g").Parked == 1 })
		ps := e.parked("g")
		if len(ps) != 1 || ps[0].Position != ev.pos || ps[0].DeliveryCount != 2 || !strings.Contains(ps[0].Reason, "two") {
			t.Fatalf("parked %+v", ps)
		}
		noDelivery(t, mem, 200*time.Millisecond)
	})
	t.Run("unknown ids ignored", func(t *testing.T) {
		e := newEnv(t)
		e.create(settings("g", "order"))
		e.appendN("order-1", 1)
		mem := e.join("g")
		d := recv(t, mem)
		mem.Ack([][16]byte{{1, 2, 3}})
		mem.Nack([][16]byte{{4, 5, 6}}, NackPark, "")
		mem.Ack(ids(d))
		mem.Ack(ids(d)) // twice: ignored
		eventually(t, "acked", func() bool { i := e.info("g"); return i.Acked == 1 && i.InFlight == 0 })
		if i := e.info("g"); i.Parked != 0 {
			t.Errorf("parked %d", i.Parked)
		}
	})
}

// TestMaxInFlight: with max_in_flight N and members that do not ack, N
// events are outstanding, no more; each ack lets one more through.
func TestMaxInFlight(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.MaxInFlight, s.AckTimeout = 5, 10*time.Second
	e.create(s)
	a, b := e.join("g"), e.join("g")
	evs := e.appendN("order-1", 20)
	var got []Delivery
	drain := func() {
		for {
			select {
			case d := <-a.Deliveries():
				a.Sent()
				got = append(got, d)
			case d := <-b.Deliveries():
				b.Sent()
				got = append(got, d)
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drain()
	if len(got) != 5 {
		t.Fatalf("%d delivered with max_in_flight 5", len(got))
	}
	if i := e.info("g"); i.InFlight != 5 {
		t.Fatalf("in_flight %d, want 5", i.InFlight)
	}
	a.Ack(ids(got[0], got[1]))
	drain()
	if len(got) != 7 {
		t.Fatalf("%d delivered after 2 acks, want 7", len(got))
	}
	if i := e.info("g"); i.InFlight != 5 {
		t.Fatalf("in_flight %d, want 5", i.InFlight)
	}
	// Acking everything lets everything through, in position order.
	seen := map[uint64]bool{}
	for deadline := time.Now().Add(waitFor); len(seen) < len(evs); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events delivered", len(seen), len(evs))
		}
		for _, d := range got {
			seen[d.Event.Position] = true
		}
		b.Ack(ids(got...))
		got = got[:0]
		drain()
	}
	eventually(t, "checkpoint at the last event", func() bool { return e.info("g").Checkpoint == evs[len(evs)-1].pos })
}

// TestRoundRobinSpreads: round robin shares the events among the members.
func TestRoundRobinSpreads(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	e.create(settings("g", "order"))
	mems := []*Member{e.join("g"), e.join("g"), e.join("g")}
	for i := range 6 {
		e.appendN("order-"+string(rune('a'+i)), 5)
	}
	counts := make([]int, len(mems))
	for total, deadline := 0, time.Now().Add(waitFor); total < 30; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 30 events delivered", total)
		}
		for i, m := range mems {
			if d, ok := recvWithin(m, 10*time.Millisecond); ok {
				counts[i]++
				total++
				m.Ack(ids(d))
			}
		}
	}
	for i, n := range counts {
		if n < 5 {
			t.Errorf("member %d got %d of 30 events: %v", i, n, counts)
		}
	}
}

// TestUpdateTakesEffect: a running group sees a changed ack_timeout (for
// new deliveries) and max_in_flight at once; its target cannot change.
func TestUpdateTakesEffect(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.AckTimeout, s.MaxInFlight = 10*time.Second, 1
	e.create(s)
	mem := e.join("g")
	e.appendN("order-1", 3)
	d := recv(t, mem)
	noDelivery(t, mem, 200*time.Millisecond) // max_in_flight 1
	s.AckTimeout, s.MaxInFlight = 150*time.Millisecond, 2
	info, err := e.m.Update(s)
	if err != nil {
		t.Fatal(err)
	}
	if info.Settings.AckTimeout != s.AckTimeout || info.Settings.MaxInFlight != 2 {
		t.Fatalf("updated settings %+v", info.Settings)
	}
	d2 := recv(t, mem) // room for a second
	start := time.Now()
	d3 := recv(t, mem) // d2 comes back after the new ack_timeout
	if d3.Event.ID != d2.Event.ID || d3.Count != 2 {
		t.Fatalf("got %d count %d, want %d count 2 (redelivery under the new ack_timeout)", d3.Event.Position, d3.Count, d2.Event.Position)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("redelivered after %v", el)
	}
	mem.Ack(ids(d, d2))
	t.Run("immutable target", func(t *testing.T) {
		s2 := s
		s2.TargetName = "invoice"
		if _, err := e.m.Update(s2); !errors.Is(err, ErrImmutable) {
			t.Fatalf("update target: %v, want ErrImmutable", err)
		}
		s2 = s
		s2.Name = "nope"
		if _, err := e.m.Update(s2); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update missing group: %v, want ErrNotFound", err)
		}
	})
	e.reopen()
	if got := e.info("g").Settings; got.AckTimeout != s.AckTimeout || got.MaxInFlight != 2 {
		t.Fatalf("settings after reopen %+v", got)
	}
}

// TestUpdateFilterTakesEffect: an all-target group's filter may change
// (Update refuses only a changed target), and "members see the change at
// once": events committed after the update are filtered by the new one.
//
// BUG: Manager.Update only swaps d.s in the running dispatcher; its
// source subscription keeps the filter it was started with, so until the
// dispatcher restarts (last member leaves, server restart) members get
// what the old filter matches and miss what the new one does. Either
// refuse filter changes (compare StreamPrefixes/TypePrefixes with the
// target in Manager.Update: ErrImmutable) or restart the source.
func TestUpdateFilterTakesEffect(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := Settings{Name: "g", Target: subscription.TargetAll, StreamPrefixes: []string{"a-"}, AckTimeout: time.Second, MaxDeliveries: 10}
	e.create(s)
	mem := e.join("g")
	e.appendN("b-1", 1)
	noDelivery(t, mem, 100*time.Millisecond)
	s.StreamPrefixes = []string{"b-"}
	if _, err := e.m.Update(s); err != nil {
		if errors.Is(err, ErrImmutable) {
			return // a filter that cannot change is a consistent answer too
		}
		t.Fatal(err)
	}
	a := e.appendN("a-1", 1)[0]
	b := e.appendN("b-2", 1)[0]
	var got []uint64
	for {
		d, ok := recvWithin(mem, time.Second)
		if !ok {
			break
		}
		got = append(got, d.Event.Position)
		mem.Ack(ids(d))
	}
	if !slices.Contains(got, b.pos) || slices.Contains(got, a.pos) {
		t.Errorf("after the filter changed from a- to b-: delivered %v; want b-2 (%d), not a-1 (%d)", got, b.pos, a.pos)
	}
}
