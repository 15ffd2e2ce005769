package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Tests of StreamService.AppendStream; append_stream_equiv_grpc_test.go
// holds the randomized comparison with Append.

type appendStreamClient = grpc.BidiStreamingClient[esdv1.AppendStreamRequest, esdv1.AppendStreamResponse]

// openAppendStream opens an AppendStream call on the test's connection.
func (ts *testServer) openAppendStream(t *testing.T, ctx context.Context) appendStreamClient {
	t.Helper()
	st, err := ts.streams.AppendStream(ctx)
	if err != nil {
		t.Fatalf("open AppendStream: %v", err)
	}
	return st
}

func streamReq(id string, req *esdv1.AppendRequest) *esdv1.AppendStreamRequest {
	return &esdv1.AppendStreamRequest{CorrelationId: []byte(id), Append: req}
}

// answerError is an answer's error as Append would have returned it; nil
// for a success.
func answerError(a *esdv1.AppendStreamResponse) error {
	if e := a.GetError(); e != nil {
		return status.ErrorProto(e)
	}
	return nil
}

func mustSend(t *testing.T, st appendStreamClient, reqs ...*esdv1.AppendStreamRequest) {
	t.Helper()
	for _, r := range reqs {
		if err := st.Send(r); err != nil {
			t.Fatalf("send %q: %v", r.GetCorrelationId(), err)
		}
	}
}

