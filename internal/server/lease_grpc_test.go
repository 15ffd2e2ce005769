package server

import (
	"strconv"
	"sync"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Tests of LockService and of the fences leases put on appends and
// deletes. internal/lease has the manager's own tests (racing clients,
// crashes, linearizability of its operations); these check the API and
// that every write path is fenced.

func (ts *testServer) locks() esdv1.LockServiceClient { return esdv1.NewLockServiceClient(ts.conn) }

func acquire(t *testing.T, ts *testServer, stream, owner string, ttl time.Duration) *esdv1.Lease {
	t.Helper()
	resp, err := ts.locks().AcquireLease(testCtx(t), &esdv1.AcquireLeaseRequest{Stream: stream, Owner: owner, Ttl: durationpb.New(ttl)})
	if err != nil {
		t.Fatalf("acquire %q for %s: %v", stream, owner, err)
	}
	return resp.GetLease()
}

// wantFenced checks a FAILED_PRECONDITION with reason and metadata.
func wantFenced(t *testing.T, err error, reason string, meta map[string]string) {
	t.Helper()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want FAILED_PRECONDITION/%s", err, reason)
	}
	info := errInfo(t, err)
	if info.GetReason() != reason {
		t.Fatalf("reason %s, want %s (%v)", info.GetReason(), reason, err)
	}
	for k, v := range meta {
		if got := info.GetMetadata()[k]; got != v {
			t.Fatalf("metadata %s = %q, want %q (%v)", k, got, v, info.GetMetadata())
		}
	}
}

func fenced(req *esdv1.AppendRequest, token uint64) *esdv1.AppendRequest {
	req.FencingToken = token
	return req
}

func TestLeaseFencesAppendsAndDeletes(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	if _, err := ts.streams.Append(ctx, appendReq("acct-1", xNoStream, event("Opened", "{}"))); err != nil {
		t.Fatal(err)
	}
	l := acquire(t, ts, "acct-1", "refunds", time.Minute)
	if l.GetFencingToken() == 0 || l.GetOwner() != "refunds" || !l.GetExpires().AsTime().After(time.Now()) {
		t.Fatalf("lease %v", l)
	}
	expires := l.GetExpires().AsTime().UTC().Format(time.RFC3339Nano)

	// Without the token: refused, naming the holder and the expiry; nothing written.
	_, err := ts.streams.Append(ctx, appendReq("acct-1", xAny, event("Debited", "{}")))
	wantFenced(t, err, reasonStreamLeased, map[string]string{"stream": "acct-1", "owner": "refunds", "expires": expires})
	_, err = ts.streams.DeleteStream(ctx, &esdv1.DeleteStreamRequest{Stream: "acct-1"})
	wantFenced(t, err, reasonStreamLeased, map[string]string{"owner": "refunds"})
	// A token never granted.
	_, err = ts.streams.Append(ctx, fenced(appendReq("acct-1", xAny, event("Debited", "{}")), l.GetFencingToken()+1))
	wantFenced(t, err, reasonStaleFencingToken, map[string]string{"fencing_token": strconv.FormatUint(l.GetFencingToken()+1, 10)})
	if info := ts.getStream(t, "acct-1"); info.GetHead() != 0 {
		t.Fatalf("head %d after refused appends, want 0", info.GetHead())
	}
	// The lease is checked before the expected revision: a holder-less
	// writer learns of the lease, not of a revision.
	_, err = ts.streams.Append(ctx, appendReq("acct-1", xExact(7), event("Debited", "{}")))
	wantFenced(t, err, reasonStreamLeased, nil)

	// With the token: accepted, and the expected revision still checked.
	if _, err := ts.streams.Append(ctx, fenced(appendReq("acct-1", xExact(0), event("Refunded", "{}")), l.GetFencingToken())); err != nil {
		t.Fatalf("fenced append: %v", err)
	}
	_, err = ts.streams.Append(ctx, fenced(appendReq("acct-1", xExact(0), event("Refunded", "{}")), l.GetFencingToken()))
	if status.Code(err) != codes.Aborted {
		t.Fatalf("fenced append at a stale revision: %v, want ABORTED", err)
	}

	// Released: writes without a token pass again; the released token
	// still passes (no newer lease), an older one never.
	if _, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "acct-1", FencingToken: l.GetFencingToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.streams.Append(ctx, appendReq("acct-1", xExact(1), event("Debited", "{}"))); err != nil {
		t.Fatalf("append after release: %v", err)
	}
	l2 := acquire(t, ts, "acct-1", "recount", time.Minute)
	if l2.GetFencingToken() <= l.GetFencingToken() {
		t.Fatalf("tokens %d then %d: not increasing", l.GetFencingToken(), l2.GetFencingToken())
	}
	_, err = ts.streams.Append(ctx, fenced(appendReq("acct-1", xAny, event("Late", "{}")), l.GetFencingToken()))
	wantFenced(t, err, reasonStaleFencingToken, map[string]string{
		"fencing_token": strconv.FormatUint(l.GetFencingToken(), 10), "current_fencing_token": strconv.FormatUint(l2.GetFencingToken(), 10)})
	if _, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "acct-1", FencingToken: l2.GetFencingToken()}); err != nil {
		t.Fatal(err)
	}
	// The paused holder of the older lease is refused even now that no
	// lease is live: a newer one was granted since.
	_, err = ts.streams.Append(ctx, fenced(appendReq("acct-1", xAny, event("Late", "{}")), l.GetFencingToken()))
	wantFenced(t, err, reasonStaleFencingToken, nil)
	// A fenced delete.
	l3 := acquire(t, ts, "acct-1", "closer", time.Minute)
	if _, err := ts.streams.DeleteStream(ctx, &esdv1.DeleteStreamRequest{Stream: "acct-1", FencingToken: l3.GetFencingToken()}); err != nil {
		t.Fatalf("fenced delete: %v", err)
	}
}

