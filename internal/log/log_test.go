package log

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openTest(t *testing.T, fs vfs.FS) *Log {
	t.Helper()
	if fs == nil {
		fs = vfs.NewMem()
	}
	l, err := Open("db", Options{FS: fs, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func testEvent(i int) Event {
	var id [16]byte
	copy(id[:], fmt.Sprintf("id-%013d", i))
	return Event{ID: id, Type: "Tested", Data: []byte(fmt.Sprintf("data %d", i)), Tags: []string{"t"}}
}

// appendTo writes n events to stream name the way the writer does, and
// waits until they are durable.
func appendTo(t *testing.T, l *Log, name string, evs ...Event) *Write {
	t.Helper()
	s, ok, err := l.State(name)
	if err != nil {
		t.Fatal(err)
	}
	w := &Write{State: s, Events: evs, CheckIDs: true}
	if !ok {
		w.State = StreamState{ID: l.NewStreamID(), Name: name}
		w.New = true
	}
	commit(t, l, w)
	return w
}

func commit(t *testing.T, l *Log, ws ...*Write) {
	t.Helper()
	tk, err := l.Commit(ws, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Err != nil {
			t.Fatalf("write to %s: %v", w.State.Name, w.Err)
		}
	}
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func readStream(t *testing.T, l *Log, q StreamQuery) ([]*RecordedEvent, error) {
	t.Helper()
	var out []*RecordedEvent
	err := l.ReadStream(context.Background(), q, func(e *RecordedEvent) error { out = append(out, e); return nil })
	return out, err
}

func readAll(t *testing.T, l *Log, q AllQuery) []*RecordedEvent {
	t.Helper()
	var out []*RecordedEvent
	if err := l.ReadAll(context.Background(), q, func(e *RecordedEvent) error { out = append(out, e); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	return out
}

// describeViews describes each event as stream@revision:position.
func describeViews(evs []*RecordedEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s@%d:%d", e.Stream, e.Revision, e.Position))
	}
	return out
}

func revisions(evs []*RecordedEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Revision)
	}
	return out
}

func TestAppendReadReopen(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, fs)
	w := appendTo(t, l, "product-1", testEvent(0), testEvent(1))
	if w.FirstPosition != 1 || w.LastPosition != 2 || w.After.Head != 1 {
		t.Fatalf("first write: %+v", w)
	}
	appendTo(t, l, "product-2", testEvent(2))
	appendTo(t, l, "product-1", testEvent(3))
	check := func(l *Log) {
		t.Helper()
		evs, err := readStream(t, l, StreamQuery{Stream: "product-1"})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]uint64{0, 1, 2}, revisions(evs)); diff != "" {
			t.Fatal(diff)
		}
		if evs[2].Position != 4 || string(evs[2].Data) != "data 3" || evs[2].Stream != "product-1" || evs[2].Tags[0] != "t" {
			t.Fatalf("event: %+v", evs[2])
		}
		all := readAll(t, l, AllQuery{})
		if len(all) != 4 || all[2].Stream != "product-2" {
			t.Fatalf("all: %+v", all)
		}
		for i, e := range all {
			if e.Position != uint64(i+1) {
				t.Fatalf("position %d at %d", e.Position, i)
			}
		}
		if st := l.Stats(); st.LastPosition != 4 || st.Streams != 2 || st.Events != 4 {
			t.Fatalf("stats %+v", st)
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, fs)
	defer l.Close()
	check(l)
	w = appendTo(t, l, "product-3", testEvent(9))
	if w.FirstPosition != 5 || w.State.ID <= 17 {
		t.Fatalf("after reopen: %+v", w)
	}
}

func TestReadStreamRanges(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	var evs []Event
	for i := range 10 {
		evs = append(evs, testEvent(i))
	}
	appendTo(t, l, "s", evs...)
	tests := []struct {
		name string
		q    StreamQuery
		want []uint64
	}{
		{"all", StreamQuery{}, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"from 7", StreamQuery{From: 7, FromSet: true}, []uint64{7, 8, 9}},
		{"max 2", StreamQuery{Max: 2}, []uint64{0, 1}},
		{"past head", StreamQuery{From: 10, FromSet: true}, nil},
		{"backward", StreamQuery{Backward: true, Max: 3}, []uint64{9, 8, 7}},
		{"backward from 2", StreamQuery{Backward: true, From: 2, FromSet: true}, []uint64{2, 1, 0}},
		{"backward from past head", StreamQuery{Backward: true, From: 99, FromSet: true, Max: 1}, []uint64{9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.Stream = "s"
			got, err := readStream(t, l, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, revisions(got)); diff != "" {
				t.Fatal(diff)
			}
		})
	}
	if _, err := readStream(t, l, StreamQuery{Stream: "nope"}); !errors.Is(err, ErrStreamNotFound) {
		t.Fatalf("missing stream: %v", err)
	}
}

func TestDeleteAndTombstone(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, fs)
	appendTo(t, l, "a", testEvent(0), testEvent(1))
	appendTo(t, l, "b", testEvent(2))
	s, _, _ := l.State("a")
	del := &Write{State: s, Delete: DeleteSoft}
	commit(t, l, del)
	if del.FirstPosition != 4 || del.After.TruncateBefore != 2 || del.After.Exists() || !del.After.Deleted() {
		t.Fatalf("soft delete: %+v", del)
	}
	if _, err := readStream(t, l, StreamQuery{Stream: "a"}); !errors.Is(err, ErrStreamDeleted) {
		t.Fatalf("read deleted: %v", err)
	}
	// Appending again continues the revisions; only new events show.
	w := appendTo(t, l, "a", testEvent(3))
	if w.After.Head != 2 || w.FirstPosition != 5 {
		t.Fatalf("append after delete: %+v", w)
	}
	got, err := readStream(t, l, StreamQuery{Stream: "a"})
	if err != nil || len(got) != 1 || got[0].Revision != 2 {
		t.Fatalf("read after re-append: %v %+v", err, got)
	}
	s, _, _ = l.State("b")
	commit(t, l, &Write{State: s, Delete: DeleteTombstone})

	check := func(l *Log) {
		t.Helper()
		if _, err := readStream(t, l, StreamQuery{Stream: "b"}); !errors.Is(err, ErrStreamTombstoned) {
			t.Fatalf("read tombstoned: %v", err)
		}
		var streams []string
		for _, e := range readAll(t, l, AllQuery{}) {
			streams = append(streams, fmt.Sprintf("%s@%d", e.Stream, e.Revision))
		}
		want := []string{"$deleted@0", "a@2", "$deleted@1"}
		if diff := cmp.Diff(want, streams); diff != "" {
			t.Fatal(diff)
		}
		if st := l.Stats(); st.Streams != 2 || st.Events != 3 {
			t.Fatalf("stats %+v", st)
		}
	}
	check(l)
	l.Close()
	l = openTest(t, fs)
	defer l.Close()
	check(l)
}

