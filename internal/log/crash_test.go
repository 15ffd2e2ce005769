package log

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Crash recovery (STYLE §12): the log runs on Pebble's crashable in-memory
// FS and a scripted sequence of commits is "crashed" after every commit:
// vfs.CrashClone keeps what was synced plus a random share of what was
// not, a new Log opens the clone, and the recovered store must be exactly
// the state after some whole number of commits, at least every
// acknowledged one, with index, ids, stream states and stats agreeing
// with the event records.

// crashOp is one stream's part of a scripted commit.
type crashOp struct {
	stream string
	events int
	big    bool // one event larger than a WAL block
	del    DeleteMode
}

type crashCommit struct {
	atomic bool
	ops    []crashOp
}

// crashScript is 40 commits: appends to several streams, new streams,
// atomic multi-stream commits, a stream written twice in one commit, soft
// deletes with appends after them, and tombstones (one of a stream never
// written). A Flush and a Compact run after some commits (crashFlushAfter,
// crashCompactAfter), so that later crashes recover from sstables too.
func crashScript() []crashCommit {
	c := func(atomic bool, ops ...crashOp) crashCommit { return crashCommit{atomic: atomic, ops: ops} }
	ev := func(stream string, n int) crashOp { return crashOp{stream: stream, events: n} }
	big := func(stream string) crashOp { return crashOp{stream: stream, events: 1, big: true} }
	del := func(stream string, mode DeleteMode) crashOp { return crashOp{stream: stream, del: mode} }
	s := []crashCommit{
		c(false, ev("order-1", 1)),
		c(false, ev("order-1", 3)),
		c(false, ev("cart-1", 2)),
		c(true, ev("order-1", 1), ev("cart-1", 1), ev("user-1", 2)),
		c(false, big("order-1")),
		c(false, ev("user-1", 1)),
		c(false, del("cart-1", DeleteSoft)),
		c(false, ev("cart-1", 2)),                                      // revisions continue after the delete
		c(false, ev("order-2", 12)),                                    // a category range
		c(false, ev("order-2", 1), ev("order-2", 2), ev("order-3", 1)), // one stream twice in a commit
		c(false, del("user-1", DeleteTombstone)),
		c(true, ev("order-1", 2), ev("order-2", 1)),
		c(false, del("ghost-1", DeleteTombstone)), // never written
		c(true, del("order-2", DeleteSoft), ev("order-3", 1)),
		c(false, ev("order-2", 1), del("cart-1", DeleteSoft)),
	}
	for i := len(s); i < 40; i++ {
		switch {
		case i == 20:
			s = append(s, c(false, del("order-3", DeleteSoft)))
		case i == 26:
			s = append(s, c(false, del("order-2", DeleteTombstone)))
		case i%6 == 0:
			s = append(s, c(true, ev(fmt.Sprintf("new-%d", i), 2), ev("order-1", 1), big("cart-1")))
		case i%4 == 0:
			s = append(s, c(false, ev("order-3", 1), ev("order-3", 2), ev(fmt.Sprintf("new-%d", i), 1)))
		case i%10 == 5:
			s = append(s, c(false, ev("cart-1", 10), ev("order-3", 8)))
		default:
			pool := []string{"order-1", "order-3", "cart-1"}
			if i < 26 {
				pool = append(pool, "order-2")
			}
			s = append(s, c(false, ev(pool[i%len(pool)], 1+i%3)))
		}
	}
	return s
}

const (
	crashFlushAfter   = 18 // commits; then db.Flush
	crashCompactAfter = 30 // commits; then db.Compact of every key
)

// modelStream is what a stream's state must be.
type modelStream struct {
	name                       string
	id                         uint64
	written, tombstoned        bool
	head, truncateBefore, last uint64
	created, updated           int64
}

func (s *modelStream) nextRev() uint64 {
	if s.written {
		return s.head + 1
	}
	return 0
}

func (s *modelStream) exists() bool {
	return s.written && !s.tombstoned && s.head+1 > s.truncateBefore
}

func (s *modelStream) count() uint64 {
	if !s.exists() {
		return 0
	}
	return s.head + 1 - s.truncateBefore
}

// modelEvent is what the record at a position must be.
type modelEvent struct {
	pos, sid, rev uint64
	first, last   uint64 // the revisions of the append that stored it
	stream        string
	ev            Event  // user events
	deletionOf    string // a "$deleted" record of this stream's deletion
	tombstone     bool
	commit        int // 1-based
}

