package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/auth"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// testPKI is a CA with the certificates it signed.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPool *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, caKey: key, caPool: pool}
}

// sign makes a certificate for cn (a server's when server is set).
func (p *testPKI) sign(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{cn}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMTLSIdentity: over mTLS (bufconn with TLS credentials), the client
// certificate's Subject Common Name is the identity; an unknown name is
// UNAUTHENTICATED/CERTIFICATE_UNKNOWN, and a bearer token wins over the
// certificate.
func TestMTLSIdentity(t *testing.T) {
	pki := newTestPKI(t)
	f := authTestFile()
	f.Identities["ops.example.com"] = auth.Identity{Roles: []string{"r-read"}}
	creds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pki.sign(t, "esd.test", true)},
		ClientCAs:    pki.caPool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13,
	})
	as := newAuthServer(t, f, withConfig(func(c *Config) { c.Creds = creds }))
	ctx := testCtx(t)
	dial := func(cn string) esdv1.StreamServiceClient {
		cfg := &tls.Config{RootCAs: pki.caPool, ServerName: "esd.test", MinVersion: tls.VersionTLS13}
		if cn != "" {
			cfg.Certificates = []tls.Certificate{pki.sign(t, cn, false)}
		}
		conn, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return as.lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return esdv1.NewStreamServiceClient(conn)
	}
	ops := dial("ops.example.com")
	if _, err := ops.GetStream(ctx, &esdv1.GetStreamRequest{Stream: "in-1"}); err != nil {
		t.Fatalf("certificate identity with read on in-: %v", err)
	}
	err := firstMsg(ops.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: "out-1"}))
	wantStatus(t, err, codes.PermissionDenied, reasonPermissionDenied)
	_, err = dial("stranger").GetStream(ctx, &esdv1.GetStreamRequest{Stream: "in-1"})
	wantStatus(t, err, codes.Unauthenticated, reasonCertificateUnknown)
	_, err = dial("").GetStream(ctx, &esdv1.GetStreamRequest{Stream: "in-1"})
	wantStatus(t, err, codes.Unauthenticated, reasonTokenMissing)
	// A token wins over the connection's certificate: p-none may nothing.
	_, err = ops.GetStream(as.as(ctx, "p-none"), &esdv1.GetStreamRequest{Stream: "in-1"})
	wantStatus(t, err, codes.PermissionDenied, reasonPermissionDenied)
}

// TestRevokeLive: a token revoked in the auth file is refused within a
// bounded wait, without a restart, on a connection opened before.
func TestRevokeLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	f := authTestFile()
	tok, tk, err := auth.NewToken(f, "root", time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(path, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	ts := newTestServer(t, withConfig(func(c *Config) { c.Auth = a }))
	call := func() error {
		ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "Bearer "+tok)
		_, err := ts.streams.GetStream(ctx, &esdv1.GetStreamRequest{Stream: "x"})
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("before revoking: %v", err)
	}
	auth.Revoke(f, tk.ID)
	start := time.Now()
	if err := auth.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	eventually(t, "revoked token refused", func() bool { return status.Code(call()) == codes.Unauthenticated })
	wantStatus(t, call(), codes.Unauthenticated, reasonTokenInvalid)
	t.Logf("revoked token refused %v after the file was written", time.Since(start).Round(time.Millisecond))
	if time.Since(start) > 5*time.Second {
		t.Errorf("revocation took %v, want under 5s", time.Since(start))
	}
}