// recvAll reads answers until the call ends, and returns them with the
// call's status (nil for OK).
func recvAll(st appendStreamClient) ([]*esdv1.AppendStreamResponse, error) {
	var out []*esdv1.AppendStreamResponse
	for {
		a, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
}

// byCorrelation indexes answers by correlation id, failing on a repeat.
func byCorrelation(t *testing.T, answers []*esdv1.AppendStreamResponse) map[string]*esdv1.AppendStreamResponse {
	t.Helper()
	m := make(map[string]*esdv1.AppendStreamResponse)
	for _, a := range answers {
		id := string(a.GetCorrelationId())
		if m[id] != nil {
			t.Fatalf("two answers for %q", id)
		}
		m[id] = a
	}
	return m
}

func (ts *testServer) appendStreamInflight(t *testing.T) float64 {
	t.Helper()
	return testutil.MetricValue(t, ts.reg, "esd_append_stream_inflight", nil)
}

// TestAppendStream: each request is answered as Append would answer it,
// with its correlation id: successes, a conflict with its
// WrongExpectedRevision detail, bad entries that fail alone, an empty
// append, idempotent retries (in the same call, queued behind the
// original, and in a later call); appends to one stream are decided in
// request order; closing the client's side ends the call with OK once
// everything is answered.
func TestAppendStream(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	first := events(2, "A")
	second := events(1, "B")
	st := ts.openAppendStream(t, testCtx(t))
	mustSend(t, st,
		streamReq("1", appendReq("as-1", xNoStream, first...)),
		streamReq("2", appendReq("as-1", xExact(1), second...)), // expects what 1 writes
		streamReq("3", appendReq("as-1", xExact(0), event("Late", ""))),
		streamReq("4", appendReq("as-2", xAny, &esdv1.ProposedEvent{Id: newID()})),
		&esdv1.AppendStreamRequest{CorrelationId: []byte("5")}, // no append at all
		streamReq("6", appendReq("as-1", xNoStream, first...)), // a retry of 1
		streamReq("7", appendReq("as-3", xAny)),
		streamReq("", appendReq("as-4", xAny, event("NoCorrelation", ""))),
	)
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	answers, err := recvAll(st)
	if err != nil {
		t.Fatalf("call ended with %v, want OK", err)
	}
	if len(answers) != 8 {
		t.Fatalf("%d answers, want 8", len(answers))
	}
	got := byCorrelation(t, answers)

	// as-1's answers come in request order.
	var order []string
	for _, a := range answers {
		if id := string(a.GetCorrelationId()); strings.Contains("1236", id) && id != "" {
			order = append(order, id)
		}
	}
	if strings.Join(order, "") != "1236" {
		t.Errorf("as-1 answered in the order %v, want 1 2 3 6", order)
	}

	r1 := got["1"].GetSuccess()
	if r1 == nil || r1.GetFirstRevision() != 0 || r1.GetLastRevision() != 1 || r1.GetFirstPosition() == 0 || r1.GetCommitTime() == nil {
		t.Fatalf("answer 1: %v", got["1"])
	}
	if r2 := got["2"].GetSuccess(); r2 == nil || r2.GetFirstRevision() != 2 || r2.GetLastRevision() != 2 {
		t.Fatalf("answer 2: %v", got["2"])
	}
	err3 := answerError(got["3"])
	wantError(t, err3, codes.Aborted, reasonWrongExpectedRevision, "as-1")
	d := conflictDetail(t, err3)
	if d.GetActualHead() != 2 || !d.GetStreamExists() || len(d.GetEventsSince()) != 2 ||
		d.GetEventsSince()[0].GetId() != first[1].GetId() || d.GetEventsSince()[1].GetId() != second[0].GetId() || d.GetTruncated() {
		t.Errorf("conflict detail %v, want head 2 and the events at revisions 1 and 2", d)
	}
	// The same as Append answers for the same request now.
	_, unary := ts.streams.Append(testCtx(t), appendReq("as-1", xExact(0), event("Late", "")))
	if diff := cmp.Diff(status.Convert(unary).Proto(), got["3"].GetError(), cmpProto); diff != "" {
		t.Errorf("conflict differs from Append's (-Append +AppendStream):\n%s", diff)
	}

	err4 := answerError(got["4"])
	wantError(t, err4, codes.InvalidArgument, reasonInvalidArgument, "as-2")
	if br := badRequest(err4); br == nil || br.GetFieldViolations()[0].GetField() != "events[0].type" {
		t.Errorf("BadRequest %v, want events[0].type", br)
	}
	err5 := answerError(got["5"])
	wantError(t, err5, codes.InvalidArgument, reasonInvalidArgument, "")
	if br := badRequest(err5); br == nil || br.GetFieldViolations()[0].GetField() != "stream" {
		t.Errorf("BadRequest %v, want stream", br)
	}
	_, unary = ts.streams.Append(testCtx(t), &esdv1.AppendRequest{})
	if diff := cmp.Diff(status.Convert(unary).Proto(), got["5"].GetError(), cmpProto); diff != "" {
		t.Errorf("an unset append differs from Append of an empty request (-Append +AppendStream):\n%s", diff)
	}

	if diff := cmp.Diff(r1, got["6"].GetSuccess(), cmpProto); diff != "" {
		t.Errorf("retry answered differently (-original +retry):\n%s", diff)
	}
	if r7 := got["7"].GetSuccess(); r7 == nil || r7.GetStreamExists() || r7.GetFirstPosition() != 0 || r7.GetCommitTime() != nil {
		t.Errorf("empty append to a new stream: %v", got["7"])
	}
	if got[""].GetSuccess() == nil {
		t.Errorf("append without a correlation id: %v", got[""])
	}

	// A retry in a later call, and through Append: the original result.
	st = ts.openAppendStream(t, testCtx(t))
	mustSend(t, st, streamReq("again", appendReq("as-1", xExact(7), first...)))
	_ = st.CloseSend()
	answers, err = recvAll(st)
	if err != nil || len(answers) != 1 {
		t.Fatalf("retry call: %d answers, %v", len(answers), err)
	}
	if diff := cmp.Diff(r1, answers[0].GetSuccess(), cmpProto); diff != "" {
		t.Errorf("retry in a later call answered differently (-original +retry):\n%s", diff)
	}
	if diff := cmp.Diff(r1, ts.mustAppend(t, appendReq("as-1", xAny, first...)), cmpProto); diff != "" {
		t.Errorf("Append of the retry answered differently (-original +Append):\n%s", diff)
	}
	if evs := ts.mustReadStream(t, "as-1"); len(evs) != 3 {
		t.Errorf("as-1 holds %d events, want 3", len(evs))
	}
	if n := ts.appendStreamInflight(t); n != 0 {
		t.Errorf("esd_append_stream_inflight %v after the calls ended", n)
	}
}

// TestAppendStreamPerStreamOrder sends many appends to many streams at
// once, each expecting the revision the one before it on its stream
// writes: every one succeeds, each stream's answers come in request
// order, and the writer got the streams' appends concurrently (its rounds
// held several requests each: one call kept many appends in flight).
func TestAppendStreamPerStreamOrder(t *testing.T) {
	ts := newTestServer(t, withShards(4))
	const streams, perStream = 32, 24 // 768 appends: more than a call holds at once
	st := ts.openAppendStream(t, testCtx(t))
	sendErr := make(chan error, 1)
	go func() {
		for k := range perStream {
			for s := range streams {
				x := xExact(uint64(k - 1))
				if k == 0 {
					x = xNoStream
				}
				req := streamReq(fmt.Sprintf("%d/%d", s, k), appendReq(fmt.Sprintf("ord-%d", s), x, event("Ordered", strconv.Itoa(k))))
				if err := st.Send(req); err != nil {
					sendErr <- err
					return
				}
			}
		}
		sendErr <- st.CloseSend()
	}()
	answers, err := recvAll(st)
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("send: %v", err)
	}
	if len(answers) != streams*perStream {
		t.Fatalf("%d answers, want %d", len(answers), streams*perStream)
	}
	next := make([]int, streams)
	for _, a := range answers {
		var s, k int
		if _, err := fmt.Sscanf(string(a.GetCorrelationId()), "%d/%d", &s, &k); err != nil {
			t.Fatalf("correlation id %q", a.GetCorrelationId())
		}
		if err := answerError(a); err != nil {
			t.Fatalf("append %d of ord-%d: %v", k, s, err)
		}
		if k != next[s] {
			t.Fatalf("ord-%d: answer %d came after %d", s, k, next[s]-1)
		}
		next[s]++
		if r := a.GetSuccess(); r.GetFirstRevision() != uint64(k) {
			t.Fatalf("ord-%d: append %d wrote revision %d", s, k, r.GetFirstRevision())
		}
	}
	for s := range streams {
		if evs := ts.mustReadStream(t, fmt.Sprintf("ord-%d", s)); len(evs) != perStream {
			t.Errorf("ord-%d holds %d events", s, len(evs))
		}
	}
	rounds := testutil.MetricValue(t, ts.reg, "esd_writer_round_requests", nil)
	reqs := testutil.MetricValue(t, ts.reg, "esd_writer_requests_total", map[string]string{"op": "append"})
	t.Logf("%v appends in %v writer rounds (%.1f a round)", reqs, rounds, reqs/rounds)
	if reqs != streams*perStream || rounds*2 > reqs {
		t.Errorf("%v appends in %v writer rounds: want at least 2 a round on average, as appends of different streams run at once", reqs, rounds)
	}
}

