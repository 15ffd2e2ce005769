package server

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestAppendStreamMatchesAppend runs one random sequence of appends
// twice, on two sets of equivalent streams ("eqA-…" and "eqB-…", with
// events alike but for their ids): through Append, one call after
// another, and through one AppendStream call with everything in flight at
// once. Each AppendStream answer must be what Append returned for the
// same request: the same revisions and stream_exists, the same code,
// message, ErrorInfo, BadRequest and WrongExpectedRevision (with the same
// events since), modulo the streams' prefixes, the events' ids and the
// positions and times, which differ; a success must have written where
// Append's did, relative to the sequence (a retry answers the original
// append's result in both). The sequence mixes expected revisions right
// and wrong, empty appends, idempotent retries (whole, and of part of the
// ids), ids stored on another stream, bad requests, a soft-deleted and a
// tombstoned stream.
//
// AppendStream orders appends per stream only, so a request with an id
// that was also sent to another stream (directly, or by retrying a
// request that reused another stream's ids) is sent alone: everything
// before it answered first, and it answered before anything after it is
// sent. Across streams only such requests depend on each other.
//
// ESD_TEST_SEED replays a sequence.
func TestAppendStreamMatchesAppend(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ESD_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("ESD_TEST_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	ts := newTestServer(t, withShards(3), withLimits(Limits{MaxEventBytes: 64, MaxAppendBytes: 256}))

	logical := []string{"s0", "s1", "s2", "s3", "s4", "s5", "soft", "tomb"}
	for _, w := range []string{"eqA-", "eqB-"} {
		ts.mustAppend(t, appendReq(w+"soft", xAny, event("Before", "gone")))
		ts.mustDelete(t, w+"soft", false)
		ts.mustDelete(t, w+"tomb", true)
	}

	g := &eqGen{rng: rng, logical: logical, heads: make(map[string]eqHead)}
	const n = 500
	var ops []*eqOp
	var unary []eqResult
	for range n {
		op := g.next()
		ops = append(ops, op)
		resp, err := ts.streams.Append(testCtx(t), op.request("eqA-", false))
		unary = append(unary, eqResult{ok: resp, err: status.Convert(err).Proto()})
		if err == nil && !op.badStream {
			h := g.heads[op.stream]
			if resp.GetStreamExists() {
				h = eqHead{exists: true, head: resp.GetLastRevision()}
			}
			g.heads[op.stream] = h
		}
		if len(op.events) > 0 {
			g.history = append(g.history, op)
		}
	}

	// The same through AppendStream.
	st := ts.openAppendStream(t, testCtx(t))
	var (
		mu       sync.Mutex
		streamed = make([]eqResult, n)
		arrival  = make(map[string][]int) // per stream name sent, the answers' op indexes in arrival order
	)
	answered := make(chan struct{}, n)
	recvErr := make(chan error, 1)
	go func() {
		for {
			a, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			i, _ := strconv.Atoi(string(a.GetCorrelationId()))
			mu.Lock()
			streamed[i] = eqResult{ok: a.GetSuccess(), err: a.GetError(), answered: true}
			name := ops[i].request("eqB-", true).GetStream()
			arrival[name] = append(arrival[name], i)
			mu.Unlock()
			answered <- struct{}{}
		}
	}()
	sent, got := 0, 0
	for i, op := range ops {
		if op.alone || (i > 0 && ops[i-1].alone) {
			for ; got < sent; got++ {
				<-answered
			}
		}
		if err := st.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte(strconv.Itoa(i)), Append: op.request("eqB-", true)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		sent++
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := <-recvErr; !errors.Is(err, io.EOF) {
		t.Fatalf("call ended with %v", err)
	}

	// Compare, in sequence order (an original before its retries).
	repl := g.replacer()
	wroteA, wroteB := make(map[uint64]int), make(map[uint64]int)
	timesA, timesB := make(map[uint64]*timestamppb.Timestamp), make(map[uint64]*timestamppb.Timestamp)
	counts := make(map[string]int)
	for i, op := range ops {
		a, b := unary[i], streamed[i]
		if !b.answered {
			t.Fatalf("op %d (%s): no answer", i, op)
		}
		want, err := normResult(a, repl.Replace, wroteA, timesA, i)
		if err != nil {
			t.Fatalf("op %d (%s), Append: %v", i, op, err)
		}
		got, err := normResult(b, func(s string) string { return s }, wroteB, timesB, i)
		if err != nil {
			t.Fatalf("op %d (%s), AppendStream: %v", i, op, err)
		}
		if diff := cmp.Diff(want, got, cmpProto); diff != "" {
			t.Fatalf("op %d (%s): AppendStream answered differently (-Append +AppendStream):\n%s", i, op, diff)
		}
		counts[want.kind()]++
	}
	t.Logf("%d requests: %v", n, counts)
	for name, idx := range arrival {
		for k := 1; k < len(idx); k++ {
			if idx[k] < idx[k-1] {
				t.Fatalf("stream %q: answer of op %d came after that of op %d", name, idx[k], idx[k-1])
			}
		}
	}
	for _, l := range logical {
		a, errA := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "eqA-" + l})
		b, errB := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "eqB-" + l})
		if len(a) != len(b) || status.Code(errA) != status.Code(errB) {
			t.Fatalf("%s holds %d events (%v) through Append, %d (%v) through AppendStream", l, len(a), errA, len(b), errB)
		}
	}
}

