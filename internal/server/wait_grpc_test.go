package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The tests of WaitForCheckpoint over gRPC: an application appends, then
// waits until the consumer group feeding its read model has handled the
// append.

// waitCall is a WaitForCheckpoint running in a goroutine.
type waitCall struct {
	resp *esdv1.WaitForCheckpointResponse
	err  error
}

func startWaitCall(ctx context.Context, ts *testServer, group string, pos uint64, timeout time.Duration) <-chan waitCall {
	out := make(chan waitCall, 1)
	go func() {
		resp, err := groupsOf(ts).WaitForCheckpoint(ctx, &esdv1.WaitForCheckpointRequest{
			Group: group, Position: pos, Timeout: durationpb.New(timeout)})
		out <- waitCall{resp, err}
	}()
	return out
}

func waitAnswer(t *testing.T, ch <-chan waitCall) waitCall {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(rpcTimeout):
		t.Fatal("WaitForCheckpoint: no answer")
	}
	return waitCall{}
}

func noWaitAnswer(t *testing.T, ch <-chan waitCall, d time.Duration) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("WaitForCheckpoint answered %v, %v; want it still waiting", c.resp, c.err)
	case <-time.After(d):
	}
}

// waitingCalls is the number of WaitForCheckpoint calls being served:
// those the server's gRPC metrics count as started and not handled.
func waitingCalls(t *testing.T, ts *testServer) int {
	t.Helper()
	labels := map[string]string{"grpc_service": "esd.v1.ConsumerGroupService", "grpc_method": "WaitForCheckpoint"}
	return int(testutil.MetricValue(t, ts.reg, "grpc_server_started_total", labels) -
		testutil.MetricValue(t, ts.reg, "grpc_server_handled_total", labels))
}

// TestWaitForCheckpointGRPC: a wait answers reached once a member that
// handles events slowly has acknowledged the appended events, not before;
// a position already passed answers at once; without a member the wait
// times out with reached false and an OK status.
func TestWaitForCheckpointGRPC(t *testing.T) {
	ts := newTestServer(t)
	createGroup(t, ts, catGroup("g", "order"))
	m := join(t, groupsOf(ts), "g")
	app := ts.mustAppend(t, appendReq("order-1", xAny, events(3, "Placed")...))
	pos := app.GetLastPosition()

	ch := startWaitCall(testCtx(t), ts, "g", pos, 20*time.Second)
	var ds []*esdv1.Delivery
	for range 3 {
		ds = append(ds, m.recv(t))
	}
	for _, d := range ds[:2] {
		time.Sleep(50 * time.Millisecond) // a slow read model
		m.ack(d.GetEvent().GetId())
	}
	noWaitAnswer(t, ch, 200*time.Millisecond)
	m.ack(ds[2].GetEvent().GetId())
	c := waitAnswer(t, ch)
	if c.err != nil || !c.resp.GetReached() || c.resp.GetCheckpoint() != pos {
		t.Fatalf("WaitForCheckpoint(%d) = %v, %v; want reached at checkpoint %d", pos, c.resp, c.err, pos)
	}

	resp, err := groupsOf(ts).WaitForCheckpoint(testCtx(t), &esdv1.WaitForCheckpointRequest{Group: "g", Position: app.GetFirstPosition()})
	if err != nil || !resp.GetReached() || resp.GetCheckpoint() != pos {
		t.Errorf("a passed position: %v, %v; want reached at once", resp, err)
	}
	resp, err = groupsOf(ts).WaitForCheckpoint(testCtx(t), &esdv1.WaitForCheckpointRequest{Group: "g", Timeout: durationpb.New(time.Hour)})
	if err != nil || !resp.GetReached() {
		t.Errorf("position 0 with a timeout above the cap: %v, %v; want reached at once", resp, err)
	}
	quiesce(t, ts.reg, m)

	// No member: nothing moves the checkpoint.
	later := ts.mustAppend(t, appendReq("order-1", xAny, event("Paid", `{}`))).GetLastPosition()
	start := time.Now()
	resp, err = groupsOf(ts).WaitForCheckpoint(testCtx(t), &esdv1.WaitForCheckpointRequest{
		Group: "g", Position: later, Timeout: durationpb.New(150 * time.Millisecond)})
	if el := time.Since(start); err != nil || resp.GetReached() || resp.GetCheckpoint() != pos || el < 150*time.Millisecond {
		t.Fatalf("timed out: %v, %v after %v; want reached false at checkpoint %d after the timeout", resp, err, el, pos)
	}
}

