package server

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// dialExtra opens another connection to ts, closed at the end of the
// test. The window is fixed (no BDP estimation), so that a client that
// does not read stops the server's writes after 64 KiB.
func (ts *testServer) dialExtra(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ts.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (ts *testServer) refusals(limit string) float64 {
	return testutil.ToFloat64(ts.srv.lmt.refusals.WithLabelValues(limit))
}

// wantLimit checks a refusal: RESOURCE_EXHAUSTED, ErrorInfo reason, and
// metadata limit naming the flag.
func wantLimit(t *testing.T, err error, reason, limit, msgContains string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), msgContains) {
		t.Fatalf("got %v, want RESOURCE_EXHAUSTED with %q", err, msgContains)
	}
	info := statusInfo(st)
	if info.GetDomain() != "esd" || info.GetReason() != reason || info.GetMetadata()["limit"] != limit {
		t.Fatalf("ErrorInfo %v, want reason %s, limit %s", info, reason, limit)
	}
}

// TestAppendEventLimits: Append, AppendMulti and an AppendStream message
// over --max-append-events are refused before decoding, through gRPC, and
// counted; at the limit they are written.
func TestAppendEventLimits(t *testing.T) {
	ts := newTestServer(t, withLimits(Limits{MaxEventBytes: 1 << 20, MaxAppendBytes: 16 << 20, MaxAppendEvents: 10}))
	ctx := testCtx(t)
	if _, err := ts.streams.Append(ctx, appendReq("ok-1", xAny, events(10, "E")...)); err != nil {
		t.Fatal(err)
	}
	_, err := ts.streams.Append(ctx, appendReq("s-1", xAny, events(11, "E")...))
	wantLimit(t, err, reasonTooManyEvents, "max-append-events", "more than 10 events")
	_, err = ts.streams.AppendMulti(ctx, &esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{
		appendReq("m-1", xAny, events(6, "E")...), appendReq("m-2", xAny, events(5, "E")...)}})
	wantLimit(t, err, reasonTooManyEvents, "max-append-events", "more than 10 events")

	as, err := ts.streams.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := as.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte("a"), Append: appendReq("as-1", xAny, events(3, "E")...)}); err != nil {
		t.Fatal(err)
	}
	if r, err := as.Recv(); err != nil || r.GetSuccess() == nil {
		t.Fatalf("first answer %v %v", r, err)
	}
	_ = as.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte("b"), Append: appendReq("as-1", xAny, events(11, "E")...)})
	_, err = as.Recv()
	wantLimit(t, err, reasonTooManyEvents, "max-append-events", "more than 10 events")

	if got := ts.refusals(limitAppendEvents); got != 3 {
		t.Fatalf("esd_limit_refusals_total{limit=append_events} %v, want 3", got)
	}
	if got := ts.readAll(t); len(got) != 13 {
		t.Fatalf("%d events stored, want 13 (nothing of the refused)", len(got))
	}
}

// TestConnectionLimit: past --max-connections a connection is closed at
// once (the client sees UNAVAILABLE), counted; established ones work on,
// and a closed one makes room.
func TestConnectionLimit(t *testing.T) {
	ts := newTestServer(t, withLimits(Limits{MaxConnections: 2}))
	ctx := testCtx(t)
	ts.mustAppend(t, appendReq("c-1", xAny, event("E", "x"))) // connection 1
	second := ts.dialExtra(t)
	if _, err := esdv1.NewStreamServiceClient(second).Append(ctx, appendReq("c-2", xAny, event("E", "x"))); err != nil {
		t.Fatal(err)
	}
	third := ts.dialExtra(t)
	_, err := esdv1.NewStreamServiceClient(third).Append(ctx, appendReq("c-3", xAny, event("E", "x")))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("third connection: %v, want UNAVAILABLE", err)
	}
	if ts.refusals(limitConnections) < 1 || testutil.ToFloat64(ts.srv.lmt.conns) != 2 {
		t.Fatalf("refusals %v, connections %v", ts.refusals(limitConnections), testutil.ToFloat64(ts.srv.lmt.conns))
	}
	ts.mustAppend(t, appendReq("c-1", xAny, event("E", "y"))) // the first works on
	_ = second.Close()
	eventually(t, "a closed connection makes room", func() bool { return testutil.ToFloat64(ts.srv.lmt.conns) == 1 })
	fourth := ts.dialExtra(t)
	if _, err := esdv1.NewStreamServiceClient(fourth).Append(ctx, appendReq("c-4", xAny, event("E", "x"))); err != nil {
		t.Fatal(err)
	}
}