// TestAppendStreamStreamsIndependent: an append to a stream whose shard
// is held does not hold up an append to another stream sent after it; an
// append queued behind another of its stream waits for it in the call
// (one at a time per stream), not in the writer.
func TestAppendStreamStreamsIndependent(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	names := streamsOnShards(t, ts, "ind-")
	held, free := names[0], names[1]
	shard := ts.eng.Writer().ShardOf(held)
	release, err := ts.eng.Writer().Hold(shard)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	st := ts.openAppendStream(t, testCtx(t))
	mustSend(t, st,
		streamReq("held-1", appendReq(held, xNoStream, event("First", ""))),
		streamReq("held-2", appendReq(held, xExact(0), event("Second", ""))),
		streamReq("free", appendReq(free, xNoStream, event("Free", ""))),
	)
	a, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if string(a.GetCorrelationId()) != "free" || a.GetSuccess() == nil {
		t.Fatalf("first answer %v, want the success of the append to the free shard", a)
	}
	eventually(t, "held-1 queued in the writer", func() bool { return ts.eng.Writer().QueueDepth(shard) == 1 })
	time.Sleep(20 * time.Millisecond)
	if d := ts.eng.Writer().QueueDepth(shard); d != 1 {
		t.Fatalf("writer queue holds %d requests, want 1: held-2 must wait in the call for held-1's answer", d)
	}
	release()
	_ = st.CloseSend()
	rest, err := recvAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || string(rest[0].GetCorrelationId()) != "held-1" || string(rest[1].GetCorrelationId()) != "held-2" ||
		rest[0].GetSuccess() == nil || rest[1].GetSuccess().GetFirstRevision() != 1 {
		t.Fatalf("answers after the release: %v", rest)
	}
}

