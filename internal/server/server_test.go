package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/emptypb"
)

// This file holds the harness of the in-process gRPC tests: the real
// server on bufconn over a real log, plus helpers to build requests, read
// results and take errors apart.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// cmpProto makes cmp compare protobuf messages.
var cmpProto = protocmp.Transform()

// rpcTimeout bounds every call of a test, so that a deadlock fails the
// test instead of hanging it.
const rpcTimeout = 30 * time.Second

// testServer is a running server with its clients. After restart the
// fields point at the new server: read them at each use.
type testServer struct {
	t    testing.TB
	cfg  Config
	ecfg engine.Config // Dir, FS, Logger and Registerer are set by start
	dir  string
	fs   vfs.FS // nil: the operating system's
	// beforeServe runs between New and Serve (to register test services).
	beforeServe func(*Server)
	// logs, when set, records the server's logs instead of the test log.
	logs *observer.ObservedLogs

	reg       *prometheus.Registry
	eng       *engine.Engine
	log       *eslog.Log // eng's
	srv       *Server
	lis       *bufconn.Listener
	conn      *grpc.ClientConn
	streams   esdv1.StreamServiceClient
	admin     esdv1.AdminServiceClient
	health    healthpb.HealthClient
	cancel    context.CancelFunc // ends Serve's ctx
	served    chan error         // Serve's result
	serveDone bool               // served was read, into serveErr
	serveErr  error
	running   bool
}

type serverOption func(*testServer)

func withShards(n int) serverOption { return func(ts *testServer) { ts.ecfg.Shards = n } }

func withLimits(l Limits) serverOption { return func(ts *testServer) { ts.cfg.Limits = l } }

// withDir opens the log in dir (on fs when not nil), e.g. to reopen a
// store a previous server wrote.
func withDir(fs vfs.FS, dir string) serverOption {
	return func(ts *testServer) { ts.fs, ts.dir = fs, dir }
}

// withObservedLogs records the server's logs (Info and up) in ts.logs.
func withObservedLogs() serverOption {
	return func(ts *testServer) { _, ts.logs = observer.New(zap.InfoLevel) }
}

// withConfig changes the server's Config before New.
func withConfig(f func(*Config)) serverOption { return func(ts *testServer) { f(&ts.cfg) } }

func withBeforeServe(f func(*Server)) serverOption {
	return func(ts *testServer) { ts.beforeServe = f }
}

// newTestServer starts a server on a fresh store (t.TempDir unless
// withDir says otherwise) and stops it at the end of the test.
func newTestServer(t testing.TB, opts ...serverOption) *testServer {
	t.Helper()
	ts := &testServer{t: t, cfg: Config{Version: "test", Commit: "abc", GracePeriod: 10 * time.Second},
		ecfg: engine.Config{Shards: 1, CacheBytes: 8 << 20}}
	for _, o := range opts {
		o(ts)
	}
	if ts.dir == "" {
		ts.dir = t.TempDir()
	}
	ts.cfg.DataDir = ts.dir
	ts.start()
	t.Cleanup(func() {
		if err := ts.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return ts
}

func (ts *testServer) start() {
	t := ts.t
	t.Helper()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	if ts.logs != nil {
		var core zapcore.Core
		core, ts.logs = observer.New(zap.InfoLevel)
		lg = zap.New(core)
	}
	ts.reg = prometheus.NewRegistry() // a fresh one: New registers its metrics again
	ecfg := ts.ecfg
	ecfg.Dir, ecfg.FS, ecfg.Logger, ecfg.Registerer = ts.dir, ts.fs, lg, ts.reg
	eng, err := engine.Open(ecfg)
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	ts.eng, ts.log = eng, eng.Log()
	srv, err := New(eng, ts.cfg, lg.Named("server"), ts.reg)
	if err != nil {
		_ = eng.Close()
		ts.t.Fatalf("new server: %v", err)
	}
	ts.srv = srv
	if ts.beforeServe != nil {
		ts.beforeServe(ts.srv)
	}
	lis := bufconn.Listen(1 << 20)
	ts.lis = lis
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	ts.served, ts.serveDone, ts.serveErr = make(chan error, 1), false, nil
	go func() { ts.served <- ts.srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)),
	)
	if err != nil {
		cancel()
		<-ts.served
		_ = eng.Close()
		t.Fatalf("dial: %v", err)
	}
	ts.conn = conn
	ts.streams = esdv1.NewStreamServiceClient(conn)
	ts.admin = esdv1.NewAdminServiceClient(conn)
	ts.health = healthpb.NewHealthClient(conn)
	ts.running = true
}