// eqGen makes the random sequence, from what Append answered so far.
type eqGen struct {
	rng     *rand.Rand
	logical []string
	heads   map[string]eqHead // from Append's answers
	history []*eqOp           // the ops with events, in order
	pairs   []string          // replacer pairs: A's id, B's id
}

type eqHead struct {
	exists bool
	head   uint64
}

// eqOp is one request of the sequence, for either set of streams.
type eqOp struct {
	what      string
	stream    string // logical name, or a bad name sent as is (badStream)
	badStream bool
	nilAppend bool // AppendStream sends no append at all; Append an empty request
	x         xrev
	events    []eqEvent
	alone     bool    // reuses ids of another stream: sent with nothing else in flight
	delta     *uint32 // conflict_delta_events; nil: unset
}

type eqEvent struct {
	idA, idB string
	typ      string
	data     string
}

func (op *eqOp) String() string {
	return fmt.Sprintf("%s on %q expecting %s, %d events", op.what, op.stream, op.x, len(op.events))
}

// request is op for the streams with prefix (streamed: through
// AppendStream, where an unset append is no append at all).
func (op *eqOp) request(prefix string, streamed bool) *esdv1.AppendRequest {
	if op.nilAppend {
		if streamed {
			return nil
		}
		return &esdv1.AppendRequest{}
	}
	name := prefix + op.stream
	if op.badStream {
		name = op.stream
	}
	req := op.x.setAppend(&esdv1.AppendRequest{Stream: name, ConflictDeltaEvents: op.delta})
	for _, e := range op.events {
		id := e.idA
		if prefix == "eqB-" {
			id = e.idB
		}
		req.Events = append(req.Events, &esdv1.ProposedEvent{Id: id, Type: e.typ, Data: []byte(e.data)})
	}
	return req
}

func (g *eqGen) newEvent() eqEvent {
	e := eqEvent{idA: uuid.NewString(), idB: uuid.NewString(), typ: []string{"Added", "Removed", "Renamed"}[g.rng.IntN(3)],
		data: strings.Repeat("d", g.rng.IntN(40))}
	g.pairs = append(g.pairs, e.idA, e.idB)
	return e
}

func (g *eqGen) replacer() *strings.Replacer {
	return strings.NewReplacer(append([]string{"eqA-", "eqB-"}, g.pairs...)...)
}

// expectation picks an expected revision, right about half of the time.
func (g *eqGen) expectation(stream string) xrev {
	h := g.heads[stream]
	switch r := g.rng.IntN(10); {
	case r < 4 && h.exists:
		return xExact(h.head)
	case r < 4:
		return xNoStream
	case r == 4:
		return xExact(h.head + 1)
	case r == 5:
		return xExact(uint64(g.rng.IntN(4)))
	case r == 6:
		return []xrev{xAny, xUnset}[g.rng.IntN(2)]
	case r == 7:
		return xExists
	case r == 8:
		return xNoStream
	default:
		return xAny
	}
}

