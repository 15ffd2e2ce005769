package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pki is a CA with files in a test's directory.
type pki struct {
	t   *testing.T
	dir string
	ca  *CA
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	ca, err := NewCA(name, Validity{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: dir, ca: ca}
	if err := WriteFileAtomic(p.caFile(), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// server issues a server certificate for 127.0.0.1 valid for v and
// writes it to name.pem and name-key.pem.
func (p *pki) server(name string, v Validity) (certFile, keyFile string, cert *x509.Certificate) {
	p.t.Helper()
	pair, err := p.ca.Server([]string{"127.0.0.1", "localhost"}, v)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.write(name, pair)
}

func (p *pki) client(name string, v Validity) (certFile, keyFile string) {
	p.t.Helper()
	pair, err := p.ca.Client(name, v)
	if err != nil {
		p.t.Fatal(err)
	}
	c, k, _ := p.write(name, pair)
	return c, k
}

func (p *pki) write(name string, pair *Pair) (string, string, *x509.Certificate) {
	p.t.Helper()
	c, k := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	if err := pair.WriteFiles(c, k); err != nil {
		p.t.Fatal(err)
	}
	return c, k, pair.Cert
}

var expired = Validity{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}

// tlsServer is a gRPC server (the health service) on a real TCP listener
// on 127.0.0.1 with a Reloader's configuration; it records the identity
// PeerIdentity gives for each call.
type tlsServer struct {
	addr string
	rl   *Reloader
	reg  *prometheus.Registry
	mu   sync.Mutex
	ids  []string // PeerIdentity of each call ("-" for none)
}

func startTLSServer(t *testing.T, files Files) *tlsServer {
	t.Helper()
	ts := &tlsServer{reg: prometheus.NewRegistry()}
	rl, err := NewReloader(files, zaptest.NewLogger(t), ts.reg)
	if err != nil {
		t.Fatal(err)
	}
	ts.rl = rl
	srv := grpc.NewServer(grpc.Creds(rl.GRPCCredentials()),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, ok := PeerIdentity(ctx)
			if !ok {
				id = "-"
			}
			ts.mu.Lock()
			ts.ids = append(ts.ids, id)
			ts.mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return ts
}

func (ts *tlsServer) calls() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.ids)
}

func (ts *tlsServer) lastID() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.ids) == 0 {
		return ""
	}
	return ts.ids[len(ts.ids)-1]
}

// check makes one health check over a new connection with cfg and
// returns its error and the serial of the server certificate it saw.
func check(t *testing.T, addr string, cfg *tls.Config) (*big.Int, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return checkConn(conn)
}

func checkConn(conn *grpc.ClientConn) (*big.Int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, errors.New("the call did not go over TLS")
	}
	return info.State.PeerCertificates[0].SerialNumber, nil
}

