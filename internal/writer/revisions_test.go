package writer

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
)

// streamSetups put the stream "s" in each state a decision knows.
var streamSetups = []struct {
	name  string
	setup func(t *testing.T, w *Writer)
}{
	{"absent", func(t *testing.T, w *Writer) {}},
	{"existing", func(t *testing.T, w *Writer) {
		mustAppend(t, w, appendOf("s", xNoStream, id(900), id(901)))
	}},
	{"soft-deleted", func(t *testing.T, w *Writer) {
		mustAppend(t, w, appendOf("s", xNoStream, id(900), id(901)))
		mustDelete(t, w, "s", xAny, eslog.DeleteSoft)
	}},
	{"tombstoned", func(t *testing.T, w *Writer) {
		mustAppend(t, w, appendOf("s", xNoStream, id(900), id(901)))
		mustDelete(t, w, "s", xAny, eslog.DeleteTombstone)
	}},
}

func mustDelete(t *testing.T, w *Writer, stream string, expect eslog.Expectation, mode eslog.DeleteMode) DeleteResult {
	t.Helper()
	r, err := w.Delete(testCtx(t), DeleteOp{Stream: stream, Expect: expect, Mode: mode})
	if err != nil {
		t.Fatalf("delete %s: %v", stream, err)
	}
	return r
}

// outcomeKind is what a request of TestExpectedRevisions must get.
type outcomeKind int

const (
	okWrite    outcomeKind = iota // stored (an append: revisions 2..3 on a stream written before, else 0..1)
	okCheck                       // an empty append whose condition holds
	wrongRev                      // *eslog.WrongRevisionError
	tombstoned                    // ErrRefused and eslog.ErrStreamTombstoned
	notFound                      // eslog.ErrStreamNotFound
	deleted                       // eslog.ErrStreamDeleted
)