func (g *eqGen) next() *eqOp {
	stream := g.logical[g.rng.IntN(len(g.logical))]
	op := &eqOp{stream: stream, x: g.expectation(stream)}
	if n := g.rng.IntN(6); n < 3 { // half unset; else 0, 1 or 2 events of delta
		op.delta = new(uint32)
		*op.delta = uint32(n)
	}
	var same, other []*eqOp
	for _, h := range g.history {
		if h.stream == stream && !h.badStream {
			same = append(same, h)
		} else if !h.badStream {
			other = append(other, h)
		}
	}
	switch r := g.rng.IntN(100); {
	case r < 55:
		op.what = "append"
		for range g.rng.IntN(4) { // 0: an empty append
			op.events = append(op.events, g.newEvent())
		}
	case r < 68 && len(same) > 0:
		op.what = "retry"
		op.events = same[g.rng.IntN(len(same))].events
	case r < 73 && len(same) > 0:
		orig := same[g.rng.IntN(len(same))].events
		switch {
		case len(orig) > 1:
			op.what, op.events = "retry of some ids", orig[1:]
		default:
			op.what, op.events = "retry with a new id", append([]eqEvent{g.newEvent()}, orig...)
		}
	case r < 80 && len(other) > 0:
		op.what = "ids of another stream"
		op.events = other[g.rng.IntN(len(other))].events
	default:
		op.what = "bad request"
		op.events = []eqEvent{g.newEvent()}
		switch g.rng.IntN(8) {
		case 0:
			op.events[0].typ = ""
		case 1:
			op.events[0].idA, op.events[0].idB = "nope", "nope"
		case 2:
			op.events = append(op.events, op.events[0]) // an id twice
		case 3:
			op.events[0].data = strings.Repeat("x", 65) // EVENT_TOO_LARGE
		case 4:
			for range 4 {
				op.events = append(op.events, g.newEvent())
			}
			for k := range op.events {
				op.events[k].data = strings.Repeat("y", 60) // REQUEST_TOO_LARGE
			}
		case 5:
			op.nilAppend = true
		default:
			op.badStream = true
			op.stream = []string{"", "$sys", "bad\x01name", strings.Repeat("n", 513)}[g.rng.IntN(4)]
		}
	}
	// Ids also sent to another stream (by this op, or by an earlier one
	// that this op retries) make it depend on that stream's appends.
	for _, h := range other {
		if sharesID(h.events, op.events) {
			op.alone = true
			break
		}
	}
	return op
}

func sharesID(a, b []eqEvent) bool {
	for _, x := range a {
		for _, y := range b {
			if x.idA == y.idA {
				return true
			}
		}
	}
	return false
}

// eqResult is an answer: a success, or the status of a failure.
type eqResult struct {
	ok       *esdv1.AppendResponse
	err      *spb.Status
	answered bool
}

// eqNorm is an answer with what differs between the two sets of streams
// taken out.
type eqNorm struct {
	Success bool
	// A success: its revisions; which op of the sequence wrote the events
	// it reports (itself, or for a retry the original), -1 for none.
	FirstRevision, LastRevision uint64
	StreamExists                bool
	WrittenBy                   int
	// A failure.
	Code    int32
	Message string
	Details []proto.Message
}

func (n eqNorm) kind() string {
	if n.Success {
		return "ok"
	}
	for _, d := range n.Details {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return "code " + strconv.Itoa(int(n.Code))
}

// normResult normalizes r, the answer to op i: repl maps names and ids to
// the other set's; wrote maps a first position to the op that wrote it,
// times its commit time (both per set of streams).
func normResult(r eqResult, repl func(string) string, wrote map[uint64]int, times map[uint64]*timestamppb.Timestamp, i int) (eqNorm, error) {
	if r.err != nil && r.err.GetCode() != 0 {
		n := eqNorm{Code: r.err.GetCode(), Message: repl(r.err.GetMessage())}
		for _, d := range status.FromProto(r.err).Details() {
			m, ok := d.(proto.Message)
			if !ok {
				return n, fmt.Errorf("undecodable detail: %v", d)
			}
			m = proto.Clone(m)
			switch x := m.(type) {
			case *errdetails.ErrorInfo:
				for k, v := range x.Metadata {
					x.Metadata[k] = repl(v)
				}
			case *errdetails.BadRequest:
				for _, v := range x.GetFieldViolations() {
					v.Description = repl(v.GetDescription())
				}
			case *esdv1.WrongExpectedRevision:
				x.Stream = repl(x.GetStream())
				for _, e := range x.GetEventsSince() {
					e.Id, e.Stream, e.Position, e.Created = repl(e.GetId()), repl(e.GetStream()), 0, nil
				}
			}
			n.Details = append(n.Details, m)
		}
		return n, nil
	}
	s := r.ok
	n := eqNorm{Success: true, FirstRevision: s.GetFirstRevision(), LastRevision: s.GetLastRevision(), StreamExists: s.GetStreamExists(), WrittenBy: -1}
	if p := s.GetFirstPosition(); p != 0 {
		if s.GetLastPosition()-p != s.GetLastRevision()-s.GetFirstRevision() || s.GetCommitTime() == nil {
			return n, fmt.Errorf("positions %d..%d for revisions %d..%d, commit time %v", p, s.GetLastPosition(), s.GetFirstRevision(), s.GetLastRevision(), s.GetCommitTime())
		}
		if _, ok := wrote[p]; !ok {
			wrote[p], times[p] = i, s.GetCommitTime()
		} else if !proto.Equal(times[p], s.GetCommitTime()) {
			return n, fmt.Errorf("a retry answered commit time %v, the original %v", s.GetCommitTime(), times[p])
		}
		n.WrittenBy = wrote[p]
	} else if s.GetCommitTime() != nil || s.GetLastPosition() != 0 {
		return n, fmt.Errorf("no positions but %v", s)
	}
	return n, nil
}
