package group

import (
	"testing"
	"time"
)

// parkAll has mem receive n deliveries and park them (reason r).
func parkAll(t *testing.T, mem *Member, n int, r string) []Delivery {
	t.Helper()
	ds := make([]Delivery, n)
	for i := range ds {
		ds[i] = recv(t, mem)
	}
	mem.Nack(ids(ds...), NackPark, r)
	return ds
}

// TestReplayParked: replayed events are delivered again with counts from
// 1, in position order; an acknowledged one leaves the parked list, one
// parked again stays once; one not acknowledged before a restart stays
// parked (and is not delivered after it until replayed again).
func TestReplayParked(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.MaxDeliveries, s.AckTimeout = 3, 400*time.Millisecond
	e.create(s)
	evs := e.appendN("order-1", 5)
	mem := e.join("g")
	parkAll(t, mem, 4, "first")
	last := recv(t, mem)
	mem.Ack(ids(last))
	eventually(t, "4 parked, checkpoint at the end", func() bool {
		i := e.info("g")
		return i.Parked == 4 && i.Checkpoint == evs[4].pos
	})
	n, err := e.m.ReplayParked("g", 0)
	if err != nil || n != 4 {
		t.Fatalf("replay: %d, %v; want 4", n, err)
	}
	var rs []Delivery
	for i := range 4 {
		d := recv(t, mem)
		if d.Event.Position != evs[i].pos || d.Count != 1 {
			t.Fatalf("replayed delivery %d: position %d count %d, want %d count 1", i, d.Event.Position, d.Count, evs[i].pos)
		}
		rs = append(rs, d)
	}
	if got := len(e.parked("g")); got != 4 {
		t.Fatalf("%d parked while replayed and not acked, want 4", got)
	}
	mem.Ack(ids(rs[0], rs[1]))
	mem.Nack(ids(rs[2]), NackPark, "again")
	eventually(t, "2 parked", func() bool { return e.info("g").Parked == 2 })
	ps := e.parked("g")
	if len(ps) != 2 || ps[0].Position != evs[2].pos || ps[1].Position != evs[3].pos {
		t.Fatalf("parked %+v, want positions %d, %d", ps, evs[2].pos, evs[3].pos)
	}
	if ps[0].Reason != "again" || ps[1].Reason != "first" {
		t.Errorf("reasons %q, %q", ps[0].Reason, ps[1].Reason)
	}
	// rs[3] is not acknowledged: a restart leaves it parked.
	e.reopen()
	if i := e.info("g"); i.Parked != 2 || i.Checkpoint != evs[4].pos {
		t.Fatalf("after reopen: parked %d checkpoint %d", i.Parked, i.Checkpoint)
	}
	if ps := e.parked("g"); len(ps) != 2 || ps[1].Position != evs[3].pos || ps[1].DeliveryCount != 1 {
		t.Fatalf("parked after reopen %+v", ps)
	}
	mem = e.join("g")
	noDelivery(t, mem, 300*time.Millisecond)
	if n, err := e.m.ReplayParked("g", 1); err != nil || n != 1 {
		t.Fatalf("replay 1: %d, %v", n, err)
	}
	d := recv(t, mem)
	if d.Event.Position != evs[2].pos || d.Count != 1 {
		t.Fatalf("replay oldest first: got %d count %d, want %d", d.Event.Position, d.Count, evs[2].pos)
	}
	// A replayed event that is not acknowledged times out like any other.
	for want := 2; want <= 3; want++ {
		if d := recv(t, mem); d.Event.Position != evs[2].pos || d.Count != want {
			t.Fatalf("replayed event redelivered: %d count %d, want count %d", d.Event.Position, d.Count, want)
		}
	}
	eventually(t, "parked again after max deliveries", func() bool {
		ps := e.parked("g")
		return len(ps) == 2 && ps[0].DeliveryCount == 3
	})
	if i := e.info("g"); i.Parked != 2 {
		t.Fatalf("parked count %d after a replayed event was parked again, want 2", i.Parked)
	}
}

// TestReplayParkedWaitsForMember: a replay asked while the group has no
// members is delivered to the first member that joins.
func TestReplayParkedWaitsForMember(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	e.create(settings("g", "order"))
	evs := e.appendN("order-1", 2)
	mem := e.join("g")
	parkAll(t, mem, 2, "x")
	eventually(t, "parked", func() bool { return e.info("g").Parked == 2 })
	mem.Leave()
	eventually(t, "the dispatcher gone", func() bool { return !e.running("g") })
	if n, err := e.m.ReplayParked("g", 0); err != nil || n != 2 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	if n, err := e.m.ReplayParked("g", 0); err != nil || n != 2 { // asked twice: delivered once
		t.Fatalf("replay again: %d, %v", n, err)
	}
	mem = e.join("g")
	for i := range 2 {
		d := recv(t, mem)
		if d.Event.Position != evs[i].pos || d.Count != 1 {
			t.Fatalf("replayed %d: position %d count %d", i, d.Event.Position, d.Count)
		}
		mem.Ack(ids(d))
	}
	noDelivery(t, mem, 200*time.Millisecond)
	eventually(t, "nothing parked", func() bool { return e.info("g").Parked == 0 && len(e.parked("g")) == 0 })
}