// TestAppendStreamBoundedWhenNotRead: a client sends many appends and
// reads no answer. The server holds at most the bound of appends for the
// call, stops reading (the client's sends block: HTTP/2 flow control),
// and goes on once the client reads: every append is then answered and
// stored once.
func TestAppendStreamBoundedWhenNotRead(t *testing.T) {
	const bound = 8
	var reads, maxInflight atomic.Int64
	var maxBytes atomic.Int64
	ts := newTestServer(t, withShards(2), func(ts *testServer) {
		ts.cfg.appendStream = appendStreamConfig{maxInflight: bound, maxInflightBytes: 1 << 20,
			onRead: func(n int, b int64) {
				reads.Add(1)
				if int64(n) > maxInflight.Load() {
					maxInflight.Store(int64(n))
				}
				if b > maxBytes.Load() {
					maxBytes.Store(b)
				}
			}}
	})
	// Fixed 64 KiB windows on the client: no BDP estimation growing what
	// it accepts unread.
	conn, _ := ts.dialCuttable(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx := testCtx(t)
	st, err := esdv1.NewStreamServiceClient(conn).AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// More request bytes than any window gRPC would grant (16 MiB at most).
	// Nine in ten are bad (no event type): answered at once, without the
	// disk, with answers of some size (a BadRequest), so that the buffers
	// on the way to the client fill sooner.
	const n, valid = 6000, 600
	payload := strings.Repeat("x", 4<<10)
	var sent atomic.Int64
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			typ := ""
			if i%(n/valid) == 0 {
				typ = "Unread"
			}
			req := streamReq(strconv.Itoa(i), appendReq(fmt.Sprintf("bnd-%d", i%50), xAny, event(typ, payload)))
			if err := st.Send(req); err != nil {
				sendErr <- err
				return
			}
			sent.Add(1)
		}
		sendErr <- st.CloseSend()
	}()

	// Wait until the server has stopped reading: no read for 500ms.
	last, since := reads.Load(), time.Now()
	eventually(t, "the server stops reading", func() bool {
		if r := reads.Load(); r != last {
			last, since = r, time.Now()
		}
		return time.Since(since) > 500*time.Millisecond
	})
	t.Logf("stalled: client sent %d, server read %d, at most %d in flight (%d bytes)", sent.Load(), reads.Load(), maxInflight.Load(), maxBytes.Load())
	if sent.Load() == n {
		t.Fatalf("the client sent all %d appends: nothing pushed back", n)
	}
	if r := reads.Load(); r >= n || r < bound {
		t.Fatalf("server read %d appends", r)
	}
	if m := maxInflight.Load(); m > bound {
		t.Fatalf("the call held %d appends at once, bound %d", m, bound)
	}
	if b := maxBytes.Load(); b > 1<<20+5<<10 {
		t.Fatalf("the call held %d bytes, bound 1 MiB and a request", b)
	}
	eventually(t, "the call holds its bound, answered, waiting to send", func() bool { return ts.appendStreamInflight(t) == bound })

	// The client reads: everything goes through.
	answers, err := recvAll(st)
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("send: %v", err)
	}
	if len(answers) != n {
		t.Fatalf("%d answers, want %d", len(answers), n)
	}
	for _, a := range answers {
		i, _ := strconv.Atoi(string(a.GetCorrelationId()))
		err := answerError(a)
		if i%(n/valid) == 0 && err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if i%(n/valid) != 0 && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad append %d: %v, want INVALID_ARGUMENT", i, err)
		}
	}
	if m := maxInflight.Load(); m > bound {
		t.Fatalf("the call held %d appends at once, bound %d", m, bound)
	}
	if got := len(ts.readAll(t)); got != valid {
		t.Fatalf("$all holds %d events, want %d", got, valid)
	}
}

