package server

import (
	"context"
	"fmt"
	"math/big"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/tlsconf"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestTLSReloadUnderLoad: clients append without pause over several
// connections while the server's certificate files are replaced twice,
// once followed by Reload (what SIGHUP does) and once seen by Watch. No
// append fails; connections made before a reload keep the certificate
// they were made with and keep working; connections made after it get
// the new one (told apart by serial).
func TestTLSReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	dev, err := tlsconf.WriteDev(tlsDir, []string{"127.0.0.1"}, []string{"loader"}, tlsconf.Validity{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsconf.LoadCA(dev.CA, dev.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	reg := prometheus.NewRegistry()
	rl, err := tlsconf.NewReloader(tlsconf.Files{Cert: dev.ServerCert, Key: dev.ServerKey, ClientCA: dev.CA}, lg, reg)
	if err != nil {
		t.Fatal(err)
	}
	first := rl.Certificate().SerialNumber // read by the writers
	serials := []*big.Int{first}

	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, "data"), Shards: 2, CacheBytes: 8 << 20, Logger: lg, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(eng, Config{DataDir: dir, Creds: rl.GRPCCredentials()}, lg, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTCP(t, srv, eng)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watched := make(chan error, 1)

	client := dev.Clients["loader"]
	ccfg, err := tlsconf.ClientConfig(dev.CA, client[0], client[1], "")
	if err != nil {
		t.Fatal(err)
	}
	dial := func() *grpc.ClientConn {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	// appendOnce appends one event at revision rev and returns the serial
	// of the server certificate of the connection it went over.
	appendOnce := func(conn *grpc.ClientConn, stream string, rev uint64) (*big.Int, error) {
		var p peer.Peer
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		req := appendReq(stream, xExact(rev), event("Loaded", "{}"))
		if rev == noRevision {
			req = appendReq(stream, xNoStream, event("Loaded", "{}"))
		}
		if _, err := esdv1.NewStreamServiceClient(conn).Append(cctx, req, grpc.Peer(&p)); err != nil {
			return nil, err
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber, nil
	}

	// The load: conns connections made before any reload, writers
	// goroutines on each, each appending to its own stream at the exact
	// revision it expects.
	const conns, writers = 4, 2
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		failures atomic.Int64
		appended [conns * writers]uint64
		oldOK    [conns]atomic.Int64 // appends that saw the first certificate on an old connection
		wrongOld atomic.Int64        // appends on an old connection that saw another serial
	)
	for c := range conns {
		conn := dial()
		defer conn.Close()
		for w := range writers {
			i := c*writers + w
			wg.Go(func() {
				rev := noRevision
				for !stop.Load() {
					serial, err := appendOnce(conn, fmt.Sprintf("load-%d", i), rev)
					if err != nil {
						failures.Add(1)
						t.Errorf("writer %d: append at %d: %v", i, rev, err)
						return
					}
					rev++
					appended[i]++
					if serial.Cmp(first) == 0 {
						oldOK[c].Add(1)
					} else {
						wrongOld.Add(1)
					}
				}
			})
		}
	}
	// A connection made now must see serial want and work.
	newConnSees := func(want *big.Int, stream string) {
		t.Helper()
		conn := dial()
		defer conn.Close()
		serial, err := appendOnce(conn, stream, noRevision)
		if err != nil || serial.Cmp(want) != 0 {
			t.Errorf("new connection: serial %x, err %v; want serial %x", serial, err, want)
		}
	}
	// replace writes a new server certificate over the files, as a
	// certificate manager does: each file renamed into place.
	replace := func() *big.Int {
		t.Helper()
		pair, err := ca.Server([]string{"127.0.0.1"}, tlsconf.Validity{})
		if err != nil {
			t.Fatal(err)
		}
		if err := pair.WriteFiles(dev.ServerCert, dev.ServerKey); err != nil {
			t.Fatal(err)
		}
		return pair.Cert.SerialNumber
	}
	waitAppends := func() { // the load has run a while since the last step
		t.Helper()
		before := oldOK[0].Load() + oldOK[conns-1].Load()
		for deadline := time.Now().Add(20 * time.Second); oldOK[0].Load()+oldOK[conns-1].Load() < before+20; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the load made no progress for 20s")
			}
		}
	}

	waitAppends()
	newConnSees(serials[0], "new-0")

	// 1. Reload, as on SIGHUP.
	serials = append(serials, replace())
	if err := rl.Reload(); err != nil {
		t.Fatal(err)
	}
	newConnSees(serials[1], "new-1")
	waitAppends()

	// 2. Watch sees the files change.
	go func() { watched <- rl.Watch(watchCtx, 50*time.Millisecond) }()
	time.Sleep(100 * time.Millisecond) // the watch is set up
	serials = append(serials, replace())
	for deadline := time.Now().Add(10 * time.Second); rl.Certificate().SerialNumber.Cmp(serials[2]) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not reload within 10s")
		}
	}
	newConnSees(serials[2], "new-2")
	waitAppends()

	stop.Store(true)
	wg.Wait()
	stopWatch()
	if err := <-watched; err != nil {
		t.Errorf("Watch: %v", err)
	}
	if failures.Load() != 0 || wrongOld.Load() != 0 {
		t.Errorf("%d appends failed, %d on old connections saw a new certificate; want 0 and 0", failures.Load(), wrongOld.Load())
	}
	var total uint64
	for i, n := range appended {
		total += n
		st, _, err := eng.Log().StreamInfo(context.Background(), fmt.Sprintf("load-%d", i))
		if err != nil || st.EventCount() != n {
			t.Errorf("stream load-%d: %d events, %v; want the %d appended", i, st.EventCount(), err, n)
		}
	}
	if got := counterValue(t, reg, "esd_tls_reloads_total", "success"); got != 2 {
		t.Errorf("esd_tls_reloads_total{result=success}: %v, want 2", got)
	}
	t.Logf("%d appends over %d connections across 2 reloads, none failed", total, conns)
}

const noRevision = ^uint64(0)

// counterValue returns the value of counter name{result=result}.
func counterValue(t *testing.T, g prometheus.Gatherer, name, result string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == name && l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{result=%q}", name, result)
	return 0
}