// TestListStreamsFiltered: a caller lists only streams it may read, page
// by page, and no page token names a stream it may not read.
func TestListStreamsFiltered(t *testing.T) {
	f := authTestFile()
	f.Roles["multi"] = []auth.Grant{{Prefix: "b-", Permissions: []auth.Permission{auth.Read}}, {Prefix: "d-", Permissions: []auth.Permission{auth.Read}},
		{Prefix: "d-x", Permissions: []auth.Permission{auth.Read}}}
	f.Identities["multi"] = auth.Identity{Roles: []string{"multi"}}
	as := newAuthServer(t, f)
	for _, s := range []string{"a-1", "b-1", "b-2", "b-3", "c-1", "c-2", "d-1", "d-x1", "e-1"} {
		as.appendAs(t, "root", s)
	}
	list := func(who, prefix string, size uint32) (names, tokens []string) {
		tok := ""
		for {
			resp, err := as.streams.ListStreams(as.as(testCtx(t), who), &esdv1.ListStreamsRequest{Prefix: prefix, PageSize: size, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range resp.GetStreams() {
				names = append(names, s.GetStream())
			}
			if tok = resp.GetNextPageToken(); tok == "" {
				return names, tokens
			}
			tokens = append(tokens, tok)
		}
	}
	for _, tc := range []struct {
		who, prefix string
		size        uint32
		want        string
	}{
		{"multi", "", 2, "b-1 b-2 b-3 d-1 d-x1"},
		{"multi", "", 100, "b-1 b-2 b-3 d-1 d-x1"},
		{"multi", "d-x", 1, "d-x1"},
		{"multi", "b-2", 1, "b-2"},
		{"multi", "c", 1, ""},
		{"p-append", "", 10, ""},
		{"root", "", 4, "a-1 b-1 b-2 b-3 c-1 c-2 d-1 d-x1 e-1"},
	} {
		names, tokens := list(tc.who, tc.prefix, tc.size)
		if got := strings.Join(names, " "); got != tc.want {
			t.Errorf("%s prefix %q size %d: %q, want %q", tc.who, tc.prefix, tc.size, got, tc.want)
		}
		for _, tok := range tokens {
			bs, _ := base64.RawURLEncoding.DecodeString(tok)
			if b := string(bs); tc.who == "multi" && (b == "" || (b[0] != 'b' && b[0] != 'd')) {
				t.Errorf("%s: page token names %q, a stream it may not read", tc.who, b)
			}
		}
	}
}

// TestWideReads: ReadAll and subscriptions to $all or a category need
// the permission on every stream they can deliver.
func TestWideReads(t *testing.T) {
	f := authTestFile()
	f.Roles["cat"] = []auth.Grant{{Prefix: "in", Permissions: []auth.Permission{auth.Subscribe, auth.Read}}}
	f.Identities["cat"] = auth.Identity{Roles: []string{"cat"}}
	as := newAuthServer(t, f)
	as.appendAs(t, "root", "in-1")
	sub := func(who string, r *esdv1.SubscribeRequest) error {
		r.From = &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}}
		return firstMsg(as.streams.Subscribe(as.as(testCtx(t), who), r))
	}
	readAll := func(who string, prefixes ...string) error {
		var fl *esdv1.Filter
		if prefixes != nil {
			fl = &esdv1.Filter{StreamPrefixes: prefixes}
		}
		return firstMsg(as.streams.ReadAll(as.as(testCtx(t), who), &esdv1.ReadAllRequest{Filter: fl}))
	}
	all := &emptypb.Empty{}
	for _, tc := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"ReadAll unfiltered, read on in-", readAll("p-read"), false},
		{"ReadAll in-", readAll("p-read", "in-"), true},
		{"ReadAll in-a", readAll("p-read", "in-a"), true},
		{"ReadAll in- and out-", readAll("p-read", "in-", "out-"), false},
		{"ReadAll in (wider than in-)", readAll("p-read", "in"), false},
		{"ReadAll root", readAll("root"), true},
		{"$all unfiltered", sub("p-subscribe", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: all}}), false},
		{"$all in-", sub("p-subscribe", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: all}, Filter: &esdv1.Filter{StreamPrefixes: []string{"in-"}}}), true},
		{"category in, grant in-", sub("p-subscribe", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: "in"}}), false},
		{"category in, grant in", sub("cat", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: "in"}}), true},
		{"subscribe needs subscribe, not read", sub("p-read", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Stream{Stream: "in-1"}}), false},
	} {
		if tc.ok && tc.err != nil {
			t.Errorf("%s: %v, want allowed", tc.name, tc.err)
		}
		if !tc.ok && status.Code(tc.err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PERMISSION_DENIED", tc.name, tc.err)
		}
	}
}

// TestAppendStreamDeniedInBand: an AppendStream call goes on past an
// append it may not make, which is answered PERMISSION_DENIED in band.
func TestAppendStreamDeniedInBand(t *testing.T) {
	as := newAuthServer(t, authTestFile())
	st, err := as.streams.AppendStream(as.as(testCtx(t), "p-append"))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []string{"out-1", "in-1"} {
		if err := st.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte{byte(i)}, Append: appendReq(s, xAny, event("T", "x"))}); err != nil {
			t.Fatal(err)
		}
	}
	_ = st.CloseSend()
	got := map[byte]codes.Code{}
	for range 2 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got[resp.GetCorrelationId()[0]] = status.FromProto(resp.GetError()).Code()
	}
	if got[0] != codes.PermissionDenied || got[1] != codes.OK {
		t.Fatalf("answers %v, want out-1 PERMISSION_DENIED, in-1 OK", got)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("call not ended")
	}
}