// TestAppendStreamBoundedBytes: appends that the writer does not answer
// (its shard is held) stop the reading once they hold the call's byte
// bound, long before its count bound; all are answered once the writer
// moves.
func TestAppendStreamBoundedBytes(t *testing.T) {
	const budget = 64 << 10
	var reads, maxBytes atomic.Int64
	ts := newTestServer(t, func(ts *testServer) {
		ts.cfg.appendStream = appendStreamConfig{maxInflightBytes: budget, onRead: func(_ int, b int64) {
			reads.Add(1)
			if b > maxBytes.Load() {
				maxBytes.Store(b)
			}
		}}
	})
	release, err := ts.eng.Writer().Hold(0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	st := ts.openAppendStream(t, testCtx(t))
	const n = 200
	payload := strings.Repeat("p", 4<<10)
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := st.Send(streamReq(strconv.Itoa(i), appendReq(fmt.Sprintf("bb-%d", i), xAny, event("Big", payload)))); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- st.CloseSend()
	}()
	last, since := reads.Load(), time.Now()
	eventually(t, "the server stops reading", func() bool {
		if r := reads.Load(); r != last {
			last, since = r, time.Now()
		}
		return time.Since(since) > 300*time.Millisecond
	})
	t.Logf("stalled: read %d appends holding %d bytes", reads.Load(), maxBytes.Load())
	if r := reads.Load(); r > budget/(4<<10)+1 {
		t.Fatalf("read %d appends of 4 KiB with a budget of %d bytes", r, budget)
	}
	if b := maxBytes.Load(); b < budget || b > budget+5<<10 {
		t.Fatalf("held %d bytes: want the budget of %d and at most one request more", b, budget)
	}
	release()
	answers, err := recvAll(st)
	if err != nil || len(answers) != n {
		t.Fatalf("%d answers, call ended with %v", len(answers), err)
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	for _, a := range answers {
		if err := answerError(a); err != nil {
			t.Fatalf("append %s: %v", a.GetCorrelationId(), err)
		}
	}
}

// dialCuttable dials the test server on a new connection; cut closes its
// transports as a broken network would (no HTTP/2 goodbye). The
// connection is closed at the end of the test.
func (ts *testServer) dialCuttable(t *testing.T, opts ...grpc.DialOption) (*grpc.ClientConn, func()) {
	t.Helper()
	var mu sync.Mutex
	var raw []net.Conn
	lis := ts.lis
	opts = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := lis.DialContext(ctx)
			if err == nil {
				mu.Lock()
				raw = append(raw, c)
				mu.Unlock()
			}
			return c, err
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)
	conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	cut := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range raw {
			_ = c.Close()
		}
	}
	return conn, cut
}

// TestAppendStreamEndedMidway ends calls with many appends in flight, by
// cancelling them and by breaking the connection: no acknowledged append
// is lost, nothing is stored that was not sent, an unanswered append is
// stored whole or not at all (and its retry with the same ids stores it
// once), and the call's goroutines end.
func TestAppendStreamEndedMidway(t *testing.T) {
	for _, how := range []string{"cancel", "connection loss"} {
		t.Run(how, func(t *testing.T) {
			ts := newTestServer(t, withShards(2))
			ts.info(t) // the test's connection is up: its goroutines are no leak
			leaks := goleak.IgnoreCurrent()
			cli := ts.streams
			var cut func()
			var conn *grpc.ClientConn
			if how == "connection loss" {
				conn, cut = ts.dialCuttable(t)
				cli = esdv1.NewStreamServiceClient(conn)
			}
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			st, err := cli.AppendStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			const n, endAfter = 1000, 200
			var mu sync.Mutex
			sent := make([]*esdv1.AppendRequest, 0, n) // by correlation id
			sendDone := make(chan struct{})
			go func() {
				defer close(sendDone)
				for i := range n {
					req := appendReq(fmt.Sprintf("mid-%d", i%20), xAny, events(1+i%3, "Mid")...)
					mu.Lock()
					sent = append(sent, req) // before the send: it may arrive even if Send fails
					mu.Unlock()
					if st.Send(streamReq(strconv.Itoa(i), req)) != nil {
						return
					}
				}
			}()
			acked := make(map[int]*esdv1.AppendResponse)
			var endErr error
			for {
				a, err := st.Recv()
				if err != nil {
					endErr = err
					break
				}
				if err := answerError(a); err != nil {
					t.Fatalf("append %s failed: %v", a.GetCorrelationId(), err)
				}
				i, _ := strconv.Atoi(string(a.GetCorrelationId()))
				acked[i] = a.GetSuccess()
				if len(acked) == endAfter {
					if cut != nil {
						cut()
					} else {
						cancel()
					}
				}
			}
			<-sendDone
			if c := status.Code(endErr); c != codes.Canceled && c != codes.Unavailable {
				t.Fatalf("the call ended with %v", endErr)
			}
			if conn != nil {
				_ = conn.Close()
			}
			eventually(t, "the call's appends end", func() bool { return ts.appendStreamInflight(t) == 0 })
			ts.writerBarrier(t)
			checkStreamedAppends(t, ts, "mid-", sent, acked)
			// The call's goroutines, and the broken connection's, are gone
			// (a WAL Pebble switched to meanwhile has a goroutine of its own).
			goleak.VerifyNone(t, leaks, goleak.IgnoreAnyFunction("github.com/cockroachdb/pebble/v2/record.(*LogWriter).flushLoop"))
		})
	}
}

