// Package esdtest runs a real esd (engine and gRPC server) in the test's
// process on a loopback port, for the tests of code that talks to esd
// only through its API: the Go client, the examples, esctl.
package esdtest

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/server"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Server is a running esd.
type Server struct {
	// Addr is the gRPC address, "127.0.0.1:port".
	Addr   string
	Engine *engine.Engine
	Dir    string

	t      testing.TB
	cancel context.CancelFunc
	served chan error
	closed bool
}

// Options change the server a test starts.
type Options struct {
	Dir    string // data directory; empty: a fresh t.TempDir()
	Engine engine.Config
	Server server.Config
}

// Start starts esd on a fresh store and stops it when the test ends
// (cleanly: the shutdown sequence, then the store closes).
func Start(t testing.TB, opts ...func(*Options)) *Server {
	t.Helper()
	o := Options{Engine: engine.Config{Shards: 2, CacheBytes: 8 << 20}, Server: server.Config{Version: "test", GracePeriod: 5 * time.Second}}
	for _, fn := range opts {
		fn(&o)
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	reg := prometheus.NewRegistry()
	ecfg := o.Engine
	ecfg.Dir, ecfg.Logger, ecfg.Registerer = o.Dir, lg, reg
	eng, err := engine.Open(ecfg)
	if err != nil {
		t.Fatalf("esdtest: open engine: %v", err)
	}
	scfg := o.Server
	scfg.DataDir = o.Dir
	srv, err := server.New(eng, scfg, lg.Named("server"), reg)
	if err != nil {
		_ = eng.Close()
		t.Fatalf("esdtest: new server: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = eng.Close()
		t.Fatalf("esdtest: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{Addr: lis.Addr().String(), Engine: eng, Dir: o.Dir, t: t, cancel: cancel, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(ctx, lis) }()
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and closes the store; a second call does
// nothing.
func (s *Server) Stop() {
	if s.closed {
		return
	}
	s.closed = true
	s.cancel()
	select {
	case err := <-s.served:
		if err != nil {
			s.t.Errorf("esdtest: serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Errorf("esdtest: the server did not stop within 30 s")
		return // closing the store under a server still serving would only add confusion
	}
	if err := s.Engine.Close(); err != nil {
		s.t.Errorf("esdtest: close engine: %v", err)
	}
}
