package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/engine"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestHealthAndReflection(t *testing.T) {
	ts := newTestServer(t)
	resp, err := ts.health.Check(testCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check: %v %v", resp, err)
	}

	rc, err := reflectionpb.NewServerReflectionClient(ts.conn).ServerReflectionInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	err = rc.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: ""},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"esd.v1.StreamService", "esd.v1.AdminService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Fatalf("reflection lists %v, without %s", names, want)
		}
	}
	// The descriptors are there too, so grpcurl can build requests.
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "esd.v1.StreamService"},
	}); err != nil {
		t.Fatal(err)
	}
	fd, err := rc.Recv()
	if err != nil || len(fd.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("file descriptor of esd.v1.StreamService: %v %v", fd, err)
	}
	if err := rc.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// panicService is registered on the server's *grpc.Server next to the
// real services (the test is in package server, so it can reach it), to
// prove that the interceptor chain turns a handler's panic into INTERNAL.
var panicService = grpc.ServiceDesc{
	ServiceName: "esdtest.Panicker",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Panic",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/esdtest.Panicker/Panic"}
			return interceptor(ctx, in, info, func(context.Context, any) (any, error) { panic("test panic") })
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "PanicStream",
		ServerStreams: true,
		Handler:       func(any, grpc.ServerStream) error { panic("test stream panic") },
	}},
}

func TestHandlerPanicIsInternal(t *testing.T) {
	ts := newTestServer(t, withObservedLogs(),
		withBeforeServe(func(s *Server) { s.grpc.RegisterService(&panicService, struct{}{}) }))
	for range 2 { // the server survives the first
		err := ts.conn.Invoke(testCtx(t), "/esdtest.Panicker/Panic", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Internal {
			t.Fatalf("unary panic answered %v, want INTERNAL", err)
		}
		st, err := ts.conn.NewStream(testCtx(t), &panicService.Streams[0], "/esdtest.Panicker/PanicStream")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.SendMsg(&emptypb.Empty{}); err != nil {
			t.Fatal(err)
		}
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := st.RecvMsg(&emptypb.Empty{}); status.Code(err) != codes.Internal {
			t.Fatalf("streaming panic answered %v, want INTERNAL", err)
		}
	}
	if n := ts.logs.FilterMessage("panic in handler").FilterField(zap.String("panic", "test panic")).Len(); n != 2 {
		t.Fatalf("%d unary panics logged, want 2", n)
	}
	if n := ts.logs.FilterMessage("panic in handler").Len(); n != 4 {
		t.Fatalf("%d panics logged, want 4", n)
	}
	ts.mustAppend(t, appendReq("after-panic", xNoStream, event("Alive", "")))
	if got := ts.mustReadStream(t, "after-panic"); len(got) != 1 {
		t.Fatalf("read after panics: %v", got)
	}
}

// recvStream is a ServerStream whose received messages go to onRecv.
type recvStream struct {
	grpc.ServerStream
	onRecv func(m any)
}

func (r *recvStream) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if err == nil {
		r.onRecv(m)
	}
	return err
}