// TestReplayParkedBehindUnackedEvent: an event parked while an earlier
// one is still in flight is replayed like any other.
//
// BUG: dispatcher.replayParked skips a position still in d.entries, and a
// parked source entry stays there (done) until the checkpoint passes it:
// ReplayParked reports it replayed, yet it is never delivered.
func TestReplayParkedBehindUnackedEvent(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	s := settings("g", "order")
	s.AckTimeout = 10 * time.Second
	e.create(s)
	evs := e.appendN("order-1", 2)
	mem := e.join("g")
	d0, d1 := recv(t, mem), recv(t, mem)
	mem.Nack(ids(d1), NackPark, "later")
	eventually(t, "parked", func() bool { return e.info("g").Parked == 1 })
	if n, err := e.m.ReplayParked("g", 0); err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	d, ok := recvWithin(mem, 2*time.Second)
	if !ok {
		t.Fatalf("ReplayParked reported 1 replayed, but position %d (parked while %d was in flight) was not delivered", evs[1].pos, d0.Event.Position)
	}
	if d.Event.Position != evs[1].pos || d.Count != 1 {
		t.Fatalf("replayed: position %d count %d, want %d count 1", d.Event.Position, d.Count, evs[1].pos)
	}
	mem.Ack(ids(d0, d))
	eventually(t, "unparked", func() bool { return e.info("g").Parked == 0 })
}

// TestParkedStaysOutAfterDispatcherRestart: a parked event is out of
// delivery until replayed, also when the group's dispatcher starts again
// from a checkpoint below it (the last member left, or a restart), and
// the parked count matches the parked list.
//
// BUG: a new dispatcher re-reads the source from the stored checkpoint
// and delivers parked events above it again; parking one again counts it
// twice in Info.Parked (dispatcher.park increments g.parked for a key
// that exists).
func TestParkedStaysOutAfterDispatcherRestart(t *testing.T) {
	lowerTunables(t)
	for _, how := range []string{"last member left", "reopen"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			e.create(settings("g", "order"))
			evs := e.appendN("order-1", 2)
			mem := e.join("g")
			recv(t, mem) // evs[0], held
			d1 := recv(t, mem)
			mem.Nack(ids(d1), NackPark, "poison")
			eventually(t, "parked", func() bool { return e.info("g").Parked == 1 })
			if how == "reopen" {
				e.reopen()
			} else {
				mem.Leave()
				eventually(t, "the dispatcher gone", func() bool { return !e.running("g") })
			}
			mem = e.join("g")
			d := recv(t, mem)
			if d.Event.Position != evs[0].pos {
				t.Fatalf("first delivery after restart: %d, want %d", d.Event.Position, evs[0].pos)
			}
			mem.Ack(ids(d))
			if d, ok := recvWithin(mem, 500*time.Millisecond); ok {
				t.Errorf("parked event %d delivered again (count %d) without a replay", d.Event.Position, d.Count)
				mem.Nack(ids(d), NackPark, "poison again")
			}
			eventually(t, "checkpoint at the end", func() bool { return e.info("g").Checkpoint == evs[1].pos })
			if i, ps := e.info("g"), e.parked("g"); i.Parked != len(ps) {
				t.Errorf("Info.Parked %d, but %d in the parked list", i.Parked, len(ps))
			}
		})
	}
}

// TestReplayKeptWhenLastMemberLeaves: replayed events a member did not
// acknowledge go to the next member, also when it was the last one (as a
// replay asked with no members waits for one).
//
// BUG (contract gap): dispatcher.shutdown drops unfinished replay entries
// when the last member leaves; the events stay parked but are never
// delivered, although ReplayParked answered that they were handed back.
func TestReplayKeptWhenLastMemberLeaves(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	e.create(settings("g", "order"))
	ev := e.appendN("order-1", 1)[0]
	mem := e.join("g")
	parkAll(t, mem, 1, "x")
	eventually(t, "parked", func() bool { return e.info("g").Parked == 1 })
	if n, err := e.m.ReplayParked("g", 0); err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	if d := recv(t, mem); d.Event.Position != ev.pos {
		t.Fatalf("replayed %d", d.Event.Position)
	}
	mem.Leave() // without acknowledging the replayed event
	eventually(t, "the dispatcher gone", func() bool { return !e.running("g") })
	mem = e.join("g")
	d, ok := recvWithin(mem, 2*time.Second)
	if !ok {
		t.Fatalf("the replayed event %d, unacknowledged when its member left, was never delivered again", ev.pos)
	}
	mem.Ack(ids(d))
	eventually(t, "unparked", func() bool { return e.info("g").Parked == 0 })
}