func TestLeaseExpires(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	l := acquire(t, ts, "p-1", "crashed", 300*time.Millisecond)
	_, err := ts.streams.Append(ctx, appendReq("p-1", xAny, event("Counted", "{}")))
	wantFenced(t, err, reasonStreamLeased, nil)
	// The holder stops renewing (it crashed): the next one gets the
	// stream once the TTL has passed, by waiting for it.
	start := time.Now()
	resp, err := ts.locks().AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: "p-1", Owner: "next", Ttl: durationpb.New(time.Minute), Wait: durationpb.New(10 * time.Second)})
	if err != nil {
		t.Fatalf("acquire after the TTL: %v", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("waited %v for a 300ms lease", waited)
	}
	if resp.GetLease().GetFencingToken() <= l.GetFencingToken() {
		t.Fatalf("token %d after %d", resp.GetLease().GetFencingToken(), l.GetFencingToken())
	}
	if _, err := ts.locks().RenewLease(ctx, &esdv1.RenewLeaseRequest{Stream: "p-1", FencingToken: l.GetFencingToken(), Ttl: durationpb.New(time.Minute)}); err == nil {
		t.Fatal("renewed an expired lease after a newer one")
	} else {
		wantFenced(t, err, reasonStaleFencingToken, nil)
	}
	if _, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "p-1", FencingToken: resp.GetLease().GetFencingToken()}); err != nil {
		t.Fatal(err)
	}
	_, err = ts.locks().RenewLease(ctx, &esdv1.RenewLeaseRequest{Stream: "p-1", FencingToken: resp.GetLease().GetFencingToken(), Ttl: durationpb.New(time.Minute)})
	wantFenced(t, err, reasonLeaseNotHeld, nil)
	// Expired and not taken again: appends without a token pass.
	acquire(t, ts, "p-2", "short", 100*time.Millisecond)
	eventually(t, "the lease expires", func() bool {
		_, err := ts.streams.Append(ctx, appendReq("p-2", xAny, event("Counted", "{}")))
		return err == nil
	})
}