// TestExpectedRevisions decides appends, empty appends and deletes with
// each kind of expected revision against a stream in each state. Every
// answer is checked against the store: what was stored, the positions,
// the state after, the $deleted event and its id, and that a refused
// request stored nothing. A later append to the stream checks that the
// shard's cached state is the stored one.
func TestExpectedRevisions(t *testing.T) {
	type op struct {
		del    eslog.DeleteMode
		empty  bool // an append of no events
		expect eslog.Expectation
	}
	ap := func(x eslog.Expectation) op { return op{expect: x} }
	empty := func(x eslog.Expectation) op { return op{expect: x, empty: true} }
	soft := func(x eslog.Expectation) op { return op{del: eslog.DeleteSoft, expect: x} }
	tomb := func(x eslog.Expectation) op { return op{del: eslog.DeleteTombstone, expect: x} }
	kinds := []eslog.Expectation{xAny, xNoStream, xExists, xExact(0), xExact(1)}
	ops := func(mk func(eslog.Expectation) op) []op {
		var out []op
		for _, k := range kinds {
			out = append(out, mk(k))
		}
		return out
	}
	// want[state][op kind][expectation]
	W, C, R, T, N, D := okWrite, okCheck, wrongRev, tombstoned, notFound, deleted
	want := map[string]map[string][]outcomeKind{
		//                  any no-stream exists exact0 exact1
		"absent":       {"append": {W, W, R, R, R}, "empty": {C, C, R, R, R}, "soft": {N, N, R, R, R}, "tomb": {W, W, R, R, R}},
		"existing":     {"append": {W, R, W, R, W}, "empty": {C, R, C, R, C}, "soft": {W, R, W, R, W}, "tomb": {W, R, W, R, W}},
		"soft-deleted": {"append": {W, W, R, R, R}, "empty": {C, C, R, R, R}, "soft": {D, D, R, R, R}, "tomb": {W, W, R, R, R}},
		"tombstoned":   {"append": {T, T, T, T, T}, "empty": {T, T, T, T, T}, "soft": {T, T, T, T, T}, "tomb": {T, T, T, T, T}},
	}
	for _, setup := range streamSetups {
		for kind, mk := range map[string]func(eslog.Expectation) op{"append": ap, "empty": empty, "soft": soft, "tomb": tomb} {
			for i, o := range ops(mk) {
				wantKind := want[setup.name][kind][i]
				t.Run(fmt.Sprintf("%s/%s/%v", setup.name, kind, o.expect), func(t *testing.T) {
					f := newFakeLog(t)
					w := newTestWriter(t, f, Config{Shards: 2})
					setup.setup(t, w)
					before, _, _ := f.State("s")
					applied := f.appliedCount()
					var (
						res  AppendResult
						dres DeleteResult
						err  error
						aop  = appendOf("s", o.expect, id(1), id(2))
					)
					if o.empty {
						aop = AppendOp{Stream: "s", Expect: o.expect}
					}
					if o.del != eslog.DeleteNone {
						dres, err = w.Delete(testCtx(t), DeleteOp{Stream: "s", Expect: o.expect, Mode: o.del})
					} else {
						res, err = w.Append(testCtx(t), aop)
					}
					after, _, _ := f.State("s")
					if wantKind != okWrite && f.appliedCount() != applied {
						t.Fatalf("%d commits applied by a request that stores nothing", f.appliedCount()-applied)
					}
					switch wantKind {
					case okWrite:
						if err != nil {
							t.Fatalf("error %v, want success", err)
						}
						if o.del == eslog.DeleteNone {
							first := before.NextRevision()
							if res.FirstRevision != first || res.LastRevision != first+1 || !res.Exists {
								t.Fatalf("result %+v, want revisions %d..%d", res, first, first+1)
							}
							checkStored(t, f, aop, res)
							if after.Head != first+1 || after.TruncateBefore != before.TruncateBefore || !after.Exists() {
								t.Fatalf("state after %+v", after)
							}
						} else {
							checkDeletion(t, f, "s", o.del, before, dres)
						}
					case okCheck:
						wantRev, exists := before.Head, before.Exists()
						if !exists {
							wantRev = 0
						}
						if err != nil || res.FirstRevision != wantRev || res.LastRevision != wantRev || res.Exists != exists ||
							res.FirstPosition != 0 || res.CommitTime != 0 {
							t.Fatalf("empty append: %+v, %v; want revision %d, exists %t", res, err, wantRev, exists)
						}
					case wrongRev:
						var wr *eslog.WrongRevisionError
						if !errors.As(err, &wr) {
							t.Fatalf("error %v, want a wrong revision", err)
						}
						wantErr := eslog.WrongRevisionError{Stream: "s", StreamID: before.ID, Expected: o.expect, Head: before.Head,
							Exists: before.Exists(), HeadPosition: before.LastPosition, TruncateBefore: before.TruncateBefore}
						if *wr != wantErr {
							t.Fatalf("error %+v, want %+v", *wr, wantErr)
						}
					case tombstoned:
						var se *eslog.StreamError
						if !errors.Is(err, ErrRefused) || !errors.As(err, &se) || !errors.Is(se.Err, eslog.ErrStreamTombstoned) ||
							Reason(err) != ReasonStreamTombstoned {
							t.Fatalf("error %v, want a refused write to a tombstoned stream", err)
						}
					case notFound, deleted:
						target := map[outcomeKind]error{notFound: eslog.ErrStreamNotFound, deleted: eslog.ErrStreamDeleted}[wantKind]
						var se *eslog.StreamError
						if !errors.As(err, &se) || !errors.Is(se.Err, target) || se.Stream != "s" {
							t.Fatalf("error %v, want %v", err, target)
						}
					}
					// The shard's state of "s" is the stored one: the fake
					// checks what the next write is decided against.
					st, _, _ := f.State("s")
					res, err = w.Append(testCtx(t), appendOf("s", xAny, id(3)))
					if st.Tombstoned {
						if !errors.Is(err, ErrRefused) {
							t.Fatalf("append after: %v, want refused", err)
						}
						return
					}
					if err != nil || res.FirstRevision != st.NextRevision() {
						t.Fatalf("append after: %+v, %v; want revision %d", res, err, st.NextRevision())
					}
				})
			}
		}
	}
}

// checkDeletion checks a delete's answer against the store: the state
// after it, and its "$deleted" event at the answer's position, whose id
// the writer chose (invariant 5).
func checkDeletion(t *testing.T, f *fakeLog, stream string, mode eslog.DeleteMode, before eslog.StreamState, r DeleteResult) {
	t.Helper()
	after, ok, _ := f.State(stream)
	if !ok {
		t.Fatalf("%s not stored after its deletion", stream)
	}
	switch mode {
	case eslog.DeleteSoft:
		if after.TruncateBefore != before.Head+1 || after.Tombstoned || after.Exists() {
			t.Fatalf("state after a soft delete %+v (before %+v)", after, before)
		}
	case eslog.DeleteTombstone:
		if !after.Tombstoned || after.TruncateBefore != before.NextRevision() {
			t.Fatalf("state after a tombstone %+v (before %+v)", after, before)
		}
	}
	evs := f.stored()
	if r.Position == 0 || r.Position > uint64(len(evs)) || after.LastPosition != r.Position {
		t.Fatalf("delete answered position %d; %d events stored, stream's last change at %d", r.Position, len(evs), after.LastPosition)
	}
	e := evs[r.Position-1]
	if e.stream != "$deleted" || e.deletes != stream || e.tombstone != (mode == eslog.DeleteTombstone) || e.created != r.CommitTime {
		t.Fatalf("event at %d: %+v; answer %+v", r.Position, e, r)
	}
	var write *eslog.Write
	for _, c := range f.commitCalls() {
		for i := range c.writes {
			if c.writes[i].Delete != eslog.DeleteNone && c.writes[i].FirstPosition == r.Position && c.writes[i].Err == nil {
				write = &c.writes[i]
			}
		}
	}
	if write == nil || write.DeletionID == ([16]byte{}) || write.DeletionID != e.id {
		t.Fatalf("delete write %+v: its DeletionID must be set and be the id of the $deleted event %s", write, eslog.FormatID(e.id))
	}
	if loc, ok := f.idLocation(e.id); !ok || loc.StreamID != 1 || loc.Position != r.Position {
		t.Fatalf("deletion id at %+v (%t)", loc, ok)
	}
}