// TestSubscriptionLimits: Subscribe past the per-connection limit, then
// past the total, is TOO_MANY_SUBSCRIPTIONS naming the limit; an ended
// subscription makes room.
func TestSubscriptionLimits(t *testing.T) {
	ts := newTestServer(t, withLimits(Limits{MaxSubscriptions: 3, MaxSubscriptionsPerConnection: 2}))
	ts.mustAppend(t, appendReq("s-1", xAny, event("E", "x")))
	subscribe := func(conn *grpc.ClientConn) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(testCtx(t))
		sub, err := esdv1.NewStreamServiceClient(conn).Subscribe(ctx, &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{}})
		if err == nil {
			_, err = sub.Recv() // the first answer, or the refusal
		}
		if err != nil {
			cancel()
		}
		return cancel, err
	}
	a, b := ts.dialExtra(t), ts.dialExtra(t)
	cancelA1, err := subscribe(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := subscribe(a); err != nil {
		t.Fatal(err)
	}
	_, err = subscribe(a)
	wantLimit(t, err, reasonTooManySubscriptions, "max-subscriptions-per-connection", "this connection has")
	if _, err := subscribe(b); err != nil {
		t.Fatal(err)
	}
	_, err = subscribe(b)
	wantLimit(t, err, reasonTooManySubscriptions, "max-subscriptions", "the server runs")
	cancelA1()
	eventually(t, "the cancelled subscription ends", func() bool { return ts.srv.lmt.subs.Load() == 2 })
	if _, err := subscribe(b); err != nil {
		t.Fatal(err)
	}
	if ts.refusals(limitSubscriptionsConn) != 1 || ts.refusals(limitSubscriptions) != 1 {
		t.Fatalf("refusals %v %v", ts.refusals(limitSubscriptionsConn), ts.refusals(limitSubscriptions))
	}
}

// TestSlowSubscriber: a subscriber from the start whose client reads
// nothing is ended with SUBSCRIBER_TOO_SLOW after the stall timeout, the
// server holding no more than its share for it meanwhile; a subscriber
// that reads gets everything; once the slow client reads, it gets what was
// sent, then the status.
func TestSlowSubscriber(t *testing.T) {
	const share = 1 << 20
	ts := newTestServer(t, withLimits(Limits{SubscriptionMemoryBytes: 2 * share, SubscriberStallTimeout: 300 * time.Millisecond}))
	data := strings.Repeat("x", 64<<10)
	for i := range 8 {
		evs := make([]*esdv1.ProposedEvent, 16)
		for j := range evs {
			evs[j] = event("E", data)
		}
		ts.mustAppend(t, appendReq("big-"+string(rune('a'+i)), xAny, evs...)) // 8 MiB in all
	}
	slowConn, fastConn := ts.dialExtra(t), ts.dialExtra(t)
	ctx := testCtx(t)
	slow, err := esdv1.NewStreamServiceClient(slowConn).Subscribe(ctx, &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{}})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := esdv1.NewStreamServiceClient(fastConn).Subscribe(ctx, &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for n < 128 {
		r, err := fast.Recv()
		if err != nil {
			t.Fatalf("the reading subscriber after %d events: %v", n, err)
		}
		n += len(r.GetEvents().GetEvents())
	}
	eventually(t, "the slow subscriber is ended", func() bool { return ts.refusals(limitSubscriptionMemory) == 1 })
	if held := ts.srv.lmt.subMem.Load(); held > share {
		t.Fatalf("subscribers hold %d bytes, more than a share of %d", held, share)
	}
	got := 0
	for {
		r, err := slow.Recv()
		if err != nil {
			wantLimit(t, err, reasonSubscriberTooSlow, "subscriber-stall-timeout", "resubscribe after the last position")
			break
		}
		got += len(r.GetEvents().GetEvents())
	}
	if got >= 128 {
		t.Fatalf("the slow subscriber got all %d events", got)
	}
	if _, err := fast.Recv(); err != nil { // caught up, and still running
		t.Fatal(err)
	}
}