// writerBarrier returns once everything queued in the writer before it is
// committed and visible: an append on every shard.
func (ts *testServer) writerBarrier(t *testing.T) {
	t.Helper()
	for _, s := range streamsOnShards(t, ts, "barrier-") {
		ts.mustAppend(t, appendReq(s, xAny))
	}
}

// checkStreamedAppends checks the store against the appends sent on a
// call (sent, by correlation id) and those acknowledged: every
// acknowledged append is stored where its answer said; an unanswered one
// is stored whole or not at all, and retrying it with the same ids
// returns the original result or stores it now; no event with
// prefix was stored that was not sent.
func checkStreamedAppends(t *testing.T, ts *testServer, prefix string, sent []*esdv1.AppendRequest, acked map[int]*esdv1.AppendResponse) {
	t.Helper()
	byID := make(map[string]*esdv1.RecordedEvent)
	for _, e := range ts.readAll(t) {
		if strings.HasPrefix(e.GetStream(), prefix) {
			byID[e.GetId()] = e
		}
	}
	sentIDs := make(map[string]bool)
	unanswered, storedUnanswered := 0, 0
	retries := make(map[int][]*esdv1.RecordedEvent) // unanswered appends: what of them is stored
	for i, req := range sent {
		var stored []*esdv1.RecordedEvent
		for _, ev := range req.GetEvents() {
			sentIDs[ev.GetId()] = true
			if e := byID[ev.GetId()]; e != nil {
				stored = append(stored, e)
			}
		}
		resp, ok := acked[i]
		if ok {
			for j, ev := range req.GetEvents() {
				e := byID[ev.GetId()]
				if e == nil || e.GetStream() != req.GetStream() || e.GetRevision() != resp.GetFirstRevision()+uint64(j) || e.GetPosition() != resp.GetFirstPosition()+uint64(j) {
					t.Fatalf("acknowledged append %d (%v): event %d lost or misplaced: %v", i, resp, j, e)
				}
			}
			continue
		}
		unanswered++
		switch len(stored) {
		case 0:
		case len(req.GetEvents()):
			storedUnanswered++
		default:
			t.Fatalf("unanswered append %d: %d of its %d events stored", i, len(stored), len(req.GetEvents()))
		}
		retries[i] = stored
	}
	// Retry the unanswered appends (on a new call): the original result
	// for those stored, a new append for the others.
	st := ts.openAppendStream(t, testCtx(t))
	go func() {
		for i := range retries {
			if st.Send(streamReq(strconv.Itoa(i), sent[i])) != nil {
				return
			}
		}
		_ = st.CloseSend()
	}()
	answers, err := recvAll(st)
	if err != nil || len(answers) != len(retries) {
		t.Fatalf("retries: %d answers for %d, %v", len(answers), len(retries), err)
	}
	for _, a := range answers {
		i, _ := strconv.Atoi(string(a.GetCorrelationId()))
		if err := answerError(a); err != nil {
			t.Fatalf("retry of unanswered append %d: %v", i, err)
		}
		if stored := retries[i]; len(stored) > 0 && a.GetSuccess().GetFirstPosition() != stored[0].GetPosition() {
			t.Fatalf("retry of append %d stored at position %d answered %v, not the original result", i, stored[0].GetPosition(), a.GetSuccess())
		}
	}
	for id, e := range byID {
		if !sentIDs[id] {
			t.Fatalf("stored event %v was never sent", e)
		}
	}
	t.Logf("%d appends sent, %d acknowledged, %d unanswered of which %d were stored", len(sent), len(acked), unanswered, storedUnanswered)
	if unanswered == 0 {
		t.Error("no append was in flight when the call ended: the test proved little")
	}
	// The retries stored each unanswered append once.
	count := 0
	for _, e := range ts.readAll(t) {
		if strings.HasPrefix(e.GetStream(), prefix) {
			count++
		}
	}
	want := 0
	for _, req := range sent {
		want += len(req.GetEvents())
	}
	if count != want {
		t.Fatalf("after the retries the store holds %d events, want %d (every append once)", count, want)
	}
}