// stopServing cancels Serve's ctx and waits until Serve has returned (the
// server's whole shutdown sequence); the log stays open.
func (ts *testServer) stopServing() error {
	ts.cancel()
	if ts.serveDone {
		return ts.serveErr
	}
	select {
	case ts.serveErr = <-ts.served:
		ts.serveDone = true
		return ts.serveErr
	case <-time.After(rpcTimeout):
		return errors.New("Serve did not return after its ctx ended")
	}
}

// shutdown stops the server, closes the client and closes the log. It is
// harmless to call twice.
func (ts *testServer) shutdown() error {
	if !ts.running {
		return nil
	}
	ts.running = false
	serr := ts.stopServing()
	cerr := ts.conn.Close()
	if !ts.serveDone { // Serve hangs: closing the log under it would only add confusion
		return errors.Join(serr, cerr)
	}
	return errors.Join(serr, cerr, ts.eng.Close())
}

// restart shuts the server down and starts a new one on the same store.
func (ts *testServer) restart() {
	ts.t.Helper()
	if err := ts.shutdown(); err != nil {
		ts.t.Fatalf("shutdown before restart: %v", err)
	}
	ts.start()
}

// serveTCP serves srv on a TCP port of 127.0.0.1 (for transport
// security, which bufconn does not exercise) until the test ends, then
// closes eng; it returns the address.
func serveTCP(t testing.TB, srv *Server, eng *engine.Engine) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := eng.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	return lis.Addr().String()
}

// testCtx is a context for one step of a test, bounded by rpcTimeout.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// --- building requests ---

// xrev is an expected revision for the tables.
type xrev struct {
	kind eslog.ExpectKind
	rev  uint64
}

var (
	xAny      = xrev{kind: eslog.ExpectAny}
	xNoStream = xrev{kind: eslog.ExpectNoStream}
	xExists   = xrev{kind: eslog.ExpectExists}
)

func xExact(n uint64) xrev { return xrev{kind: eslog.ExpectExact, rev: n} }

// unset is the expected revision left out of the request.
var xUnset = xrev{kind: 255}

func (x xrev) String() string {
	switch x.kind {
	case eslog.ExpectAny:
		return "any"
	case eslog.ExpectNoStream:
		return "no_stream"
	case eslog.ExpectExists:
		return "stream_exists"
	case eslog.ExpectExact:
		return fmt.Sprintf("exact_%d", x.rev)
	default:
		return "unset"
	}
}

func (x xrev) setAppend(r *esdv1.AppendRequest) *esdv1.AppendRequest {
	switch x.kind {
	case eslog.ExpectAny:
		r.ExpectedRevision = &esdv1.AppendRequest_Any{Any: &emptypb.Empty{}}
	case eslog.ExpectNoStream:
		r.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
	case eslog.ExpectExists:
		r.ExpectedRevision = &esdv1.AppendRequest_StreamExists{StreamExists: &emptypb.Empty{}}
	case eslog.ExpectExact:
		r.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: x.rev}
	default:
		r.ExpectedRevision = nil
	}
	return r
}

func (x xrev) setDelete(r *esdv1.DeleteStreamRequest) *esdv1.DeleteStreamRequest {
	switch x.kind {
	case eslog.ExpectAny:
		r.ExpectedRevision = &esdv1.DeleteStreamRequest_Any{Any: &emptypb.Empty{}}
	case eslog.ExpectNoStream:
		r.ExpectedRevision = &esdv1.DeleteStreamRequest_NoStream{NoStream: &emptypb.Empty{}}
	case eslog.ExpectExists:
		r.ExpectedRevision = &esdv1.DeleteStreamRequest_StreamExists{StreamExists: &emptypb.Empty{}}
	case eslog.ExpectExact:
		r.ExpectedRevision = &esdv1.DeleteStreamRequest_Exact{Exact: x.rev}
	default:
		r.ExpectedRevision = nil
	}
	return r
}