// TestAdmitAppend: the in-flight budgets. A connection over its budget is
// refused while another is not; large appends get all but an eighth of
// the server's budget, small ones the rest.
func TestAdmitAppend(t *testing.T) {
	l := newLimiter(Limits{MaxInflightBytes: 800, MaxInflightBytesPerConnection: 500}.withDefaults(), zap.NewNop(), prometheus.NewRegistry())
	conn := func() context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &connAddr{Addr: &net.TCPAddr{}, state: &connState{}}})
	}
	a, b, c := conn(), conn(), conn()
	// 64 KiB+ appends are large: scale by using the byte counts directly.
	big := int64(smallAppendBytes + 1)
	l.lim.MaxInflightBytes, l.lim.MaxInflightBytesPerConnection = 8*big, 3*big
	var releases []func()
	admit := func(ctx context.Context, n int64) error {
		r, err := l.admitAppend(ctx, n)
		if err == nil {
			releases = append(releases, r)
		}
		return err
	}
	for range 3 {
		if err := admit(a, big); err != nil {
			t.Fatal(err)
		}
	}
	wantLimit(t, status.Convert(toStatus(admit(a, big))).Err(), reasonInflightBytes, "max-inflight-bytes-per-connection", "this connection has")
	for range 3 {
		if err := admit(b, big); err != nil {
			t.Fatal(err)
		}
	}
	// 6 large in flight; large appends may use 7 of 8.
	if err := admit(c, big); err != nil {
		t.Fatal(err)
	}
	wantLimit(t, status.Convert(toStatus(admit(c, big))).Err(), reasonInflightBytes, "max-inflight-bytes", "the server has")
	// A small append still fits in the eighth kept for them.
	if err := admit(c, 100); err != nil {
		t.Fatalf("small append refused: %v", err)
	}
	for _, r := range releases {
		r()
	}
	if l.inflight.Load() != 0 || testutil.ToFloat64(l.inflG) != 0 {
		t.Fatalf("in flight after release: %d", l.inflight.Load())
	}
	if err := admit(a, big); err != nil {
		t.Fatal(err)
	}

	// The tap refuses an Append unread on a connection at its budget, and
	// lets other methods and other connections through.
	for range 2 {
		if err := admit(a, big); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.tap(a, &tap.Info{FullMethodName: esdv1.StreamService_Append_FullMethodName}); err == nil {
		t.Fatal("tap let an Append through on a connection at its budget")
	} else {
		wantLimit(t, err, reasonInflightBytes, "max-inflight-bytes-per-connection", "this connection has")
	}
	if _, err := l.tap(a, &tap.Info{FullMethodName: esdv1.StreamService_ReadStream_FullMethodName}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.tap(b, &tap.Info{FullMethodName: esdv1.StreamService_AppendMulti_FullMethodName}); err != nil {
		t.Fatal(err)
	}
	// The codec's check: a large request when large appends fill their
	// part of the budget, before decoding; a small one passes.
	l.inflight.Store(l.largeBudget())
	if le := l.refuseLarge(big); le == nil || le.reason != reasonInflightBytes {
		t.Fatalf("refuseLarge: %v", le)
	}
	if le := l.refuseLarge(smallAppendBytes); le != nil {
		t.Fatalf("refuseLarge of a small request: %v", le)
	}
}
