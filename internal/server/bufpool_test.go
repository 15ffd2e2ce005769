package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func TestClassPool(t *testing.T) {
	p := newClassPool([]*poolClass{{size: 100, keep: 2}, {size: 1000, keep: 1}})
	for _, tc := range []struct {
		n       int
		wantCap int
	}{{1, 100}, {100, 100}, {101, 1000}, {1000, 1000}, {1001, 1001}} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.wantCap)
		}
	}

	// A buffer put back is handed out again, also when it grew a little;
	// one put back shorter than its class goes to the class below.
	b := p.Get(500)
	p.Put(b)
	if c := p.Get(900); c != b {
		t.Errorf("Get after Put: a new buffer, want the one put back")
	}
	q := newClassPool([]*poolClass{{size: 4 << 10, keep: 1}}) // the smallest class of wirePool
	full := q.Get(4 << 10)
	grown := append(*full, 'x') // as a chunk grows past its class
	q.Put(&grown)
	if c := q.Get(4 << 10); c != &grown || len(*c) != 4<<10 {
		t.Errorf("Get after Put of a buffer grown by append (cap %d): a new buffer, want the one put back", cap(grown))
	}
	huge := make([]byte, 0, 6<<10+1) // more than half as large again as its class: not kept
	q.Put(&huge)
	if n := len(q.classes[0].free); n != 0 {
		t.Errorf("a buffer of %d bytes was kept in the class of 4 KiB", cap(huge))
	}
	short := make([]byte, 0, 999) // short of its class, too large for the one below
	p.Put(&short)
	cut := make([]byte, 0, 120)
	p.Put(&cut)
	if len(p.classes[1].free) != 0 || len(p.classes[0].free) != 1 {
		t.Fatalf("free lists %d, %d: want the buffer of 120 bytes in the class of 100, not that of 999",
			len(p.classes[0].free), len(p.classes[1].free))
	}
	<-p.classes[0].free

	// A class keeps at most keep buffers; smaller than every class: none.
	for range 3 {
		p.Put(p.Get(50))
	}
	if n := len(p.classes[0].free); n != 1 {
		t.Errorf("free list of class 100: %d buffers after Get/Put pairs, want 1 (each Get takes the one put back)", n)
	}
	held := []*[]byte{p.Get(50), p.Get(50), p.Get(50)}
	for _, b := range held {
		p.Put(b)
	}
	if n := len(p.classes[0].free); n != 2 {
		t.Errorf("free list of class 100: %d buffers, want its keep (2)", n)
	}
	small := make([]byte, 10)
	p.Put(&small)
	if n := len(p.classes[0].free); n != 2 {
		t.Errorf("a buffer below every class was kept")
	}
}

// TestCatchUpRecyclesBuffers: a subscription catching up over 32 MiB of
// history is sent in 1 MiB chunks whose buffers come back to wirePool and
// are used again: a handful are allocated, not one per message (gRPC's
// default pool allocated every one; a sync.Pool one in four).
func TestCatchUpRecyclesBuffers(t *testing.T) {
	srv := startSubServer(t, t.TempDir())
	client := esdv1.NewStreamServiceClient(srv.dial(t))
	ctx := context.Background()
	data := strings.Repeat("x", 4<<10)
	const appends, perAppend = 128, 64 // 32 MiB
	for a := range appends {
		var evs []*esdv1.ProposedEvent
		for range perAppend {
			evs = append(evs, event("Blob", data))
		}
		if _, err := client.Append(ctx, appendReq(fmt.Sprintf("blob-%d", a%8), xAny, evs...)); err != nil {
			t.Fatal(err)
		}
	}
	top := wirePool.classes[len(wirePool.classes)-1]
	made := top.made.Load()
	stream, err := client.Subscribe(ctx, subAll(nil))
	if err != nil {
		t.Fatal(err)
	}
	got, messages := 0, 0
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetCaughtUp() != nil {
			break
		}
		got += len(m.GetEvents().GetEvents())
		messages++
	}
	if got != appends*perAppend {
		t.Fatalf("%d events before caught_up, want %d", got, appends*perAppend)
	}
	n := top.made.Load() - made
	t.Logf("%d messages, %d buffers of %d bytes allocated", messages, n, top.size)
	if n > int64(top.keep) {
		t.Errorf("%d messages allocated %d buffers of %d bytes, want at most %d", messages, n, top.size, top.keep)
	}
}
