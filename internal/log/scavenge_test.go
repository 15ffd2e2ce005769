package log

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/go-cmp/cmp"
)

// keyCounts counts the stored keys of each key space.
func keyCounts(t *testing.T, l *Log) map[byte]int {
	t.Helper()
	it, err := l.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := make(map[byte]int)
	for valid := it.First(); valid; valid = it.Next() {
		out[it.Key()[0]]++
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// scavenge runs a whole scavenge and returns its record.
func scavenge(t *testing.T, l *Log, opts ScavengeOptions) ScavengeJob {
	t.Helper()
	j := l.NewScavengeJob("test", time.Now(), 0)
	if err := l.SaveScavengeJob(&j); err != nil {
		t.Fatal(err)
	}
	j, err := l.Scavenge(context.Background(), j, opts)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != ScavengeDone {
		t.Fatalf("scavenge %+v, want done", j)
	}
	return j
}

// checkScavenged checks the store's keys against the model after a
// scavenge: every visible event is stored at its position, every hidden
// one is gone (but the newest event), no stream index entry covers only
// hidden events, and every category and type entry covers a stored
// event.
func (m *rangeModel) checkScavenged(t *testing.T, l *Log) {
	t.Helper()
	last := l.LastPosition()
	for _, e := range m.events {
		_, ok, err := l.get(appendEventKey(nil, e.pos))
		if err != nil {
			t.Fatal(err)
		}
		if want := m.visible(e) || e.pos == last; ok != want {
			t.Fatalf("event %s@%d at %d: stored %v, want %v", e.stream, e.rev, e.pos, ok, want)
		}
	}
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kIndex}, UpperBound: []byte{kType + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		var lo, count uint64
		switch k[0] {
		case kIndex:
			_, r, err := decodeIndexEntry(k, it.Value())
			if err != nil {
				t.Fatal(err)
			}
			lo, count = r.firstPos, r.count
		case kCategory, kType:
			lo = binary.BigEndian.Uint64(k[len(k)-8:])
			if k[0] == kCategory {
				_, count, err = decodeCategoryValue(lo, it.Value())
			} else {
				count, err = decodeRunCount(lo, it.Value())
			}
			if err != nil {
				t.Fatal(err)
			}
		default:
			continue
		}
		stored := false
		for p := lo; p < lo+count && !stored; p++ {
			// Positions past the model's are events of others, visible.
			stored = p > uint64(len(m.events)) || m.visible(m.events[p-1]) || p == last
		}
		if !stored {
			t.Fatalf("index key %x covers positions %d..%d, all hidden", k, lo, lo+count-1)
		}
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
}

// TestScavengeRandomized: random appends (of one event to ranges of a
// hundred, runs of types), soft deletes and tombstones, with a scavenge
// every few steps: the hidden events' keys and the entries covering only
// them are gone, every visible event keeps its position and revision,
// and every read (stream reads forward and backward from every revision,
// filtered reads of $all through the indexes and as scans) answers as
// before, per the model. The counts and the id index do not change.
func TestScavengeRandomized(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { scavengeRandomRun(t, seed) })
	}
}

func scavengeRandomRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5ca))
	l := openTest(t, nil)
	defer l.Close()
	m := newRangeModel()
	w := newRandomWorkload(rng)
	var removed uint64
	for step := 1; step <= 80; step++ {
		var ws []*Write
		switch k := rng.IntN(20); {
		case k < 13:
			ws = append(ws, w.appendTo(m, l))
		case k < 17:
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
		if step%20 == 0 {
			before, stats := keyCounts(t, l), l.Stats()
			j := scavenge(t, l, ScavengeOptions{BatchKeys: 1 + rng.IntN(64)})
			after := keyCounts(t, l)
			removed += j.EventsRemoved
			if got := uint64(before[kEvent] - after[kEvent]); got != j.EventsRemoved {
				t.Fatalf("the job says %d events removed, the event space lost %d keys", j.EventsRemoved, got)
			}
			if after[kID] != before[kID] || after[kStream] != before[kStream] || after[kName] != before[kName] || after[kDeleted] != before[kDeleted] {
				t.Fatalf("keys of ids, streams, names or deletions changed: %v -> %v", before, after)
			}
			if got := l.Stats(); got != stats {
				t.Fatalf("stats %+v, were %+v", got, stats)
			}
			m.checkScavenged(t, l)
			m.checkReads(t, l, rng, randomFilters)
		}
	}
	m.checkStream(t, l, rng, m.states[deletedStreamName])
	if removed == 0 {
		t.Fatal("no scavenge removed anything: the workload deletes too little")
	}
}

