package log

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/go-cmp/cmp"
)

// Reads over the range indexes (one stream-index entry per append, one
// category entry per large append, one type entry per run of a type)
// against a naive model that knows every event by position and answers
// each query one event at a time.

// rangeModel is every event the test appended, by position, and each
// stream's state as the log reported it.
type rangeModel struct {
	events []rangeEvent // events[p-1] is at position p
	states map[string]StreamState
	pos    map[string][]uint64 // stream -> position of each revision
	nextID int
}

type rangeEvent struct {
	pos    uint64
	stream string
	rev    uint64
	typ    string
	id     [16]byte
}

func newRangeModel() *rangeModel {
	return &rangeModel{states: make(map[string]StreamState), pos: make(map[string][]uint64)}
}

// events makes n events whose types are runs drawn from types (switching
// at random, with odds 1 in switchOdds per event).
func (m *rangeModel) newEvents(rng *rand.Rand, n int, types []string, switchOdds int) []Event {
	evs := make([]Event, n)
	typ := types[rng.IntN(len(types))]
	for i := range evs {
		if rng.IntN(switchOdds) == 0 {
			typ = types[rng.IntN(len(types))]
		}
		m.nextID++
		var id [16]byte
		copy(id[:], fmt.Sprintf("range-%010d", m.nextID))
		evs[i] = Event{ID: id, Type: typ, Data: fmt.Appendf(nil, "event %d", m.nextID)}
	}
	return evs
}

// write prepares a write to stream of evs (or a deletion) from the
// model's state of it, which a write earlier in the same commit may have
// moved (predictState).
func (m *rangeModel) write(l *Log, stream string, evs []Event, del DeleteMode) *Write {
	st, ok := m.states[stream]
	w := &Write{State: st, Events: evs, Delete: del, CheckIDs: len(evs) > 0, LookupEpoch: l.IDEpoch()}
	if !ok {
		w.State, w.New = StreamState{ID: l.NewStreamID(), Name: stream}, true
	}
	next := w.State
	predictState(&next, w)
	m.states[stream] = next
	return w
}

// applied records what the log made of ws.
func (m *rangeModel) applied(t *testing.T, ws ...*Write) {
	t.Helper()
	for _, w := range ws {
		if w.Err != nil {
			t.Fatalf("write to %s: %v", w.State.Name, w.Err)
		}
		rev := w.State.NextRevision()
		for i, e := range w.Events {
			pos := w.FirstPosition + uint64(i)
			if pos != uint64(len(m.events))+1 {
				t.Fatalf("write to %s: event %d at %d, want %d", w.State.Name, i, pos, len(m.events)+1)
			}
			m.events = append(m.events, rangeEvent{pos: pos, stream: w.State.Name, rev: rev + uint64(i), typ: e.Type, id: e.ID})
			m.pos[w.State.Name] = append(m.pos[w.State.Name], pos)
		}
		if w.Delete != DeleteNone {
			sys := m.states[deletedStreamName]
			sys.ID, sys.Name = deletedStreamID, deletedStreamName
			typ := "$stream-deleted"
			if w.Delete == DeleteTombstone {
				typ = "$stream-tombstoned"
			}
			m.events = append(m.events, rangeEvent{pos: w.LastPosition, stream: deletedStreamName, rev: sys.NextRevision(), typ: typ})
			m.pos[deletedStreamName] = append(m.pos[deletedStreamName], w.LastPosition)
			sys.Written, sys.Head = true, sys.NextRevision()
			m.states[deletedStreamName] = sys
		}
		m.states[w.State.Name] = w.After
	}
}

// commit commits ws (in one batch) and waits for them.
func (m *rangeModel) commit(t *testing.T, l *Log, ws ...*Write) {
	t.Helper()
	commit(t, l, ws...)
	m.applied(t, ws...)
}

// visible reports whether the event is visible in the model's states.
func (m *rangeModel) visible(e rangeEvent) bool {
	if e.stream == deletedStreamName {
		return true
	}
	st := m.states[e.stream]
	return !st.Tombstoned && e.rev >= st.TruncateBefore
}

