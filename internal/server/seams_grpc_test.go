package server

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/tlsconf"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestConnectionLimitsOverTLSWithAuth: over a real TLS listener served by
// Server.Serve, with client certificates and security on, every call still
// finds its connection's state (the peer address gRPC hands the handlers is
// the limit listener's connAddr, under the TLS connection), so the
// per-connection subscription limit refuses the third Subscribe on one
// connection and not the first on another. A caller whose certificate names
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
	srv, err := New(eng, Config{
		DataDir: dir, Creds: rl.GRPCCredentials(), Auth: authn,
		Limits: Limits{MaxSubscriptionsPerConnection: 2, MaxSubscriptions: 100},
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

	dial := func(client string) *grpc.ClientConn {
		ccfg, err := tlsconf.ClientConfig(dev.CA, dev.Clients[client][0], dev.Clients[client][1], "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
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
	if n := withoutConn.Load(); n != 0 {
		t.Fatalf("%d calls found no connection state over TLS", n)
	}
}