// TestAppendStreamShutdown: appends in flight when the server stops are
// answered (they are durable), then the call ends with
// UNAVAILABLE/SHUTTING_DOWN; a call opened while the server stops is
// refused so.
func TestAppendStreamShutdown(t *testing.T) {
	ts := newTestServer(t)
	release, err := ts.eng.Writer().Hold(0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	st := ts.openAppendStream(t, testCtx(t))
	for i := range 5 {
		mustSend(t, st, streamReq(strconv.Itoa(i), appendReq(fmt.Sprintf("sd-%d", i), xNoStream, event("BeforeStop", ""))))
	}
	eventually(t, "5 appends queued", func() bool { return ts.eng.Writer().QueueDepth(0) == 5 })
	stopped := make(chan error, 1)
	go func() { stopped <- ts.stopServing() }()
	eventually(t, "the server draining", func() bool { return !ts.srv.Ready() })

	late, err := ts.streams.AppendStream(testCtx(t))
	if err == nil {
		_, err = late.Recv()
	}
	wantError(t, err, codes.Unavailable, reasonShuttingDown, "")

	release() // the writer commits what it queued, then stops
	answers, err := recvAll(st)
	wantError(t, err, codes.Unavailable, reasonShuttingDown, "")
	if len(answers) != 5 {
		t.Fatalf("%d answers before the end, want 5", len(answers))
	}
	for _, a := range answers {
		if a.GetSuccess() == nil {
			t.Fatalf("answer %v, want a success", a)
		}
	}
	if err := <-stopped; err != nil {
		t.Fatalf("serve: %v", err)
	}
	ts.restart()
	for i := range 5 {
		if evs := ts.mustReadStream(t, fmt.Sprintf("sd-%d", i)); len(evs) != 1 {
			t.Fatalf("sd-%d holds %d events after a restart", i, len(evs))
		}
	}
}

// TestAppendStreamReadWhileStopping: a request the reader has received
// when the call stops taking requests at shutdown (it is between its read
// and its take) is answered UNAVAILABLE/SHUTTING_DOWN, not dropped: every
// request sent and read gets exactly one answer before the call ends with
// SHUTTING_DOWN, and the call's in-flight count returns to 0.
//
// The hooks fix the interleaving: the reader holds "late" until serve has
// handled the stop; serve holds there until "late" went through take.
func TestAppendStreamReadWhileStopping(t *testing.T) {
	lateRead := make(chan struct{})    // the reader holds "late", not yet taken
	stopHandled := make(chan struct{}) // serve has stopped taking requests
	lateDone := make(chan struct{})    // take has had "late"
	var lateInflight atomic.Int64      // the call's appends in flight once "late" is counted
	isLate := func(m *esdv1.AppendStreamRequest) bool { return string(m.GetCorrelationId()) == "late" }
	ts := newTestServer(t, func(ts *testServer) {
		ts.cfg.appendStream = appendStreamConfig{
			beforeTake: func(m *esdv1.AppendStreamRequest) {
				if isLate(m) {
					close(lateRead)
					<-stopHandled
				}
			},
			onRead: func(n int, _ int64) { lateInflight.Store(int64(n)) },
			afterTake: func(m *esdv1.AppendStreamRequest, _ bool) {
				if isLate(m) {
					close(lateDone)
				}
			},
			onStop: func() {
				close(stopHandled)
				<-lateDone
			},
		}
	})
	st := ts.openAppendStream(t, testCtx(t))
	const n = 3
	for i := range n {
		mustSend(t, st, streamReq(strconv.Itoa(i), appendReq(fmt.Sprintf("rws-%d", i), xNoStream, event("BeforeStop", ""))))
	}
	var answers []*esdv1.AppendStreamResponse
	for range n { // answered and released (serve releases before it handles the stop)
		a, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, a)
	}
	mustSend(t, st, streamReq("late", appendReq("rws-late", xNoStream, event("Late", ""))))
	<-lateRead
	stopped := make(chan error, 1)
	go func() { stopped <- ts.stopServing() }()

	rest, err := recvAll(st)
	if err := <-stopped; err != nil {
		t.Fatalf("serve: %v", err)
	}
	wantError(t, err, codes.Unavailable, reasonShuttingDown, "")
	answers = append(answers, rest...)
	byID := byCorrelation(t, answers)
	for i := range n {
		if a := byID[strconv.Itoa(i)]; a.GetSuccess() == nil {
			t.Fatalf("answer to %d: %v, want a success", i, a)
		}
	}
	late := byID["late"]
	if late == nil {
		t.Fatalf("no answer to the request read while the call stopped (answers %v)", answers)
	}
	wantError(t, answerError(late), codes.Unavailable, reasonShuttingDown, "")
	if len(answers) != n+1 {
		t.Fatalf("%d answers, want %d: one per request", len(answers), n+1)
	}
	if got := lateInflight.Load(); got != 1 {
		t.Fatalf("%d appends in flight once the late request was counted, want 1", got)
	}
	if v := ts.appendStreamInflight(t); v != 0 {
		t.Fatalf("esd_append_stream_inflight %v after the call, want 0", v)
	}
}

