package writer

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"

	eslog "github.com/esdhq/esd/internal/log"
)

// want is what a request of a table test must get.
type want struct {
	desc  string
	check func(t *testing.T, op AppendOp, o outcome)
}

// wantOK: the append stored its events at revisions first..last.
func wantOK(first, last uint64) want {
	return want{fmt.Sprintf("ok %d..%d", first, last), func(t *testing.T, op AppendOp, o outcome) {
		t.Helper()
		if o.err != nil {
			t.Fatalf("error %v, want revisions %d..%d", o.err, first, last)
		}
		if o.res.FirstRevision != first || o.res.LastRevision != last || !o.res.Exists || o.res.CommitTime == 0 {
			t.Fatalf("result %+v, want revisions %d..%d", o.res, first, last)
		}
		if o.pub < o.res.LastPosition {
			t.Fatalf("answered at published position %d, before its last position %d", o.pub, o.res.LastPosition)
		}
	}}
}

// wantConflict: *eslog.IDConflictError naming the op's stream and id.
func wantConflict(id [16]byte) want {
	return want{"id conflict", func(t *testing.T, op AppendOp, o outcome) {
		t.Helper()
		var idc *eslog.IDConflictError
		if !errors.As(o.err, &idc) || idc.ID != id || idc.Stream != op.Stream {
			t.Fatalf("error %v (result %+v), want an id conflict on %s for %s", o.err, o.res, op.Stream, eslog.FormatID(id))
		}
		if Reason(o.err) != ReasonEventIDConflict {
			t.Fatalf("Reason(%v) = %s", o.err, Reason(o.err))
		}
	}}
}

// wantWrong: *eslog.WrongRevisionError against a stream with that head.
func wantWrong(head uint64, exists bool) want {
	return want{fmt.Sprintf("wrong revision (head %d, exists %t)", head, exists), func(t *testing.T, op AppendOp, o outcome) {
		t.Helper()
		var wr *eslog.WrongRevisionError
		if !errors.As(o.err, &wr) || wr.Stream != op.Stream || wr.Expected != op.Expect || wr.Exists != exists ||
			(exists && wr.Head != head) {
			t.Fatalf("error %v (%+v), want a wrong revision with head %d, exists %t", o.err, wr, head, exists)
		}
	}}
}

func wantErr(target error) want {
	return want{fmt.Sprintf("error %v", target), func(t *testing.T, op AppendOp, o outcome) {
		t.Helper()
		if !errors.Is(o.err, target) {
			t.Fatalf("error %v, want %v", o.err, target)
		}
	}}
}

// writeErrs is what each write of a commit call got.
func writeErrs(c *fakeCommit) []error {
	var out []error
	for _, w := range c.writes {
		out = append(out, w.Err)
	}
	return out
}

// checkWriteErrs compares a commit call's write errors with want, by
// errors.Is for sentinels and by type for an id conflict.
func checkWriteErrs(t *testing.T, what string, c *fakeCommit, want ...error) {
	t.Helper()
	got := writeErrs(c)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		var idc *eslog.IDConflictError
		switch {
		case want[i] == nil:
			ok = got[i] == nil
		case errors.As(want[i], &idc):
			ok = errors.As(got[i], &idc)
		default:
			ok = errors.Is(got[i], want[i])
		}
	}
	if !ok {
		t.Fatalf("%s: write errors %v, want %v", what, got, want)
	}
}