// crashModel is the expected store, built from the script and checked
// against what each Commit reports.
type crashModel struct {
	streams map[string]*modelStream
	events  []modelEvent // events[p-1] is at position p
	ids     map[[16]byte]int
}

// crashSnapshot is the model after a number of commits.
type crashSnapshot struct {
	commits int
	streams map[string]modelStream
	events  int // events[:events] are stored
}

func (m *crashModel) snapshot(commits int) crashSnapshot {
	s := crashSnapshot{commits: commits, streams: make(map[string]modelStream), events: len(m.events)}
	for n, ms := range m.streams {
		s.streams[n] = *ms
	}
	return s
}

func (s crashSnapshot) lastPos() uint64 { return uint64(s.events) }

// crashRun drives the script on a live log, the way the writer does.
type crashRun struct {
	t      *testing.T
	l      *Log
	m      *crashModel
	script []crashCommit
	nextID int
}

func newCrashRun(t *testing.T, l *Log) *crashRun {
	return &crashRun{t: t, l: l, script: crashScript(),
		m: &crashModel{streams: make(map[string]*modelStream), ids: make(map[[16]byte]int)}}
}

func (r *crashRun) event(commit, i int, big bool) Event {
	r.nextID++
	var id [16]byte
	copy(id[:], fmt.Sprintf("crash-%010d", r.nextID))
	e := Event{ID: id, Type: fmt.Sprintf("Type%d", (commit+i/4)%3), Data: []byte(fmt.Sprintf("commit %d event %d", commit, i))}
	if big {
		e.Data = bytes.Repeat([]byte{byte(commit)}, 100<<10)
	}
	if i%2 == 1 {
		e.Tags = []string{"odd", fmt.Sprint(commit)}
		e.Metadata = []byte(`{"m":1}`)
		e.ContentType = "application/json"
	}
	return e
}

// predictState mirrors the writer's prediction (writer.predict) of a
// stream's state after w, for a second write to it in one commit.
func predictState(st *StreamState, w *Write) {
	st.ID = w.State.ID
	if n := uint64(len(w.Events)); n > 0 {
		st.Head = st.NextRevision() + n - 1
		st.Written = true
	}
	switch w.Delete {
	case DeleteSoft:
		st.TruncateBefore = st.Head + 1
	case DeleteTombstone:
		st.TruncateBefore = st.NextRevision()
		st.Tombstoned = true
	}
}

// apply applies commit number n (1-based) and returns its ticket, not
// waiting for it.
func (r *crashRun) apply(n int) *Ticket {
	t := r.t
	t.Helper()
	cc := r.script[n-1]
	var writes []*Write
	predicted := make(map[string]*StreamState)
	for i, op := range cc.ops {
		w := &Write{}
		if st, ok := predicted[op.stream]; ok {
			w.State = *st
		} else {
			st, ok, err := r.l.State(op.stream)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				st = StreamState{ID: r.l.NewStreamID(), Name: op.stream}
				w.New = true
			}
			w.State = st
		}
		for j := range op.events {
			w.Events = append(w.Events, r.event(n, i+j, op.big))
		}
		w.Delete = op.del
		w.CheckIDs = len(w.Events) > 0
		w.LookupEpoch = r.l.IDEpoch()
		writes = append(writes, w)
		next := w.State
		predictState(&next, w)
		predicted[op.stream] = &next
	}
	tk, err := r.l.Commit(writes, cc.atomic)
	if err != nil || tk == nil {
		t.Fatalf("commit %d: ticket %v, %v", n, tk, err)
	}
	for _, w := range writes {
		if w.Err != nil {
			t.Fatalf("commit %d: write to %s: %v", n, w.State.Name, w.Err)
		}
		r.m.apply(t, w, n)
	}
	return tk
}

func (m *crashModel) stream(name string, id uint64) *modelStream {
	ms := m.streams[name]
	if ms == nil {
		ms = &modelStream{name: name, id: id}
		m.streams[name] = ms
	}
	return ms
}