// TestPprofNeedsAdmin: with security on, /debug/pprof/ needs an admin
// bearer token; /metrics stays open unless MetricsAuth.
func TestPprofNeedsAdmin(t *testing.T) {
	for _, metricsAuth := range []bool{false, true} {
		as := newAuthServer(t, authTestFile(), withConfig(func(c *Config) { c.Pprof, c.MetricsAuth = true, metricsAuth }))
		h := as.srv.HTTPHandler(as.reg)
		get := func(path, who string) int {
			r := httptest.NewRequest(http.MethodGet, path, nil)
			if who != "" {
				r.Header.Set("Authorization", "Bearer "+as.tokens[who])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			return w.Code
		}
		for _, tc := range []struct {
			path, who string
			want      int
		}{
			{"/debug/pprof/", "", http.StatusUnauthorized},
			{"/debug/pprof/", "p-read", http.StatusForbidden},
			{"/debug/pprof/", "p-admin", http.StatusOK},
			{"/debug/pprof/cmdline", "", http.StatusUnauthorized},
			{"/healthz", "", http.StatusOK},
			{"/metrics", "", map[bool]int{false: http.StatusOK, true: http.StatusUnauthorized}[metricsAuth]},
			{"/metrics", "p-admin", http.StatusOK},
		} {
			if got := get(tc.path, tc.who); got != tc.want {
				t.Errorf("metrics-auth %t: GET %s as %q: %d, want %d", metricsAuth, tc.path, tc.who, got, tc.want)
			}
		}
	}
}

// TestIdentityRate: an identity with a rate gets RESOURCE_EXHAUSTED/
// RATE_LIMITED past its burst, refused calls counting too; others are not
// slowed; the bucket refills at the rate.
func TestIdentityRate(t *testing.T) {
	f := authTestFile()
	f.Identities["slow"] = auth.Identity{Roles: []string{"r-read"}, Rate: &auth.Rate{PerSecond: 1, Burst: 3}}
	now := time.Now()
	// A fixed clock, set before the server starts: the bucket does not refill.
	as := newAuthServer(t, f, withConfig(func(c *Config) { c.Auth.Now = func() time.Time { return now } }))
	get := func(who, stream string) error {
		_, err := as.streams.GetStream(as.as(testCtx(t), who), &esdv1.GetStreamRequest{Stream: stream})
		return err
	}
	for i, s := range []string{"in-1", "out-1", "in-1"} { // the burst, a refusal included
		if err := get("slow", s); err != nil && status.Code(err) != codes.PermissionDenied {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	wantStatus(t, get("slow", "in-1"), codes.ResourceExhausted, reasonRateLimited)
	if err := get("root", "in-1"); err != nil {
		t.Fatalf("another identity: %v", err)
	}
	// The refill, on the limiter itself.
	var l identityLimits
	who := &auth.Principal{Name: "slow", PerSecond: 2, Burst: 1}
	if !l.allow(who, now) || l.allow(who, now) || l.allow(who, now.Add(400*time.Millisecond)) || !l.allow(who, now.Add(500*time.Millisecond)) {
		t.Fatal("bucket of 2/s, burst 1: want allowed, refused, refused at 0.4s, allowed at 0.5s")
	}
}

// TestMethodWithoutRuleDenied: a method the rules do not know is refused,
// whoever calls: a new RPC without a rule is nobody's (fail closed).
func TestMethodWithoutRuleDenied(t *testing.T) {
	f := authTestFile()
	tok, _, err := auth.NewToken(f, "root", time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewStatic(f)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{Auth: a}, authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	called := false
	handler := func(context.Context, any) (any, error) { called = true; return nil, nil }
	_, err = s.unaryAuth(ctx, &emptypb.Empty{}, &grpc.UnaryServerInfo{FullMethod: "/esd.v1.StreamService/Future"}, handler)
	if status.Code(err) != codes.PermissionDenied || called {
		t.Fatalf("unknown method as root: %v (handler called: %t), want PERMISSION_DENIED", err, called)
	}
	stream := func(any, grpc.ServerStream) error { called = true; return nil }
	err = s.streamAuth(nil, &fakeServerStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: "/esd.v1.StreamService/FutureStream"}, stream)
	if status.Code(err) != codes.PermissionDenied || called {
		t.Fatalf("unknown streaming method as root: %v (handler called: %t), want PERMISSION_DENIED", err, called)
	}
}

type fakeServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f *fakeServerStream) Context() context.Context { return f.ctx }

// BenchmarkAuthInterceptor is the cost per call of authenticating a bearer
// token and checking a per-stream rule (unaryAuth around a handler that
// does nothing), against the same call with security off.
func BenchmarkAuthInterceptor(b *testing.B) {
	f := authTestFile()
	tok, _, err := auth.NewToken(f, "p-read", time.Now(), time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	a, err := auth.NewStatic(f)
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{cfg: Config{Auth: a}, authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"reason"})}
	info := &grpc.UnaryServerInfo{FullMethod: esdv1.StreamService_GetStream_FullMethodName}
	req := &esdv1.GetStreamRequest{Stream: "in-orders-1"}
	handler := func(ctx context.Context, _ any) (any, error) { return nil, nil }
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	b.Run("token", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.unaryAuth(ctx, req, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("denied", func(b *testing.B) {
		req := &esdv1.GetStreamRequest{Stream: "out-1"}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.unaryAuth(ctx, req, info, handler); err == nil {
				b.Fatal("allowed")
			}
		}
	})
	b.Run("off", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := handler(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func (as *authServer) appendAs(t *testing.T, who, stream string) {
	t.Helper()
	if _, err := as.streams.Append(as.as(testCtx(t), who), appendReq(stream, xAny, event("T", secretData))); err != nil {
		t.Fatalf("append to %q as %s: %v", stream, who, err)
	}
}