func TestCommitIDConflicts(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	appendTo(t, l, "a", testEvent(0))

	// An id stored on another stream fails that write only; the next
	// write to the same stream in the commit must be re-decided.
	b1 := &Write{State: StreamState{ID: l.NewStreamID(), Name: "b"}, New: true, Events: []Event{testEvent(1), testEvent(0)}, CheckIDs: true}
	b2 := &Write{State: StreamState{ID: b1.State.ID, Name: "b"}, Events: []Event{testEvent(5)}, CheckIDs: true}
	c := &Write{State: StreamState{ID: l.NewStreamID(), Name: "c"}, New: true, Events: []Event{testEvent(6)}, CheckIDs: true}
	// Two writes of one commit may not share an id either, whoever chose
	// the earlier one's (g's was made by the server: no CheckIDs).
	d := &Write{State: StreamState{ID: l.NewStreamID(), Name: "d"}, New: true, Events: []Event{testEvent(6)}, CheckIDs: true}
	g := &Write{State: StreamState{ID: l.NewStreamID(), Name: "g"}, New: true, Events: []Event{testEvent(8)}}
	h := &Write{State: StreamState{ID: l.NewStreamID(), Name: "h"}, New: true, Events: []Event{testEvent(8)}, CheckIDs: true}
	tk, err := l.Commit([]*Write{b1, b2, c, d, g, h}, false)
	if err != nil {
		t.Fatal(err)
	}
	var conflict *IDConflictError
	if !errors.As(b1.Err, &conflict) || conflict.ID != testEvent(0).ID {
		t.Fatalf("b1: %v", b1.Err)
	}
	if !errors.Is(b2.Err, ErrRetry) || c.Err != nil || !errors.As(d.Err, &conflict) {
		t.Fatalf("b2 %v, c %v, d %v", b2.Err, c.Err, d.Err)
	}
	if g.Err != nil || !errors.As(h.Err, &conflict) || conflict.ID != testEvent(8).ID {
		t.Fatalf("g %v, h %v", g.Err, h.Err)
	}
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.FirstPosition != 2 {
		t.Fatalf("c at %d", c.FirstPosition)
	}

	// Atomic: one failure aborts all.
	e := &Write{State: StreamState{ID: l.NewStreamID(), Name: "e"}, New: true, Events: []Event{testEvent(7)}, CheckIDs: true}
	f := &Write{State: StreamState{ID: l.NewStreamID(), Name: "f"}, New: true, Events: []Event{testEvent(6)}, CheckIDs: true}
	tk, err = l.Commit([]*Write{e, f}, true)
	if err != nil || tk != nil {
		t.Fatalf("atomic commit: %v %v", tk, err)
	}
	if !errors.Is(e.Err, ErrAborted) || !errors.As(f.Err, &conflict) {
		t.Fatalf("e %v, f %v", e.Err, f.Err)
	}
	if _, ok, _ := l.State("e"); ok {
		t.Fatal("aborted stream e was created")
	}
	if l.LastPosition() != 3 { // a, c and g: nothing of e
		t.Fatalf("last position %d", l.LastPosition())
	}
}