func clientCfg(t *testing.T, ca, cert, key string) *tls.Config {
	t.Helper()
	cfg, err := ClientConfig(ca, cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	// Go's client sends no certificate that the server's list of
	// acceptable CAs does not name: sent always, it is the server's
	// verification that is tested.
	if len(cfg.Certificates) == 1 {
		c := cfg.Certificates[0]
		cfg.Certificates = nil
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// TestHandshakes: who may connect, over real TLS on 127.0.0.1, with
// certificates of this package's generator.
func TestHandshakes(t *testing.T) {
	good := newPKI(t, "good")
	other := newPKI(t, "other")
	srvCert, srvKey, _ := good.server("server", Validity{})
	expCert, expKey, _ := good.server("expired-server", expired)
	aliceCert, aliceKey := good.client("alice", Validity{})
	oldCert, oldKey := good.client("old", expired)
	malloryCert, malloryKey := other.client("mallory", Validity{})

	plain := startTLSServer(t, Files{Cert: srvCert, Key: srvKey})
	mtls := startTLSServer(t, Files{Cert: srvCert, Key: srvKey, ClientCA: good.caFile()})
	optional := startTLSServer(t, Files{Cert: srvCert, Key: srvKey, ClientCA: good.caFile(), ClientAuth: VerifyClientCertIfGiven})
	expiredSrv := startTLSServer(t, Files{Cert: expCert, Key: expKey})

	tls11 := clientCfg(t, good.caFile(), aliceCert, aliceKey)
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11

	for _, tc := range []struct {
		name string
		srv  *tlsServer
		cfg  *tls.Config
		// wantErr is in the client's error; "" = the call succeeds. A
		// refusal by the server after TLS 1.3's handshake reaches the
		// client as an alert or as a closed connection: "server" stands
		// for any UNAVAILABLE error, with no call reaching the server.
		wantErr string
		wantID  string // PeerIdentity on the server, when it succeeds
	}{
		{"server CA trusted", plain, clientCfg(t, good.caFile(), "", ""), "", "-"},
		{"server CA unknown", plain, clientCfg(t, other.caFile(), "", ""), "certificate signed by unknown authority", ""},
		{"server certificate expired", expiredSrv, clientCfg(t, good.caFile(), "", ""), "expired", ""},
		{"server name mismatch", plain, func() *tls.Config { c := clientCfg(t, good.caFile(), "", ""); c.ServerName = "esd.example"; return c }(),
			"not esd.example", ""},
		{"TLS 1.1 refused", plain, tls11, "protocol version", ""},
		{"mTLS client certificate", mtls, clientCfg(t, good.caFile(), aliceCert, aliceKey), "", "alice"},
		{"mTLS without client certificate", mtls, clientCfg(t, good.caFile(), "", ""), "server", ""},
		{"mTLS client certificate of another CA", mtls, clientCfg(t, good.caFile(), malloryCert, malloryKey), "server", ""},
		{"mTLS expired client certificate", mtls, clientCfg(t, good.caFile(), oldCert, oldKey), "server", ""},
		{"verify-if-given without a certificate", optional, clientCfg(t, good.caFile(), "", ""), "", "-"},
		{"verify-if-given with a certificate", optional, clientCfg(t, good.caFile(), aliceCert, aliceKey), "", "alice"},
		{"verify-if-given with another CA's certificate", optional, clientCfg(t, good.caFile(), malloryCert, malloryKey), "server", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := tc.srv.calls()
			failures := testutil.ToFloat64(tc.srv.rl.met.handshakeFailures)
			_, err := check(t, tc.srv.addr, tc.cfg)
			if tc.wantErr != "" {
				// The server counts the failed handshake, whichever side refused.
				waitFor(t, func() bool { return testutil.ToFloat64(tc.srv.rl.met.handshakeFailures) == failures+1 })
			}
			if tc.wantErr == "server" {
				if status.Code(err) != codes.Unavailable || tc.srv.calls() != calls {
					t.Fatalf("want UNAVAILABLE and no call served, got %v", err)
				}
				return
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if got := tc.srv.lastID(); got != tc.wantID {
					t.Errorf("PeerIdentity: got %q, want %q", got, tc.wantID)
				}
				return
			}
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("want UNAVAILABLE with %q, got %v", tc.wantErr, err)
			}
		})
	}
}

// TestReloadKeepsOldOnFailure: a bad PEM or a key of another certificate
// is refused, the certificate in force stays, and the metrics count it.
func TestReloadKeepsOldOnFailure(t *testing.T) {
	p := newPKI(t, "ca")
	certFile, keyFile, first := p.server("server", Validity{})
	ts := startTLSServer(t, Files{Cert: certFile, Key: keyFile})
	cfg := clientCfg(t, p.caFile(), "", "")

	_, _, other := p.server("other", Validity{}) // other.pem, other-key.pem
	otherKey, err := os.ReadFile(filepath.Join(p.dir, "other-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name       string
		cert, key  []byte
		wantErrSub string
	}{
		{"bad PEM", []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), nil, "certificate"},
		{"key of another certificate", nil, otherKey, "private key does not match"},
	} {
		orig, _ := os.ReadFile(certFile)
		origKey, _ := os.ReadFile(keyFile)
		if bad.cert != nil {
			mustWrite(t, certFile, bad.cert)
		}
		if bad.key != nil {
			mustWrite(t, keyFile, bad.key)
		}
		err := ts.rl.Reload()
		if err == nil || !strings.Contains(err.Error(), bad.wantErrSub) {
			t.Errorf("%s: Reload: want an error with %q, got %v", bad.name, bad.wantErrSub, err)
		}
		if serial, err := check(t, ts.addr, cfg); err != nil || serial.Cmp(first.SerialNumber) != 0 {
			t.Errorf("%s: after the failed reload: serial %v, err %v; want the first certificate's %v", bad.name, serial, err, first.SerialNumber)
		}
		mustWrite(t, certFile, orig)
		mustWrite(t, keyFile, origKey)
	}
	if got := testutil.ToFloat64(ts.rl.met.reloads.WithLabelValues("failure")); got != 2 {
		t.Errorf("esd_tls_reloads_total{result=failure}: got %v, want 2", got)
	}

	// A good reload: new handshakes get the new certificate, the gauge its expiry.
	mustWrite(t, certFile, mustRead(t, filepath.Join(p.dir, "other.pem")))
	mustWrite(t, keyFile, otherKey)
	if err := ts.rl.Reload(); err != nil {
		t.Fatal(err)
	}
	if serial, err := check(t, ts.addr, cfg); err != nil || serial.Cmp(other.SerialNumber) != 0 {
		t.Errorf("after the reload: serial %v, err %v; want the new certificate's %v", serial, err, other.SerialNumber)
	}
	if got := testutil.ToFloat64(ts.rl.met.reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("esd_tls_reloads_total{result=success}: got %v, want 1", got)
	}
	if got, want := testutil.ToFloat64(ts.rl.met.expiry), float64(other.NotAfter.Unix()); got != want {
		t.Errorf("esd_tls_certificate_expiry_timestamp_seconds: got %v, want %v", got, want)
	}
	if n, err := testutil.GatherAndCount(ts.reg); err != nil || n != 4 {
		t.Errorf("registered samples: %d, %v; want 4 (2 reload results, the expiry, handshake failures)", n, err)
	}
}

// TestWatch: replacing the files (by rename, as editors do, and by
// swapping a Kubernetes-style ..data symlink) is seen without a Reload
// call; an old connection keeps its certificate and keeps working; a
// client CA swapped in lets the new CA's clients in and keeps the old
// CA's out.
func TestWatch(t *testing.T) {
	p := newPKI(t, "ca")
	_, _, first := p.server("server", Validity{})
	clientCert, clientKey := p.client("alice", Validity{})
	p2 := newPKI(t, "ca2")
	client2Cert, client2Key := p2.client("bob", Validity{})

	// Kubernetes' layout: dir/tls.crt -> ..data/tls.crt, ..data -> ..v1.
	mount := t.TempDir()
	v1 := filepath.Join(mount, "..v1")
	mustMkdir(t, v1)
	mustWrite(t, filepath.Join(v1, "tls.crt"), mustRead(t, filepath.Join(p.dir, "server.pem")))
	mustWrite(t, filepath.Join(v1, "tls.key"), mustRead(t, filepath.Join(p.dir, "server-key.pem")))
	mustWrite(t, filepath.Join(v1, "ca.crt"), p.ca.CertPEM)
	mustSymlink(t, "..v1", filepath.Join(mount, "..data"))
	for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
		mustSymlink(t, filepath.Join("..data", f), filepath.Join(mount, f))
	}
	ts := startTLSServer(t, Files{Cert: filepath.Join(mount, "tls.crt"), Key: filepath.Join(mount, "tls.key"), ClientCA: filepath.Join(mount, "ca.crt")})
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- ts.rl.Watch(ctx, 50*time.Millisecond) }()
	t.Cleanup(func() {
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	time.Sleep(100 * time.Millisecond) // the watch is set up

	// Both CAs are trusted by the client: it is the server's choice that is tested.
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	roots.AddCert(p2.ca.Cert)
	cfg := func(cert, key string) *tls.Config {
		c := clientCfg(t, "", cert, key)
		c.RootCAs = roots
		return c
	}
	old, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg(clientCert, clientKey))))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if serial, err := checkConn(old); err != nil || serial.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("first connection: serial %v, err %v", serial, err)
	}

	// The Kubernetes update: new files in ..v2, ..data swapped by rename.
	srv2, err := p2.ca.Server([]string{"127.0.0.1"}, Validity{})
	if err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(mount, "..v2")
	mustMkdir(t, v2)
	mustWrite(t, filepath.Join(v2, "tls.crt"), srv2.CertPEM)
	mustWrite(t, filepath.Join(v2, "tls.key"), srv2.KeyPEM)
	mustWrite(t, filepath.Join(v2, "ca.crt"), p2.ca.CertPEM)
	mustSymlink(t, "..v2", filepath.Join(mount, "..data_tmp"))
	if err := os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.rl.Certificate().SerialNumber.Cmp(srv2.Cert.SerialNumber) == 0 })

	if serial, err := check(t, ts.addr, cfg(client2Cert, client2Key)); err != nil || serial.Cmp(srv2.Cert.SerialNumber) != 0 {
		t.Errorf("new connection with the new CA's client: serial %v, err %v; want %v", serial, err, srv2.Cert.SerialNumber)
	}
	if _, err := check(t, ts.addr, cfg(clientCert, clientKey)); err == nil {
		t.Errorf("new connection with the old CA's client: want refused")
	}
	if serial, err := checkConn(old); err != nil || serial.Cmp(first.SerialNumber) != 0 {
		t.Errorf("old connection after the reload: serial %v, err %v; want it working with %v", serial, err, first.SerialNumber)
	}
	if got := testutil.ToFloat64(ts.rl.met.reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("reloads: got %v, want exactly 1 (debounced, unchanged files ignored)", got)
	}
}

func TestWriteDevAndEnsureDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	files, did, err := EnsureDev(dir, DefaultDevHosts)
	if err != nil || did != DevCreated {
		t.Fatalf("EnsureDev on an empty dir: %s, err %v", did, err)
	}
	for _, f := range []string{files.CAKey, files.ServerKey, files.Clients[DefaultDevUser][1]} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, err %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}
	srv := mustLeaf(t, files.ServerCert)
	if d := time.Until(srv.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("server certificate valid for %v, want a year", d)
	}
	if !strings.Contains(strings.Join(srv.DNSNames, ","), "localhost") || len(srv.IPAddresses) != 2 {
		t.Errorf("server certificate names: %v %v", srv.DNSNames, srv.IPAddresses)
	}
	clientCert := mustRead(t, files.Clients[DefaultDevUser][0])
	if cn := mustLeaf(t, files.Clients[DefaultDevUser][0]).Subject.CommonName; cn != DefaultDevUser {
		t.Errorf("client certificate CN %q, want %q", cn, DefaultDevUser)
	}
	again, did, err := EnsureDev(dir, DefaultDevHosts)
	if err != nil || did != DevReused || mustLeaf(t, again.ServerCert).SerialNumber.Cmp(srv.SerialNumber) != 0 {
		t.Errorf("EnsureDev again: %s, err %v; want the same files reused", did, err)
	}

	// Another host name (a new container): a new server certificate from
	// the same CA; the client's files stay.
	_, did, err = EnsureDev(dir, append(slices.Clone(DefaultDevHosts), "esd"))
	renewed := mustLeaf(t, files.ServerCert)
	if err != nil || did != DevRenewed || renewed.VerifyHostname("esd") != nil || renewed.CheckSignatureFrom(mustLeafCA(t, files.CA)) != nil {
		t.Errorf("EnsureDev with the host esd: %s, err %v; want a server certificate for esd from the same CA", did, err)
	}
	if !bytes.Equal(mustRead(t, files.Clients[DefaultDevUser][0]), clientCert) {
		t.Errorf("renewing the server certificate changed the client's")
	}
	// One that expires within DevRenewBefore is renewed too.
	ca, err := LoadCA(files.CA, files.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	soon, err := ca.Server(DefaultDevHosts, Validity{NotAfter: time.Now().Add(DevRenewBefore - time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := soon.WriteFiles(files.ServerCert, files.ServerKey); err != nil {
		t.Fatal(err)
	}
	if _, did, err = EnsureDev(dir, DefaultDevHosts); err != nil || did != DevRenewed || time.Until(mustLeaf(t, files.ServerCert).NotAfter) < 300*24*time.Hour {
		t.Errorf("EnsureDev with a certificate expiring in 29 days: %s, err %v; want a new one for a year", did, err)
	}

	if err := os.Remove(files.ServerKey); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureDev(dir, DefaultDevHosts); err == nil {
		t.Errorf("EnsureDev with a CA and no server key: want an error, not a new CA")
	}
	if _, err := WriteDev(t.TempDir(), DefaultDevHosts, []string{"../x"}, Validity{}); err == nil {
		t.Errorf("WriteDev with client ../x: want an error")
	}
	if _, err := ca.Client("carol", Validity{}); err != nil {
		t.Errorf("issuing from a loaded CA: %v", err)
	}
}

func mustLeaf(t *testing.T, certFile string) *x509.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(mustRead(t, certFile), mustRead(t, strings.TrimSuffix(certFile, ".pem")+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func mustLeafCA(t *testing.T, caFile string) *x509.Certificate {
	t.Helper()
	ca, err := LoadCA(caFile, strings.TrimSuffix(caFile, ".pem")+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	return ca.Cert
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := WriteFileAtomic(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func TestPeerIdentityWithoutTLS(t *testing.T) {
	if id, ok := PeerIdentity(context.Background()); ok || id != "" {
		t.Errorf("no peer: %q %v, want none", id, ok)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}})
	if id, ok := PeerIdentity(ctx); ok || id != "" {
		t.Errorf("a plain-text peer: %q %v, want none", id, ok)
	}
}