// TestScavengePartialRange: with a first visible revision inside an
// append (as stream metadata will give), the append's hidden events go,
// its stream index entry, its category range and the type run reaching
// a visible event stay, and reads through each (the stream from its
// first visible revision, the category and type indexes, a scan of $all)
// return exactly the visible events.
func TestScavengePartialRange(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	m := newRangeModel()
	ev := func(n int, typ string) []Event {
		evs := m.newEvents(rand.New(rand.NewPCG(1, 2)), n, []string{typ}, 1<<30)
		return evs
	}
	m.commit(t, l, m.write(l, "p-1", ev(5, "Old"), DeleteNone))
	m.commit(t, l, m.write(l, "p-1", nil, DeleteSoft))
	// Revisions 5..24 in one append: runs A (5..9), B (10..14), A (15..24).
	big := append(append(ev(5, "A"), ev(5, "B")...), ev(10, "A")...)
	m.commit(t, l, m.write(l, "p-1", big, DeleteNone))
	m.commit(t, l, m.write(l, "q-1", ev(1, "A"), DeleteNone)) // the newest event, not p-1's
	st := m.states["p-1"]
	const first = 12
	before := keyCounts(t, l)
	j := scavenge(t, l, ScavengeOptions{FirstVisible: func(s *StreamState) uint64 {
		if s.ID == st.ID {
			return first
		}
		return DeletedBefore(s)
	}})
	after := keyCounts(t, l)
	if j.EventsRemoved != 5+7 || before[kEvent]-after[kEvent] != 12 {
		t.Fatalf("removed %d events (%d keys), want 12", j.EventsRemoved, before[kEvent]-after[kEvent])
	}
	// Index: p-1's first entry goes, the second stays. Types: Old's run
	// and the first A run go; B (10..14) reaches revision 12, stays.
	if before[kIndex]-after[kIndex] != 1 || before[kType]-after[kType] != 2 || before[kCategory]-after[kCategory] != 5 {
		t.Fatalf("keys before %v, after %v", before, after)
	}
	m.states["p-1"] = StreamState{ID: st.ID, Name: st.Name, Written: true, Head: st.Head, TruncateBefore: first}
	// The model's view of visibility for the reads below.
	var want []string
	for _, e := range m.events {
		if e.stream == "p-1" && e.rev >= first {
			want = append(want, fmt.Sprintf("p-1@%d:%d", e.rev, e.pos))
		}
	}
	for _, q := range []AllQuery{{Categories: []string{"p"}}, {StreamPrefixes: []string{"p-"}, NoIndex: true}} {
		if got := describeViews(readAll(t, l, q)); !slices.Equal(got, want) {
			t.Fatalf("read %+v:\n%s", q, cmp.Diff(want, got))
		}
	}
	var wantB []string
	for _, e := range m.events {
		if e.stream == "p-1" && e.rev >= first && e.typ == "B" {
			wantB = append(wantB, fmt.Sprintf("p-1@%d:%d", e.rev, e.pos))
		}
	}
	if got := describeViews(readAll(t, l, AllQuery{TypePrefixes: []string{"B"}})); !slices.Equal(got, wantB) {
		t.Fatalf("read of type B:\n%s", cmp.Diff(wantB, got))
	}
	for _, back := range []bool{false, true} {
		q := StreamQuery{Stream: "p-1", Backward: back}
		got := readState(t, l, m.states["p-1"], q)
		w := slices.Clone(want)
		if back {
			slices.Reverse(w)
		}
		if !slices.Equal(got, w) {
			t.Fatalf("read %+v:\n%s", q, cmp.Diff(w, got))
		}
	}
	// A second run finds nothing more to do.
	if j := scavenge(t, l, ScavengeOptions{FirstVisible: func(s *StreamState) uint64 {
		if s.ID == st.ID {
			return first
		}
		return DeletedBefore(s)
	}}); j.KeysRemoved != 0 {
		t.Fatalf("a second run removed %d keys", j.KeysRemoved)
	}
}