func TestLookupIDs(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	w := appendTo(t, l, "a", testEvent(0), testEvent(1))
	locs, err := l.LookupIDs([][16]byte{testEvent(1).ID, testEvent(2).ID})
	if err != nil {
		t.Fatal(err)
	}
	want := []IDLocation{{Found: true, StreamID: w.State.ID, Revision: 1, Position: 2, AppendFirst: 0, AppendLast: 1}, {}}
	if diff := cmp.Diff(want, locs); diff != "" {
		t.Fatal(diff)
	}
}

// TestLookupIDsOrder: a lookup of many ids (through one iterator, in key
// order) answers each in its place, as a lookup of that id alone (a Get)
// does: ids stored in sstables and in the memtable, absent ones,
// duplicates, in shuffled order.
func TestLookupIDsOrder(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	for s := range 4 {
		var evs []Event
		for i := range 25 {
			evs = append(evs, testEvent(s*50+i))
		}
		appendTo(t, l, fmt.Sprintf("s-%d", s), evs...)
		if s == 1 {
			if err := l.db.Flush(); err != nil { // the first two appends' ids in an sstable
				t.Fatal(err)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		ids := make([][16]byte, 2+rng.IntN(60))
		for i := range ids {
			ids[i] = testEvent(rng.IntN(220)).ID
		}
		locs, err := l.LookupIDs(ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			one, err := l.LookupIDs([][16]byte{id})
			if err != nil {
				t.Fatal(err)
			}
			if locs[i] != one[0] {
				t.Fatalf("round %d: id %d of %d (%s): %+v, alone %+v", round, i, len(ids), FormatID(id), locs[i], one[0])
			}
		}
	}
}

func TestListStreams(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	for i, n := range []string{"b-1", "a-1", "b-2", "b-3", "c"} {
		appendTo(t, l, n, testEvent(i))
	}
	var names []string
	after := ""
	for {
		page, more, err := l.ListStreams(context.Background(), "b-", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page {
			names = append(names, s.Name)
		}
		if !more {
			break
		}
		after = page[len(page)-1].Name
	}
	if diff := cmp.Diff([]string{"b-1", "b-2", "b-3"}, names); diff != "" {
		t.Fatal(diff)
	}
}

func TestFilteredReadAllCheckpoints(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	for i := range 50 {
		appendTo(t, l, fmt.Sprintf("noise-%d", i), testEvent(i))
	}
	appendTo(t, l, "order-1", testEvent(100))
	tests := []struct {
		name string
		q    AllQuery
		cps  []uint64
	}{
		// A scan checkpoints every 20 events without a match, and at the end.
		{"scan", AllQuery{StreamPrefixes: []string{"order-"}, CheckpointEvery: 20, NoIndex: true}, []uint64{20, 40, 51}},
		// The category index reads only order-1's event: one checkpoint, at the end.
		{"category index", AllQuery{StreamPrefixes: []string{"order-"}, CheckpointEvery: 20}, []uint64{51}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []*RecordedEvent
			var cps []uint64
			err := l.ReadAll(context.Background(), tc.q,
				func(e *RecordedEvent) error { got = append(got, e); return nil },
				func(p uint64) error { cps = append(cps, p); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Stream != "order-1" {
				t.Fatalf("got %+v", got)
			}
			if diff := cmp.Diff(tc.cps, cps); diff != "" {
				t.Fatal(diff)
			}
		})
	}
	back := readAll(t, l, AllQuery{Backward: true, Max: 2})
	if len(back) != 2 || back[0].Position != 51 || back[1].Position != 50 {
		t.Fatalf("backward: %+v", back)
	}
}

func TestOpenTwiceFails(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l2, err := Open(dir, Options{})
	if err == nil {
		l2.Close()
		t.Fatal("second open of one directory succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "is another esd using it?") || strings.Contains(msg, "not writable") {
		t.Fatalf("error %q, want the lock message", msg)
	}
}

// TestOpenRefusesOtherFormats: Open refuses a store whose format key is
// not this code's format (2: one index key per event) with an error that
// names both formats and says there is no migration, and leaves the store
// as it was (and unlocked): with its format key restored it opens.
func TestOpenRefusesOtherFormats(t *testing.T) {
	tests := []struct {
		name    string
		stored  []byte
		format  uint32 // the *FormatError's; 0: ErrCorrupt
		message []string
	}{
		{"format 2", []byte{0, 0, 0, 2}, 2, []string{"format 2", fmt.Sprintf("only format %d", formatVersion), "no migration", "new, empty data directory"}},
		{"a later format", binary.BigEndian.AppendUint32(nil, formatVersion+1), formatVersion + 1, []string{"no migration"}},
		{"a format key of 2 bytes", []byte{0, 3}, 0, []string{"format key of 2 bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			l := openTest(t, fs)
			appendTo(t, l, "a-1", testEvent(0))
			if err := l.db.Set(metaFormatKey, tc.stored, pebble.Sync); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2, err := Open("db", Options{FS: fs})
			if err == nil {
				l2.Close()
				t.Fatal("Open succeeded")
			}
			var fe *FormatError
			switch {
			case tc.format == 0 && !errors.Is(err, ErrCorrupt):
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			case tc.format != 0 && (!errors.As(err, &fe) || fe.Found != tc.format):
				t.Fatalf("Open: %v, want a *FormatError of format %d", err, tc.format)
			}
			for _, m := range tc.message {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Open: %q does not say %q", err, m)
				}
			}

			// Nothing changed and nothing stays locked: restored, it opens.
			db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: pebbleLogger{s: zap.NewNop().Sugar()}})
			if err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(db.Set(metaFormatKey, binary.BigEndian.AppendUint32(nil, formatVersion), pebble.Sync), db.Close()); err != nil {
				t.Fatal(err)
			}
			l = openTest(t, fs)
			defer l.Close()
			if evs, err := readStream(t, l, StreamQuery{Stream: "a-1"}); err != nil || len(evs) != 1 {
				t.Fatalf("after restoring the format: %v, %v", evs, err)
			}
		})
	}
}