// apply records an applied write and checks what Commit reported of it.
func (m *crashModel) apply(t *testing.T, w *Write, commit int) {
	t.Helper()
	ms := m.stream(w.State.Name, w.State.ID)
	if ms.id != w.State.ID {
		t.Fatalf("commit %d: stream %s has id %d, the model %d", commit, ms.name, w.State.ID, ms.id)
	}
	first := uint64(len(m.events)) + 1
	appendFirst := ms.nextRev()
	appendLast := appendFirst + uint64(len(w.Events)) - 1
	for i := range w.Events {
		rev := ms.nextRev()
		pos := uint64(len(m.events)) + 1
		m.ids[w.Events[i].ID] = len(m.events)
		m.events = append(m.events, modelEvent{pos: pos, sid: ms.id, rev: rev, first: appendFirst, last: appendLast,
			stream: ms.name, ev: w.Events[i], commit: commit})
		if !ms.written {
			ms.created = w.Created
		}
		ms.written, ms.head, ms.last = true, rev, pos
	}
	if w.Delete != DeleteNone {
		sys := m.stream(deletedStreamName, deletedStreamID)
		pos, rev := uint64(len(m.events))+1, sys.nextRev()
		if w.Delete == DeleteTombstone {
			ms.tombstoned, ms.truncateBefore = true, ms.nextRev()
		} else {
			ms.truncateBefore = ms.head + 1
		}
		m.events = append(m.events, modelEvent{pos: pos, sid: deletedStreamID, rev: rev, first: rev, last: rev, stream: deletedStreamName,
			deletionOf: ms.name, tombstone: w.Delete == DeleteTombstone, commit: commit})
		if !sys.written {
			sys.created = w.Created
		}
		sys.written, sys.head, sys.last, sys.updated = true, rev, pos, w.Created
		ms.last = pos
	}
	ms.updated = w.Created
	if w.FirstPosition != first || w.LastPosition != ms.last {
		t.Fatalf("commit %d: write to %s at positions %d..%d, want %d..%d", commit, ms.name, w.FirstPosition, w.LastPosition, first, ms.last)
	}
	if err := ms.matches(&w.After); err != nil {
		t.Fatalf("commit %d: After: %v", commit, err)
	}
}

// matches compares a stored state with the model.
func (s *modelStream) matches(st *StreamState) error {
	want := StreamState{ID: s.id, Name: s.name, Written: s.written, Head: s.head, TruncateBefore: s.truncateBefore,
		Tombstoned: s.tombstoned, LastPosition: s.last, Created: s.created, Updated: s.updated}
	if *st != want {
		return fmt.Errorf("stream %s: state %+v, want %+v", s.name, *st, want)
	}
	return nil
}

// crashOpen opens a log on fs, failing the test (not panicking) on error.
func crashOpen(t *testing.T, fs vfs.FS) *Log {
	t.Helper()
	l, err := Open("db", Options{FS: fs, CacheBytes: 4 << 20})
	if err != nil {
		t.Fatalf("open after crash: %v", err)
	}
	return l
}

// survivor finds the snapshot the recovered log l is at: its last
// position must end a commit (all or nothing) between the acknowledged
// and the applied ones.
func survivor(t *testing.T, l *Log, snaps []crashSnapshot, acked, applied int) crashSnapshot {
	t.Helper()
	last := l.LastPosition()
	for _, s := range snaps[acked : applied+1] {
		if s.lastPos() == last {
			return s
		}
	}
	for _, s := range snaps {
		if s.lastPos() >= last {
			t.Fatalf("recovered last position %d: commits %d (last position %d) acknowledged, %d applied; commit %d ends at %d: a partial or lost commit",
				last, acked, snaps[acked].lastPos(), applied, s.commits, s.lastPos())
		}
	}
	t.Fatalf("recovered last position %d beyond every commit", last)
	return crashSnapshot{}
}