// proto is the ExpectedRevision a WrongExpectedRevision detail should carry.
func (x xrev) proto() *esdv1.ExpectedRevision {
	switch x.kind {
	case eslog.ExpectNoStream:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_NoStream{NoStream: &emptypb.Empty{}}}
	case eslog.ExpectExists:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_StreamExists{StreamExists: &emptypb.Empty{}}}
	case eslog.ExpectExact:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Exact{Exact: x.rev}}
	default:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Any{Any: &emptypb.Empty{}}}
	}
}

func appendReq(stream string, x xrev, evs ...*esdv1.ProposedEvent) *esdv1.AppendRequest {
	return x.setAppend(&esdv1.AppendRequest{Stream: stream, Events: evs})
}

func deleteReq(stream string, x xrev, tombstone bool) *esdv1.DeleteStreamRequest {
	return x.setDelete(&esdv1.DeleteStreamRequest{Stream: stream, Tombstone: tombstone})
}

func newID() string { return uuid.NewString() }

// event is a proposed event with a fresh client id.
func event(typ string, data string) *esdv1.ProposedEvent {
	return &esdv1.ProposedEvent{Id: newID(), Type: typ, Data: []byte(data)}
}

// events makes n events typed typ with data "<typ> <i>".
func events(n int, typ string) []*esdv1.ProposedEvent {
	out := make([]*esdv1.ProposedEvent, n)
	for i := range out {
		out[i] = event(typ, fmt.Sprintf("%s %d", typ, i))
	}
	return out
}

// --- calling ---

// mustAppend appends and fails the test on error.
func (ts *testServer) mustAppend(t *testing.T, req *esdv1.AppendRequest) *esdv1.AppendResponse {
	t.Helper()
	resp, err := ts.streams.Append(testCtx(t), req)
	if err != nil {
		t.Fatalf("append to %q: %v", req.GetStream(), err)
	}
	return resp
}

// fill appends n events to stream in appends of at most 200, returning
// the events' ids in revision order.
func (ts *testServer) fill(t *testing.T, stream string, n int, typ string) []string {
	t.Helper()
	var ids []string
	for n > 0 {
		k := min(n, 200)
		evs := events(k, typ)
		ts.mustAppend(t, appendReq(stream, xAny, evs...))
		for _, e := range evs {
			ids = append(ids, e.Id)
		}
		n -= k
	}
	return ids
}

func (ts *testServer) mustDelete(t *testing.T, stream string, tombstone bool) *esdv1.DeleteStreamResponse {
	t.Helper()
	resp, err := ts.streams.DeleteStream(testCtx(t), deleteReq(stream, xAny, tombstone))
	if err != nil {
		t.Fatalf("delete %q (tombstone %t): %v", stream, tombstone, err)
	}
	return resp
}

// readStreamChunks reads a stream and returns its messages (chunks).
func (ts *testServer) readStreamChunks(t *testing.T, req *esdv1.ReadStreamRequest) ([][]*esdv1.RecordedEvent, error) {
	t.Helper()
	rs, err := ts.streams.ReadStream(testCtx(t), req)
	if err != nil {
		return nil, err
	}
	var chunks [][]*esdv1.RecordedEvent
	for {
		m, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return chunks, nil
		}
		if err != nil {
			return chunks, err
		}
		chunks = append(chunks, m.GetEvents())
	}
}

// readStream returns a stream's events (the request's error, if any).
func (ts *testServer) readStream(t *testing.T, req *esdv1.ReadStreamRequest) ([]*esdv1.RecordedEvent, error) {
	t.Helper()
	chunks, err := ts.readStreamChunks(t, req)
	var out []*esdv1.RecordedEvent
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, err
}

// mustReadStream reads all of stream forward.
func (ts *testServer) mustReadStream(t *testing.T, stream string) []*esdv1.RecordedEvent {
	t.Helper()
	evs, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: stream})
	if err != nil {
		t.Fatalf("read stream %q: %v", stream, err)
	}
	return evs
}

