package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/esdhq/esd/internal/testutil"
)

// Linearizability: clients run Acquire (without wait), Renew, Release and
// Check concurrently on two streams, the history of calls and answers is
// recorded, and porcupine checks that some order of the operations, each
// taking effect at one moment between its call and its return, explains
// every answer by the sequential model below. TTLs outlive the test, so
// leases end only by Release; expiry is tested with a fake clock
// elsewhere.

type linOp uint8

const (
	opAcquire linOp = iota
	opRenew
	opRelease
	opCheck
)

func (o linOp) String() string {
	return [...]string{"acquire", "renew", "release", "check"}[o]
}

type linInput struct {
	op     linOp
	stream string
	token  uint64 // renew, release, check
}

// linResult is an answer reduced to what the model predicts.
type linResult uint8

const (
	resOK linResult = iota
	resLeased
	resStale
	resNotHeld
)

type linOutput struct {
	res     linResult
	token   uint64 // acquire: the granted token; stale: the current one
	unknown error  // any other error: never linearizable
}

// linState is one stream's state in the model: tokens are granted in
// order, so the live lease (if held) is the one of the high-water token.
type linState struct {
	hwm  uint64
	held bool
}

var leaseModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			s := op.Input.(linInput).stream
			if _, ok := by[s]; !ok {
				order = append(order, s)
			}
			by[s] = append(by[s], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, s := range order {
			out = append(out, by[s])
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(linState), input.(linInput), output.(linOutput)
		if out.unknown != nil {
			return false, st
		}
		switch in.op {
		case opAcquire:
			if st.held {
				return out.res == resLeased, st
			}
			next := linState{hwm: st.hwm + 1, held: true}
			return out.res == resOK && out.token == next.hwm, next
		case opRenew, opRelease:
			switch {
			case !st.held:
				return out.res == resNotHeld, st
			case in.token != st.hwm:
				return out.res == resStale && out.token == st.hwm, st
			}
			if in.op == opRelease {
				return out.res == resOK, linState{hwm: st.hwm}
			}
			return out.res == resOK, st
		case opCheck:
			switch {
			case in.token != 0 && in.token != st.hwm:
				return out.res == resStale && out.token == st.hwm, st
			case in.token == 0 && st.held:
				return out.res == resLeased, st
			}
			return out.res == resOK, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		return fmt.Sprintf("%s(%s, %d) -> %d/%d %v", in.op, in.stream, in.token, out.res, out.token, out.unknown)
	},
}

// linAnswer reduces an error to a linOutput.
func linAnswer(err error) linOutput {
	var stale *StaleTokenError
	switch {
	case err == nil:
		return linOutput{res: resOK}
	case errors.As(err, &stale):
		return linOutput{res: resStale, token: stale.Current}
	case errors.Is(err, ErrLeased):
		return linOutput{res: resLeased}
	case errors.Is(err, ErrNotHeld):
		return linOutput{res: resNotHeld}
	}
	return linOutput{unknown: err}
}

func TestLinearizable(t *testing.T) {
	m := newTestManager(t, time.Now)
	m.cfg.MaxTTL = time.Hour // before any use: no lease expires during the test
	const clients, opsEach = 6, 60
	streams := []string{"a", "b"}
	var (
		clock   atomic.Int64 // orders calls and returns in real time
		hmu     sync.Mutex
		history []porcupine.Operation
		maxTok  atomic.Uint64
		wg      sync.WaitGroup
	)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			mine := map[string]uint64{} // the last token this client got, per stream
			for range opsEach {
				s := streams[rng.IntN(len(streams))]
				in := linInput{op: linOp(rng.IntN(4)), stream: s}
				if in.op != opAcquire {
					// Mostly its own token; else any token seen so far,
					// 0 or one not yet given.
					switch r := rng.IntN(10); {
					case r < 6:
						in.token = mine[s]
					case r < 8:
						in.token = rng.Uint64N(maxTok.Load() + 2)
					default:
						in.token = 0
					}
				}
				call := clock.Add(1)
				var out linOutput
				switch in.op {
				case opAcquire:
					ls, err := m.Acquire(context.Background(), s, fmt.Sprint("client", c), time.Hour, 0)
					out = linAnswer(err)
					if err == nil {
						out.token = ls.Token
						mine[s] = ls.Token
						for {
							if cur := maxTok.Load(); ls.Token <= cur || maxTok.CompareAndSwap(cur, ls.Token) {
								break
							}
						}
					}
				case opRenew:
					_, err := m.Renew(s, in.token, time.Hour)
					out = linAnswer(err)
				case opRelease:
					out = linAnswer(m.Release(s, in.token))
				case opCheck:
					out = linAnswer(m.Check(s, in.token, time.Now()))
				}
				ret := clock.Add(1)
				hmu.Lock()
				history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				hmu.Unlock()
			}
		}()
	}
	wg.Wait()
	testutil.CheckLinearizable(t, leaseModel, history, func(o any) error { return o.(linOutput).unknown })
	granted := 0
	for _, op := range history {
		if op.Input.(linInput).op == opAcquire && op.Output.(linOutput).res == resOK {
			granted++
		}
	}
	if granted < 4 {
		t.Fatalf("only %d leases granted: the history tests little", granted)
	}
	t.Logf("%d operations, %d leases granted: linearizable", len(history), granted)
}

// TestLinearizabilityModelRejects: the model is not vacuous: histories a
// broken manager could produce are refused.
func TestLinearizabilityModelRejects(t *testing.T) {
	op := func(call, ret int64, in linInput, out linOutput) porcupine.Operation {
		return porcupine.Operation{Input: in, Call: call, Output: out, Return: ret}
	}
	acq := linInput{op: opAcquire, stream: "s"}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
	}{
		{"two holders", []porcupine.Operation{
			op(0, 1, acq, linOutput{res: resOK, token: 1}),
			op(2, 3, acq, linOutput{res: resOK, token: 2}),
		}},
		{"a token given twice", []porcupine.Operation{
			op(0, 1, acq, linOutput{res: resOK, token: 1}),
			op(2, 3, linInput{op: opRelease, stream: "s", token: 1}, linOutput{res: resOK}),
			op(4, 5, acq, linOutput{res: resOK, token: 1}),
		}},
		{"a write passes without a token", []porcupine.Operation{
			op(0, 1, acq, linOutput{res: resOK, token: 1}),
			op(2, 3, linInput{op: opCheck, stream: "s"}, linOutput{res: resOK}),
		}},
		{"a stale token passes after the newer lease's release", []porcupine.Operation{
			op(0, 1, acq, linOutput{res: resOK, token: 1}),
			op(2, 3, linInput{op: opRelease, stream: "s", token: 1}, linOutput{res: resOK}),
			op(4, 5, acq, linOutput{res: resOK, token: 2}),
			op(6, 7, linInput{op: opRelease, stream: "s", token: 2}, linOutput{res: resOK}),
			op(8, 9, linInput{op: opCheck, stream: "s", token: 1}, linOutput{res: resOK}),
		}},
		{"a stale token passes", []porcupine.Operation{
			op(0, 1, acq, linOutput{res: resOK, token: 1}),
			op(2, 3, linInput{op: opRelease, stream: "s", token: 1}, linOutput{res: resOK}),
			op(4, 5, acq, linOutput{res: resOK, token: 2}),
			op(6, 7, linInput{op: opCheck, stream: "s", token: 1}, linOutput{res: resOK}),
		}},
	} {
		if porcupine.CheckOperations(leaseModel, tc.history) {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