// scavengeWorkload writes the same streams to l every time: 40 streams
// of appends of 1 to 20 events, of which the even ones are soft-deleted
// and every fifth tombstoned, then more appends to some soft-deleted
// ones.
func scavengeWorkload(t *testing.T, l *Log) *rangeModel {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	m := newRangeModel()
	types := []string{"X", "Y"}
	for i := range 40 {
		for range 1 + rng.IntN(4) {
			m.commit(t, l, m.write(l, fmt.Sprintf("s%d-%d", i%3, i), m.newEvents(rng, 1+rng.IntN(20), types, 3), DeleteNone))
		}
	}
	for i := range 40 {
		switch {
		case i%5 == 0:
			m.commit(t, l, m.write(l, fmt.Sprintf("s%d-%d", i%3, i), nil, DeleteTombstone))
		case i%2 == 0:
			m.commit(t, l, m.write(l, fmt.Sprintf("s%d-%d", i%3, i), nil, DeleteSoft))
		}
	}
	for i := 2; i < 40; i += 4 {
		if i%5 != 0 {
			m.commit(t, l, m.write(l, fmt.Sprintf("s%d-%d", i%3, i), m.newEvents(rng, 3, types, 3), DeleteNone))
		}
	}
	return m
}

// storedKeys lists the keys of the spaces a scavenge deletes from (not
// ids: those of "$deleted" events are random).
func storedKeys(t *testing.T, l *Log) []string {
	t.Helper()
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kEvent}, UpperBound: []byte{kAux}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var out []string
	for valid := it.First(); valid; valid = it.Next() {
		if k := it.Key()[0]; k == kEvent || k == kIndex || k == kCategory || k == kType {
			out = append(out, fmt.Sprintf("%x", it.Key()))
		}
	}
	return out
}

// TestScavengeResume: a scavenge stopped after two batches, or in its id
// sweep, its store closed (cleanly, then by a crash: the file system
// drops what was not synced) and reopened, goes on from its stored
// cursors and ends with the same keys and counts as one run through.
func TestScavengeResume(t *testing.T) {
	for _, forget := range []bool{false, true} {
		opts := ScavengeOptions{BatchKeys: 16}
		if forget {
			opts.ForgetIDsBefore = math.MaxInt64 // every id of an event hidden for good
		}
		ref := openTest(t, nil)
		m := scavengeWorkload(t, ref)
		batches := 0
		wholeOpts := opts
		wholeOpts.Progress = func(ScavengeJob) { batches++ }
		whole := scavenge(t, ref, wholeOpts)
		wantKeys, wantIDs := storedKeys(t, ref), keyCounts(t, ref)[kID]
		m.checkScavenged(t, ref)
		if err := ref.Close(); err != nil {
			t.Fatal(err)
		}
		if forget && whole.IDsRemoved == 0 || !forget && whole.IDsRemoved != 0 {
			t.Fatalf("forget %v: %d ids removed", forget, whole.IDsRemoved)
		}
		for _, stopAfter := range []int{2, batches - 2} {
			for _, crash := range []bool{false, true} {
				t.Run(fmt.Sprintf("forget=%v/stop=%d/crash=%v", forget, stopAfter, crash), func(t *testing.T) {
					fs := vfs.NewCrashableMem()
					l := openTest(t, fs)
					m := scavengeWorkload(t, l)
					j := l.NewScavengeJob("resumed", time.Now(), 0)
					first := opts
					first.StopAfterBatches = stopAfter
					j, err := l.Scavenge(context.Background(), j, first)
					if err != nil || j.State != ScavengeStopped || j.KeysRemoved == 0 {
						t.Fatalf("first run: %+v, %v", j, err)
					}
					if forget && stopAfter > 2 && j.IDsAfter == "" {
						t.Fatalf("stopped after %d of %d batches before the id sweep: %+v", stopAfter, batches, j)
					}
					if crash {
						crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
						_ = l.Close()
						fs = crashed
					} else if err := l.Close(); err != nil {
						t.Fatal(err)
					}
					l = openTest(t, fs)
					defer l.Close()
					stored, ok, err := l.ScavengeJob()
					if err != nil || !ok || stored.State != ScavengeStopped || stored.NextStream == 0 || stored.KeysRemoved != j.KeysRemoved {
						t.Fatalf("stored job %+v, %v, %v; the run ended with %+v", stored, ok, err, j)
					}
					j, err = l.Scavenge(context.Background(), stored, opts)
					if err != nil || j.State != ScavengeDone {
						t.Fatalf("second run: %+v, %v", j, err)
					}
					if j.EventsRemoved != whole.EventsRemoved || j.KeysRemoved != whole.KeysRemoved || j.BytesRemoved != whole.BytesRemoved ||
						j.StreamsDone != whole.StreamsDone || j.IDsRemoved != whole.IDsRemoved {
						t.Fatalf("resumed job %+v, one run %+v", j, whole)
					}
					if got := storedKeys(t, l); !slices.Equal(got, wantKeys) {
						t.Fatalf("keys after the resumed job differ:\n%s", cmp.Diff(wantKeys, got))
					}
					if got := keyCounts(t, l)[kID]; got != wantIDs {
						t.Fatalf("%d ids after the resumed job, %d after one run", got, wantIDs)
					}
					m.checkScavenged(t, l)
				})
			}
		}
	}
}

