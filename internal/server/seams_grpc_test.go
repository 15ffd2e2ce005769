package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/testutil"
	"github.com/esdhq/esd/internal/tlsconf"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestConnectionLimitsOverTLSWithAuth: over a real TLS listener served by
// Server.Serve, with client certificates and security on, every call still
// finds its connection's state (the peer address gRPC hands the handlers is
// the limit listener's connAddr, under the TLS connection), so the
// per-connection subscription limit refuses the third Subscribe on one
// connection and not the first on another, and the tap refuses an append
// on a connection whose in-flight budget is full and not on another. A caller whose certificate names
// no identity takes no subscription slot.
func TestConnectionLimitsOverTLSWithAuth(t *testing.T) {
	dir := t.TempDir()
	dev, err := tlsconf.WriteDev(filepath.Join(dir, "tls"), []string{"127.0.0.1"}, []string{"reader", "stranger"}, tlsconf.Validity{})
	if err != nil {
		t.Fatal(err)
	}
	lg := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	reg := prometheus.NewRegistry()
	rl, err := tlsconf.NewReloader(tlsconf.Files{Cert: dev.ServerCert, Key: dev.ServerKey, ClientCA: dev.CA}, lg, reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &auth.File{
		Roles:      map[string][]auth.Grant{"sub": {{Prefix: auth.AllStreams, Permissions: []auth.Permission{auth.Subscribe, auth.Append}}}},
		Identities: map[string]auth.Identity{"reader": {Roles: []string{"sub"}}},
	}
	authn, err := auth.NewStatic(f)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, "data"), Shards: 1, CacheBytes: 8 << 20, Logger: lg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	var withoutConn atomic.Int64 // calls that reached the handlers without their connection's state
	var lastConn atomic.Pointer[connState]
	srv, err := New(eng, Config{
		DataDir: dir, Creds: rl.GRPCCredentials(), Auth: authn,
		Limits: Limits{MaxSubscriptionsPerConnection: 2, MaxSubscriptions: 100},
		UnaryInterceptors: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if c := connOf(ctx); c != nil {
				lastConn.Store(c)
			} else {
				withoutConn.Add(1)
			}
			return h(ctx, req)
		}},
		StreamInterceptors: []grpc.StreamServerInterceptor{func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if connOf(ss.Context()) == nil {
				withoutConn.Add(1)
			}
			return h(srv, ss)
		}},
	}, lg, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTCP(t, srv, eng)

	dial := func(client string) *grpc.ClientConn {
		ccfg, err := tlsconf.ClientConfig(dev.CA, dev.Clients[client][0], dev.Clients[client][1], "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	tctx := testCtx(t)
	if _, err := esdv1.NewStreamServiceClient(dial("reader")).Append(tctx, appendReq("s-1", xAny, event("E", "x"))); err != nil {
		t.Fatal(err)
	}
	subscribe := func(conn *grpc.ClientConn) error {
		sctx, scancel := context.WithCancel(tctx)
		t.Cleanup(scancel)
		sub, err := esdv1.NewStreamServiceClient(conn).Subscribe(sctx, &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{}})
		if err == nil {
			_, err = sub.Recv() // the first answer, or the refusal
		}
		return err
	}

	// A caller whose certificate names no identity: refused by
	// authentication, holding no slot of the server's or its connection's.
	anon := dial("stranger")
	for range 3 {
		wantStatus(t, subscribe(anon), codes.Unauthenticated, reasonCertificateUnknown)
	}
	if n := srv.lmt.subs.Load(); n != 0 {
		t.Fatalf("%d subscriptions held after refused calls", n)
	}

	a, b := dial("reader"), dial("reader")
	for i := range 2 {
		if err := subscribe(a); err != nil {
			t.Fatalf("subscription %d on a: %v", i+1, err)
		}
	}
	wantLimit(t, subscribe(a), reasonTooManySubscriptions, "max-subscriptions-per-connection", "this connection has")
	if err := subscribe(b); err != nil {
		t.Fatalf("first subscription on another connection: %v", err)
	}

	// The tap (before authentication, on the connection's reader) finds
	// the connection too: with a's in-flight budget full, a's next append
	// is refused unread, b's is not.
	if _, err := esdv1.NewStreamServiceClient(a).Append(tctx, appendReq("s-1", xAny, event("E", "x"))); err != nil {
		t.Fatal(err)
	}
	ca := lastConn.Load()
	ca.inflight.Add(srv.cfg.Limits.MaxInflightBytesPerConnection)
	_, err = esdv1.NewStreamServiceClient(a).Append(tctx, appendReq("s-1", xAny, event("E", "x")))
	wantLimit(t, err, reasonInflightBytes, "max-inflight-bytes-per-connection", "this connection has")
	if _, err := esdv1.NewStreamServiceClient(b).Append(tctx, appendReq("s-1", xAny, event("E", "x"))); err != nil {
		t.Fatalf("append on another connection: %v", err)
	}
	if lastConn.Load() == ca {
		t.Fatal("two connections share their state")
	}
	ca.inflight.Add(-srv.cfg.Limits.MaxInflightBytesPerConnection)
	if n := withoutConn.Load(); n != 0 {
		t.Fatalf("%d calls found no connection state over TLS", n)
	}
}