func TestLeaseAcquireWaitAndRefusal(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	l := acquire(t, ts, "s-1", "first", time.Minute)
	// No wait: refused at once with the holder.
	_, err := ts.locks().AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: "s-1", Owner: "second", Ttl: durationpb.New(time.Minute)})
	wantFenced(t, err, reasonStreamLeased, map[string]string{"owner": "first"})
	// A wait that ends first.
	_, err = ts.locks().AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: "s-1", Owner: "second", Ttl: durationpb.New(time.Minute), Wait: durationpb.New(100 * time.Millisecond)})
	wantFenced(t, err, reasonStreamLeased, nil)
	// Waiters in line get the stream in their order as it is released.
	got := make(chan string, 2)
	var wg sync.WaitGroup
	for i, owner := range []string{"w1", "w2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := ts.locks().AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: "s-1", Owner: owner, Ttl: durationpb.New(time.Minute), Wait: durationpb.New(20 * time.Second)})
			if err != nil {
				t.Errorf("waiter %s: %v", owner, err)
				return
			}
			got <- owner
			if _, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "s-1", FencingToken: resp.GetLease().GetFencingToken()}); err != nil {
				t.Errorf("release %s: %v", owner, err)
			}
		}()
		if i == 0 {
			time.Sleep(100 * time.Millisecond) // w1 queues first
		}
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "s-1", FencingToken: l.GetFencingToken()}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(got)
	var order []string
	for o := range got {
		order = append(order, o)
	}
	if len(order) != 2 || order[0] != "w1" || order[1] != "w2" {
		t.Fatalf("waiters served %v, want [w1 w2]", order)
	}
}

func TestLeaseValidation(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name  string
		req   *esdv1.AcquireLeaseRequest
		field string
	}{
		{"no stream", &esdv1.AcquireLeaseRequest{Owner: "o", Ttl: durationpb.New(time.Second)}, "stream"},
		{"system stream", &esdv1.AcquireLeaseRequest{Stream: "$all", Owner: "o", Ttl: durationpb.New(time.Second)}, "stream"},
		{"no owner", &esdv1.AcquireLeaseRequest{Stream: "s", Ttl: durationpb.New(time.Second)}, "owner"},
		{"long owner", &esdv1.AcquireLeaseRequest{Stream: "s", Owner: string(make([]byte, 129)), Ttl: durationpb.New(time.Second)}, "owner"},
		{"no ttl", &esdv1.AcquireLeaseRequest{Stream: "s", Owner: "o"}, "ttl"},
		{"ttl over the max", &esdv1.AcquireLeaseRequest{Stream: "s", Owner: "o", Ttl: durationpb.New(time.Hour)}, "ttl"},
		{"negative wait", &esdv1.AcquireLeaseRequest{Stream: "s", Owner: "o", Ttl: durationpb.New(time.Second), Wait: durationpb.New(-time.Second)}, "wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.locks().AcquireLease(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want INVALID_ARGUMENT", err)
			}
			if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != tc.field {
				t.Fatalf("violations %v, want field %s", br, tc.field)
			}
		})
	}
	_, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "s"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("release without a token: %v", err)
	}
	_, err = ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "never", FencingToken: 3})
	wantFenced(t, err, reasonLeaseNotHeld, nil)
}

// TestLeaseAppendMultiAndAppendStream: AppendMulti and AppendStream are
// fenced on every stream they touch; a refused AppendMulti writes
// nothing, also to its free streams.
func TestLeaseAppendMultiAndAppendStream(t *testing.T) {
	ts := newTestServer(t, withShards(4))
	ctx := testCtx(t)
	l := acquire(t, ts, "leased-1", "owner", time.Minute)
	multi := func(token uint64) error {
		_, err := ts.streams.AppendMulti(ctx, &esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{
			appendReq("free-1", xAny, event("A", "{}")),
			fenced(appendReq("leased-1", xAny, event("B", "{}")), token),
		}})
		return err
	}
	wantFenced(t, multi(0), reasonStreamLeased, map[string]string{"stream": "leased-1"})
	wantFenced(t, multi(l.GetFencingToken()+5), reasonStaleFencingToken, nil)
	if _, ok, _ := ts.eng.Stream(ctx, "free-1"); ok {
		t.Fatal("a refused AppendMulti wrote its free stream")
	}
	if err := multi(l.GetFencingToken()); err != nil {
		t.Fatalf("AppendMulti with the token: %v", err)
	}
	if ts.getStream(t, "free-1").GetHead() != 0 || ts.getStream(t, "leased-1").GetHead() != 0 {
		t.Fatal("AppendMulti with the token did not write both streams")
	}

	st := ts.openAppendStream(t, ctx)
	mustSend(t, st,
		streamReq("none", appendReq("leased-1", xAny, event("C", "{}"))),
		streamReq("token", fenced(appendReq("leased-1", xAny, event("C", "{}")), l.GetFencingToken())),
		streamReq("free", appendReq("free-1", xAny, event("C", "{}"))),
	)
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	answers, err := recvAll(st)
	if err != nil {
		t.Fatal(err)
	}
	by := byCorrelation(t, answers)
	wantFenced(t, answerError(by["none"]), reasonStreamLeased, nil)
	if err := answerError(by["token"]); err != nil {
		t.Fatalf("fenced AppendStream append: %v", err)
	}
	if err := answerError(by["free"]); err != nil {
		t.Fatalf("AppendStream append to a free stream: %v", err)
	}
}

