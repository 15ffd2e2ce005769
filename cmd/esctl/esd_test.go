package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/server"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// testESD is a real esd serving a test: its gRPC address, its metrics
// registry, where a test counts the calls esctl made (calls), and what
// the server received and sent (requests, responses).
type testESD struct {
	addr    string
	metrics prometheus.Gatherer
	rec     *recorder
}

// recorder keeps, by method name (as "Subscribe"), every request message
// the server received and the number of messages it sent on streams. Its
// interceptors run after esd's own: it sees the calls the server took.
type recorder struct {
	mu   sync.Mutex
	reqs map[string][]proto.Message
	sent map[string]int
}

func newRecorder() *recorder {
	return &recorder{reqs: make(map[string][]proto.Message), sent: make(map[string]int)}
}

// received keeps a copy of m: the server may reuse it. AppendStream
// receives its requests wrapped, so that a decoding error reaches its
// handler (Decoded unwraps them).
func (r *recorder) received(fullMethod string, m any) {
	if d, ok := m.(interface{ Decoded() (proto.Message, error) }); ok {
		msg, err := d.Decoded()
		if err != nil {
			return
		}
		m = msg
	}
	msg, ok := m.(proto.Message)
	if !ok {
		panic(fmt.Sprintf("%s received a %T, not a proto message", fullMethod, m))
	}
	msg = proto.Clone(msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	method := path.Base(fullMethod)
	r.reqs[method] = append(r.reqs[method], msg)
}

func (r *recorder) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	r.received(info.FullMethod, req)
	return handler(ctx, req)
}

func (r *recorder) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &recordingStream{ServerStream: ss, rec: r, method: info.FullMethod})
}

// recordingStream records the messages a streaming call receives and
// counts those it sends.
type recordingStream struct {
	grpc.ServerStream
	rec    *recorder
	method string
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.rec.received(s.method, m)
	}
	return err
}

func (s *recordingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.rec.mu.Lock()
		s.rec.sent[path.Base(s.method)]++
		s.rec.mu.Unlock()
	}
	return err
}

// startESD starts a real esd for the test, in-process: a log in a temporary
// directory (an engine) and the server on a 127.0.0.1 port (esctl dials --addr like in
// production). The test's cleanup stops the server and closes the log.
//
// Everything that builds the server is in this one function, so that a
// change of the server's constructor is made here alone.
func startESD(t *testing.T) *testESD {
	t.Helper()
	return startESDWith(t, nil)
}

// startESDTLS is startESD serving gRPC with creds when not nil.
func startESDTLS(t *testing.T, creds credentials.TransportCredentials) *testESD {
	t.Helper()
	return startESDWith(t, func(c *server.Config) { c.Creds = creds })
}

// startESDWith is startESD with the server's Config changed by conf first.
func startESDWith(t *testing.T, conf func(*server.Config)) *testESD {
	t.Helper()
	dir := t.TempDir()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	reg := prometheus.NewRegistry()
	eng, err := engine.Open(engine.Config{Dir: dir, Shards: 2, SubscriptionBufferBytes: 4 << 20,
		CacheBytes: 8 << 20, Logger: lg, Registerer: reg})
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = eng.Close()
		t.Fatal(err)
	}
	rec := newRecorder()
	cfg := server.Config{
		DataDir: dir, Version: "test", Commit: "abc123", GracePeriod: 5 * time.Second,
		UnaryInterceptors:  []grpc.UnaryServerInterceptor{rec.unary},
		StreamInterceptors: []grpc.StreamServerInterceptor{rec.stream},
	}
	if conf != nil {
		conf(&cfg)
	}
	srv, err := server.New(eng, cfg, lg.Named("server"), reg)
	if err != nil {
		_ = lis.Close()
		_ = eng.Close()
		t.Fatalf("new server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := eng.Close(); err != nil { // last, after the server has drained
			t.Errorf("close engine: %v", err)
		}
	})
	return &testESD{addr: lis.Addr().String(), metrics: reg, rec: rec}
}

// requests returns the request messages of method (as "Subscribe") the
// server has received, in order: a unary call's request, each message a
// client sent on a stream (a Join's join, acks and nacks). A message is
// recorded as the server receives it, before it answers: once an esctl
// run has returned, its requests are all there (the server ends a Join
// only after it has read the member's whole side). The requests since an
// earlier look are requests(...)[n:], n the length then.
func (e *testESD) requests(t *testing.T, method string) []proto.Message {
	t.Helper()
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return slices.Clone(e.rec.reqs[method])
}

// responses returns how many messages the server has sent on the streams
// of method (as "ReadStream"), so far.
func (e *testESD) responses(t *testing.T, method string) int {
	t.Helper()
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return e.rec.sent[method]
}

// calls returns how many calls of method (as "ListStreams") the server
// has started, from its gRPC metrics: a call is counted before its first
// answer, so a call esctl saw an answer to is counted.
func (e *testESD) calls(t *testing.T, method string) int {
	t.Helper()
	mfs, err := e.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_started_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "grpc_method" && lp.GetValue() == method {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int(n)
}

// client dials the server for a test's own look at the store, closed by
// the test's cleanup.
func (e *testESD) client(t *testing.T) esdv1.StreamServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return esdv1.NewStreamServiceClient(conn)
}

// events returns a stream's events as the server has them (none when it
// does not exist).
func (e *testESD) events(t *testing.T, stream string) []*esdv1.RecordedEvent {
	t.Helper()
	rs, err := e.client(t).ReadStream(t.Context(), &esdv1.ReadStreamRequest{Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	var evs []*esdv1.RecordedEvent
	for {
		resp, err := rs.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return evs
		case status.Code(err) == codes.NotFound:
			return nil
		case err != nil:
			t.Fatal(err)
		}
		evs = append(evs, resp.GetEvents()...)
	}
}

// eventsWithPrefix counts the events of the streams whose names start
// with prefix.
func (e *testESD) eventsWithPrefix(t *testing.T, prefix string) int64 {
	t.Helper()
	cli, n, token := e.client(t), int64(0), ""
	for {
		resp, err := cli.ListStreams(t.Context(), &esdv1.ListStreamsRequest{Prefix: prefix, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range resp.GetStreams() {
			n += int64(in.GetEventCount())
		}
		if token = resp.GetNextPageToken(); token == "" {
			return n
		}
	}
}