// TestDeletionIDs: each delete write carries its own non-zero DeletionID,
// chosen by the writer before the commit.
func TestDeletionIDs(t *testing.T) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 2})
	mustAppend(t, w, appendOf("a", xAny, id(1)))
	mustAppend(t, w, appendOf("b", xAny, id(2)))
	seen := make(map[[16]byte]bool)
	for _, d := range []struct {
		stream string
		mode   eslog.DeleteMode
	}{{"a", eslog.DeleteSoft}, {"b", eslog.DeleteTombstone}, {"never-written", eslog.DeleteTombstone}} {
		before, _, _ := f.State(d.stream)
		r := mustDelete(t, w, d.stream, xAny, d.mode)
		checkDeletion(t, f, d.stream, d.mode, before, r)
		calls := f.commitCalls()
		last := calls[len(calls)-1]
		if len(last.writes) != 1 || last.writes[0].Delete != d.mode {
			t.Fatalf("delete of %s committed %+v", d.stream, last.writes)
		}
		did := last.writes[0].DeletionID
		if did == ([16]byte{}) || seen[did] {
			t.Fatalf("delete of %s: DeletionID %s is zero or not new", d.stream, eslog.FormatID(did))
		}
		seen[did] = true
	}
}

// TestIdempotentRetry: an append whose client ids are all stored, as one
// whole append to the same stream, is a retry: it gets the original
// answer, positions and commit time (read from the store) included,
// whatever its expected revision and whatever came since, and stores
// nothing. Anything else with stored ids is an EVENT_ID conflict.
func TestIdempotentRetry(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 4, Clock: func() time.Time { return time.Unix(0, now.Add(int64(time.Second))) }})
	ctx := testCtx(t)

	orig := mustAppend(t, w, appendOf("x", xNoStream, id(1), id(2)))
	mustAppend(t, w, appendOf("y", xAny, id(3)))
	mustAppend(t, w, appendOf("x", xAny, id(4)))
	calls := len(f.commitCalls())
	for _, x := range []eslog.Expectation{xNoStream, xAny, xExact(1), xExact(7)} {
		r, err := w.Append(ctx, appendOf("x", x, id(1), id(2)))
		if err != nil || r != orig {
			t.Fatalf("retry expecting %v: %+v, %v; want the original %+v", x, r, err, orig)
		}
	}
	r, err := w.Append(ctx, appendOf("x", xAny, id(4)))
	if err != nil || r.FirstRevision != 2 || r.FirstPosition != 4 {
		t.Fatalf("retry of the last append: %+v, %v", r, err)
	}
	if n := len(f.commitCalls()); n != calls {
		t.Fatalf("retries committed %d times", n-calls)
	}
	for _, op := range []AppendOp{
		appendOf("x", xAny, id(1)),               // a part
		appendOf("x", xAny, id(2), id(1)),        // another order
		appendOf("x", xAny, id(1), id(2), id(4)), // two appends
		appendOf("x", xAny, id(1), id(2), id(5)), // more
		appendOf("y", xAny, id(1), id(2)),        // another stream
		appendOf("z", xAny, id(1), id(2)),        // a new stream
		appendOf("x", xAny, id(3)),               // y's
	} {
		_, err := w.Append(ctx, op)
		var idc *eslog.IDConflictError
		if !errors.As(err, &idc) || idc.Stream != op.Stream {
			t.Fatalf("append of stored ids %v to %s: %v, want an id conflict", op.Events, op.Stream, err)
		}
	}
	if n := len(f.commitCalls()); n != calls {
		t.Fatalf("conflicts committed %d times", n-calls)
	}
	// Server-chosen ids are never looked up: two appends of the "same"
	// events without client ids are two appends.
	a := AppendOp{Stream: "x", Events: events(id(50))}
	r1 := mustAppend(t, w, a)
	a.Events = events(id(51))
	r2 := mustAppend(t, w, a)
	if r2.FirstRevision != r1.FirstRevision+1 {
		t.Fatalf("appends without client ids: %+v then %+v", r1, r2)
	}

	// A retried AppendMulti gets its original answers; one with some of
	// its entries stored and some not is a conflict.
	multi := []AppendOp{appendOf("m1", xNoStream, id(10)), appendOf("m2", xNoStream, id(11), id(12))}
	mres, err := w.AppendMulti(ctx, multi)
	if err != nil {
		t.Fatal(err)
	}
	calls = len(f.commitCalls())
	again, err := w.AppendMulti(ctx, multi)
	if err != nil || len(again) != 2 || again[0] != mres[0] || again[1] != mres[1] {
		t.Fatalf("retried AppendMulti: %+v, %v; want %+v", again, err, mres)
	}
	_, err = w.AppendMulti(ctx, []AppendOp{multi[0], appendOf("m3", xNoStream, id(13))})
	var idc *eslog.IDConflictError
	if !errors.As(err, &idc) || idc.Stream != "m3" {
		t.Fatalf("AppendMulti with one entry stored: %v, want an id conflict on m3", err)
	}
	if n := len(f.commitCalls()); n != calls {
		t.Fatalf("retried AppendMulti committed %d times", n-calls)
	}
}