// TestWaitForCheckpointOtherStreamGRPC: a position of a stream outside the
// group's target is passed once the group takes a later event of its
// target; a position beyond the end of the log waits.
func TestWaitForCheckpointOtherStreamGRPC(t *testing.T) {
	ts := newTestServer(t)
	createGroup(t, ts, catGroup("g", "order"))
	m := join(t, groupsOf(ts), "g")
	first := ts.mustAppend(t, appendReq("order-1", xAny, event("Placed", `{}`))).GetLastPosition()
	m.ack(m.recv(t).GetEvent().GetId())
	eventually(t, "checkpoint at the first event", func() bool { return getGroup(t, ts, "g").GetCheckpoint() == first })

	other := ts.mustAppend(t, appendReq("invoice-1", xAny, event("Issued", `{}`))).GetLastPosition()
	ch := startWaitCall(testCtx(t), ts, "g", other, 20*time.Second)
	beyond := startWaitCall(testCtx(t), ts, "g", other+2, 20*time.Second)
	noWaitAnswer(t, ch, 200*time.Millisecond)
	next := ts.mustAppend(t, appendReq("order-2", xAny, event("Placed", `{}`))).GetLastPosition()
	d := m.recv(t)
	if c := waitAnswer(t, ch); c.err != nil || !c.resp.GetReached() || c.resp.GetCheckpoint() != other {
		t.Fatalf("WaitForCheckpoint(%d) = %v, %v; want reached at %d", other, c.resp, c.err, other)
	}
	m.ack(d.GetEvent().GetId())
	eventually(t, "checkpoint at the next event", func() bool { return getGroup(t, ts, "g").GetCheckpoint() == next })
	noWaitAnswer(t, beyond, 100*time.Millisecond) // other+2 is not written yet
	ts.mustAppend(t, appendReq("order-3", xAny, event("Placed", `{}`)))
	m.ack(m.recv(t).GetEvent().GetId())
	if c := waitAnswer(t, beyond); c.err != nil || !c.resp.GetReached() || c.resp.GetCheckpoint() != other+2 {
		t.Fatalf("WaitForCheckpoint(%d) = %v, %v; want reached", other+2, c.resp, c.err)
	}
	quiesce(t, ts.reg, m)
}

