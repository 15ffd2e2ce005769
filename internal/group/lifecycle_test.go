package group

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/subscription"
)

// TestGroupsSurviveReopen: settings, checkpoints and parked lists are
// durable; group names that prefix one another keep apart.
func TestGroupsSurviveReopen(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	a := Settings{Name: "a", Target: subscription.TargetAll, StreamPrefixes: []string{"order-", "inv"},
		TypePrefixes: []string{"Tested"}, AckTimeout: 250 * time.Millisecond, MaxDeliveries: 7, MaxInFlight: 33, Strategy: ByStream}
	ab := settings("ab", "order")
	e.create(a)
	e.create(ab)
	evs := e.appendN("order-1", 3)
	for _, name := range []string{"a", "ab"} {
		mem := e.join(name)
		for i := range 3 { // one at a time: a is by stream
			d := recv(t, mem)
			if i == 0 || (i == 1 && name == "ab") {
				mem.Nack(ids(d), NackPark, "p")
			} else {
				mem.Ack(ids(d))
			}
		}
		eventually(t, name+" at the end", func() bool { return e.info(name).Checkpoint == evs[2].pos })
		mem.Leave()
	}
	e.reopen()
	infos, err := e.m.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Settings.Name != "a" || infos[1].Settings.Name != "ab" {
		t.Fatalf("groups after reopen: %+v", infos)
	}
	if !reflect.DeepEqual(infos[0].Settings, a) {
		t.Errorf("settings of a after reopen:\n got %+v\nwant %+v", infos[0].Settings, a)
	}
	if want := ab.withDefaults(); !reflect.DeepEqual(infos[1].Settings, want) {
		t.Errorf("settings of ab after reopen:\n got %+v\nwant %+v", infos[1].Settings, want)
	}
	if infos[0].Parked != 1 || infos[1].Parked != 2 || infos[0].Checkpoint != evs[2].pos || infos[1].Checkpoint != evs[2].pos {
		t.Errorf("after reopen: a parked %d checkpoint %d; ab parked %d checkpoint %d", infos[0].Parked, infos[0].Checkpoint,
			infos[1].Parked, infos[1].Checkpoint)
	}
	if ps := e.parked("a"); len(ps) != 1 || ps[0].Position != evs[0].pos {
		t.Errorf("parked of a: %+v", ps)
	}
	if infos[0].Delivered != 0 || infos[0].Members != 0 || infos[0].InFlight != 0 {
		t.Errorf("counters after reopen: %+v", infos[0])
	}
}