// TestScavengeForgetsOldIDs: with ForgetIDsBefore, the ids of events
// hidden for good (soft-deleted, tombstoned, truncated) and committed
// before it are removed, those of visible events and of younger hidden
// ones stay; a store where the only events older than the cut are
// hidden keeps every id (the cut stops at a stored event).
func TestScavengeForgetsOldIDs(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	next := 0
	at := func(name string, t0 int64, n int, del DeleteMode) []Event {
		t.Helper()
		s, ok, err := l.State(name)
		if err != nil {
			t.Fatal(err)
		}
		w := &Write{State: s, Time: t0, CheckIDs: true}
		if !ok {
			w.State, w.New = StreamState{ID: l.NewStreamID(), Name: name}, true
		}
		for range n {
			next++
			w.Events = append(w.Events, testEvent(next))
		}
		commit(t, l, w)
		if del != DeleteNone {
			s, _, _ = l.State(name)
			d := &Write{State: s, Time: t0, Delete: del, DeletionID: testEvent(1000 + next).ID}
			if del == DeleteTruncate {
				d.TruncateTo = uint64(n - 1)
			}
			commit(t, l, d)
		}
		return w.Events
	}
	const old, cut, young = 100, 200, 300
	oldSoft := at("soft-1", old, 2, DeleteSoft)
	oldTomb := at("tomb-1", old, 2, DeleteTombstone)
	oldTrunc := at("trunc-1", old, 3, DeleteTruncate) // revisions 0, 1 hidden
	oldKept := at("kept-1", old, 2, DeleteNone)
	youngSoft := at("young-1", young, 2, DeleteSoft)
	at("newest-1", young+100, 1, DeleteNone)
	j := scavenge(t, l, ScavengeOptions{ForgetIDsBefore: cut})
	if j.IDsRemoved != 6 {
		t.Fatalf("%d ids removed, want 6: %+v", j.IDsRemoved, j)
	}
	found := func(evs ...Event) []bool {
		t.Helper()
		ids := make([][16]byte, len(evs))
		for i := range evs {
			ids[i] = evs[i].ID
		}
		locs, err := l.LookupIDs(ids)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]bool, len(locs))
		for i := range locs {
			out[i] = locs[i].Found
		}
		return out
	}
	for _, tc := range []struct {
		what string
		evs  []Event
		want []bool
	}{
		{"old soft-deleted", oldSoft, []bool{false, false}},
		{"old tombstoned", oldTomb, []bool{false, false}},
		{"old truncated", oldTrunc, []bool{false, false, true}},
		{"old visible", oldKept, []bool{true, true}},
		{"young soft-deleted", youngSoft, []bool{true, true}},
	} {
		if got := found(tc.evs...); !slices.Equal(got, tc.want) {
			t.Errorf("%s: ids found %v, want %v", tc.what, got, tc.want)
		}
	}
	// A second run finds nothing more; the removed ids can be stored again.
	if j := scavenge(t, l, ScavengeOptions{ForgetIDsBefore: cut}); j.IDsRemoved != 0 {
		t.Fatalf("second run removed %d ids", j.IDsRemoved)
	}
	// As the writer does: the ids looked up after the epoch read (not 0,
	// which would check the in-memory ids of the last commits, the
	// removed ones among them, as a replica's write does).
	commit(t, l, &Write{State: StreamState{ID: l.NewStreamID(), Name: "other-1"}, New: true, Events: oldSoft,
		CheckIDs: true, LookupEpoch: l.IDEpoch()})
	if got := found(oldSoft...); !slices.Equal(got, []bool{true, true}) {
		t.Fatalf("ids stored again: found %v", got)
	}

	// Only hidden events before the cut: no stored event is older, so no
	// id goes.
	l2 := openTest(t, nil)
	defer l2.Close()
	l = l2
	at("soft-1", old, 2, DeleteNone)
	s, _, _ := l.State("soft-1")
	commit(t, l, &Write{State: s, Time: young, Delete: DeleteSoft, DeletionID: testEvent(2000).ID}) // its $deleted event is young
	at("newest-1", young, 1, DeleteNone)
	scavenge(t, l, ScavengeOptions{}) // the records go, the ids stay
	if j := scavenge(t, l, ScavengeOptions{ForgetIDsBefore: cut}); j.IDsRemoved != 0 {
		t.Fatalf("%d ids removed past the cut's last stored event", j.IDsRemoved)
	}
}

