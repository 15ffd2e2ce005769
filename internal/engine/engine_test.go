package engine_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/server"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t testing.TB, cfg engine.Config) *engine.Engine {
	t.Helper()
	cfg.Dir = t.TempDir()
	cfg.CacheBytes = 8 << 20
	e, err := engine.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

func events(types ...string) []eslog.Event {
	out := make([]eslog.Event, len(types))
	for i, typ := range types {
		out[i] = eslog.Event{ID: eslog.NewEventID(), Type: typ, Data: []byte(typ)}
	}
	return out
}

func exact(rev uint64) eslog.Expectation {
	return eslog.Expectation{Kind: eslog.ExpectExact, Revision: rev}
}

// TestConflictCarriesEventsSince: a wrong expected revision is a
// *ConflictError (also a *eslog.WrongRevisionError) listing the events
// appended after the expected revision, in order.
func TestConflictCarriesEventsSince(t *testing.T) {
	e := open(t, engine.Config{Shards: 2})
	ctx := context.Background()
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "order-1", Events: events("Placed", "Paid", "Shipped")}); err != nil {
		t.Fatal(err)
	}
	_, err := e.Append(ctx, engine.AppendOp{Stream: "order-1", Expect: exact(0), Events: events("Cancelled")})
	var c *engine.ConflictError
	if !errors.As(err, &c) {
		t.Fatalf("append at a stale revision: %v, want *engine.ConflictError", err)
	}
	var wr *eslog.WrongRevisionError
	if !errors.As(err, &wr) || wr.Head != 2 || !wr.Exists {
		t.Fatalf("wrong revision error: %+v", wr)
	}
	var got []string
	for _, ev := range c.EventsSince {
		got = append(got, ev.Type)
	}
	if len(got) != 2 || got[0] != "Paid" || got[1] != "Shipped" || c.Truncated {
		t.Fatalf("events since revision 0: %v (truncated %t), want [Paid Shipped]", got, c.Truncated)
	}
	// A conflict on a stream that does not exist lists nothing.
	_, err = e.Append(ctx, engine.AppendOp{Stream: "order-2", Expect: exact(4), Events: events("X")})
	if !errors.As(err, &c) || len(c.EventsSince) != 0 {
		t.Fatalf("append to a missing stream at revision 4: %v", err)
	}
}

// TestClockGivesCommitTimes: the engine's clock stamps commits, and
// times never go backwards in position order.
func TestClockGivesCommitTimes(t *testing.T) {
	var mu sync.Mutex
	now := time.Now().Add(time.Hour)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	e := open(t, engine.Config{Clock: clock})
	ctx := context.Background()
	first, err := e.Append(ctx, engine.AppendOp{Stream: "s", Events: events("A")})
	if err != nil {
		t.Fatal(err)
	}
	if first.CommitTime != now.UnixNano() {
		t.Fatalf("commit time %d, want the clock's %d", first.CommitTime, now.UnixNano())
	}
	mu.Lock()
	now = now.Add(-time.Minute) // the clock steps back
	mu.Unlock()
	second, err := e.Append(ctx, engine.AppendOp{Stream: "s", Events: events("B")})
	if err != nil {
		t.Fatal(err)
	}
	if second.CommitTime != first.CommitTime {
		t.Fatalf("after the clock stepped back: %d, want %d (never backwards)", second.CommitTime, first.CommitTime)
	}
	del, err := e.Delete(ctx, engine.DeleteOp{Stream: "s", Expect: exact(1), Mode: eslog.DeleteSoft})
	if err != nil || del.CommitTime != first.CommitTime {
		t.Fatalf("delete: %+v, %v", del, err)
	}
}

