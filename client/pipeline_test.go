package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
	"github.com/esdhq/esd/internal/testutil/esdtest"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// calls counts the append calls a server gets.
type calls struct{ unary, streams atomic.Int32 }

// startCounted starts esd counting its Append and AppendStream calls;
// wrap, when set, may change an AppendStream call (n counts them from 1).
func startCounted(t testing.TB, wrap func(n int32, ss grpc.ServerStream, h grpc.StreamHandler) error) (*esdtest.Server, *calls) {
	cs := &calls{}
	srv := esdtest.Start(t, func(o *esdtest.Options) {
		o.Server.UnaryInterceptors = append(o.Server.UnaryInterceptors, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if info.FullMethod == esdv1.StreamService_Append_FullMethodName {
				cs.unary.Add(1)
			}
			return h(ctx, req)
		})
		o.Server.StreamInterceptors = append(o.Server.StreamInterceptors, func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if info.FullMethod != esdv1.StreamService_AppendStream_FullMethodName {
				return h(s, ss)
			}
			n := cs.streams.Add(1)
			if wrap != nil {
				return wrap(n, ss, func(_ any, ss grpc.ServerStream) error { return h(s, ss) })
			}
			return h(s, ss)
		})
	})
	return srv, cs
}

func dialTo(t testing.TB, srv *esdtest.Server, opts ...client.Option) *client.Client {
	c, err := client.Dial(srv.Addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// appendOp is one append of a test sequence, its events with their ids.
type appendOp struct {
	stream   string
	expected client.Expected
	events   []*esdv1.ProposedEvent
}

// randomAppends makes a sequence of appends with conflicts, wrong
// expected revisions, retries, id conflicts and bad input.
func randomAppends(rng *rand.Rand, n int) []appendOp {
	streams := []string{"p-1", "p-2", "p-3", "p-4"}
	var ops []appendOp
	var used []*esdv1.ProposedEvent
	for i := range n {
		op := appendOp{stream: streams[rng.IntN(len(streams))]}
		switch rng.IntN(4) {
		case 0:
			op.expected = client.Any()
		case 1:
			op.expected = client.NoStream()
		case 2:
			op.expected = client.StreamExists()
		default:
			op.expected = client.Exact(uint64(rng.IntN(6)))
		}
		for j := range 1 + rng.IntN(3) {
			ev := client.NewEvent(fmt.Sprintf("T%d", rng.IntN(3)), fmt.Appendf(nil, "%d.%d", i, j))
			ev.Id = fmt.Sprintf("00000000-0000-7000-8000-%012d", i*10+j)
			op.events = append(op.events, ev)
		}
		switch k := rng.IntN(10); {
		case k == 0 && len(ops) > 0: // a retry of an earlier append
			op = ops[rng.IntN(len(ops))]
		case k == 1 && len(used) > 0: // an id stored already, elsewhere
			op.events[0] = used[rng.IntN(len(used))]
		case k == 2: // bad input
			op.events[len(op.events)-1].Type = ""
		case k == 3:
			op.stream = "$bad"
		case k == 4:
			op.events = nil // a pure condition
		}
		used = append(used, op.events...)
		ops = append(ops, op)
	}
	return ops
}

type appendResult struct {
	Resp *esdv1.AppendResponse
	Err  *client.Error
}

func runAppends(t *testing.T, c *client.Client, ops []appendOp) []appendResult {
	t.Helper()
	out := make([]appendResult, len(ops))
	for i, op := range ops {
		events := make([]*esdv1.ProposedEvent, len(op.events))
		for j, ev := range op.events {
			events[j] = proto.Clone(ev).(*esdv1.ProposedEvent)
		}
		resp, err := c.Append(context.Background(), op.stream, op.expected, events...)
		out[i].Resp = resp
		if err != nil && !errors.As(err, &out[i].Err) {
			t.Fatalf("append %d: %T %v, want an *Error", i, err, err)
		}
	}
	return out
}

// TestPipelinedAppendsMatchUnary runs one random sequence of appends
// against two fresh servers, pipelined and unary: every result and error
// is the same, but for commit times.
func TestPipelinedAppendsMatchUnary(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	ops := randomAppends(rand.New(rand.NewPCG(seed, 0)), 200)

	pipeSrv, pipeCalls := startCounted(t, nil)
	unarySrv, unaryCalls := startCounted(t, nil)
	piped := runAppends(t, dialTo(t, pipeSrv), ops)
	unary := runAppends(t, dialTo(t, unarySrv, client.WithPipelining(false)), ops)

	if pipeCalls.unary.Load() != 0 || pipeCalls.streams.Load() != 1 || unaryCalls.streams.Load() != 0 {
		t.Fatalf("pipelined: %d unary calls, %d AppendStream calls; unary: %d AppendStream calls; want 0, 1, 0",
			pipeCalls.unary.Load(), pipeCalls.streams.Load(), unaryCalls.streams.Load())
	}
	kinds := map[string]int{}
	for i := range ops {
		if e := unary[i].Err; e != nil {
			kinds[e.Reason]++
		} else {
			kinds["OK"]++
		}
		if d := cmp.Diff(unary[i], piped[i], protocmp.Transform(),
			protocmp.IgnoreFields(&esdv1.AppendResponse{}, "commit_time"),
			protocmp.IgnoreFields(&esdv1.RecordedEvent{}, "created"),
			cmpopts.IgnoreUnexported(client.Error{}), cmpopts.EquateComparable(client.Expected{})); d != "" {
			t.Fatalf("append %d (%s, %v): unary and pipelined differ (-unary +pipelined):\n%s", i, ops[i].stream, ops[i].expected, d)
		}
	}
	t.Logf("outcomes by reason: %v", kinds)
	for _, r := range []string{"OK", client.ReasonWrongExpectedRevision, client.ReasonInvalidArgument} {
		if kinds[r] == 0 {
			t.Errorf("no append had the outcome %q: the sequence does not test it", r)
		}
	}
}

// TestPipelineUnderLoad appends from 64 goroutines at once, each to its
// own stream at exact revisions, and to one shared stream; then the
// client and server stop with no goroutine left.
func TestPipelineUnderLoad(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	srv, cs := startCounted(t, nil)
	c := dialTo(t, srv)
	const workers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			stream := fmt.Sprintf("load-%d", w)
			for i := range each {
				r, err := c.Append(context.Background(), stream, client.After(uint64(max(i-1, 0)), i > 0), client.NewEvent("E", nil))
				if err == nil && r.GetLastRevision() != uint64(i) {
					err = fmt.Errorf("%s: append %d wrote revision %d", stream, i, r.GetLastRevision())
				}
				if err == nil {
					_, err = c.Append(context.Background(), "load-shared", client.Any(), client.NewEvent("S", nil))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	info, err := c.GetStream(context.Background(), "load-shared")
	if err != nil || info.GetEventCount() != workers*each {
		t.Fatalf("shared stream: %v, %v; want %d events", info, err, workers*each)
	}
	if cs.unary.Load() != 0 {
		t.Fatalf("%d appends went unary", cs.unary.Load())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	goleak.VerifyNone(t, ignore)
}

// TestPipelineFallsBackToUnary: a server refusing AppendStream as
// unimplemented gets unary appends, and only one AppendStream try.
func TestPipelineFallsBackToUnary(t *testing.T) {
	srv, cs := startCounted(t, func(int32, grpc.ServerStream, grpc.StreamHandler) error {
		return status.Error(codes.Unimplemented, "unknown method AppendStream")
	})
	c := dialTo(t, srv)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 5 {
				if _, err := c.Append(context.Background(), fmt.Sprintf("fb-%d", w), client.After(uint64(max(i-1, 0)), i > 0), client.NewEvent("E", nil)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if cs.streams.Load() != 1 || cs.unary.Load() != 40 {
		t.Fatalf("%d AppendStream calls, %d unary; want 1 and 40", cs.streams.Load(), cs.unary.Load())
	}
}

// answerless drops the answers of an AppendStream call and ends it after
// the first, as a connection lost after the append was written would.
type answerless struct {
	grpc.ServerStream
}

func (answerless) SendMsg(any) error { return status.Error(codes.Unavailable, "connection lost") }

// TestPipelineRetriesWhatABrokenCallLeftUnanswered: an append written by
// a call that broke before answering is retried and written once.
func TestPipelineRetriesWhatABrokenCallLeftUnanswered(t *testing.T) {
	srv, cs := startCounted(t, func(n int32, ss grpc.ServerStream, h grpc.StreamHandler) error {
		if n == 1 {
			return h(nil, answerless{ss})
		}
		return h(nil, ss)
	})
	c := dialTo(t, srv)
	ctx := context.Background()
	r, err := c.Append(ctx, "broken-1", client.NoStream(), client.NewEvent("E", nil))
	if err != nil || r.GetLastRevision() != 0 {
		t.Fatalf("append over a call that broke: %v, %v; want revision 0", r, err)
	}
	info, err := c.GetStream(ctx, "broken-1")
	if err != nil || info.GetEventCount() != 1 {
		t.Fatalf("stream after the retry: %v, %v; want 1 event", info, err)
	}
	if _, err := c.Append(ctx, "broken-1", client.Exact(0), client.NewEvent("E", nil)); err != nil {
		t.Fatal(err)
	}
	if cs.streams.Load() != 2 {
		t.Fatalf("%d AppendStream calls, want 2 (the broken one, then a new one)", cs.streams.Load())
	}
}

// slowRecv holds each request of an AppendStream call for a while.
type slowRecv struct {
	grpc.ServerStream
	delay time.Duration
}

func (s slowRecv) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	time.Sleep(s.delay)
	return err
}

// TestPipelinedAppendReturnsWhenItsContextEnds: a caller whose deadline
// passes gets DEADLINE_EXCEEDED at once; the late answer goes nowhere.
func TestPipelinedAppendReturnsWhenItsContextEnds(t *testing.T) {
	srv, _ := startCounted(t, func(_ int32, ss grpc.ServerStream, h grpc.StreamHandler) error {
		return h(nil, slowRecv{ss, time.Second})
	})
	c := dialTo(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Append(ctx, "slow-1", client.NoStream(), client.NewEvent("E", nil))
	if !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("append past its deadline: %v, want DEADLINE_EXCEEDED", err)
	}
	if d := time.Since(start); d > 600*time.Millisecond { // well before the answer could come
		t.Fatalf("append past its deadline returned after %v", d)
	}
	r, err := c.Append(context.Background(), "slow-1", client.StreamExists(), client.NewEvent("E", nil))
	if err != nil || r.GetLastRevision() != 1 {
		t.Fatalf("next append: %v, %v; want revision 1 (after the abandoned one, written)", r, err)
	}
}

// TestLargeAppendGoesUnary: an append too large for the pipeline's share
// of the server's call goes unary.
func TestLargeAppendGoesUnary(t *testing.T) {
	srv, cs := startCounted(t, nil)
	c := dialTo(t, srv)
	if _, err := c.Append(context.Background(), "big-1", client.Any(), client.NewEvent("Big", []byte(strings.Repeat("x", 1<<20-100))), client.NewEvent("Big", []byte("y"))); err != nil {
		t.Fatal(err)
	}
	if cs.unary.Load() != 1 || cs.streams.Load() != 0 {
		t.Fatalf("%d unary, %d AppendStream calls; want 1, 0", cs.unary.Load(), cs.streams.Load())
	}
}