// TestScavengeConcurrent: while scavenges run again and again, appends
// go on to other streams, streams are read, and a reader pages through
// $all from the start as a subscription's catch-up does: it sees every
// visible event exactly once, in position order, none hidden. Run with
// -race.
func TestScavengeConcurrent(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	m := scavengeWorkload(t, l)
	hidden := make(map[uint64]bool) // positions hidden before the reader starts
	for _, e := range m.events {
		if !m.visible(e) {
			hidden[e.pos] = true
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg       sync.WaitGroup
		appended atomic.Uint64 // live events appended
		jobsDone atomic.Bool   // the stream reads stop then
		errs     = make(chan error, 8)
	)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
		cancel()
	}
	wg.Add(1)
	go func() { // appends to streams never deleted
		defer wg.Done()
		for i := 0; ctx.Err() == nil && i < 400; i++ {
			name := fmt.Sprintf("live-%d", i%7)
			s, ok, err := l.State(name)
			if err != nil {
				report(err)
				return
			}
			w := &Write{State: s, Events: []Event{testEvent(100000 + i), testEvent(200000 + i)}, CheckIDs: true, LookupEpoch: l.IDEpoch()}
			if !ok {
				w.State, w.New = StreamState{ID: l.NewStreamID(), Name: name}, true
			}
			tk, err := l.Commit([]*Write{w}, false)
			if err == nil && w.Err != nil {
				err = w.Err
			}
			if err == nil {
				err = tk.Wait(ctx)
			}
			if err != nil {
				report(err)
				return
			}
			appended.Add(2)
		}
	}()
	wg.Add(1)
	go func() { // stream reads of the visible streams
		defer wg.Done()
		for ctx.Err() == nil && !jobsDone.Load() {
			for n, st := range m.states {
				if !st.Exists() || strings.HasPrefix(n, "$") {
					continue
				}
				var got []string
				err := l.ReadStreamViews(ctx, StreamQuery{Stream: n}, func(e *EventView) error {
					got = append(got, fmt.Sprintf("%s@%d:%d", e.Stream, e.Revision(), e.Position))
					return nil
				})
				if err != nil && ctx.Err() == nil {
					report(fmt.Errorf("read %s: %w", n, err))
					return
				}
				if want := m.streamWant(st, StreamQuery{Stream: n}, l.LastPosition()); err == nil && !slices.Equal(got, want) {
					report(fmt.Errorf("read %s: %s", n, cmp.Diff(want, got)))
					return
				}
			}
		}
	}()
	var seen []uint64
	wg.Add(1)
	go func() { // $all, page by page, until the appender is done and all is read
		defer wg.Done()
		from := uint64(1)
		for {
			n := 0
			err := l.ReadAllViews(ctx, AllQuery{From: from, Max: 37}, func(e *EventView) error {
				seen = append(seen, e.Position)
				from = e.Position + 1
				n++
				return nil
			}, nil)
			if err != nil {
				if ctx.Err() == nil {
					report(err)
				}
				return
			}
			if n == 0 && appended.Load() == 800 {
				return
			}
			if n == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var jobs int
	for ctx.Err() == nil && appended.Load() < 800 {
		j := l.NewScavengeJob("c", time.Now(), 0)
		opts := ScavengeOptions{BatchKeys: 8, KeysPerSecond: 3000}
		if jobs%2 == 1 { // every other job sweeps the ids too
			opts.ForgetIDsBefore = math.MaxInt64
		}
		if _, err := l.Scavenge(ctx, j, opts); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		jobs++
	}
	jobsDone.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if jobs == 0 {
		t.Fatal("no scavenge ran")
	}
	m.checkScavenged(t, l) // for the workload's streams; the live ones follow
	last := l.LastPosition()
	var want []uint64
	for p := uint64(1); p <= last; p++ {
		if !hidden[p] {
			want = append(want, p)
		}
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("$all read page by page (%d events) differs from the visible positions (%d):\n%s", len(seen), len(want), cmp.Diff(want, seen))
	}
}

// TestMissingEventIsCorruption: an event missing where no scavenge
// removed one is corruption for a read through the category and type
// indexes and for CommitTime; below the positions scavenges removed
// (ScavengeJob.RemovedBelow, kept across a reopen) it is a scavenged
// event.
func TestMissingEventIsCorruption(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, fs)
	var evs []Event
	for i := range 10 { // one append of 10: a category range, a type run
		evs = append(evs, testEvent(i+1))
	}
	w := appendTo(t, l, "cat-1", evs...)
	appendTo(t, l, "cat-2", testEvent(20))
	missing := w.FirstPosition + 3
	if err := l.db.Delete(appendEventKey(nil, missing), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	for _, q := range []AllQuery{{Categories: []string{"cat"}}, {TypePrefixes: []string{testEvent(1).Type}}} {
		err := l.ReadAll(context.Background(), q, func(*RecordedEvent) error { return nil }, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAll %+v over a missing event: %v, want ErrCorrupt", q, err)
		}
	}
	if _, err := l.CommitTime(missing); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("CommitTime of a missing event: %v, want ErrCorrupt", err)
	}
	// A scavenge removes cat-1's events (all but the visible head of
	// cat-2): the missing one is now below what scavenges removed.
	s, _, _ := l.State("cat-1")
	commit(t, l, &Write{State: s, Delete: DeleteSoft})
	appendTo(t, l, "other-1", testEvent(30))
	scavenge(t, l, ScavengeOptions{})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, fs)
	defer l.Close()
	if _, err := l.CommitTime(missing); !errors.Is(err, ErrScavenged) {
		t.Fatalf("CommitTime below what scavenges removed, reopened: %v, want ErrScavenged", err)
	}
	if got := readAll(t, l, AllQuery{Categories: []string{"cat"}}); len(got) != 1 || got[0].Stream != "cat-2" {
		t.Fatalf("ReadAll of the category after the scavenge: %d events", len(got))
	}
}

