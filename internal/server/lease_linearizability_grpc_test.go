package server

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// A porcupine check of leases with the writes they fence, through the
// API: clients race AcquireLease, RenewLease, ReleaseLease and Append
// (with their own token, another, or none) on two streams, and some
// order of the operations, each taking effect between its call and its
// return, must explain every answer, the revision of every append
// included. So a fenced append is ordered with the leases: none written
// without the live lease's token, none with a token older than the
// newest, and every revision as if appends ran one at a time.

type fenceOp uint8

const (
	fAcquire fenceOp = iota
	fRenew
	fRelease
	fAppend
)

type fenceIn struct {
	op     fenceOp
	stream string
	token  uint64
}

type fenceOut struct {
	res      string // "ok" or the reason
	token    uint64 // acquire: the token; stale: the current one
	revision uint64 // append: the revision written
	unknown  error
}

type fenceState struct {
	hwm, next uint64 // the newest token; the next revision to append
	held      bool
}

var fenceModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range history {
			s := op.Input.(fenceIn).stream
			by[s] = append(by[s], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return fenceState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(fenceState), input.(fenceIn), output.(fenceOut)
		if out.unknown != nil {
			return false, st
		}
		switch in.op {
		case fAcquire:
			if st.held {
				return out.res == reasonStreamLeased, st
			}
			next := st
			next.hwm, next.held = st.hwm+1, true
			return out.res == "ok" && out.token == next.hwm, next
		case fRenew, fRelease:
			switch {
			case !st.held:
				return out.res == reasonLeaseNotHeld, st
			case in.token != st.hwm:
				return out.res == reasonStaleFencingToken, st
			}
			if in.op == fRelease {
				st.held = false
			}
			return out.res == "ok", st
		case fAppend:
			switch {
			case in.token != 0 && in.token != st.hwm:
				return out.res == reasonStaleFencingToken && out.token == st.hwm, st
			case in.token == 0 && st.held:
				return out.res == reasonStreamLeased, st
			}
			ok := out.res == "ok" && out.revision == st.next
			st.next++
			return ok, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(fenceIn), output.(fenceOut)
		return fmt.Sprintf("%d(%s, %d) -> %s/%d/%d %v", in.op, in.stream, in.token, out.res, out.token, out.revision, out.unknown)
	},
}

// fenceAnswer reduces a call's error to a fenceOut.
func fenceAnswer(err error) fenceOut {
	if err == nil {
		return fenceOut{res: "ok"}
	}
	if status.Code(err) != codes.FailedPrecondition {
		return fenceOut{unknown: err}
	}
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(interface {
			GetReason() string
			GetMetadata() map[string]string
		}); ok {
			out := fenceOut{res: info.GetReason()}
			out.token, _ = strconv.ParseUint(info.GetMetadata()["current_fencing_token"], 10, 64)
			return out
		}
	}
	return fenceOut{unknown: err}
}

func TestLeaseFencedAppendsLinearizable(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	const clients, opsEach = 6, 80
	streams := []string{"acct-a", "acct-b"}
	var (
		clock   atomic.Int64
		hmu     sync.Mutex
		history []porcupine.Operation
		maxTok  atomic.Uint64
		wg      sync.WaitGroup
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := testCtx(t)
			rng := rand.New(rand.NewPCG(uint64(c), 11))
			mine := map[string]uint64{}
			for range opsEach {
				s := streams[rng.IntN(len(streams))]
				in := fenceIn{op: fenceOp(rng.IntN(4)), stream: s}
				if in.op == fAppend && rng.IntN(3) == 0 {
					in.op = fAcquire // more leases: more to fence
				}
				if in.op != fAcquire {
					switch r := rng.IntN(10); {
					case r < 6:
						in.token = mine[s]
					case r < 8:
						in.token = rng.Uint64N(maxTok.Load() + 2)
					}
					if in.op != fAppend && in.token == 0 {
						in.token = mine[s] + 1 // RenewLease and ReleaseLease require a token
					}
				}
				call := clock.Add(1)
				var out fenceOut
				switch in.op {
				case fAcquire:
					resp, err := ts.locks().AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: s, Owner: fmt.Sprint("client", c), Ttl: durationpb.New(5 * time.Minute)})
					out = fenceAnswer(err)
					if err == nil {
						out.token = resp.GetLease().GetFencingToken()
						mine[s] = out.token
						for cur := maxTok.Load(); out.token > cur && !maxTok.CompareAndSwap(cur, out.token); cur = maxTok.Load() {
						}
					}
				case fRenew:
					_, err := ts.locks().RenewLease(ctx, &esdv1.RenewLeaseRequest{Stream: s, FencingToken: in.token, Ttl: durationpb.New(5 * time.Minute)})
					out = fenceAnswer(err)
				case fRelease:
					_, err := ts.locks().ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: s, FencingToken: in.token})
					out = fenceAnswer(err)
				case fAppend:
					resp, err := ts.streams.Append(ctx, fenced(appendReq(s, xAny, event("E", "{}")), in.token))
					out = fenceAnswer(err)
					out.revision = resp.GetFirstRevision()
				}
				ret := clock.Add(1)
				hmu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				hmu.Unlock()
			}
		}()
	}
	wg.Wait()
	testutil.CheckLinearizable(t, fenceModel, history, func(o any) error { return o.(fenceOut).unknown })
	var granted, written, refused int
	for _, op := range history {
		in, out := op.Input.(fenceIn), op.Output.(fenceOut)
		switch {
		case in.op == fAcquire && out.res == "ok":
			granted++
		case in.op == fAppend && out.res == "ok":
			written++
		case in.op == fAppend:
			refused++
		}
	}
	if granted < 3 || written < 8 || refused < 8 {
		t.Fatalf("%d leases, %d appends written, %d fenced: the history tests little", granted, written, refused)
	}
	t.Logf("%d operations: %d leases, %d appends written, %d fenced: linearizable", len(history), granted, written, refused)
}

// TestFenceModelRejects: the model refuses what a broken fence would do.
func TestFenceModelRejects(t *testing.T) {
	op := func(call, ret int64, in fenceIn, out fenceOut) porcupine.Operation {
		return porcupine.Operation{Input: in, Call: call, Output: out, Return: ret}
	}
	acq := fenceIn{op: fAcquire, stream: "s"}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
	}{
		{"an append without the token while leased", []porcupine.Operation{
			op(0, 1, acq, fenceOut{res: "ok", token: 1}),
			op(2, 3, fenceIn{op: fAppend, stream: "s"}, fenceOut{res: "ok"}),
		}},
		{"an append with an older token after the lease's release", []porcupine.Operation{
			op(0, 1, acq, fenceOut{res: "ok", token: 1}),
			op(2, 3, fenceIn{op: fRelease, stream: "s", token: 1}, fenceOut{res: "ok"}),
			op(4, 5, acq, fenceOut{res: "ok", token: 2}),
			op(6, 7, fenceIn{op: fRelease, stream: "s", token: 2}, fenceOut{res: "ok"}),
			op(8, 9, fenceIn{op: fAppend, stream: "s", token: 1}, fenceOut{res: "ok"}),
		}},
		{"two appends at one revision", []porcupine.Operation{
			op(0, 1, fenceIn{op: fAppend, stream: "s"}, fenceOut{res: "ok", revision: 0}),
			op(2, 3, fenceIn{op: fAppend, stream: "s"}, fenceOut{res: "ok", revision: 0}),
		}},
	} {
		if porcupine.CheckOperations(fenceModel, tc.history) {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