// TestWaitForCheckpointErrorsGRPC: invalid requests name their field; a
// missing group and a group deleted while the call waits end it with
// NOT_FOUND/GROUP_NOT_FOUND; a shutdown with UNAVAILABLE/SHUTTING_DOWN.
func TestWaitForCheckpointErrorsGRPC(t *testing.T) {
	ts := newTestServer(t)
	gs := groupsOf(ts)
	for _, tc := range []struct {
		req   *esdv1.WaitForCheckpointRequest
		field string
	}{
		{&esdv1.WaitForCheckpointRequest{Position: 1}, "group"},
		{&esdv1.WaitForCheckpointRequest{Group: "g", Timeout: durationpb.New(-time.Second)}, "timeout"},
		{&esdv1.WaitForCheckpointRequest{Group: "g", Timeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}, "timeout"},
	} {
		_, err := gs.WaitForCheckpoint(testCtx(t), tc.req)
		if msg := errorMismatch(err, codes.InvalidArgument, reasonInvalidArgument, ""); msg != "" {
			t.Errorf("%v: %s", tc.req, msg)
		} else if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != tc.field {
			t.Errorf("%v: %v, want the field %q named", tc.req, err, tc.field)
		}
	}
	_, err := gs.WaitForCheckpoint(testCtx(t), &esdv1.WaitForCheckpointRequest{Group: "missing", Position: 1})
	if msg := errorMismatch(err, codes.NotFound, reasonGroupNotFound, ""); msg != "" {
		t.Errorf("missing group: %s", msg)
	}

	createGroup(t, ts, catGroup("g", "order"))
	createGroup(t, ts, catGroup("h", "order"))
	ch := startWaitCall(testCtx(t), ts, "g", 1, 20*time.Second)
	eventually(t, "the call waiting", func() bool { return waitingCalls(t, ts) == 1 })
	if _, err := gs.DeleteGroup(testCtx(t), &esdv1.DeleteGroupRequest{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	if c := waitAnswer(t, ch); errorMismatch(c.err, codes.NotFound, reasonGroupNotFound, "") != "" {
		t.Errorf("deleted while waiting: %v", c.err)
	}

	ch = startWaitCall(testCtx(t), ts, "h", 1, 20*time.Second)
	eventually(t, "the call waiting", func() bool { return waitingCalls(t, ts) == 1 })
	if err := ts.shutdown(); err != nil {
		t.Fatal(err)
	}
	wantShuttingDown(t, waitAnswer(t, ch).err)
}

// TestWaitForCheckpointCancelledGRPC: calls the client cancels, or whose
// deadline passes before the timeout, end on the server and leave no
// goroutine behind.
func TestWaitForCheckpointCancelledGRPC(t *testing.T) {
	ts := newTestServer(t)
	createGroup(t, ts, catGroup("g", "order"))
	ts.info(t) // the test's connection is up: its goroutines are no leak
	leaks := goleak.IgnoreCurrent()

	ctx, cancel := context.WithCancel(testCtx(t))
	var chs []<-chan waitCall
	for i := range 10 {
		chs = append(chs, startWaitCall(ctx, ts, "g", uint64(1+i), 20*time.Second))
	}
	eventually(t, "the calls waiting", func() bool { return waitingCalls(t, ts) == 10 })
	cancel()
	for _, ch := range chs {
		if c := waitAnswer(t, ch); status.Code(c.err) != codes.Canceled {
			t.Errorf("cancelled call: %v, want CANCELLED", c.err)
		}
	}
	dctx, dcancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
	defer dcancel()
	_, err := groupsOf(ts).WaitForCheckpoint(dctx, &esdv1.WaitForCheckpointRequest{Group: "g", Position: 1, Timeout: durationpb.New(20 * time.Second)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("the call's deadline first: %v, want DEADLINE_EXCEEDED", err)
	}
	eventually(t, "no call being served", func() bool { return waitingCalls(t, ts) == 0 })
	goleak.VerifyNone(t, leaks)
}

// TestWaitForCheckpointConcurrentGRPC: waiters on every position of an
// append each answer once the member has acknowledged the event at their
// position, and not before.
func TestWaitForCheckpointConcurrentGRPC(t *testing.T) {
	ts := newTestServer(t)
	createGroup(t, ts, catGroup("g", "order"))
	m := join(t, groupsOf(ts), "g")
	const n, perPosition = 20, 3
	app := ts.mustAppend(t, appendReq("order-1", xAny, events(n, "Placed")...))
	var ds []*esdv1.Delivery
	for range n {
		ds = append(ds, m.recv(t))
	}
	var mu sync.Mutex
	ackedUpTo := app.GetFirstPosition() - 1 // every event up to it acknowledged
	var wg sync.WaitGroup
	errs := make(chan error, n*perPosition)
	for i := range n {
		pos := app.GetFirstPosition() + uint64(i)
		for range perPosition {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := groupsOf(ts).WaitForCheckpoint(testCtx(t), &esdv1.WaitForCheckpointRequest{
					Group: "g", Position: pos, Timeout: durationpb.New(20 * time.Second)})
				mu.Lock()
				acked := ackedUpTo
				mu.Unlock()
				switch {
				case err != nil || !resp.GetReached():
					errs <- fmt.Errorf("position %d: %v: %w", pos, resp, err)
				case acked < pos:
					errs <- fmt.Errorf("position %d answered when only %d was acknowledged", pos, acked)
				}
			}()
		}
	}
	eventually(t, "every call waiting", func() bool { return waitingCalls(t, ts) == n*perPosition })
	for _, d := range ds {
		mu.Lock()
		ackedUpTo = d.GetEvent().GetPosition() // before the ack: a waiter may answer as soon as it is sent
		mu.Unlock()
		m.ack(d.GetEvent().GetId())
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	quiesce(t, ts.reg, m)
}