// TestOldScavengeRecordIsLenient: a store whose scavenge record predates
// RemovedBelow treats every gap as a scavenged event, as it did, and new
// jobs keep that bound.
func TestOldScavengeRecordIsLenient(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, fs)
	w := appendTo(t, l, "a-1", testEvent(1), testEvent(2), testEvent(3))
	appendTo(t, l, "a-2", testEvent(4))
	gap := w.FirstPosition + 1
	if err := l.db.Delete(appendEventKey(nil, gap), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	old := []byte(`{"id":"old","state":"done","started":1,"finished":2,"keys_per_second":0,"next_stream":9,"streams_done":1,` +
		`"streams_total":1,"events_removed":1,"keys_removed":1,"bytes_removed":60,"disk_before":0,"disk_after":0,"min_position":0,"max_position":0}`)
	if err := l.db.Set(scavengeKey(), old, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, fs)
	defer l.Close()
	if _, err := l.CommitTime(gap); !errors.Is(err, ErrScavenged) {
		t.Fatalf("CommitTime of a gap under an old record: %v, want ErrScavenged", err)
	}
	if got := readAll(t, l, AllQuery{TypePrefixes: []string{"Tested"}}); len(got) != 3 { // through the type runs
		t.Fatalf("ReadAll of the type: %d events, want the 3 stored", len(got))
	}
	if j := l.NewScavengeJob("new", time.Now(), 0); j.RemovedBelow != l.LastPosition()+1 {
		t.Fatalf("a new job's bound %d, want %d", j.RemovedBelow, l.LastPosition()+1)
	}
}