// TestAppendStreamProtocolErrors: a correlation id over 256 bytes, an
// undecodable message and a message over the size limit end the call
// (INVALID_ARGUMENT, or gRPC's RESOURCE_EXHAUSTED), after the requests
// read before them are answered.
func TestAppendStreamProtocolErrors(t *testing.T) {
	ts := newTestServer(t, withLimits(Limits{MaxEventBytes: 1 << 10, MaxAppendBytes: 4 << 10}))
	good := func(id string) []byte {
		b, err := proto.Marshal(streamReq(id, appendReq("pe-"+id, xAny, event("Good", ""))))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	long := func() []byte {
		b, _ := proto.Marshal(streamReq(strings.Repeat("c", 257), appendReq("pe-long", xAny, event("Bad", ""))))
		return b
	}
	tests := []struct {
		name   string
		bad    []byte
		code   codes.Code
		reason string
		field  string
	}{
		{"correlation id too long", long(), codes.InvalidArgument, reasonInvalidArgument, "correlation_id"},
		{"undecodable", []byte{0x0a, 0xff, 0x01}, codes.InvalidArgument, reasonInvalidArgument, "request"},
		{"too large", make([]byte, (4<<10)+(1<<20)+1), codes.ResourceExhausted, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := ts.conn.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
				esdv1.StreamService_AppendStream_FullMethodName, grpc.ForceCodec(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range [][]byte{good("a"), good("b"), tc.bad, good("c")} {
				if err := cs.SendMsg(m); err != nil {
					break // the server may have ended the call already
				}
			}
			var answered []string
			for {
				a := &esdv1.AppendStreamResponse{}
				if err = cs.RecvMsg(a); err != nil {
					break
				}
				if a.GetSuccess() == nil {
					t.Fatalf("answer %v", a)
				}
				answered = append(answered, string(a.GetCorrelationId()))
			}
			if tc.reason == "" {
				// gRPC itself ends the call at once: the appends in flight
				// may go unanswered.
				if status.Code(err) != tc.code {
					t.Fatalf("call ended with %v, want %v", err, tc.code)
				}
				if len(answered) > 2 {
					t.Errorf("answered %v", answered)
				}
				return
			}
			slices.Sort(answered) // different streams: in any order
			if strings.Join(answered, ",") != "a,b" {
				t.Errorf("answered %v, want a and b (read before the bad message) only", answered)
			}
			wantError(t, err, tc.code, tc.reason, "")
			if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != tc.field {
				t.Errorf("BadRequest %v, want %s", br, tc.field)
			}
		})
	}
	if evs := ts.mustReadStream(t, "pe-a"); len(evs) < 2 || len(evs) > 3 {
		t.Errorf("pe-a holds %d events, want one per call (but perhaps not from the call gRPC cut)", len(evs))
	}
	if _, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "pe-c"}); status.Code(err) != codes.NotFound {
		t.Errorf("pe-c, sent after the bad message: %v, want NOT_FOUND", err)
	}
}