// verifyRecovered checks every invariant of a recovered log against the
// model after snap.commits commits; m is the whole script's model, for
// what later commits wrote.
func verifyRecovered(t *testing.T, l *Log, snap crashSnapshot, m *crashModel) {
	t.Helper()
	ctx := context.Background()
	if got := l.LastPosition(); got != snap.lastPos() {
		t.Fatalf("last position %d, want %d", got, snap.lastPos())
	}
	events := m.events[:snap.events]

	// Event records: positions 1..last, gap-free, each the model's.
	var sysIDs [][16]byte
	n := 0
	scan(t, l, kEvent, func(k, v []byte) {
		pos, err := decodeEventKey(k)
		if err != nil {
			t.Fatal(err)
		}
		n++
		if pos != uint64(n) {
			t.Fatalf("event key at position %d, want %d (a hole or an extra)", pos, n)
		}
		if n > len(events) {
			t.Fatalf("event at position %d past the last commit's %d", pos, len(events))
		}
		want := events[n-1]
		var view recordView
		if err := decodeRecord(v, &view); err != nil {
			t.Fatalf("position %d: %v", pos, err)
		}
		var got RecordedEvent
		view.materialize(&got, pos, want.stream)
		if got.StreamID != want.sid || got.Revision != want.rev || got.Created == 0 {
			t.Fatalf("position %d: stream id %d revision %d created %d, want %d, %d", pos, got.StreamID, got.Revision, got.Created, want.sid, want.rev)
		}
		if want.deletionOf != "" {
			checkDeletionRecord(t, &got, want)
			sysIDs = append(sysIDs, got.ID)
			return
		}
		checkEvent(t, &got, want)
	})
	if n != len(events) {
		t.Fatalf("%d event records, want %d", n, len(events))
	}

	// The stream index: one entry per append (a deletion's record is an
	// append of one), holding its revisions at their positions.
	wantIdx := make(map[[2]uint64]modelEvent)
	for _, e := range events {
		wantIdx[[2]uint64{e.sid, e.rev}] = e
	}
	n = 0
	scan(t, l, kIndex, func(k, v []byte) {
		sid, r, err := decodeIndexEntry(k, v)
		if err != nil {
			t.Fatal(err)
		}
		for rev := r.firstRev; rev <= r.lastRev(); rev++ {
			want, ok := wantIdx[[2]uint64{sid, rev}]
			if !ok || want.pos != r.pos(rev) || want.first != r.firstRev || want.last != r.lastRev() {
				t.Fatalf("index entry %+v of stream %d: revision %d at %d, want %+v (stored %t)", r, sid, rev, r.pos(rev), want, ok)
			}
			n++
		}
	})
	if n != len(wantIdx) {
		t.Fatalf("the index holds %d revisions, want %d", n, len(wantIdx))
	}
	checkCategoryAndTypeIndexes(t, l, events)

	// The id index: every stored event's id, and no other.
	var ids [][16]byte
	var wantLocs []IDLocation
	si := 0
	for _, e := range events {
		id := e.ev.ID
		if e.deletionOf != "" {
			id = sysIDs[si]
			si++
		}
		ids = append(ids, id)
		wantLocs = append(wantLocs, IDLocation{Found: true, StreamID: e.sid, Revision: e.rev, Position: e.pos, AppendFirst: e.first, AppendLast: e.last})
	}
	for _, e := range m.events[snap.events:] {
		if e.deletionOf == "" {
			ids = append(ids, e.ev.ID) // written by a lost commit
			wantLocs = append(wantLocs, IDLocation{})
		}
	}
	locs, err := l.LookupIDs(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		if locs[i] != wantLocs[i] {
			t.Fatalf("LookupIDs(%s) = %+v, want %+v", FormatID(ids[i]), locs[i], wantLocs[i])
		}
	}
	n = 0
	scan(t, l, kID, func(k, v []byte) { n++ })
	if n != len(events) {
		t.Fatalf("%d id keys, want %d", n, len(events))
	}

	// Names and states: exactly the model's streams.
	names := 0
	scan(t, l, kName, func(k, v []byte) {
		name, err := decodeNameKey(k)
		if err != nil {
			t.Fatal(err)
		}
		sid, err := decodeU64(v)
		if err != nil {
			t.Fatal(err)
		}
		if ms, ok := snap.streams[name]; !ok || ms.id != sid {
			t.Fatalf("name %q -> %d, model has %+v (%t)", name, sid, ms, ok)
		}
		names++
	})
	var wantStats Stats
	wantStats.LastPosition = snap.lastPos()
	var rawStats stats
	states := 0
	scan(t, l, kStream, func(k, v []byte) {
		sid, err := decodeStreamKey(k)
		if err != nil {
			t.Fatal(err)
		}
		st, err := decodeState(sid, v)
		if err != nil {
			t.Fatal(err)
		}
		if st.Exists() {
			rawStats.streams++
		}
		rawStats.events += st.EventCount()
		states++
	})
	if names != len(snap.streams) || states != len(snap.streams) {
		t.Fatalf("%d names and %d states, want %d streams", names, states, len(snap.streams))
	}
	wantDeleted := make(map[uint64]bool)
	for _, ms := range snap.streams {
		if ms.truncateBefore > 0 || ms.tombstoned {
			wantDeleted[ms.id] = true
		}
	}
	n = 0
	scan(t, l, kDeleted, func(k, v []byte) {
		sid, err := decodeStreamKey(k)
		if err != nil || !wantDeleted[sid] {
			t.Fatalf("deleted key %x (%v): not a deleted stream", k, err)
		}
		n++
	})
	if n != len(wantDeleted) {
		t.Fatalf("%d deleted keys, want %d", n, len(wantDeleted))
	}

	for _, ms := range snap.streams {
		st, ok, err := l.State(ms.name)
		if err != nil || !ok {
			t.Fatalf("State(%s): %t, %v", ms.name, ok, err)
		}
		if err := ms.matches(&st); err != nil {
			t.Fatal(err)
		}
		if ms.exists() {
			wantStats.Streams++
			wantStats.Events += ms.count()
		}
		checkReadStream(t, l, ms, events)
	}
	for name := range m.streams {
		if _, ok := snap.streams[name]; ok {
			continue
		}
		// A stream of a lost commit does not exist.
		if _, ok, err := l.State(name); ok || err != nil {
			t.Fatalf("State(%s) of a lost commit: %t, %v", name, ok, err)
		}
		if err := l.ReadStream(ctx, StreamQuery{Stream: name}, func(*RecordedEvent) error { return nil }); !errors.Is(err, ErrStreamNotFound) {
			t.Fatalf("ReadStream(%s) of a lost commit: %v", name, err)
		}
	}

	// Stats: the stored counters equal the counts of the states and of
	// the model.
	if got := l.Stats(); got != wantStats || rawStats.streams != wantStats.Streams || rawStats.events != wantStats.Events {
		t.Fatalf("Stats() = %+v, recomputed from states %+v, from the model %+v", got, rawStats, wantStats)
	}

	// $all: the visible events, in position order.
	var want []modelEvent
	for _, e := range events {
		ms := snap.streams[e.stream]
		if !ms.tombstoned && e.rev >= ms.truncateBefore {
			want = append(want, e)
		}
	}
	var got []*RecordedEvent
	if err := l.ReadAll(ctx, AllQuery{}, func(e *RecordedEvent) error { got = append(got, e); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ReadAll: %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Position != want[i].pos || got[i].Stream != want[i].stream || got[i].Revision != want[i].rev {
			t.Fatalf("ReadAll[%d] = %s@%d at %d, want %s@%d at %d", i, got[i].Stream, got[i].Revision, got[i].Position,
				want[i].stream, want[i].rev, want[i].pos)
		}
	}

	// Reads through the category and type indexes return what filtered
	// scans of $all do, forward and backward, from the middle too.
	queries := []AllQuery{{TypePrefixes: []string{"Type"}}, {TypePrefixes: []string{"Type1", "$"}}}
	cats := make(map[string]bool)
	for _, e := range want {
		if c := Category(e.stream); !cats[c] {
			cats[c] = true
			queries = append(queries, AllQuery{Categories: []string{c}})
		}
	}
	for _, q := range queries {
		for _, from := range []uint64{0, snap.lastPos() / 2} {
			for _, back := range []bool{false, true} {
				q.From, q.Backward, q.NoIndex = from, back, false
				indexed := describeViews(readAll(t, l, q))
				q.NoIndex = true
				if scanned := describeViews(readAll(t, l, q)); !slices.Equal(indexed, scanned) {
					t.Fatalf("ReadAll %+v through the index differs from the scan:\n%v\n%v", q, indexed, scanned)
				}
			}
		}
	}
}

// checkCategoryAndTypeIndexes checks the keys of the category and type
// indexes against the model's appends (the events of one append are
// contiguous in events): a copy of each record for an append of fewer
// than categoryRangeMin events, else one range; one type entry per run of
// one type.
func checkCategoryAndTypeIndexes(t *testing.T, l *Log, events []modelEvent) {
	t.Helper()
	type entry struct {
		count uint64
		copy  bool
	}
	typ := func(e modelEvent) string {
		switch {
		case e.deletionOf == "":
			return e.ev.Type
		case e.tombstone:
			return "$stream-tombstoned"
		default:
			return "$stream-deleted"
		}
	}
	wantCat := make(map[string]entry) // key -> value
	wantType := make(map[string]uint64)
	for i := 0; i < len(events); {
		e := events[i]
		n := int(e.last - e.first + 1)
		app := events[i : i+n]
		cat := Category(e.stream)
		if n < categoryRangeMin {
			for _, a := range app {
				wantCat[string(appendCategoryKey(nil, cat, a.pos))] = entry{count: 1, copy: true}
			}
		} else {
			wantCat[string(appendCategoryKey(nil, cat, e.pos))] = entry{count: uint64(n)}
		}
		for j := 0; j < n; {
			k := j
			for k < n && typ(app[k]) == typ(app[j]) {
				k++
			}
			wantType[string(appendTypeKey(nil, typ(app[j]), app[j].pos))] = uint64(k - j)
			j = k
		}
		i += n
	}
	n := 0
	scan(t, l, kCategory, func(k, v []byte) {
		want, ok := wantCat[string(k)]
		pos := binary.BigEndian.Uint64(k[len(k)-8:])
		rec, count, err := decodeCategoryValue(pos, v)
		if err != nil || !ok || count != want.count || (rec != nil) != want.copy {
			t.Fatalf("category key %q: %d events, a copy %t (%v); want %+v (expected %t)", k, count, rec != nil, err, want, ok)
		}
		if rec != nil {
			stored, _, err := l.get(appendEventKey(nil, pos))
			if err != nil || !bytes.Equal(stored, rec) {
				t.Fatalf("category key %q: the copy differs from the record at %d (%v)", k, pos, err)
			}
		}
		n++
	})
	if n != len(wantCat) {
		t.Fatalf("%d category keys, want %d", n, len(wantCat))
	}
	n = 0
	scan(t, l, kType, func(k, v []byte) {
		want, ok := wantType[string(k)]
		count, err := decodeRunCount(binary.BigEndian.Uint64(k[len(k)-8:]), v)
		if err != nil || !ok || count != want {
			t.Fatalf("type key %q: %d events (%v), want %d (expected %t)", k, count, err, want, ok)
		}
		n++
	})
	if n != len(wantType) {
		t.Fatalf("%d type keys, want %d", n, len(wantType))
	}
}

func checkEvent(t *testing.T, got *RecordedEvent, want modelEvent) {
	t.Helper()
	w := want.ev
	if got.ID != w.ID || got.Type != w.Type || got.ContentType != w.ContentType || !bytes.Equal(got.Data, w.Data) ||
		!bytes.Equal(got.Metadata, w.Metadata) || !slices.Equal(got.Tags, w.Tags) || got.Stream != want.stream ||
		got.Revision != want.rev || got.Position != want.pos {
		t.Fatalf("event at %d: %s %s@%d type %q, want %s %s@%d type %q (commit %d)", got.Position, FormatID(got.ID), got.Stream,
			got.Revision, got.Type, FormatID(w.ID), want.stream, want.rev, w.Type, want.commit)
	}
}

func checkDeletionRecord(t *testing.T, got *RecordedEvent, want modelEvent) {
	t.Helper()
	typ := "$stream-deleted"
	if want.tombstone {
		typ = "$stream-tombstoned"
	}
	var body struct {
		Stream string `json:"stream"`
	}
	if err := json.Unmarshal(got.Data, &body); err != nil || got.Type != typ || body.Stream != want.deletionOf {
		t.Fatalf("position %d: deletion record %q %s (%v), want %q of %s", got.Position, got.Type, got.Data, err, typ, want.deletionOf)
	}
}

// checkReadStream reads ms forward and backward: its visible revisions
// are contiguous from TruncateBefore to Head, each the model's event.
func checkReadStream(t *testing.T, l *Log, ms modelStream, events []modelEvent) {
	t.Helper()
	var got []*RecordedEvent
	err := l.ReadStream(context.Background(), StreamQuery{Stream: ms.name}, func(e *RecordedEvent) error { got = append(got, e); return nil })
	switch {
	case ms.tombstoned:
		if !errors.Is(err, ErrStreamTombstoned) {
			t.Fatalf("ReadStream(%s), tombstoned: %v", ms.name, err)
		}
		return
	case !ms.exists():
		if !errors.Is(err, ErrStreamDeleted) {
			t.Fatalf("ReadStream(%s), deleted: %v", ms.name, err)
		}
		return
	case err != nil:
		t.Fatalf("ReadStream(%s): %v", ms.name, err)
	}
	if uint64(len(got)) != ms.count() {
		t.Fatalf("ReadStream(%s): %d events, want %d", ms.name, len(got), ms.count())
	}
	byRev := make(map[uint64]modelEvent)
	for _, e := range events {
		if e.stream == ms.name {
			byRev[e.rev] = e
		}
	}
	for i, e := range got {
		rev := ms.truncateBefore + uint64(i)
		if e.Revision != rev || e.Stream != ms.name || e.StreamID != ms.id {
			t.Fatalf("ReadStream(%s)[%d] = %s@%d (id %d), want revision %d", ms.name, i, e.Stream, e.Revision, e.StreamID, rev)
		}
		if want := byRev[rev]; want.deletionOf != "" {
			checkDeletionRecord(t, e, want)
		} else {
			checkEvent(t, e, want)
		}
	}
	var back []uint64
	err = l.ReadStream(context.Background(), StreamQuery{Stream: ms.name, Backward: true}, func(e *RecordedEvent) error {
		back = append(back, e.Revision)
		return nil
	})
	if err != nil || uint64(len(back)) != ms.count() || back[0] != ms.head || back[len(back)-1] != ms.truncateBefore {
		t.Fatalf("ReadStream(%s) backward: %v, %v", ms.name, back, err)
	}
}

// scan calls fn for every key with the prefix byte.
func scan(t *testing.T, l *Log, prefix byte, fn func(k, v []byte)) {
	t.Helper()
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		t.Fatal(err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		fn(it.Key(), it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
}

// appendAfterCrash checks that a recovered log takes new appends at the
// next position, with a stream id never used, and that they survive the
// next crash (what recovery replayed is durable as well).
func appendAfterCrash(t *testing.T, l *Log, fs *vfs.MemFS, snap crashSnapshot, m *crashModel) {
	t.Helper()
	var id [16]byte
	copy(id[:], fmt.Sprintf("after-%010d", snap.commits))
	w := appendTo(t, l, "after-crash", Event{ID: id, Type: "T", Data: []byte("after")})
	if w.FirstPosition != snap.lastPos()+1 || l.LastPosition() != snap.lastPos()+1 {
		t.Fatalf("append after crash at %d (last position %d), want %d", w.FirstPosition, l.LastPosition(), snap.lastPos()+1)
	}
	for _, ms := range snap.streams { // ids of lost commits may come again
		if ms.id >= w.State.ID {
			t.Fatalf("new stream got id %d; stream %s had id %d", w.State.ID, ms.name, ms.id)
		}
	}
	var again *Write
	if o := snap.streams["order-1"]; o.exists() {
		copy(id[:], fmt.Sprintf("afte2-%010d", snap.commits))
		again = appendTo(t, l, "order-1", Event{ID: id, Type: "T"})
		if again.After.Head != o.head+1 || again.FirstPosition != snap.lastPos()+2 {
			t.Fatalf("append to order-1 after crash: head %d at %d, want %d at %d", again.After.Head, again.FirstPosition, o.head+1, snap.lastPos()+2)
		}
	}
	last := l.LastPosition()

	// Crash again, keeping only what was synced: everything the reopened
	// log showed and acknowledged is there.
	l2 := crashOpen(t, fs.CrashClone(vfs.CrashCloneCfg{}))
	defer l2.Close()
	if l2.LastPosition() != last {
		t.Fatalf("second crash: last position %d, want %d", l2.LastPosition(), last)
	}
	evs, err := readStream(t, l2, StreamQuery{Stream: "after-crash"})
	if err != nil || len(evs) != 1 || evs[0].Position != snap.lastPos()+1 || string(evs[0].Data) != "after" {
		t.Fatalf("second crash: after-crash: %+v, %v", evs, err)
	}
	if again != nil {
		evs, err := readStream(t, l2, StreamQuery{Stream: "order-1", Backward: true, Max: 1})
		if err != nil || len(evs) != 1 || evs[0].Revision != again.After.Head || evs[0].Position != again.FirstPosition {
			t.Fatalf("second crash: order-1: %+v, %v", evs, err)
		}
	}
	if st := l2.Stats(); st.Events != l.Stats().Events || st.Streams != l.Stats().Streams {
		t.Fatalf("second crash: stats %+v, before %+v", st, l.Stats())
	}
}

// crashMaintenance runs the Flush and Compact of the script.
func crashMaintenance(t *testing.T, l *Log, commits int) {
	t.Helper()
	switch commits {
	case crashFlushAfter:
		if err := l.db.Flush(); err != nil {
			t.Fatal(err)
		}
	case crashCompactAfter:
		if err := l.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
			t.Fatal(err)
		}
	}
}

var crashUnsyncedPercents = []int{0, 50, 100}

// TestCrashAfterEveryCommit crashes after each acknowledged commit: with
// nothing in flight, the clone must hold exactly the commits so far,
// whatever share of unsynced data it keeps.
func TestCrashAfterEveryCommit(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openTest(t, fs)
	defer l.Close()
	r := newCrashRun(t, l)
	snaps := []crashSnapshot{r.m.snapshot(0)}
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 1; k <= len(r.script); k++ {
		tk := r.apply(k)
		if err := tk.Wait(context.Background()); err != nil {
			t.Fatalf("commit %d: %v", k, err)
		}
		crashMaintenance(t, l, k)
		snaps = append(snaps, r.m.snapshot(k))
		for _, p := range crashUnsyncedPercents {
			t.Run(fmt.Sprintf("commit=%d/unsynced=%d", k, p), func(t *testing.T) {
				clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng})
				rl := crashOpen(t, clone)
				defer rl.Close()
				snap := survivor(t, rl, snaps, k, k)
				verifyRecovered(t, rl, snap, r.m)
				appendAfterCrash(t, rl, clone, snap, r.m)
			})
		}
	}
	// The live log itself agrees with the model too.
	verifyRecovered(t, l, snaps[len(snaps)-1], r.m)
}