// streamWant is what a read of q from a stream in state st returns, with
// positions up to hi: the revisions one by one.
func (m *rangeModel) streamWant(st StreamState, q StreamQuery, hi uint64) []string {
	if !st.Exists() {
		return nil
	}
	if q.To > 0 {
		hi = min(hi, q.To)
	}
	var out []string
	emit := func(rev uint64) bool {
		pos := m.pos[st.Name][rev]
		if pos <= hi {
			out = append(out, fmt.Sprintf("%s@%d:%d", st.Name, rev, pos))
		}
		return q.Max > 0 && uint64(len(out)) == q.Max
	}
	if q.Backward {
		up := st.Head
		if q.FromSet {
			up = min(up, q.From)
		}
		for rev := int64(up); rev >= int64(st.TruncateBefore); rev-- {
			if emit(uint64(rev)) {
				break
			}
		}
		return out
	}
	lo := st.TruncateBefore
	if q.FromSet {
		lo = max(lo, q.From)
	}
	for rev := lo; rev <= st.Head; rev++ {
		if emit(rev) {
			break
		}
	}
	return out
}

// allWant is what a read of $all by q returns, with positions up to hi.
func (m *rangeModel) allWant(q AllQuery, hi uint64) []string {
	if q.To > 0 {
		hi = min(hi, q.To)
	}
	lo, up := uint64(1), hi
	if q.From > 0 {
		if q.Backward {
			up = min(q.From, hi)
		} else {
			lo = q.From
		}
	}
	var out []string
	for i := range m.events {
		e := m.events[i]
		if q.Backward {
			e = m.events[len(m.events)-1-i]
		}
		if e.pos < lo || e.pos > up || !m.visible(e) || !q.matches(e.stream, []byte(e.typ)) {
			continue
		}
		out = append(out, fmt.Sprintf("%s@%d:%d", e.stream, e.rev, e.pos))
		if q.Max > 0 && uint64(len(out)) == q.Max {
			break
		}
	}
	return out
}

