package writer

import (
	"errors"
	"testing"

	eslog "github.com/esdhq/esd/internal/log"
)

// TestAppendMultiFailingShard: an AppendMulti over several shards with
// one entry that cannot be written (decided so by its shard, or refused
// by the log at the atomic commit) stores nothing of any entry, answers
// with that entry's error, and lets every shard go: later appends and
// AppendMultis on every stream involved are decided against the stored
// states.
func TestAppendMultiFailingShard(t *testing.T) {
	const shards = 4
	tests := []struct {
		name   string
		failAt int // the shard whose entry fails
		// spoil makes the entry fail; it may prepare the store.
		spoil func(t *testing.T, w *Writer, f *fakeLog, op *AppendOp)
		check func(t *testing.T, err error)
		// logRefuses: the shards decide the entry and the log refuses it
		// at the atomic commit, which the log tries.
		logRefuses bool
	}{
		{"wrong revision on the first shard locked", 0,
			func(_ *testing.T, _ *Writer, _ *fakeLog, op *AppendOp) { op.Expect = xExact(5) }, isWrongRevision, false},
		{"wrong revision on the last shard locked", shards - 1,
			func(_ *testing.T, _ *Writer, _ *fakeLog, op *AppendOp) { op.Expect = xExact(5) }, isWrongRevision, false},
		{"wrong revision in the middle", 1,
			func(_ *testing.T, _ *Writer, _ *fakeLog, op *AppendOp) { op.Expect = xNoStream }, isWrongRevision, false},
		{"tombstoned entry", 2, func(t *testing.T, w *Writer, _ *fakeLog, op *AppendOp) {
			mustDelete(t, w, op.Stream, xAny, eslog.DeleteTombstone)
		}, func(t *testing.T, err error) {
			if !errors.Is(err, ErrRefused) || !errors.Is(err, eslog.ErrStreamTombstoned) {
				t.Fatalf("error %v, want a refused write to a tombstoned stream", err)
			}
		}, false},
		{"id stored on another stream", 3, func(t *testing.T, w *Writer, _ *fakeLog, op *AppendOp) {
			mustAppend(t, w, appendOf("elsewhere", xAny, op.Events[0].ID))
		}, isIDConflict, false},
		{"refused by the log at the commit", 1, func(t *testing.T, w *Writer, f *fakeLog, op *AppendOp) {
			f.refuse(op.Stream, &eslog.IDConflictError{Stream: op.Stream, ID: op.Events[0].ID})
		}, isIDConflict, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeLog(t)
			w := newTestWriter(t, f, Config{Shards: shards})
			ctx := testCtx(t)
			names := streamsOnShards(t, w, "m")
			for i, name := range names {
				mustAppend(t, w, appendOf(name, xAny, id(1000+i))) // head 0
			}
			// Entries in descending shard order: not the locking order.
			var ops []AppendOp
			for i := shards - 1; i >= 0; i-- {
				ops = append(ops, appendOf(names[i], xExact(0), id(10*i+1), id(10*i+2)))
			}
			failing := &ops[shards-1-tc.failAt]
			tc.spoil(t, w, f, failing)
			before := f.stored()
			stateBefore := make(map[string]eslog.StreamState)
			for _, name := range names {
				stateBefore[name], _, _ = f.State(name)
			}

			_, err := w.AppendMulti(ctx, ops)
			tc.check(t, err)
			if after := f.stored(); len(after) != len(before) {
				t.Fatalf("%d events stored by a failed AppendMulti", len(after)-len(before))
			}
			atomicCalls := 0
			for _, c := range f.commitCalls() {
				if c.atomic {
					atomicCalls++
				}
				if c.atomic && c.d != nil {
					t.Fatalf("an atomic commit applied: %+v", c.writes)
				}
				if c.atomic {
					for _, wr := range c.writes {
						if wr.Err == nil || (wr.State.Name != failing.Stream && !errors.Is(wr.Err, eslog.ErrAborted)) {
							t.Fatalf("write to %s of the refused commit: %v", wr.State.Name, wr.Err)
						}
					}
				}
			}
			if want := map[bool]int{false: 0, true: 1}[tc.logRefuses]; atomicCalls != want {
				t.Fatalf("%d atomic commits tried; want %d", atomicCalls, want)
			}

			// Every shard goes on, deciding against the stored states.
			for i, name := range names {
				st := stateBefore[name]
				r, err := w.Append(ctx, appendOf(name, xAny, id(100+i)))
				switch {
				case st.Tombstoned:
					if !errors.Is(err, ErrRefused) {
						t.Fatalf("append to tombstoned %s: %v", name, err)
					}
				case err != nil || r.FirstRevision != st.NextRevision():
					t.Fatalf("append to %s after the failed AppendMulti: %+v, %v; want revision %d", name, r, err, st.NextRevision())
				}
			}
			var again []AppendOp
			for i, name := range names {
				if st, _, _ := f.State(name); !st.Tombstoned {
					again = append(again, appendOf(name, xExact(st.Head), id(200+i)))
				}
			}
			res, err := w.AppendMulti(ctx, again)
			if err != nil {
				t.Fatalf("AppendMulti after the failed one: %v", err)
			}
			for i := range again {
				checkStored(t, f, again[i], res[i])
			}
		})
	}
}

func isWrongRevision(t *testing.T, err error) {
	t.Helper()
	var wr *eslog.WrongRevisionError
	if !errors.As(err, &wr) {
		t.Fatalf("error %v, want a wrong revision", err)
	}
}

func isIDConflict(t *testing.T, err error) {
	t.Helper()
	var idc *eslog.IDConflictError
	if !errors.As(err, &idc) {
		t.Fatalf("error %v, want an id conflict", err)
	}
}

// TestAppendMulti: the entries are committed as one atomic commit, their
// answers are what was stored, and the shards' states follow.
func TestAppendMulti(t *testing.T) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 3})
	names := streamsOnShards(t, w, "m")
	mustAppend(t, w, appendOf(names[1], xAny, id(1)))
	ops := []AppendOp{
		appendOf(names[2], xNoStream, id(2), id(3)),
		appendOf(names[1], xExact(0), id(4)),
		appendOf(names[0], xAny, id(5)),
		{Stream: "empty-check", Expect: xNoStream}, // a condition only
	}
	calls := len(f.commitCalls())
	res, err := w.AppendMulti(testCtx(t), ops)
	if err != nil {
		t.Fatal(err)
	}
	c := f.commitCalls()[calls:]
	if len(c) != 1 || !c[0].atomic || len(c[0].writes) != 3 || c[0].d == nil {
		t.Fatalf("AppendMulti committed %d times: %+v", len(c), c)
	}
	for i := range 3 {
		checkStored(t, f, ops[i], res[i])
		if res[i].CommitTime != c[0].writes[0].Created {
			t.Fatalf("entry %d: commit time %d", i, res[i].CommitTime)
		}
	}
	if res[3] != (AppendResult{}) {
		t.Fatalf("condition entry: %+v", res[3])
	}
	if res[0].FirstRevision != 0 || res[1].FirstRevision != 1 {
		t.Fatalf("results %+v", res)
	}
	for i, name := range names {
		st, _, _ := f.State(name)
		r := mustAppend(t, w, appendOf(name, xExact(st.Head), id(10+i)))
		if r.FirstRevision != st.Head+1 {
			t.Fatalf("append to %s after the AppendMulti: %+v", name, r)
		}
	}
}