// TestRedecideAfterRefusedWrite is invariant 4: the log refuses a write
// of a round (an id stored on another stream meanwhile, or a failed id
// lookup); the requests decided after it on the same stream in that round
// are decided again against the stream's real state and get the answers
// they would have got had the refused write never been there, in their
// order; requests on other streams are unaffected.
func TestRedecideAfterRefusedWrite(t *testing.T) {
	errLookup := fmt.Errorf("look up event id: %w", io.ErrUnexpectedEOF)
	tests := []struct {
		name  string
		setup func(t *testing.T, w *Writer, f *fakeLog)
		// interpose runs just before the round is let go.
		interpose func(t *testing.T, f *fakeLog)
		ops       []AppendOp
		want      []want
		// round and retry: the errors of the round's writes and of the
		// writes of the round that re-decides.
		round, retry []error
	}{
		{
			name: "id committed on another stream after the lookups",
			setup: func(t *testing.T, w *Writer, f *fakeLog) {
				mustAppend(t, w, appendOf("x", xAny, id(100), id(101))) // head 1
			},
			interpose: func(t *testing.T, f *fakeLog) {
				var done atomic.Bool
				f.setBeforeCommit(func([]*eslog.Write) {
					if done.CompareAndSwap(false, true) {
						if _, err := f.appendDirect("elsewhere", id(1)); err != nil {
							t.Error(err)
						}
					}
				})
			},
			ops: []AppendOp{
				appendOf("x", xExact(1), id(1)),   // refused: id 1 is on "elsewhere" now
				appendOf("y", xAny, id(2)),        // another stream: unaffected
				appendOf("x", xExact(2), id(3)),   // held after 0; against head 1 it does not
				appendOf("x", xExact(1), id(8)),   // failed after 0 and 2; against head 1 it holds
				appendOf("x", xAny, id(4), id(5)), // follows 3
				appendOf("x", xNoStream, id(6)),   // failed, and fails again
				appendOf("x", xAny, id(1)),        // a retry of 0 in the round: now a conflict
				appendOf("y", xExact(0), id(7)),   // follows 1
			},
			want: []want{
				wantConflict(id(1)), wantOK(0, 0), wantWrong(1, true), wantOK(2, 2), wantOK(3, 4), wantWrong(4, true),
				wantConflict(id(1)), wantOK(1, 1),
			},
			round: []error{&eslog.IDConflictError{}, nil, eslog.ErrRetry, eslog.ErrRetry, nil},
			retry: []error{nil, nil},
		},
		{
			name: "id lookup failed in the log",
			setup: func(t *testing.T, w *Writer, f *fakeLog) {
				mustAppend(t, w, appendOf("x", xAny, id(100), id(101))) // head 1
			},
			interpose: func(t *testing.T, f *fakeLog) { f.refuse("x", errLookup) },
			ops: []AppendOp{
				appendOf("x", xAny, id(1)),      // refused
				appendOf("x", xExact(2), id(2)), // held after 0; against head 1 it does not
				appendOf("x", xExact(1), id(3)), // failed after 0 and 1; holds against head 1
				appendOf("x", xAny, id(1)),      // a retry of 0 in the round: its ids are free, so it is stored
				appendOf("y", xAny, id(4)),
			},
			want:  []want{wantErr(errLookup), wantWrong(1, true), wantOK(2, 2), wantOK(3, 3), wantOK(0, 0)},
			round: []error{errLookup, eslog.ErrRetry, nil},
			retry: []error{nil, nil},
		},
		{
			name: "first write of a new stream refused",
			interpose: func(t *testing.T, f *fakeLog) {
				var done atomic.Bool
				f.setBeforeCommit(func([]*eslog.Write) {
					if done.CompareAndSwap(false, true) {
						if _, err := f.appendDirect("elsewhere", id(1)); err != nil {
							t.Error(err)
						}
					}
				})
			},
			ops: []AppendOp{
				appendOf("n", xNoStream, id(1)), // refused; "n" stays never stored
				appendOf("n", xExact(0), id(2)), // held after 0; "n" has no events
				appendOf("n", xNoStream, id(3)), // failed after 0; holds now, with a new stream id
				appendOf("n", xAny, id(4), id(5)),
			},
			want:  []want{wantConflict(id(1)), wantWrong(0, false), wantOK(0, 0), wantOK(1, 2)},
			round: []error{&eslog.IDConflictError{}, eslog.ErrRetry, eslog.ErrRetry},
			retry: []error{nil, nil},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeLog(t)
			w := newTestWriter(t, f, Config{Shards: 1})
			if tc.setup != nil {
				tc.setup(t, w, f)
			}
			before := len(f.commitCalls())
			out := appendRound(t, w, f, func() { tc.interpose(t, f) }, tc.ops...)
			for i, o := range out {
				t.Run(fmt.Sprintf("op %d %s", i, tc.want[i].desc), func(t *testing.T) {
					tc.want[i].check(t, tc.ops[i], o)
					if o.err == nil {
						checkStored(t, f, tc.ops[i], o.res)
					}
				})
			}
			// The round's commit and the re-decided one; a direct commit
			// of the interposer may come first.
			var mine []*fakeCommit
			for _, c := range f.commitCalls()[before:] {
				if len(c.writes) > 0 && c.writes[0].State.Name != "elsewhere" {
					mine = append(mine, c)
				}
			}
			if len(mine) != 2 {
				t.Fatalf("%d commits of the writer, want the round's and its re-decision's", len(mine))
			}
			checkWriteErrs(t, "round", mine[0], tc.round...)
			checkWriteErrs(t, "re-decision", mine[1], tc.retry...)
		})
	}
}

// TestInRoundRetries: a request whose client ids repeat a whole append
// decided earlier in the same round is a retry: it gets that append's
// answer and nothing is stored twice. Ids that overlap an earlier
// append's otherwise (a part, another order, more, another stream) are an
// EVENT_ID conflict.
func TestInRoundRetries(t *testing.T) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 1})
	ops := []AppendOp{
		appendOf("x", xNoStream, id(1), id(2)),
		appendOf("x", xNoStream, id(1), id(2)),     // a retry of 0
		appendOf("x", xAny, id(2), id(3)),          // overlaps 0
		appendOf("x", xAny, id(1)),                 // a part of 0
		appendOf("y", xAny, id(1), id(2)),          // 0's ids on another stream
		appendOf("x", xAny, id(2), id(1)),          // 0's ids in another order
		appendOf("x", xExact(1), id(4)),            // follows 0
		appendOf("x", xExact(1), id(4)),            // a retry of 6: its expectation no longer holds, but it is a retry
		appendOf("x", xAny, id(1), id(2), id(4)),   // 0's and 6's ids together
		appendOf("y", xNoStream, id(5)),            // y is untouched by the conflicts
		appendOf("x", xAny, id(1), id(2), id(100)), // 0's ids and a new one
	}
	want := []want{
		wantOK(0, 1), wantOK(0, 1), wantConflict(id(2)), wantConflict(id(1)), wantConflict(id(1)), wantConflict(id(2)),
		wantOK(2, 2), wantOK(2, 2), wantConflict(id(1)), wantOK(0, 0), wantConflict(id(1)),
	}
	before := len(f.commitCalls())
	out := appendRound(t, w, f, nil, ops...)
	for i, o := range out {
		want[i].check(t, ops[i], o)
		if o.err == nil {
			checkStored(t, f, ops[i], o.res)
		}
	}
	if out[1].res != out[0].res || out[7].res != out[6].res {
		t.Fatalf("retries got %+v and %+v, the appends they repeat %+v and %+v", out[1].res, out[7].res, out[0].res, out[6].res)
	}
	calls := f.commitCalls()[before:]
	if len(calls) != 1 || len(calls[0].writes) != 3 {
		t.Fatalf("%d commits (%v), want one of three writes", len(calls), calls)
	}
	if n := len(f.stored()); n != 4 {
		t.Fatalf("%d events stored, want 4", n)
	}
}