// TestConfigInterceptors: Config's interceptors run after esd's own. They
// see the requests of the calls the drain gate lets through (a streaming
// call's as it receives them) and none it refuses; an error of theirs is
// mapped like a handler's, a panic recovered as INTERNAL.
func TestConfigInterceptors(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string // "method request-stream"
	)
	note := func(method string, req any) {
		mu.Lock()
		defer mu.Unlock()
		s, _ := req.(interface{ GetStream() string })
		seen = append(seen, method+" "+s.GetStream())
	}
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		got := seen
		seen = nil
		return got
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		note(info.FullMethod, req)
		switch req.(interface{ GetStream() string }).GetStream() {
		case "overloaded":
			return nil, engine.ErrOverloaded
		case "panic":
			panic("interceptor panic")
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &recvStream{ServerStream: ss, onRecv: func(m any) { note(info.FullMethod, m) }})
	}
	ts := newTestServer(t, withConfig(func(c *Config) {
		c.UnaryInterceptors = []grpc.UnaryServerInterceptor{unary}
		c.StreamInterceptors = []grpc.StreamServerInterceptor{stream}
	}))

	ts.mustAppend(t, appendReq("s-1", xAny, event("T", "")))
	if got := ts.mustReadStream(t, "s-1"); len(got) != 1 {
		t.Fatalf("read %d events", len(got))
	}
	_, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: "overloaded"})
	if info := errInfo(t, err); status.Code(err) != codes.ResourceExhausted || info.GetReason() != reasonOverloaded {
		t.Errorf("interceptor's error answered %v", err)
	}
	if _, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: "panic"}); status.Code(err) != codes.Internal {
		t.Errorf("interceptor's panic answered %v", err)
	}
	want := []string{
		esdv1.StreamService_Append_FullMethodName + " s-1",
		esdv1.StreamService_ReadStream_FullMethodName + " s-1",
		esdv1.StreamService_GetStream_FullMethodName + " overloaded",
		esdv1.StreamService_GetStream_FullMethodName + " panic",
	}
	if got := take(); !slices.Equal(got, want) {
		t.Errorf("interceptors saw %q, want %q", got, want)
	}

	// Draining: the gate refuses before the interceptors.
	ts.srv.draining.Store(true)
	if _, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: "s-1"}); errInfo(t, err).GetReason() != reasonShuttingDown {
		t.Errorf("unary call while draining: %v", err)
	}
	if _, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "s-1"}); errInfo(t, err).GetReason() != reasonShuttingDown {
		t.Errorf("streaming call while draining: %v", err)
	}
	if got := take(); len(got) != 0 {
		t.Errorf("interceptors saw refused calls: %q", got)
	}
}

// TestShutdownDurability: Serve's ctx ends while appends are in flight.
// Every append answered OK is stored, where its answer said, after the
// store is reopened; every call refused is UNAVAILABLE.
func TestShutdownDurability(t *testing.T) {
	workers, minAcked := 8, 150
	if testing.Short() {
		minAcked = 50
	}
	ts := newTestServer(t, withShards(2))
	var (
		mu        sync.Mutex
		successes []success
		acked     atomic.Int64
		wg        sync.WaitGroup
	)
	ctx := testCtx(t)
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var (
					got []success
					err error
				)
				if w%4 == 0 { // an AppendMulti over two streams
					a := appendReq(fmt.Sprintf("sd-%d", w), xAny, events(2, "Multi")...)
					b := appendReq(fmt.Sprintf("sd-%d", w+1), xAny, events(1, "Multi")...)
					var resp *esdv1.AppendMultiResponse
					if resp, err = ts.streams.AppendMulti(ctx, multiReq(a, b)); err == nil {
						got = []success{successOf(a, resp.GetResults()[0]), successOf(b, resp.GetResults()[1])}
					}
				} else {
					req := appendReq(fmt.Sprintf("sd-%d", w), xAny, events(1+i%2, "Single")...)
					var resp *esdv1.AppendResponse
					if resp, err = ts.streams.Append(ctx, req); err == nil {
						got = []success{successOf(req, resp)}
					}
				}
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				successes = append(successes, got...)
				mu.Unlock()
				acked.Add(1)
			}
		}()
	}
	eventually(t, "appends acknowledged", func() bool { return acked.Load() >= int64(minAcked) })
	if err := ts.stopServing(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("a call during shutdown failed with %v, want UNAVAILABLE", err)
		}
		for _, d := range status.Convert(err).Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != reasonShuttingDown {
				t.Errorf("a call during shutdown failed with reason %s, want SHUTTING_DOWN", info.GetReason())
			}
		}
	}
	_, err := ts.streams.Append(testCtx(t), appendReq("late", xAny, event("Late", "")))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("append after shutdown: %v, want UNAVAILABLE", err)
	}
	t.Logf("%d writes acknowledged before the shutdown", len(successes))

	ts.restart()
	checkStored(t, ts, successes)
}

func successOf(req *esdv1.AppendRequest, resp *esdv1.AppendResponse) success {
	s := success{stream: req.GetStream(), resp: resp}
	for _, e := range req.GetEvents() {
		s.ids = append(s.ids, e.GetId())
	}
	return s
}