// TestRetryOfScavengedAppend: a retry of an append whose stream was
// deleted and scavenged finds the ids (kept) and its events gone: the
// log answers its commit time with ErrScavenged, not as corruption.
func TestRetryOfScavengedAppend(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	w := appendTo(t, l, "gone-1", testEvent(1), testEvent(2))
	s, _, _ := l.State("gone-1")
	commit(t, l, &Write{State: s, Delete: DeleteSoft})
	appendTo(t, l, "other-1", testEvent(3))
	scavenge(t, l, ScavengeOptions{})
	locs, err := l.LookupIDs([][16]byte{testEvent(1).ID, testEvent(2).ID})
	if err != nil || !locs[0].Found || !locs[1].Found || locs[0].Position != w.FirstPosition {
		t.Fatalf("ids after the scavenge: %+v, %v", locs, err)
	}
	if _, err := l.CommitTime(w.FirstPosition); !errors.Is(err, ErrScavenged) {
		t.Fatalf("CommitTime of a scavenged event: %v, want ErrScavenged", err)
	}
	if _, err := l.CommitTime(l.LastPosition() + 5); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("CommitTime past the end: %v, want ErrCorrupt", err)
	}
}

// TestScavengeLeavesLimitHidden: events that only a retention limit hides
// stay through a scavenge (a limit is a view: lifting it shows them
// again), while the same stream's soft-deleted events go; once a
// truncate makes the limit's cut durable, the scavenge removes them too,
// and lifting the limit shows nothing older. The truncate keeps the
// stream (its head, its existence, its last change), is capped at the
// head, and changes the stream's state alone: no event, no position, the
// counts less what it hid.
func TestScavengeLeavesLimitHidden(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	var live []Committed
	l.OnPublish(func(evs []Committed) { live = append(live, evs...) })
	appendTo(t, l, "lim-1", testEvent(1), testEvent(2))
	s, _, _ := l.State("lim-1")
	commit(t, l, &Write{State: s, Delete: DeleteSoft}) // revisions 0, 1 deleted
	appendTo(t, l, "lim-1", testEvent(3), testEvent(4), testEvent(5))
	l.SetLimits("lim-1", false, Limits{MaxCount: 1}) // hides revisions 2, 3
	appendTo(t, l, "other-1", testEvent(6))
	j := scavenge(t, l, ScavengeOptions{})
	if j.EventsRemoved != 2 {
		t.Fatalf("removed %d events, want the 2 deleted", j.EventsRemoved)
	}
	read := func() []uint64 {
		t.Helper()
		evs, err := readStream(t, l, StreamQuery{Stream: "lim-1"})
		if err != nil {
			t.Fatal(err)
		}
		var revs []uint64
		for _, e := range evs {
			revs = append(revs, e.Revision)
		}
		return revs
	}
	if got := read(); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("with the limit: revisions %v, want [4]", got)
	}
	l.SetLimits("lim-1", false, Limits{})
	if got := read(); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("the limit lifted: revisions %v, want [2 3 4]", got)
	}

	// A truncate past the head stops at it: revisions 2 and 3 go.
	l.SetLimits("lim-1", false, Limits{MaxCount: 1})
	s, _, _ = l.State("lim-1")
	tw := &Write{State: s, Delete: DeleteTruncate, TruncateTo: 10}
	live, last, stats := nil, l.LastPosition(), l.Stats()
	commit(t, l, tw)
	if a := tw.After; a.TruncateBefore != 4 || a.Head != 4 || !a.Exists() || a.Deleted() || a.EventCount() != 1 || a.LastPosition != s.LastPosition {
		t.Fatalf("after the truncate: %+v, exists %v, deleted %v, want truncate-before 4, head 4, existing, last change unchanged", a, a.Exists(), a.Deleted())
	}
	// A change of state alone: no event, no position, the counts less
	// the two events it hid.
	if len(live) != 0 || tw.FirstPosition != 0 || l.LastPosition() != last {
		t.Fatalf("the truncate published %+v, took position %d (last %d, was %d)", live, tw.FirstPosition, l.LastPosition(), last)
	}
	if got := l.Stats(); got.Events != stats.Events-2 || got.Streams != stats.Streams {
		t.Fatalf("stats %+v, were %+v", got, stats)
	}
	if !l.Hidden(s.ID, 3) || l.Hidden(s.ID, 4) {
		t.Fatal("Hidden does not follow the truncate")
	}
	if j := scavenge(t, l, ScavengeOptions{}); j.EventsRemoved != 2 {
		t.Fatalf("after the truncate: removed %d events, want revisions 2 and 3", j.EventsRemoved)
	}
	l.SetLimits("lim-1", false, Limits{})
	if got := read(); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("truncated, the limit lifted: revisions %v, want [4]", got)
	}
	appendTo(t, l, "lim-1", testEvent(7))
	if got := read(); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("appended after the truncate: revisions %v, want [4 5]", got)
	}
}