// readState reads q from a stream in state st (ReadStateViews).
func readState(t *testing.T, l *Log, st StreamState, q StreamQuery) []string {
	t.Helper()
	var out []string
	err := l.ReadStateViews(context.Background(), &st, q, func(e *EventView) error {
		out = append(out, fmt.Sprintf("%s@%d:%d", e.Stream, e.Revision(), e.Position))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadStateViews(%+v, %+v): %v", st, q, err)
	}
	return out
}

// checkStream compares reads of stream in state st with the model: from
// every revision (or a sample of rng's when there are many), forward and
// backward, with and without Max and To.
func (m *rangeModel) checkStream(t *testing.T, l *Log, rng *rand.Rand, st StreamState) {
	t.Helper()
	hi := l.LastPosition()
	var queries []StreamQuery
	for _, back := range []bool{false, true} {
		for _, max := range []uint64{0, 1, 5} {
			queries = append(queries, StreamQuery{Backward: back, Max: max})
			for rev := uint64(0); rev <= st.Head+1; rev++ {
				if st.Head > 40 && rng.IntN(int(st.Head/20)) != 0 {
					continue
				}
				queries = append(queries, StreamQuery{From: rev, FromSet: true, Backward: back, Max: max})
			}
		}
		poss := m.pos[st.Name]
		for range 8 { // a To inside the stream's positions, anywhere
			to := poss[rng.IntN(len(poss))] + uint64(rng.IntN(3)) - 1
			queries = append(queries, StreamQuery{To: max(to, 1), Backward: back})
			rev := uint64(rng.IntN(int(st.Head) + 1))
			queries = append(queries, StreamQuery{To: max(to, 1), From: rev, FromSet: true, Backward: back, Max: uint64(rng.IntN(4))})
		}
	}
	for _, q := range queries {
		q.Stream = st.Name
		want := m.streamWant(st, q, hi)
		if got := readState(t, l, st, q); !slices.Equal(got, want) {
			t.Fatalf("read %+v of %+v:\n%s", q, st, cmp.Diff(want, got))
		}
	}
}

// checkAll compares filtered reads of $all (through the indexes, and as
// scans) with the model: from a sample of positions, forward and
// backward, with Max and To.
func (m *rangeModel) checkAll(t *testing.T, l *Log, rng *rand.Rand, filters []AllQuery, samples int) {
	t.Helper()
	hi := l.LastPosition()
	for _, f := range filters {
		for i := range samples {
			q := f
			q.Backward = i%2 == 1
			switch i % 6 {
			case 0, 1:
			case 2, 3:
				q.From = 1 + uint64(rng.IntN(int(hi)+1))
			default:
				q.From = 1 + uint64(rng.IntN(int(hi)+1))
				q.To = 1 + uint64(rng.IntN(int(hi)+1))
				q.Max = uint64(rng.IntN(10))
			}
			want := m.allWant(q, hi)
			for _, noIndex := range []bool{false, true} {
				q.NoIndex = noIndex
				if got := describeViews(readAll(t, l, q)); !slices.Equal(got, want) {
					t.Fatalf("read of $all %+v:\n%s", q, cmp.Diff(want, got))
				}
			}
		}
	}
}

// TestReadStreamAcrossRanges: a stream of appends of 1, 7, 100 and 3
// events (another stream's between them, so that its ranges are apart in
// $all), read forward and backward from every revision, with Max and
// with To anywhere (also inside a range); then with TruncateBefore inside
// a range (a state a reader may be given); after a soft delete and more
// appends; after a tombstone.
func TestReadStreamAcrossRanges(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	m := newRangeModel()
	types := []string{"Added", "Removed"}
	for i, n := range []int{1, 7, 100, 3} {
		m.commit(t, l, m.write(l, "other-1", m.newEvents(rng, 1+i, types, 3), DeleteNone))
		m.commit(t, l, m.write(l, "s-1", m.newEvents(rng, n, types, 3), DeleteNone))
		if i == 1 {
			if err := l.db.Flush(); err != nil { // the first ranges in an sstable
				t.Fatal(err)
			}
		}
	}
	st := m.states["s-1"]
	if st.Head != 110 {
		t.Fatalf("head %d", st.Head)
	}
	m.checkStream(t, l, rng, st)

	t.Run("truncated inside a range", func(t *testing.T) {
		for _, tb := range []uint64{1, 4, 7, 8, 9, 50, 107, 108, 110} {
			tst := st
			tst.TruncateBefore = tb
			m.checkStream(t, l, rng, tst)
		}
	})

	t.Run("a range past the state read", func(t *testing.T) {
		// ReadStateViews of an older state: the read stops at its head,
		// inside what is now one range.
		old := st
		old.Head = 60
		m.checkStream(t, l, rng, old)
	})

	t.Run("soft delete", func(t *testing.T) {
		m.commit(t, l, m.write(l, "s-1", nil, DeleteSoft))
		if _, err := readStream(t, l, StreamQuery{Stream: "s-1"}); !errors.Is(err, ErrStreamDeleted) {
			t.Fatalf("read after soft delete: %v", err)
		}
		m.commit(t, l, m.write(l, "s-1", m.newEvents(rng, 9, types, 3), DeleteNone))
		m.commit(t, l, m.write(l, "s-1", m.newEvents(rng, 2, types, 3), DeleteNone))
		st := m.states["s-1"]
		if st.TruncateBefore != 111 || st.Head != 121 {
			t.Fatalf("state %+v", st)
		}
		m.checkStream(t, l, rng, st)
		got, err := readStream(t, l, StreamQuery{Stream: "s-1"})
		if want := m.streamWant(st, StreamQuery{}, l.LastPosition()); err != nil || !slices.Equal(describeViews(got), want) {
			t.Fatalf("ReadStream after soft delete: %v\n%s", err, cmp.Diff(want, describeViews(got)))
		}
		m.checkAll(t, l, rng, []AllQuery{{Categories: []string{"s"}}, {TypePrefixes: []string{"Added"}}}, 20)
	})

	t.Run("tombstone", func(t *testing.T) {
		m.commit(t, l, m.write(l, "s-1", nil, DeleteTombstone))
		if _, err := readStream(t, l, StreamQuery{Stream: "s-1"}); !errors.Is(err, ErrStreamTombstoned) {
			t.Fatalf("read after tombstone: %v", err)
		}
		if got := readState(t, l, m.states["s-1"], StreamQuery{}); len(got) != 0 {
			t.Fatalf("read of the tombstoned state: %v", got)
		}
		m.checkStream(t, l, rng, m.states["other-1"])
		m.checkStream(t, l, rng, m.states[deletedStreamName])
		m.checkAll(t, l, rng, []AllQuery{{Categories: []string{"s"}}, {Categories: []string{"other", "$deleted"}}, {TypePrefixes: []string{"Removed", "$"}}}, 20)
	})
}

// TestReadsStopAtDurable: events applied but not yet durable are not
// read, where one range ends below the published position and the next,
// of one commit, above it; ReadPublished is given the writer's state,
// which counts them.
func TestReadsStopAtDurable(t *testing.T) {
	gate := newGateFS(vfs.NewMem())
	l := openTest(t, gate)
	defer l.Close()
	defer gate.Release()
	rng := rand.New(rand.NewPCG(7, 8))
	m := newRangeModel()
	types := []string{"Added", "Removed"}
	m.commit(t, l, m.write(l, "s-1", m.newEvents(rng, 10, types, 4), DeleteNone))
	m.commit(t, l, m.write(l, "s-1", m.newEvents(rng, 2, types, 4), DeleteNone))
	durable := l.LastPosition()

	gate.Hold()
	ws := []*Write{
		m.write(l, "s-1", m.newEvents(rng, 20, types, 4), DeleteNone),
		m.write(l, "t-1", m.newEvents(rng, 3, types, 4), DeleteNone),
		m.write(l, "s-1", m.newEvents(rng, 1, types, 4), DeleteNone),
	}
	tk, err := l.Commit(ws, false)
	if err != nil {
		t.Fatal(err)
	}
	m.applied(t, ws...)
	if l.LastPosition() != durable {
		t.Fatalf("published %d before the sync, want %d", l.LastPosition(), durable)
	}
	st := m.states["s-1"] // the writer's state: head 32, of which 0..11 durable
	for _, q := range []StreamQuery{
		{}, {Backward: true}, {Backward: true, Max: 1}, {From: 5, FromSet: true}, {From: 11, FromSet: true},
		{From: 12, FromSet: true}, {From: 20, FromSet: true, Backward: true}, {From: 32, FromSet: true, Backward: true, Max: 3},
		{From: 11, FromSet: true, Backward: true, Max: 2},
	} {
		q.Stream = "s-1"
		want := m.streamWant(st, q, durable)
		var got []string
		err := l.ReadPublished(context.Background(), &st, q, func(e *RecordedEvent) error {
			got = append(got, fmt.Sprintf("%s@%d:%d", e.Stream, e.Revision, e.Position))
			return nil
		})
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("ReadPublished %+v: %v\n%s", q, err, cmp.Diff(want, got))
		}
	}
	for _, q := range []AllQuery{{}, {Categories: []string{"s"}}, {TypePrefixes: []string{"Added"}}, {Backward: true, Categories: []string{"s"}}} {
		if got, want := describeViews(readAll(t, l, q)), m.allWant(q, durable); !slices.Equal(got, want) {
			t.Fatalf("ReadAll %+v before the sync:\n%s", q, cmp.Diff(want, got))
		}
	}

	gate.Release()
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.checkStream(t, l, rng, m.states["s-1"])
	m.checkAll(t, l, rng, []AllQuery{{Categories: []string{"s"}}, {TypePrefixes: []string{"Added"}}}, 20)
}