// TestClockInThePast: commit times are the clock's even when it is behind
// this machine's (a replica applying writes stamped elsewhere), and after
// a restart they go on from the last event's.
func TestClockInThePast(t *testing.T) {
	past := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	open := func(at time.Time) *engine.Engine {
		e, err := engine.Open(engine.Config{Dir: dir, CacheBytes: 8 << 20, Clock: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open(past)
	res, err := e.Append(context.Background(), engine.AppendOp{Stream: "s", Events: events("A")})
	if err != nil {
		t.Fatal(err)
	}
	if res.CommitTime != past.UnixNano() {
		t.Fatalf("commit time %v, want the clock's %v", time.Unix(0, res.CommitTime).UTC(), past)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = open(past.Add(-time.Hour)) // restarted with a clock behind the last commit
	defer e.Close()
	res, err = e.Append(context.Background(), engine.AppendOp{Stream: "s", Events: events("B")})
	if err != nil {
		t.Fatal(err)
	}
	if res.CommitTime != past.UnixNano() {
		t.Fatalf("after a restart: commit time %v, want the last one's %v", time.Unix(0, res.CommitTime).UTC(), past)
	}
}

// sink collects a subscription's events.
type sink struct {
	mu       sync.Mutex
	types    []string
	caughtUp chan struct{}
}

func (s *sink) Event(v *eslog.EventView) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types = append(s.types, string(v.Type()))
	return nil
}
func (s *sink) Flush(uint64) error { return nil }
func (s *sink) CaughtUp(uint64) error {
	close(s.caughtUp)
	return nil
}
func (s *sink) Ended(string) error { return nil }

// TestDrain: Drain refuses writes, ends subscriptions through Stopping,
// and acts once however many front doors call it at the same time.
func TestDrain(t *testing.T) {
	e := open(t, engine.Config{})
	ctx := context.Background()
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "s", Events: events("A")}); err != nil {
		t.Fatal(err)
	}
	k := &sink{caughtUp: make(chan struct{})}
	subErr := make(chan error, 1)
	go func() {
		subErr <- e.Subscribe(ctx, subscription.Request{Target: subscription.TargetAll}, k)
	}()
	<-k.caughtUp
	if !e.Ready() {
		t.Fatal("not ready before Drain")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(e.Drain)
	}
	wg.Wait()
	if e.Ready() || e.Stopping().Err() == nil {
		t.Fatal("ready after Drain")
	}
	if err := <-subErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("subscription after Drain: %v, want it cancelled", err)
	}
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "s", Events: events("B")}); !errors.Is(err, engine.ErrShuttingDown) {
		t.Fatalf("append after Drain: %v, want ErrShuttingDown", err)
	}
	// Reads go on until Close.
	n := 0
	if err := e.ReadStream(ctx, eslog.StreamQuery{Stream: "s"}, func(*eslog.EventView) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("read after Drain: %d events, %v", n, err)
	}
}

// frontDoor serves esd.v1 on e over bufconn until the test ends.
func frontDoor(t *testing.T, e *engine.Engine) (esdv1.StreamServiceClient, context.CancelFunc, <-chan error) {
	t.Helper()
	srv, err := server.New(e, server.Config{Version: "test"}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return esdv1.NewStreamServiceClient(conn), cancel, served
}

// TestTwoFrontDoorsShareOneEngine: two front doors in one process serve
// one engine: a write through one is read through the other, and
// stopping either drains the engine for both.
func TestTwoFrontDoorsShareOneEngine(t *testing.T) {
	// Each front door registers its own metrics: the engine's go to a
	// registry of their own.
	e := open(t, engine.Config{Shards: 2, Registerer: prometheus.NewRegistry()})
	a, stopA, servedA := frontDoor(t, e)
	b, stopB, servedB := frontDoor(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	res, err := a.Append(ctx, &esdv1.AppendRequest{Stream: "cart-1",
		ExpectedRevision: &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}},
		Events:           []*esdv1.ProposedEvent{{Type: "ItemAdded", Data: []byte("{}")}}})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := b.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: "cart-1"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := rs.Recv()
	if err != nil || len(msg.GetEvents()) != 1 || msg.GetEvents()[0].GetPosition() != res.GetLastPosition() {
		t.Fatalf("read through the other front door: %v, %v", msg, err)
	}
	// Front door b's append conflicts with a's write.
	_, err = b.Append(ctx, &esdv1.AppendRequest{Stream: "cart-1",
		ExpectedRevision: &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}},
		Events:           []*esdv1.ProposedEvent{{Type: "ItemAdded"}}})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("conflicting append through b: %v", err)
	}

	stopA()
	if err := <-servedA; err != nil {
		t.Fatalf("front door a: %v", err)
	}
	_, err = b.Append(ctx, &esdv1.AppendRequest{Stream: "cart-2", Events: []*esdv1.ProposedEvent{{Type: "X"}}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("append through b after the engine drained: %v, want UNAVAILABLE", err)
	}
	stopB()
	if err := <-servedB; err != nil {
		t.Fatalf("front door b: %v", err)
	}
}
