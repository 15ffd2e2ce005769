package log

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/go-cmp/cmp"
)

func TestFirstVisible(t *testing.T) {
	for _, tc := range []struct {
		name            string
		truncate, head  uint64
		lim             Limits
		ageFirst, first uint64
	}{
		{name: "no limits", head: 9, first: 0},
		{name: "soft delete", truncate: 4, head: 9, first: 4},
		{name: "truncate before", head: 9, lim: Limits{TruncateBefore: 3}, first: 3},
		{name: "truncate before past head", head: 9, lim: Limits{TruncateBefore: 50}, first: 10},
		{name: "max count", head: 9, lim: Limits{MaxCount: 3}, first: 7},
		{name: "max count above events", head: 9, lim: Limits{MaxCount: 30}, first: 0},
		{name: "max count equals events", head: 9, lim: Limits{MaxCount: 10}, first: 0},
		{name: "max age", head: 9, lim: Limits{MaxAge: time.Hour}, ageFirst: 5, first: 5},
		{name: "max age hides all", head: 9, lim: Limits{MaxAge: time.Hour}, ageFirst: 10, first: 10},
		{name: "age first ignored without max age", head: 9, ageFirst: 8, first: 0},
		{name: "largest wins: delete", truncate: 8, head: 9, lim: Limits{MaxCount: 5, TruncateBefore: 2}, first: 8},
		{name: "largest wins: count", truncate: 1, head: 9, lim: Limits{MaxCount: 2, TruncateBefore: 2, MaxAge: time.Hour}, ageFirst: 3, first: 8},
		{name: "largest wins: age", head: 9, lim: Limits{MaxCount: 9, MaxAge: time.Hour}, ageFirst: 6, first: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FirstVisible(tc.truncate, tc.head, tc.lim, tc.ageFirst); got != tc.first {
				t.Fatalf("FirstVisible(%d, %d, %+v, %d) = %d, want %d", tc.truncate, tc.head, tc.lim, tc.ageFirst, got, tc.first)
			}
		})
	}
}

func TestLimitsOver(t *testing.T) {
	own := Limits{MaxCount: 5}
	def := Limits{MaxCount: 100, MaxAge: time.Hour, TruncateBefore: 7}
	if got, want := own.Over(def), (Limits{MaxCount: 5, MaxAge: time.Hour, TruncateBefore: 7}); got != want {
		t.Fatalf("Over = %+v, want %+v", got, want)
	}
}