// TestRangesRandomized: seeded random appends (of 1 to 3 events mostly,
// some of 7 to 9 around categoryRangeMin, some of 20 to 120; types in
// runs), commits of several writes (one stream twice in a commit too),
// soft deletes and tombstones, flushes; every few steps, reads of each
// stream and filtered reads of $all (categories, stream prefixes, type
// prefixes of one and of several types) compared with the model.
// -run TestRangesRandomized/seed=N replays a seed.
func TestRangesRandomized(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { rangesRandomRun(t, seed) })
	}
}

func rangesRandomRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0xa11))
	l := openTest(t, nil)
	defer l.Close()
	m := newRangeModel()
	w := newRandomWorkload(rng)
	for step := 1; step <= 60; step++ {
		var ws []*Write
		switch k := rng.IntN(20); {
		case k < 12:
			ws = append(ws, w.appendTo(m, l))
		case k < 16: // several writes in one commit, maybe one stream twice
			for range 2 + rng.IntN(3) {
				ws = append(ws, w.appendTo(m, l))
			}
		case k < 18:
			ws = w.softDelete(m, l)
		case k < 19:
			ws = w.tombstone(m, l)
		default:
			if err := l.db.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if len(ws) > 0 {
			m.commit(t, l, ws...)
		}
		if step%15 == 0 {
			m.checkReads(t, l, rng, randomFilters)
		}
	}
	m.checkStream(t, l, rng, m.states[deletedStreamName])
}