// TestLimitErrorsAfterAuth: gRPC decodes a unary request (and the codec
// refuses an append over the limits) before the interceptors run. With
// security on, a caller that is not authenticated, or holds the method's
// permission on no stream, hears that (UNAUTHENTICATED, PERMISSION_DENIED)
// and not the limit, which names the server's limits and its appends in
// flight, and its refusal is not counted. An authenticated caller hears
// the limit, counted once; over AppendStream, a denied append is answered
// in band and the call goes on, then an append over the limit ends it.
func TestLimitErrorsAfterAuth(t *testing.T) {
	as := newAuthServer(t, authTestFile(), withLimits(Limits{MaxEventBytes: 1 << 20, MaxAppendBytes: 16 << 20, MaxAppendEvents: 10}))
	ctx := testCtx(t)
	tooMany := appendReq("in-1", xAny, events(11, "E")...)
	multi := &esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{tooMany}}

	_, err := as.streams.Append(ctx, tooMany)
	wantStatus(t, err, codes.Unauthenticated, reasonTokenMissing)
	_, err = as.streams.AppendMulti(ctx, multi)
	wantStatus(t, err, codes.Unauthenticated, reasonTokenMissing)
	_, err = as.streams.Append(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer nope"), tooMany)
	wantStatus(t, err, codes.Unauthenticated, reasonTokenInvalid)
	for _, who := range []string{"p-none", "p-read"} {
		_, err = as.streams.Append(as.as(ctx, who), tooMany)
		wantStatus(t, err, codes.PermissionDenied, reasonPermissionDenied)
	}
	// A large append while large appends fill their budget: the refusal
	// would tell the bytes in flight.
	large := appendReq("in-1", xAny, event("E", strings.Repeat("x", 2*smallAppendBytes)))
	as.srv.lmt.inflight.Store(as.srv.lmt.largeBudget())
	_, err = as.streams.Append(ctx, large)
	wantStatus(t, err, codes.Unauthenticated, reasonTokenMissing)
	_, err = as.streams.Append(as.as(ctx, "p-append"), large)
	wantLimit(t, err, reasonInflightBytes, "max-inflight-bytes", "the server has")
	as.srv.lmt.inflight.Store(0)
	if got := as.refusals(limitAppendEvents); got != 0 {
		t.Fatalf("esd_limit_refusals_total{limit=append_events} %v after refused callers, want 0", got)
	}
	if got := as.refusals(limitInflight); got != 1 {
		t.Fatalf("esd_limit_refusals_total{limit=inflight_bytes} %v, want 1", got)
	}

	_, err = as.streams.Append(as.as(ctx, "p-append"), tooMany)
	wantLimit(t, err, reasonTooManyEvents, "max-append-events", "more than 10 events")
	_, err = as.streams.AppendMulti(as.as(ctx, "p-append"), multi)
	wantLimit(t, err, reasonTooManyEvents, "max-append-events", "more than 10 events")

	// AppendStream: authenticated when called; each append authorized in
	// band, each message checked against the limits.
	st, err := as.streams.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte("x"), Append: tooMany})
	_, err = st.Recv()
	wantStatus(t, err, codes.Unauthenticated, reasonTokenMissing)

	st, err = as.streams.AppendStream(as.as(ctx, "p-append"))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []string{"out-1", "in-1"} {
		if err := st.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte{byte(i)}, Append: appendReq(s, xAny, event("T", "x"))}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		want := []codes.Code{codes.PermissionDenied, codes.OK}[i]
		if got := status.FromProto(resp.GetError()).Code(); got != want {
			t.Fatalf("append to %s: %v, want %v", s, got, want)
		}
	}
	_ = st.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte("b"), Append: tooMany})
	_, err = st.Recv()
	wantLimit(t, err, reasonTooManyEvents, "max-append-events", "more than 10 events")
	if got := as.refusals(limitAppendEvents); got != 3 {
		t.Fatalf("esd_limit_refusals_total{limit=append_events} %v, want 3", got)
	}
}