// readAllMsgs returns the messages of a ReadAll.
func (ts *testServer) readAllMsgs(t *testing.T, req *esdv1.ReadAllRequest) ([]*esdv1.ReadAllResponse, error) {
	t.Helper()
	rs, err := ts.streams.ReadAll(testCtx(t), req)
	if err != nil {
		return nil, err
	}
	var msgs []*esdv1.ReadAllResponse
	for {
		m, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return msgs, nil
		}
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, m)
	}
}

// readAll returns every visible event of $all, forward.
func (ts *testServer) readAll(t *testing.T) []*esdv1.RecordedEvent {
	t.Helper()
	msgs, err := ts.readAllMsgs(t, &esdv1.ReadAllRequest{})
	if err != nil {
		t.Fatalf("read all: %v", err)
	}
	var out []*esdv1.RecordedEvent
	for _, m := range msgs {
		out = append(out, m.GetEvents()...)
	}
	return out
}

func (ts *testServer) info(t *testing.T) *esdv1.GetServerInfoResponse {
	t.Helper()
	resp, err := ts.admin.GetServerInfo(testCtx(t), &esdv1.GetServerInfoRequest{})
	if err != nil {
		t.Fatalf("server info: %v", err)
	}
	return resp
}

func (ts *testServer) lastPosition(t *testing.T) uint64 {
	t.Helper()
	return ts.info(t).GetLastPosition()
}

func (ts *testServer) getStream(t *testing.T, stream string) *esdv1.StreamInfo {
	t.Helper()
	resp, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: stream})
	if err != nil {
		t.Fatalf("get stream %q: %v", stream, err)
	}
	return resp.GetInfo()
}

// --- errors ---

// errInfo returns the ErrorInfo of err, failing the test when it has none
// or its domain is not "esd".
func errInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetDomain() != "esd" {
				t.Fatalf("ErrorInfo domain %q, want esd (error %v)", info.GetDomain(), err)
			}
			return info
		}
	}
	t.Fatalf("error without ErrorInfo: %v", err)
	return nil
}

// badRequest returns the BadRequest detail of err, or nil.
func badRequest(err error) *errdetails.BadRequest {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			return br
		}
	}
	return nil
}

// conflictDetail returns the WrongExpectedRevision detail of err, failing
// the test when it has none.
func conflictDetail(t *testing.T, err error) *esdv1.WrongExpectedRevision {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if w, ok := d.(*esdv1.WrongExpectedRevision); ok {
			return w
		}
	}
	t.Fatalf("error without WrongExpectedRevision: %v", err)
	return nil
}

// wantError checks err's code and ErrorInfo reason, and the "stream"
// metadata when stream is not empty; it returns the ErrorInfo.
func wantError(t *testing.T, err error, code codes.Code, reason, stream string) *errdetails.ErrorInfo {
	t.Helper()
	if msg := errorMismatch(err, code, reason, stream); msg != "" {
		t.Fatal(msg)
	}
	return errInfo(t, err)
}

// errorMismatch is wantError for goroutines: it describes how err differs
// from what is wanted, or returns "".
func errorMismatch(err error, code codes.Code, reason, stream string) string {
	if err == nil {
		return fmt.Sprintf("no error, want %v/%s", code, reason)
	}
	if got := status.Code(err); got != code {
		return fmt.Sprintf("code %v, want %v/%s (error %v)", got, code, reason, err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range status.Convert(err).Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	switch {
	case info == nil:
		return fmt.Sprintf("error without ErrorInfo: %v", err)
	case info.GetDomain() != "esd":
		return fmt.Sprintf("ErrorInfo domain %q, want esd (error %v)", info.GetDomain(), err)
	case info.GetReason() != reason:
		return fmt.Sprintf("reason %q, want %q (error %v)", info.GetReason(), reason, err)
	case stream != "" && info.GetMetadata()["stream"] != stream:
		return fmt.Sprintf("metadata stream %q, want %q (error %v)", info.GetMetadata()["stream"], stream, err)
	}
	return ""
}

// eventually polls cond until it holds, failing the test after
// rpcTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, rpcTimeout, what, cond)
}