// TestCrashWithCommitsInFlight crashes right after each commit is applied,
// with it (and maybe earlier ones) not yet synced: what survives is the
// acknowledged commits plus maybe some more, always whole commits in
// position order, never a hole.
func TestCrashWithCommitsInFlight(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openTest(t, fs)
	defer l.Close()
	r := newCrashRun(t, l)
	snaps := []crashSnapshot{r.m.snapshot(0)}
	var tickets []*Ticket
	rng := rand.New(rand.NewPCG(3, 4))
	lost, unackedKept := 0, 0
	for k := 1; k <= len(r.script); k++ {
		tickets = append(tickets, r.apply(k))
		snaps = append(snaps, r.m.snapshot(k))
		// Acknowledged: done without error before the clone. Tickets are
		// done in position order.
		acked := 0
		for _, tk := range tickets {
			select {
			case <-tk.Done():
				if tk.Err() != nil {
					t.Fatalf("commit %d: %v", acked+1, tk.Err())
				}
				acked++
				continue
			default:
			}
			break
		}
		p := crashUnsyncedPercents[k%len(crashUnsyncedPercents)]
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng})
		t.Run(fmt.Sprintf("commit=%d/acked=%d/unsynced=%d", k, acked, p), func(t *testing.T) {
			rl := crashOpen(t, clone)
			defer rl.Close()
			snap := survivor(t, rl, snaps, acked, k)
			if snap.commits < k {
				lost++
			}
			if snap.commits > acked {
				unackedKept++
			}
			verifyRecovered(t, rl, snap, r.m)
			appendAfterCrash(t, rl, clone, snap, r.m)
		})
		// Every few commits, let the syncer catch up so that later crashes
		// start from varied depths of unsynced commits.
		if k%3 == 0 {
			for _, tk := range tickets {
				if err := tk.Wait(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			crashMaintenance(t, l, k)
		}
	}
	t.Logf("%d crashes lost an unacknowledged commit; %d kept one", lost, unackedKept)
	for _, tk := range tickets {
		if err := tk.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	verifyRecovered(t, l, snaps[len(snaps)-1], r.m)
}

// TestCrashStreamCreatedByTwoWritesOfOneCommit: the writer puts two
// appends to one new stream in one commit (group commit), the second
// with the state it predicts after the first (writer.predict, mirrored
// by predictState), which knows no commit time. The stream's Created must
// still be the commit time, before and after a crash: GetStream reports
// it as StreamInfo.created.
func TestCrashStreamCreatedByTwoWritesOfOneCommit(t *testing.T) {
	now := time.Now().UnixNano()
	for _, tc := range []struct {
		name   string
		t1, t2 int64 // Write.Time of each
	}{
		{"the log's clock", 0, 0},
		{"times chosen by the writer, the second later", now, now + 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			l := openTest(t, fs)
			defer l.Close()
			w1 := &Write{State: StreamState{ID: l.NewStreamID(), Name: "fresh"}, New: true, Events: []Event{testEvent(1)}, CheckIDs: true, Time: tc.t1}
			next := w1.State
			predictState(&next, w1)
			w2 := &Write{State: next, Events: []Event{testEvent(2)}, CheckIDs: true, Time: tc.t2}
			commit(t, l, w1, w2)
			if w2.After.Head != 1 || w2.FirstPosition != 2 {
				t.Fatalf("second write: %+v", w2.After)
			}
			if tc.t1 != 0 && (w1.Created != tc.t1 || w2.Created != tc.t2) {
				t.Fatalf("commit times %d, %d; want the writes' %d, %d", w1.Created, w2.Created, tc.t1, tc.t2)
			}
			check := func(l *Log, when string) {
				t.Helper()
				st, ok, err := l.State("fresh")
				if err != nil || !ok {
					t.Fatalf("%s: State: %t, %v", when, ok, err)
				}
				if st.Created != w1.Created || st.Created == 0 || st.Updated != w2.Created {
					t.Errorf("%s: stream created %d, updated %d; want created %d (the first write's time), updated %d",
						when, st.Created, st.Updated, w1.Created, w2.Created)
				}
			}
			check(l, "live")
			rl := crashOpen(t, fs.CrashClone(vfs.CrashCloneCfg{}))
			defer rl.Close()
			check(rl, "after crash")
		})
	}
}