// TestLeaseRetryOfAStoredAppend: a client retrying an append that was
// written before the lease was taken gets its original result, not
// STREAM_LEASED: the idempotency check comes first.
func TestLeaseRetryOfAStoredAppend(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	ev := event("Paid", "{}")
	ev.Id = "0190a6e5-2c3b-7d4e-8f00-000000000001"
	first, err := ts.streams.Append(ctx, appendReq("o-1", xNoStream, ev))
	if err != nil {
		t.Fatal(err)
	}
	acquire(t, ts, "o-1", "admin", time.Minute)
	again, err := ts.streams.Append(ctx, appendReq("o-1", xNoStream, ev))
	if err != nil {
		t.Fatalf("retry of a stored append under a lease: %v", err)
	}
	if again.GetFirstPosition() != first.GetFirstPosition() {
		t.Fatalf("retry answered position %d, want the original %d", again.GetFirstPosition(), first.GetFirstPosition())
	}
}

func TestLeaseGetListAndRestart(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	a := acquire(t, ts, "a-1", "x", time.Minute)
	acquire(t, ts, "b-1", "y", time.Minute)
	get, err := ts.locks().GetLease(ctx, &esdv1.GetLeaseRequest{Stream: "a-1"})
	if err != nil || get.GetLease().GetFencingToken() != a.GetFencingToken() || get.GetLease().GetOwner() != "x" {
		t.Fatalf("GetLease: %v %v", get, err)
	}
	if get, err := ts.locks().GetLease(ctx, &esdv1.GetLeaseRequest{Stream: "none"}); err != nil || get.GetLease() != nil {
		t.Fatalf("GetLease of a free stream: %v %v", get, err)
	}
	list, err := ts.locks().ListLeases(ctx, &esdv1.ListLeasesRequest{Prefix: "a-"})
	if err != nil || len(list.GetLeases()) != 1 || list.GetLeases()[0].GetStream() != "a-1" {
		t.Fatalf("ListLeases a-: %v %v", list, err)
	}
	if list, err := ts.locks().ListLeases(ctx, &esdv1.ListLeasesRequest{}); err != nil || len(list.GetLeases()) != 2 {
		t.Fatalf("ListLeases: %v %v", list, err)
	}

	// After a restart the live lease still fences, and the next token is
	// greater than every one given before.
	ts.restart()
	_, err = ts.streams.Append(ctx, appendReq("a-1", xAny, event("E", "{}")))
	wantFenced(t, err, reasonStreamLeased, map[string]string{"owner": "x"})
	if _, err := ts.streams.Append(ctx, fenced(appendReq("a-1", xAny, event("E", "{}")), a.GetFencingToken())); err != nil {
		t.Fatalf("append with the token after a restart: %v", err)
	}
	if _, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: "a-1", FencingToken: a.GetFencingToken()}); err != nil {
		t.Fatal(err)
	}
	if next := acquire(t, ts, "a-1", "z", time.Minute); next.GetFencingToken() <= a.GetFencingToken() {
		t.Fatalf("token %d after a restart, want more than %d", next.GetFencingToken(), a.GetFencingToken())
	}
}