// randomWorkload makes the writes of the randomized tests: appends (of 1
// to 3 events mostly, some of 7 to 9 around categoryRangeMin, some of 20
// to 120; types in runs), soft deletes and tombstones, to five streams in
// three categories; a tombstoned stream is replaced by a new name.
type randomWorkload struct {
	rng   *rand.Rand
	names []string
	gen   map[string]int
}

var randomTypes = []string{"Added", "AddedMore", "Removed", "Renamed"}

// randomFilters are the filtered reads of $all the randomized tests check.
var randomFilters = []AllQuery{
	{Categories: []string{"a"}},
	{Categories: []string{"b", "c"}},
	{StreamPrefixes: []string{"a-"}},
	{StreamPrefixes: []string{"b-1"}}, // the category index, then the prefix
	{TypePrefixes: []string{"Added"}}, // two types' runs, merged
	{TypePrefixes: []string{"Removed", "Renamed", "$stream-"}},
	{TypePrefixes: []string{"Ren"}, StreamPrefixes: []string{"a-"}},
	{StreamPrefixes: []string{"a"}}, // no category: a scan
}

func newRandomWorkload(rng *rand.Rand) *randomWorkload {
	return &randomWorkload{rng: rng, names: []string{"a-1", "a-2", "b-1", "b-2", "c"}, gen: make(map[string]int)}
}

func (w *randomWorkload) name(i int) string {
	if g := w.gen[w.names[i]]; g > 0 {
		return fmt.Sprintf("%s-%d", w.names[i], g)
	}
	return w.names[i]
}

func (w *randomWorkload) size() int {
	switch k := w.rng.IntN(10); {
	case k < 5:
		return 1 + w.rng.IntN(3)
	case k < 8:
		return categoryRangeMin - 1 + w.rng.IntN(3)
	default:
		return 20 + w.rng.IntN(100)
	}
}

// appendTo is an append to a random stream.
func (w *randomWorkload) appendTo(m *rangeModel, l *Log) *Write {
	return m.write(l, w.name(w.rng.IntN(len(w.names))), m.newEvents(w.rng, w.size(), randomTypes, 4), DeleteNone)
}

// softDelete is a soft delete of a random stream, none if it was never
// written.
func (w *randomWorkload) softDelete(m *rangeModel, l *Log) []*Write {
	if n := w.name(w.rng.IntN(len(w.names))); m.states[n].Written {
		return []*Write{m.write(l, n, nil, DeleteSoft)}
	}
	return nil
}

// tombstone is a tombstone of a random stream (replaced by a new name
// from then on), none if it was never written.
func (w *randomWorkload) tombstone(m *rangeModel, l *Log) []*Write {
	i := w.rng.IntN(len(w.names))
	if n := w.name(i); m.states[n].Written {
		w.gen[w.names[i]]++
		return []*Write{m.write(l, n, nil, DeleteTombstone)}
	}
	return nil
}

// checkReads compares every stream with visible events, read at random,
// and the filtered reads of $all with the model.
func (m *rangeModel) checkReads(t *testing.T, l *Log, rng *rand.Rand, filters []AllQuery) {
	t.Helper()
	for n, st := range m.states {
		if st.Exists() && !strings.HasPrefix(n, "$") {
			m.checkStream(t, l, rng, st)
		}
	}
	m.checkAll(t, l, rng, filters, 12)
}