// retentionLog opens a log whose clock is *now, with stream "ret-a" of 10
// events committed a minute apart (revision i at base+i minutes) and
// "ret-b" of 2 events in between.
func retentionLog(t *testing.T, now *time.Time) (*Log, time.Time) {
	t.Helper()
	l, err := Open("db", Options{FS: vfs.NewMem(), CacheBytes: 8 << 20, Clock: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		appendAt(t, l, "ret-a", base.Add(time.Duration(i)*time.Minute), testEvent(i))
		if i == 4 || i == 8 {
			appendAt(t, l, "ret-b", base.Add(time.Duration(i)*time.Minute), testEvent(100+i))
		}
	}
	*now = base.Add(9 * time.Minute)
	return l, base
}

func appendAt(t *testing.T, l *Log, name string, at time.Time, evs ...Event) {
	t.Helper()
	s, ok, err := l.State(name)
	if err != nil {
		t.Fatal(err)
	}
	w := &Write{State: s, Events: evs, CheckIDs: true, Time: at.UnixNano()}
	if !ok {
		w.State = StreamState{ID: l.NewStreamID(), Name: name}
		w.New = true
	}
	commit(t, l, w)
}

// visibleEverywhere reads stream "ret-a" forward, backward, through
// $all (scan and category index) and EventAt, and checks that each
// returns exactly the revisions want, and StreamInfo's count.
func visibleEverywhere(t *testing.T, l *Log, want []uint64) {
	t.Helper()
	fwd, err := readStream(t, l, StreamQuery{Stream: "ret-a"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, revisions(fwd)); diff != "" {
		t.Fatalf("forward (-want +got):\n%s", diff)
	}
	bwd, err := readStream(t, l, StreamQuery{Stream: "ret-a", Backward: true})
	if err != nil {
		t.Fatal(err)
	}
	var back []uint64
	for i := len(want) - 1; i >= 0; i-- {
		back = append(back, want[i])
	}
	if diff := cmp.Diff(back, revisions(bwd)); diff != "" {
		t.Fatalf("backward (-want +got):\n%s", diff)
	}
	// From a hidden revision: forward starts at the first visible one,
	// backward returns nothing.
	if len(want) > 0 && want[0] > 0 {
		evs, err := readStream(t, l, StreamQuery{Stream: "ret-a", From: want[0] - 1, FromSet: true, Backward: true})
		if err != nil || len(evs) != 0 {
			t.Fatalf("backward from a hidden revision: %v %v", err, revisions(evs))
		}
		evs, err = readStream(t, l, StreamQuery{Stream: "ret-a", From: 0, FromSet: true, Max: 1})
		if err != nil || len(evs) != 1 || evs[0].Revision != want[0] {
			t.Fatalf("forward from 0, max 1: %v %v", err, revisions(evs))
		}
	}
	for _, q := range []AllQuery{{}, {Backward: true}, {Categories: []string{"ret"}}, {StreamPrefixes: []string{"ret-a"}, NoIndex: true}} {
		var got []uint64
		for _, e := range readAll(t, l, q) {
			if e.Stream == "ret-a" {
				got = append(got, e.Revision)
			}
		}
		if q.Backward {
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("$all %+v (-want +got):\n%s", q, diff)
		}
	}
	st, ok, err := l.StreamInfo(context.Background(), "ret-a")
	if err != nil || !ok || !st.Exists() {
		t.Fatalf("StreamInfo: %+v %v %v", st, ok, err)
	}
	if st.EventCount() != uint64(len(want)) {
		t.Fatalf("EventCount %d, want %d (state %+v)", st.EventCount(), len(want), st)
	}
	first := st.Head + 1 // nothing visible
	if len(want) > 0 {
		first = want[0]
	}
	if from, err := l.VisibleFrom(context.Background(), &st); err != nil || from != first || st.FirstVisible() != first {
		t.Fatalf("VisibleFrom %d, %v; FirstVisible %d; want %d", from, err, st.FirstVisible(), first)
	}
	// Position of ret-a's revision 0: 1; EventAt agrees with the reads.
	ev, ok, err := l.EventAt(1)
	if err != nil || ok != (len(want) > 0 && want[0] == 0) {
		t.Fatalf("EventAt(1): %v %v %v", ev, ok, err)
	}
}

func TestRetentionLimitsHideFromEveryRead(t *testing.T) {
	now := time.Time{}
	l, _ := retentionLog(t, &now)
	all := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	visibleEverywhere(t, l, all)
	for _, tc := range []struct {
		name string
		lim  Limits
		want []uint64
	}{
		{"max count", Limits{MaxCount: 3}, []uint64{7, 8, 9}},
		// now is revision 9's time: within 2m30s are revisions 7..9.
		{"max age", Limits{MaxAge: 150 * time.Second}, []uint64{7, 8, 9}},
		{"max age exact boundary", Limits{MaxAge: 2 * time.Minute}, []uint64{7, 8, 9}},
		{"truncate before", Limits{TruncateBefore: 6}, []uint64{6, 7, 8, 9}},
		{"the largest wins", Limits{TruncateBefore: 2, MaxCount: 5, MaxAge: time.Hour}, []uint64{5, 6, 7, 8, 9}},
		{"everything hidden", Limits{TruncateBefore: 10}, nil},
		// Lowering a limit shows the events again: limits are a view.
		{"removed", Limits{}, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.SetLimits("ret-a", false, tc.lim)
			visibleEverywhere(t, l, tc.want)
			// The other stream of the category is untouched.
			evs, err := readStream(t, l, StreamQuery{Stream: "ret-b"})
			if err != nil || len(evs) != 2 {
				t.Fatalf("ret-b: %v %v", err, revisions(evs))
			}
		})
	}
}

func TestRetentionMaxAgeMovesWithTheClock(t *testing.T) {
	now := time.Time{}
	l, base := retentionLog(t, &now)
	l.SetLimits("ret-a", false, Limits{MaxAge: 5 * time.Minute})
	visibleEverywhere(t, l, []uint64{4, 5, 6, 7, 8, 9})
	now = base.Add(12 * time.Minute)
	visibleEverywhere(t, l, []uint64{7, 8, 9})
	now = base.Add(time.Hour)
	visibleEverywhere(t, l, nil)
	// A new event is visible at once.
	appendAt(t, l, "ret-a", now, testEvent(50))
	visibleEverywhere(t, l, []uint64{10})
}

func TestRetentionCategoryDefaults(t *testing.T) {
	now := time.Time{}
	l, _ := retentionLog(t, &now)
	l.SetLimits("ret", true, Limits{MaxCount: 1, MaxAge: time.Hour})
	visibleEverywhere(t, l, []uint64{9})
	evs, err := readStream(t, l, StreamQuery{Stream: "ret-b"})
	if err != nil || len(evs) != 1 || evs[0].Revision != 1 {
		t.Fatalf("ret-b follows its category: %v %v", err, revisions(evs))
	}
	// The stream's own limit wins; the category's other limits still apply.
	l.SetLimits("ret-a", false, Limits{MaxCount: 4})
	visibleEverywhere(t, l, []uint64{6, 7, 8, 9})
	if lim, ok := l.LimitsOf("ret-a"); !ok || lim != (Limits{MaxCount: 4, MaxAge: time.Hour}) {
		t.Fatalf("LimitsOf ret-a = %+v %v", lim, ok)
	}
	if _, ok := l.LimitsOf("other-1"); ok {
		t.Fatal("a stream of another category has limits")
	}
	l.SetLimits("ret", true, Limits{})
	l.SetLimits("ret-a", false, Limits{})
	if l.lim.table.Load() != nil {
		t.Fatal("the limits table is not empty once every limit is removed")
	}
}

func TestRetentionDoesNotTouchAppendsOrDeletes(t *testing.T) {
	now := time.Time{}
	l, _ := retentionLog(t, &now)
	l.SetLimits("ret-a", false, Limits{TruncateBefore: 100})
	visibleEverywhere(t, l, nil)
	s, _, _ := l.State("ret-a")
	if s.Head != 9 || s.EventCount() != 10 || s.LimitBefore != 0 {
		t.Fatalf("the writer's state is changed by limits: %+v", s)
	}
	if st := l.Stats(); st.Events != 12 {
		t.Fatalf("stats %+v: limits change the stored counts", st)
	}
	// A soft delete still hides everything, and its truncate shows.
	commit(t, l, &Write{State: s, Delete: DeleteSoft})
	l.SetLimits("ret-a", false, Limits{})
	if _, err := readStream(t, l, StreamQuery{Stream: "ret-a"}); err == nil {
		t.Fatal("read of a deleted stream succeeds")
	}
}

func TestRetentionPositionsUnchanged(t *testing.T) {
	now := time.Time{}
	l, _ := retentionLog(t, &now)
	before := map[string]uint64{}
	for _, e := range readAll(t, l, AllQuery{}) {
		before[fmt.Sprintf("%s@%d", e.Stream, e.Revision)] = e.Position
	}
	l.SetLimits("ret-a", false, Limits{MaxCount: 2})
	// Every event but ret-a's first 8 of 10, each at its old position.
	for rev := range 8 {
		delete(before, fmt.Sprintf("ret-a@%d", rev))
	}
	after := map[string]uint64{}
	for _, e := range readAll(t, l, AllQuery{}) {
		after[fmt.Sprintf("%s@%d", e.Stream, e.Revision)] = e.Position
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Fatalf("$all under MaxCount 2 (-want +got):\n%s", diff)
	}
}

// TestRetentionHiddenEventsGetCheckpoints: a filtered scan through hidden
// events still checkpoints, as through events that do not match.
func TestRetentionHiddenEventsGetCheckpoints(t *testing.T) {
	now := time.Time{}
	l, _ := retentionLog(t, &now)
	l.SetLimits("ret-a", false, Limits{TruncateBefore: 10})
	var checkpoints []uint64
	err := l.ReadAll(context.Background(), AllQuery{StreamPrefixes: []string{"ret-a"}, NoIndex: true, CheckpointEvery: 4},
		func(e *RecordedEvent) error { return fmt.Errorf("hidden event %s@%d returned", e.Stream, e.Revision) },
		func(pos uint64) error { checkpoints = append(checkpoints, pos); return nil })
	if err != nil {
		t.Fatal(err)
	}
	// 12 events: ret-a's 10 hidden, ret-b's 2 not matching: every 4th
	// position, then the end.
	if diff := cmp.Diff([]uint64{4, 8, 12, 12}, checkpoints); diff != "" {
		t.Fatalf("checkpoints (-want +got):\n%s", diff)
	}
}
