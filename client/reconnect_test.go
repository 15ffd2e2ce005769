package client_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
	"github.com/esdhq/esd/internal/testutil/esdtest"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
)

// proxy forwards TCP connections to an address; cut breaks those open,
// as a network failure would.
type proxy struct {
	addr  string
	lis   net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: lis.Addr().String(), lis: lis}
	p.wg.Go(func() {
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			p.wg.Go(func() { _, _ = io.Copy(out, in); _ = out.Close() })
			p.wg.Go(func() { _, _ = io.Copy(in, out); _ = in.Close() })
		}
	})
	t.Cleanup(func() {
		_ = lis.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestSubscriptionAndMemberSurviveALostConnection cuts the connection
// under a live subscription and a group member: the subscription resumes
// without a gap or a duplicate, the member joins again, and no event is
// lost.
func TestSubscriptionAndMemberSurviveALostConnection(t *testing.T) {
	direct, srv := dial(t)
	p := startProxy(t, srv.Addr)
	c, err := client.Dial(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	createGroup(t, direct, "rc", "rc", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	appendN(t, direct, "rc-1", 3)

	var (
		mu      sync.Mutex
		handled = map[string]bool{}
		joins   int
	)
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	member := runMember(mctx, c, "rc", func(_ context.Context, ev *esdv1.RecordedEvent) error {
		mu.Lock()
		handled[ev.GetId()] = true
		mu.Unlock()
		return nil
	}, client.OnJoined(func(string) { mu.Lock(); joins++; mu.Unlock() }))

	var revs []uint64
	caughtUp := 0
	for se, err := range c.Subscribe(ctx, client.SubscribeStream("rc-1"), client.FromEnd()) {
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case se.CaughtUp && caughtUp == 0:
			caughtUp++
			eventually(t, "the member handled the first events", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 3 })
			p.cut()
			appendN(t, direct, "rc-1", 2) // while the client is cut off
		case se.CaughtUp:
			caughtUp++
		case se.Event != nil:
			revs = append(revs, se.Event.GetRevision())
		}
		if caughtUp == 2 { // the resumed subscription's
			break
		}
	}
	if fmtS(revs) != "[3 4]" || caughtUp != 2 {
		t.Fatalf("subscription from the end across a cut: revisions %v, %d caught-up markers; want [3 4], 2", revs, caughtUp)
	}
	eventually(t, "the member handled every event", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) == 5 })
	stop()
	if err := waitErr(t, member); err != nil {
		t.Fatal(err)
	}
	if joins < 2 {
		t.Fatalf("the member joined %d times, want again after the cut", joins)
	}
}

// TestReadResumesAfterALostConnection cuts the connection in the middle
// of a read: the read goes on after the last event it yielded, with no
// gap and no duplicate.
func TestReadResumesAfterALostConnection(t *testing.T) {
	var reads atomic.Int32
	srv := esdtest.Start(t, func(o *esdtest.Options) {
		o.Server.StreamInterceptors = append(o.Server.StreamInterceptors, func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if info.FullMethod == esdv1.StreamService_ReadStream_FullMethodName {
				reads.Add(1)
			}
			return h(s, ss)
		})
	})
	direct := dialTo(t, srv)
	const n = 1500
	data := make([]byte, 4<<10) // more than the connection's flow-control window holds in flight
	for i := 0; i < n; i += 100 {
		events := make([]*esdv1.ProposedEvent, 100)
		for j := range events {
			events[j] = client.NewEvent("Big", data)
		}
		if _, err := direct.Append(context.Background(), "long-1", client.Any(), events...); err != nil {
			t.Fatal(err)
		}
	}
	p := startProxy(t, srv.Addr)
	c, err := client.Dial(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var next uint64
	for ev, err := range c.Read(context.Background(), "long-1") {
		if err != nil {
			t.Fatalf("after revision %d: %v", next, err)
		}
		if ev.GetRevision() != next {
			t.Fatalf("revision %d after %d", ev.GetRevision(), next-1)
		}
		if next == 0 {
			p.cut()
		}
		next++
	}
	if next != n || reads.Load() < 2 {
		t.Fatalf("read %d events in %d calls; want %d, in more than one call", next, reads.Load(), n)
	}
}

// TestNothingWaitsForeverOnAWrongAddress: a member or subscription that
// never reached the server gives up after the client's retries.
func TestNothingWaitsForeverOnAWrongAddress(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // nothing listens there now
	c, err := client.Dial(addr, client.WithRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = c.RunMember(ctx, "g", func(context.Context, *esdv1.RecordedEvent) error { return nil })
	if !client.IsTemporary(err) || ctx.Err() != nil {
		t.Fatalf("member at a wrong address: %v, want UNAVAILABLE before the deadline", err)
	}
	yielded := 0
	for _, err := range c.Subscribe(ctx, client.SubscribeAll(client.Filter{})) {
		yielded++
		if !client.IsTemporary(err) || ctx.Err() != nil {
			t.Fatalf("subscription at a wrong address: %v, want UNAVAILABLE before the deadline", err)
		}
	}
	if yielded != 1 {
		t.Fatalf("subscription at a wrong address yielded %d times, want its error once", yielded)
	}
	if _, err := c.Append(ctx, "s", client.Any(), client.NewEvent("E", nil)); !client.IsTemporary(err) {
		t.Fatalf("append at a wrong address: %v, want UNAVAILABLE", err)
	}
}