// TestClock: the writer stamps each round with one reading of its clock
// (Write.Time); the answer's commit time is what the store made of it,
// which never goes backwards in position order.
func TestClock(t *testing.T) {
	var now atomic.Int64
	at := func(sec int64) int64 { return time.Date(2025, 1, 1, 0, 0, int(sec), 0, time.UTC).UnixNano() }
	var tick atomic.Bool // every reading a second later than the last
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 2, Clock: func() time.Time {
		if tick.Load() {
			return time.Unix(0, now.Add(int64(time.Second)))
		}
		return time.Unix(0, now.Load())
	}})
	lastTime := func() int64 {
		calls := f.commitCalls()
		return calls[len(calls)-1].writes[0].Time
	}

	now.Store(at(10))
	r := mustAppend(t, w, appendOf("a", xAny, id(1)))
	if lastTime() != at(10) || r.CommitTime != at(10) {
		t.Fatalf("write time %d, commit time %d; want %d", lastTime(), r.CommitTime, at(10))
	}
	now.Store(at(5)) // the clock steps back
	r = mustAppend(t, w, appendOf("a", xAny, id(2)))
	if lastTime() != at(5) || r.CommitTime != at(10) {
		t.Fatalf("clock stepped back: write time %d, commit time %d; want %d, %d", lastTime(), r.CommitTime, at(5), at(10))
	}
	now.Store(at(20))
	d := mustDelete(t, w, "a", xAny, eslog.DeleteSoft)
	if lastTime() != at(20) || d.CommitTime != at(20) {
		t.Fatalf("delete: write time %d, commit time %d; want %d", lastTime(), d.CommitTime, at(20))
	}
	if st, _, _ := f.State("a"); st.Updated != at(20) || st.Created != at(10) {
		t.Fatalf("state %+v", st)
	}
	now.Store(at(30))
	names := streamsOnShards(t, w, "m")
	mr, err := w.AppendMulti(testCtx(t), []AppendOp{appendOf(names[0], xAny, id(3)), appendOf(names[1], xAny, id(4))})
	if err != nil || mr[0].CommitTime != at(30) || mr[1].CommitTime != at(30) || lastTime() != at(30) {
		t.Fatalf("AppendMulti: %+v, %v", mr, err)
	}

	// One round, one reading: every write of it has the same time.
	tick.Store(true)
	out := appendRound(t, w, f, nil, appendOf("b", xAny, id(5)), appendOf("b", xAny, id(6)), AppendOp{Stream: "b", Events: events(id(7))})
	calls := f.commitCalls()
	c := calls[len(calls)-1]
	if len(c.writes) != 3 || c.writes[0].Time <= at(30) {
		t.Fatalf("a round of 3 appends: %+v", c.writes)
	}
	for i, o := range out {
		if o.err != nil || c.writes[i].Time != c.writes[0].Time || o.res.CommitTime != c.writes[0].Time {
			t.Fatalf("write %d: time %d, answer %+v, %v; want time %d", i, c.writes[i].Time, o.res, o.err, c.writes[0].Time)
		}
	}
}