// TestCreateStartsAndDelete: where a group starts; a second create fails;
// deleting ends its members with ErrNotFound and removes every key of it
// (not those of a group whose name it prefixes), so a new group of the
// same name starts from its own start.
func TestCreateStartsAndDelete(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	evs := e.appendN("order-1", 4)
	if _, err := e.m.Create(settings("g", "order"), subscription.FromStart, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(settings("g", "invoice"), subscription.FromStart, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if i, err := e.m.Create(settings("end", "order"), subscription.FromEnd, 0); err != nil || i.Checkpoint != evs[3].pos {
		t.Fatalf("from end: checkpoint %d, %v; want %d", i.Checkpoint, err, evs[3].pos)
	}
	if i, err := e.m.Create(settings("after", "order"), subscription.AfterPosition, evs[1].pos); err != nil || i.Checkpoint != evs[1].pos {
		t.Fatalf("after position: checkpoint %d, %v", i.Checkpoint, err)
	}
	if _, err := e.m.Create(settings("rev", "order"), subscription.AfterRevision, 1); err == nil {
		t.Fatal("create after a revision: no error (a group's checkpoint is a position)")
	}
	if _, err := e.m.Get("rev"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get the group refused at create: %v, want ErrNotFound", err)
	}
	e.create(settings("gx", "order")) // "g" prefixes its name
	first := func(name string) uint64 {
		t.Helper()
		mem := e.join(name)
		defer mem.Leave()
		d, ok := recvWithin(mem, time.Second)
		if !ok {
			return 0
		}
		return d.Event.Position
	}
	if p := first("after"); p != evs[2].pos {
		t.Errorf("after_position group starts at %d, want %d", p, evs[2].pos)
	}
	if p := first("end"); p != 0 {
		t.Errorf("from_end group delivered %d of the history", p)
	}
	// Group g parks one event and moves its checkpoint; gx too.
	for _, name := range []string{"g", "gx"} {
		mem := e.join(name)
		ds := []Delivery{recv(t, mem), recv(t, mem), recv(t, mem), recv(t, mem)}
		mem.Nack(ids(ds[0]), NackPark, "p")
		mem.Ack(ids(ds[1:]...))
		eventually(t, name+" done", func() bool { i := e.info(name); return i.Checkpoint == evs[3].pos && i.Parked == 1 })
		if name == "gx" {
			mem.Leave()
			continue
		}
		// g keeps a member, which the delete ends.
		if err := e.m.Delete("g"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-mem.Done():
			if !errors.Is(mem.Err(), ErrNotFound) {
				t.Errorf("member of a deleted group ends with %v, want ErrNotFound", mem.Err())
			}
		case <-time.After(waitFor):
			t.Fatal("member of a deleted group still in")
		}
	}
	if _, err := e.m.Get("g"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get deleted: %v", err)
	}
	if _, err := e.m.Join("g", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("join deleted: %v", err)
	}
	if err := e.m.Delete("g"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
	if _, err := e.m.ReplayParked("g", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("replay deleted: %v", err)
	}
	if n := e.auxKeys(parkedGroupPrefix("g")); n != 0 {
		t.Errorf("%d parked keys of g left", n)
	}
	if _, ok, _ := e.aux().Get(settingsKey("g")); ok {
		t.Error("settings of g left")
	}
	if _, ok := e.storedCheckpoint("g"); ok {
		t.Error("checkpoint of g left")
	}
	if n := e.auxKeys(parkedGroupPrefix("gx")); n != 1 {
		t.Errorf("gx has %d parked keys after g was deleted, want 1", n)
	}
	if _, ok := e.storedCheckpoint("gx"); !ok {
		t.Error("checkpoint of gx gone with g")
	}
	// A new g starts from its own start, with nothing parked.
	e.create(settings("g", "order"))
	if i := e.info("g"); i.Checkpoint != 0 || i.Parked != 0 || i.Delivered != 0 {
		t.Fatalf("new g: %+v", i)
	}
	if p := first("g"); p != evs[0].pos {
		t.Errorf("new g starts at %d, want %d", p, evs[0].pos)
	}
	e.reopen()
	if _, err := e.m.Get("g"); err != nil {
		t.Fatalf("new g after reopen: %v", err)
	}
	if i := e.info("gx"); i.Parked != 1 {
		t.Errorf("gx parked %d after reopen", i.Parked)
	}
}

// TestCloseEndsMembers: Close ends members with ErrClosed, stores the
// checkpoints and refuses new work.
func TestCloseEndsMembers(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	e.create(settings("g", "order"))
	evs := e.appendN("order-1", 3)
	mem := e.join("g")
	ds := []Delivery{recv(t, mem), recv(t, mem), recv(t, mem)}
	mem.Ack(ids(ds[:2]...))
	eventually(t, "checkpoint", func() bool { return e.info("g").Checkpoint == evs[1].pos })
	e.m.Close()
	select {
	case <-mem.Done():
		if !errors.Is(mem.Err(), ErrClosed) {
			t.Errorf("member ends with %v, want ErrClosed", mem.Err())
		}
	default:
		t.Fatal("member still in after Close")
	}
	if cp, _ := e.storedCheckpoint("g"); cp != evs[1].pos {
		t.Errorf("stored checkpoint %d, want %d", cp, evs[1].pos)
	}
	if _, err := e.m.Join("g", ""); !errors.Is(err, ErrClosed) {
		t.Errorf("join after close: %v", err)
	}
	if _, err := e.m.Create(settings("h", "order"), subscription.FromStart, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("create after close: %v", err)
	}
	mem.Ack(ids(ds[2])) // after Close: ignored, no panic
	mem.Leave()
}

// TestCloseWhileLastMemberLeaves: a dispatcher that stops on its own (its
// last member left) while Close or Delete stops it too.
//
// BUG (data race, fails under -race): dispatcher.shutdown reads
// d.stopErr while dispatcher.stop (from Manager.Close / Manager.Delete,
// which still see g.run) writes it: the loop returned because the last
// member left, not because quit was closed, so nothing orders the two.
// The server trips over it at every shutdown with members connected:
// Server.shutdown cancels the Join streams (members leave, the dispatcher
// stops on its own) and then calls groups.Close.
func TestCloseWhileLastMemberLeaves(t *testing.T) {
	e := newEnv(t) // saveEvery as it is: shutdown has the checkpoint to store
	for i := range 20 {
		name := fmt.Sprintf("g%d", i)
		e.create(settings(name, "order"))
		mem := e.join(name)
		if i == 0 {
			e.appendN("order-1", 1)
		}
		mem.Ack(ids(recv(t, mem))) // a checkpoint to store: shutdown takes a while
		mem.Leave()
		if err := e.m.Delete(name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeleteRacesCreate: a group created again while its delete is in
// progress is a whole group: its settings are stored.
//
// BUG: Manager.Delete takes the group out of m.groups first, then stops
// its dispatcher and only then deletes its keys, outside m.mu: a Create of
// the same name in between stores the new settings and checkpoint, which
// the delete then removes. The new group runs, but vanishes at the next
// restart (and its checkpoint is not stored until it moves).
func TestDeleteRacesCreate(t *testing.T) {
	lowerTunables(t)
	e := newEnv(t)
	e.appendN("order-1", 1)
	lost := 0
	for i := range 10 {
		name := fmt.Sprintf("g%d", i)
		e.create(settings(name, "order"))
		mem := e.join(name)
		mem.Ack(ids(recv(t, mem)))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.m.Delete(name); err != nil {
				t.Errorf("delete: %v", err)
			}
		}()
		for {
			_, err := e.m.Create(settings(name, "order"), subscription.FromStart, 0)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrExists) {
				t.Fatal(err)
			}
		}
		wg.Wait()
		if _, err := e.m.Get(name); err != nil {
			t.Fatalf("the group created again: %v", err)
		}
		if _, ok, _ := e.aux().Get(settingsKey(name)); !ok {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of 10 groups created while their predecessor was being deleted have no stored settings (lost at the next restart)", lost)
	}
}

// TestJoinRacesClose: a Join that overlaps Close never leaves a member
// (and a dispatcher) running after Close returned.
//
// BUG (narrow): Manager.Join checks m.closed once (m.get); when its first
// dispatcher is stopping (do fails) it waits and starts another without
// looking again, so a Join overlapping Close can start a dispatcher
// after Close collected the running ones: it then runs (with its
// subscription on the log) until its member leaves.
func TestJoinRacesClose(t *testing.T) {
	lowerTunables(t)
	const tries = 30
	hits := 0
	for i := range tries {
		e := newEnv(t)
		e.create(settings("g", "order"))
		a := e.join("g")
		var (
			b   *Member
			err error
			wg  sync.WaitGroup
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err = e.m.Join("g", "b")
		}()
		a.Leave() // the dispatcher stops: b's Join may find it stopping
		// Shifts Close against b's Join, try by try (the race under
		// test); nothing waits for a condition here.
		time.Sleep(time.Duration(i%5) * 50 * time.Microsecond)
		e.m.Close()
		wg.Wait()
		if err == nil {
			select {
			case <-b.Done():
			case <-time.After(200 * time.Millisecond):
				hits++
				b.Leave() // let the stray dispatcher go before the log closes
				eventually(t, "the stray dispatcher gone", func() bool { return !e.running("g") })
			}
		}
		e.close()
	}
	if hits > 0 {
		t.Errorf("%d of %d Joins overlapping Close left a member running after Close", hits, tries)
	}
}