// checkStored checks that every acknowledged event is stored where its
// response said, and that $all is gap-free.
func checkStored(t *testing.T, ts *testServer, successes []success) {
	t.Helper()
	all := ts.readAll(t)
	byPos := make(map[uint64]*esdv1.RecordedEvent, len(all))
	for i, e := range all {
		if e.GetPosition() != uint64(i+1) {
			t.Fatalf("$all position %d at index %d: a gap", e.GetPosition(), i)
		}
		byPos[e.GetPosition()] = e
	}
	for _, s := range successes {
		for i, id := range s.ids {
			e := byPos[s.resp.GetFirstPosition()+uint64(i)]
			if e.GetId() != id || e.GetStream() != s.stream || e.GetRevision() != s.resp.GetFirstRevision()+uint64(i) {
				t.Fatalf("acknowledged %s at %s@%d (position %d) lost: found %v",
					id, s.stream, s.resp.GetFirstRevision()+uint64(i), s.resp.GetFirstPosition()+uint64(i), e)
			}
		}
	}
}

// TestOverloaded: a shard whose queue is full answers at once with
// RESOURCE_EXHAUSTED/OVERLOADED and writes nothing, instead of buffering;
// what was queued is still written once the shard moves on.
func TestOverloaded(t *testing.T) {
	ts := newTestServer(t, func(ts *testServer) { ts.ecfg.QueueLen = 2 })
	// Hold the shard as an AppendMulti does while it commits.
	release, err := ts.eng.Writer().Hold(0)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := ts.streams.Append(testCtx(t), appendReq(fmt.Sprintf("ov-%d", i), xAny, event("Queued", "")))
			queued <- err
		}()
	}
	eventually(t, "a full queue", func() bool { return ts.eng.Writer().QueueDepth(0) == 2 })

	_, err = ts.streams.Append(testCtx(t), appendReq("ov-x", xAny, event("Refused", "")))
	wantError(t, err, codes.ResourceExhausted, reasonOverloaded, "")
	_, err = ts.streams.AppendMulti(testCtx(t), multiReq(appendReq("ov-y", xAny, event("Refused", ""))))
	wantError(t, err, codes.ResourceExhausted, reasonOverloaded, "")
	_, err = ts.streams.DeleteStream(testCtx(t), deleteReq("ov-z", xAny, true))
	wantError(t, err, codes.ResourceExhausted, reasonOverloaded, "")

	release()
	for range 2 {
		if err := <-queued; err != nil {
			t.Fatalf("queued append: %v", err)
		}
	}
	var streams []string
	for _, e := range ts.readAll(t) {
		streams = append(streams, e.GetStream())
	}
	slices.Sort(streams)
	if !slices.Equal(streams, []string{"ov-0", "ov-1"}) {
		t.Fatalf("$all holds events of %v, want ov-0 and ov-1 only", streams)
	}
}

// TestCrashDurability: the store is cloned as a crash would leave it
// (what was synced, and a random part of what was not) while appends are
// in flight; a server started on the clone holds every append that was
// acknowledged before the crash, where its answer said, with no hole in
// $all. The in-process twin of the e2e kill -9 test.
func TestCrashDurability(t *testing.T) {
	crashes, minAcked := 3, 60
	if testing.Short() {
		crashes = 1
	}
	fs := vfs.NewCrashableMem()
	ts := newTestServer(t, withShards(2), withDir(fs, "db"))
	var (
		mu        sync.Mutex // guards successes, so a crash point sees a consistent set
		successes []success
		wg        sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				req := appendReq(fmt.Sprintf("crash-%d", w%3), xAny, events(1+i%3, "Crash")...)
				resp, err := ts.streams.Append(ctx, req)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("append: %v", err)
					}
					return
				}
				mu.Lock()
				successes = append(successes, successOf(req, resp))
				mu.Unlock()
			}
		}()
	}
	for c := range crashes {
		eventually(t, "appends acknowledged", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(successes) >= minAcked*(c+1)
		})
		mu.Lock()
		acked := slices.Clone(successes)
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(c), 3))})
		mu.Unlock()
		t.Run(fmt.Sprintf("crash %d", c), func(t *testing.T) {
			after := newTestServer(t, withDir(crashed, "db"))
			checkStored(t, after, acked)
			// The recovered store takes appends again, after what it holds.
			last := after.lastPosition(t)
			resp := after.mustAppend(t, appendReq("crash-0", xAny, event("AfterCrash", "")))
			if resp.GetFirstPosition() != last+1 {
				t.Fatalf("first append after recovery at %d, want %d", resp.GetFirstPosition(), last+1)
			}
			if err := after.shutdown(); err != nil {
				t.Fatal(err)
			}
		})
	}
	cancel()
	wg.Wait()
}