// TestStorageFailedWithAuth: with security on and the store failed (a full
// disk), reads are authorized as before and go on, a denied write is
// PERMISSION_DENIED (authorization comes before the store's state), an
// allowed one STORAGE_FAILED with nothing of the failure's cause, and the
// open /readyz names no file of the data directory.
func TestStorageFailedWithAuth(t *testing.T) {
	fs := testutil.NewFaultFS(nil)
	dir := t.TempDir()
	as := newAuthServer(t, authTestFile(), withDir(fs, dir))
	ctx := testCtx(t)
	as.appendAs(t, "root", "in-1")
	fs.SetFull(true)
	_, err := as.streams.Append(as.as(ctx, "p-append"), appendReq("in-1", xAny, event("E", "x")))
	wantStatus(t, err, codes.Unavailable, reasonStorageFailed)
	if strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "no space") {
		t.Errorf("STORAGE_FAILED tells the cause: %v", err)
	}
	eventually(t, "the store fails", func() bool { return as.eng.Failed() != nil })
	_, err = as.streams.Append(as.as(ctx, "p-append"), appendReq("out-1", xAny, event("E", "x")))
	wantStatus(t, err, codes.PermissionDenied, reasonPermissionDenied)
	_, err = as.streams.Append(as.as(ctx, "p-read"), appendReq("in-1", xAny, event("E", "x")))
	wantStatus(t, err, codes.PermissionDenied, reasonPermissionDenied)
	if err := firstMsg(as.streams.ReadStream(as.as(ctx, "p-read"), &esdv1.ReadStreamRequest{Stream: "in-1"})); err != nil {
		t.Errorf("read allowed on a failed store: %v", err)
	}
	err = firstMsg(as.streams.ReadStream(as.as(ctx, "p-none"), &esdv1.ReadStreamRequest{Stream: "in-1"}))
	wantStatus(t, err, codes.PermissionDenied, reasonPermissionDenied)
	err = firstMsg(as.streams.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: "in-1"}))
	wantStatus(t, err, codes.Unauthenticated, reasonTokenMissing)

	hs := httptest.NewServer(as.srv.HTTPHandler(as.reg))
	defer hs.Close()
	resp, err := hs.Client().Get(hs.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(string(body), "storage failed") ||
		strings.Contains(string(body), dir) {
		t.Errorf("/readyz: %d %q, want 503 storage failed naming no file", resp.StatusCode, body)
	}
	// Closing the failed store reports the WAL's error: expected.
	as.running = false
	if err := as.stopServing(); err != nil {
		t.Fatalf("stop serving: %v", err)
	}
	_ = as.conn.Close()
	_ = as.eng.Close()
}
