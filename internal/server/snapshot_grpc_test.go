package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
)

// This file tests the SnapshotService and the snapshot advice of appends
// through gRPC, on the real log.

var snapSeed = flag.Uint64("snap.seed", 0, "seed of TestSnapshotLoadRandomized's first run (0: from the clock)")

func (ts *testServer) snapshots() esdv1.SnapshotServiceClient {
	return esdv1.NewSnapshotServiceClient(ts.conn)
}

func withSnapshots(cfg snapshot.Config) serverOption {
	return func(ts *testServer) { ts.ecfg.Snapshots = cfg }
}

// loaded is what a Load returned.
type loaded struct {
	snap   *esdv1.Snapshot
	events []*esdv1.RecordedEvent
	chunks int
	end    *esdv1.LoadEnd
}

// load runs a Load and checks the shape of its answer: at most one
// snapshot, first; one end, last.
func (ts *testServer) load(t *testing.T, stream string, schema uint32) (loaded, error) {
	t.Helper()
	rs, err := ts.snapshots().Load(testCtx(t), &esdv1.LoadRequest{Stream: stream, SchemaVersion: schema})
	if err != nil {
		return loaded{}, err
	}
	var l loaded
	for i := 0; ; i++ {
		m, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			if l.end == nil {
				t.Fatalf("load of %s: no end message", stream)
			}
			return l, nil
		}
		if err != nil {
			return l, err
		}
		if l.end != nil {
			t.Fatalf("load of %s: a message after end: %v", stream, m)
		}
		switch c := m.GetContent().(type) {
		case *esdv1.LoadResponse_Snapshot:
			if i != 0 {
				t.Fatalf("load of %s: snapshot as message %d", stream, i)
			}
			l.snap = c.Snapshot
		case *esdv1.LoadResponse_Events:
			if len(c.Events.GetEvents()) == 0 {
				t.Fatalf("load of %s: an empty events message", stream)
			}
			l.events = append(l.events, c.Events.GetEvents()...)
			l.chunks++
		case *esdv1.LoadResponse_End:
			l.end = c.End
		default:
			t.Fatalf("load of %s: message %v", stream, m)
		}
	}
}

func (ts *testServer) mustLoad(t *testing.T, stream string, schema uint32) loaded {
	t.Helper()
	l, err := ts.load(t, stream, schema)
	if err != nil {
		t.Fatalf("load %s v%d: %v", stream, schema, err)
	}
	return l
}

func (ts *testServer) saveSnapshot(t *testing.T, stream string, rev uint64, schema uint32, data string) (*esdv1.SaveSnapshotResponse, error) {
	t.Helper()
	return ts.snapshots().SaveSnapshot(testCtx(t), &esdv1.SaveSnapshotRequest{
		Stream: stream, Revision: rev, Type: "State", SchemaVersion: schema, Data: []byte(data),
	})
}

func (ts *testServer) mustSaveSnapshot(t *testing.T, stream string, rev uint64, schema uint32, data string) *esdv1.SaveSnapshotResponse {
	t.Helper()
	resp, err := ts.saveSnapshot(t, stream, rev, schema, data)
	if err != nil {
		t.Fatalf("save snapshot %s@%d v%d: %v", stream, rev, schema, err)
	}
	return resp
}

func (ts *testServer) listSnapshots(t *testing.T, stream string) []string {
	t.Helper()
	resp, err := ts.snapshots().ListSnapshots(testCtx(t), &esdv1.ListSnapshotsRequest{Stream: stream})
	if err != nil {
		t.Fatalf("list snapshots of %s: %v", stream, err)
	}
	var out []string
	for _, in := range resp.GetSnapshots() {
		s := fmt.Sprintf("%d/v%d", in.GetRevision(), in.GetSchemaVersion())
		if !in.GetUsable() {
			s += "(unusable)"
		}
		out = append(out, s)
	}
	return out
}

// --- the test aggregate: a fold of a stream's events ---

// agg is the state of a test aggregate: the number of events folded and
// a hash of their ids, revisions and data, so that two folds agree only
// if they folded the same events in the same order.
type agg struct {
	Rev   int64 // the last revision folded; -1 none
	Count int
	Hash  uint64
}

func newAgg() agg { return agg{Rev: -1} }

func (a agg) fold(e *esdv1.RecordedEvent) agg {
	h := fnv.New64a()
	fmt.Fprintf(h, "%x|%s|%d|%s", a.Hash, e.GetId(), e.GetRevision(), e.GetData())
	return agg{Rev: int64(e.GetRevision()), Count: a.Count + 1, Hash: h.Sum64()}
}

func (a agg) encode() string { return fmt.Sprintf("%d %d %x", a.Rev, a.Count, a.Hash) }

func decodeAgg(t *testing.T, s string) agg {
	t.Helper()
	var a agg
	if _, err := fmt.Sscanf(s, "%d %d %x", &a.Rev, &a.Count, &a.Hash); err != nil {
		t.Fatalf("snapshot data %q: %v", s, err)
	}
	return a
}

// --- the model of a stream and its snapshots ---

type snapKey struct {
	rev    uint64
	schema uint32
}

type modelStream struct {
	name     string
	events   []*esdv1.RecordedEvent // every event ever appended, by revision
	truncate uint64                 // the first visible revision
	snaps    []snapKey              // stored, by (revision, schema)
	data     map[snapKey]string
}

func (m *modelStream) written() bool { return len(m.events) > 0 }
func (m *modelStream) head() uint64  { return uint64(len(m.events)) - 1 }
func (m *modelStream) exists() bool  { return m.written() && m.head()+1 > m.truncate }

// stateAt folds the visible events up to rev.
func (m *modelStream) stateAt(rev uint64) agg {
	a := newAgg()
	for _, e := range m.events[m.truncate : rev+1] {
		a = a.fold(e)
	}
	return a
}

func cmpSnapKey(a, b snapKey) int {
	if a.rev != b.rev {
		if a.rev < b.rev {
			return -1
		}
		return 1
	}
	return int(a.schema) - int(b.schema)
}

// save applies a save the server accepted to the model and reports
// whether it is stored (the retention rule of internal/snapshot).
func (m *modelStream) save(k snapKey, data string, retention int) bool {
	var keep []snapKey
	for _, s := range m.snaps {
		if s.rev >= m.truncate && s != k {
			keep = append(keep, s)
		}
	}
	keep = append(keep, k)
	slices.SortFunc(keep, cmpSnapKey)
	if len(keep) > retention {
		keep = keep[len(keep)-retention:]
	}
	if !slices.Contains(keep, k) {
		return false
	}
	for _, s := range m.snaps {
		if !slices.Contains(keep, s) {
			delete(m.data, s)
		}
	}
	m.snaps, m.data[k] = keep, data
	return true
}

// latest is the snapshot a Load of schema should start from.
func (m *modelStream) latest(schema uint32) (snapKey, bool) {
	for i := len(m.snaps) - 1; i >= 0; i-- {
		if s := m.snaps[i]; s.schema == schema && s.rev >= m.truncate && s.rev <= m.head() {
			return s, true
		}
	}
	return snapKey{}, false
}

// checkLoad loads the stream with schema and checks it against the
// model: exactly the latest usable snapshot and every event after it, and
// the fold of both equals a full replay's.
func checkLoad(t *testing.T, ts *testServer, m *modelStream, schema uint32) {
	t.Helper()
	l, err := ts.load(t, m.name, schema)
	switch {
	case !m.written():
		wantError(t, err, codes.NotFound, reasonStreamNotFound, m.name)
		return
	case !m.exists():
		wantError(t, err, codes.NotFound, reasonStreamDeleted, m.name)
		return
	case err != nil:
		t.Fatalf("load %s v%d: %v", m.name, schema, err)
	}
	want, ok := m.latest(schema)
	from := m.truncate
	st := newAgg()
	switch {
	case ok && l.snap == nil:
		t.Fatalf("load %s v%d: no snapshot, want the one at %d", m.name, schema, want.rev)
	case !ok && l.snap != nil:
		t.Fatalf("load %s v%d: snapshot at %d v%d, want none", m.name, schema, l.snap.GetRevision(), l.snap.GetSchemaVersion())
	case ok:
		if l.snap.GetRevision() != want.rev || l.snap.GetSchemaVersion() != schema || string(l.snap.GetData()) != m.data[want] ||
			l.snap.GetStream() != m.name || l.snap.GetType() != "State" {
			t.Fatalf("load %s v%d: snapshot %v, want revision %d data %q", m.name, schema, l.snap, want.rev, m.data[want])
		}
		st = decodeAgg(t, string(l.snap.GetData()))
		from = want.rev + 1
	}
	if uint64(len(l.events)) != m.head()+1-from {
		t.Fatalf("load %s v%d: %d events, want %d (revisions %d..%d)", m.name, schema, len(l.events), m.head()+1-from, from, m.head())
	}
	for i, e := range l.events {
		if w := m.events[from+uint64(i)]; e.GetId() != w.GetId() || e.GetRevision() != w.GetRevision() {
			t.Fatalf("load %s: event %d is %s@%d, want %s@%d", m.name, i, e.GetId(), e.GetRevision(), w.GetId(), w.GetRevision())
		}
		st = st.fold(e)
	}
	if full := m.stateAt(m.head()); st != full {
		t.Fatalf("load %s v%d: folded %+v, a full replay folds %+v", m.name, schema, st, full)
	}
	if l.end.GetHead() != m.head() {
		t.Fatalf("load %s: head %d, want %d", m.name, l.end.GetHead(), m.head())
	}
}

// TestSnapshotLoadRandomized: many streams, appends, snapshots saved at
// random revisions (some of another schema version, some refused: past
// the head, of a deleted revision, on a deleted stream), soft deletes and
// restarts; every Load returns exactly the latest usable snapshot of its
// schema version and every event after it, and their fold equals a full
// replay's; List and Get agree with the model. The seed is in the
// subtest's name; -snap.seed=N replays it.
func TestSnapshotLoadRandomized(t *testing.T) {
	runs, ops := 4, 400
	if testutil.RaceEnabled || testing.Short() {
		runs, ops = 2, 250
	}
	base := *snapSeed
	if base == 0 {
		base = uint64(time.Now().UnixNano())
	}
	for r := range runs {
		seed := base + uint64(r)
		if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { snapRandomRun(t, seed, ops) }) {
			break
		}
	}
}

func snapRandomRun(t *testing.T, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, 0x5a5))
	retention := 1 + rng.IntN(3)
	ts := newTestServer(t, withShards(2), withSnapshots(snapshot.Config{Retention: retention}))
	streams := make([]*modelStream, 12)
	for i := range streams {
		streams[i] = &modelStream{name: fmt.Sprintf("agg%d-%d", i%3, i), data: map[snapKey]string{}}
	}
	restarts := 0
	var refused, stale, saved int
	for op := range ops {
		m := streams[rng.IntN(len(streams))]
		switch p := rng.IntN(100); {
		case p < 40: // append
			evs := events(1+rng.IntN(6), "Ev")
			resp := ts.mustAppend(t, appendReq(m.name, xAny, evs...))
			for i, e := range evs {
				m.events = append(m.events, &esdv1.RecordedEvent{Id: e.GetId(), Revision: resp.GetFirstRevision() + uint64(i), Data: e.GetData()})
			}
			if m.head() != resp.GetLastRevision() {
				t.Fatalf("model head %d, server %d", m.head(), resp.GetLastRevision())
			}
		case p < 75: // save
			schema := uint32(1)
			if rng.IntN(4) == 0 {
				schema = 2
			}
			var rev uint64
			if m.written() {
				rev = uint64(rng.IntN(int(m.head()) + 3)) // up to two past the head
			}
			data := "garbage"
			if m.written() && rev <= m.head() && rev >= m.truncate {
				data = m.stateAt(rev).encode()
			}
			resp, err := ts.saveSnapshot(t, m.name, rev, schema, data)
			switch {
			case !m.written():
				wantError(t, err, codes.NotFound, reasonStreamNotFound, m.name)
				refused++
			case !m.exists():
				wantError(t, err, codes.NotFound, reasonStreamDeleted, m.name)
				refused++
			case rev > m.head() || rev < m.truncate:
				wantError(t, err, codes.FailedPrecondition, reasonSnapshotRevision, m.name)
				refused++
			case err != nil:
				t.Fatalf("op %d: save %s@%d v%d: %v", op, m.name, rev, schema, err)
			default:
				if want := m.save(snapKey{rev, schema}, data, retention); resp.GetSaved() != want {
					t.Fatalf("op %d: save %s@%d v%d: saved %t, the model says %t (model %v)", op, m.name, rev, schema, resp.GetSaved(), want, m.snaps)
				}
				if resp.GetSaved() {
					saved++
				} else {
					stale++
				}
			}
		case p < 78: // soft delete
			if m.exists() {
				ts.mustDelete(t, m.name, false)
				m.truncate = m.head() + 1
			}
		case p < 79 && restarts < 2:
			ts.restart()
			restarts++
		default:
			checkLoad(t, ts, m, uint32(1+rng.IntN(2)))
		}
	}
	ts.restart()
	for _, m := range streams {
		for _, schema := range []uint32{1, 2, 3} {
			checkLoad(t, ts, m, schema)
		}
		var want []string
		for _, s := range m.snaps {
			w := fmt.Sprintf("%d/v%d", s.rev, s.schema)
			if s.rev < m.truncate || !m.exists() {
				w += "(unusable)"
			}
			want = append(want, w)
		}
		if got := ts.listSnapshots(t, m.name); !slices.Equal(got, want) {
			t.Fatalf("snapshots of %s: %v, want %v", m.name, got, want)
		}
		if m.exists() {
			for range 3 {
				maxRev := uint64(rng.IntN(int(m.head()) + 2))
				resp, err := ts.snapshots().GetSnapshot(testCtx(t), &esdv1.GetSnapshotRequest{Stream: m.name, MaxRevision: maxRev, SchemaVersion: 1})
				var want *snapKey
				for i := len(m.snaps) - 1; i >= 0; i-- {
					if s := m.snaps[i]; s.schema == 1 && s.rev >= m.truncate && (maxRev == 0 || s.rev <= maxRev) {
						want = &s
						break
					}
				}
				if want == nil {
					wantError(t, err, codes.NotFound, reasonSnapshotNotFound, m.name)
				} else if err != nil || resp.GetSnapshot().GetRevision() != want.rev || string(resp.GetSnapshot().GetData()) != m.data[*want] {
					t.Fatalf("get %s max %d: %v %v, want revision %d", m.name, maxRev, resp, err, want.rev)
				}
			}
		}
	}
	t.Logf("retention %d: %d saves stored, %d stale, %d refused, %d restarts", retention, saved, stale, refused, restarts+1)
	// Snapshots are not events: $all holds the appends and deletions only.
	n := 0
	for _, m := range streams {
		n += len(m.events)
	}
	if got := len(ts.readAll(t)); got > n+len(streams) { // + $deleted events
		t.Fatalf("$all holds %d events, the appends and deletions at most %d", got, n+len(streams))
	}
}

func TestSnapshotBasics(t *testing.T) {
	ts := newTestServer(t, withLimits(Limits{MaxEventBytes: 1000, MaxAppendBytes: 1 << 20}))
	snaps := ts.snapshots()
	ctx := testCtx(t)
	lastPos := func() uint64 { return ts.lastPosition(t) }
	ids := ts.fill(t, "order-1", 20, "Ev") // revisions 0..19
	pos := lastPos()
	sub := subscribe(t, ts.streams, subAll(nil, subAfterPosition(pos)))

	if r := ts.mustSaveSnapshot(t, "order-1", 9, 1, "nine"); !r.GetSaved() {
		t.Fatalf("save: %v", r)
	}
	ts.mustSaveSnapshot(t, "order-1", 19, 1, "nineteen")
	ts.mustSaveSnapshot(t, "order-1", 15, 2, "fifteen v2")
	if got := fmt.Sprint(ts.listSnapshots(t, "order-1")); got != "[15/v2 19/v1]" {
		t.Fatalf("snapshots %s (retention 2)", got)
	}
	if lastPos() != pos {
		t.Fatal("a snapshot took a position")
	}

	// Load at the head: the snapshot and no events; v2: 4 events; v3: all.
	l := ts.mustLoad(t, "order-1", 1)
	if l.snap.GetRevision() != 19 || string(l.snap.GetData()) != "nineteen" || len(l.events) != 0 || l.end.GetHead() != 19 || l.snap.GetCreated() == nil {
		t.Fatalf("load v1: %+v", l)
	}
	l = ts.mustLoad(t, "order-1", 2)
	if l.snap.GetRevision() != 15 || len(l.events) != 4 || l.events[0].GetId() != ids[16] || l.end.GetHead() != 19 {
		t.Fatalf("load v2: %+v", l)
	}
	if l = ts.mustLoad(t, "order-1", 3); l.snap != nil || len(l.events) != 20 {
		t.Fatalf("load v3 (no snapshot: a plain read): %+v", l)
	}
	if l.end.GetEventsSinceSnapshot() != 0 || l.end.GetSnapshotAdvised() {
		t.Fatalf("advice without a policy: %v", l.end)
	}

	// Errors.
	_, err := ts.saveSnapshot(t, "order-1", 20, 1, "x")
	wantError(t, err, codes.FailedPrecondition, reasonSnapshotRevision, "order-1")
	_, err = ts.saveSnapshot(t, "order-2", 0, 1, "x")
	wantError(t, err, codes.NotFound, reasonStreamNotFound, "order-2")
	_, err = ts.saveSnapshot(t, "order-1", 3, 1, strings.Repeat("x", 1001))
	if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != "data" {
		t.Fatalf("too large: %v", err)
	}
	wantError(t, err, codes.InvalidArgument, reasonSnapshotTooLarge, "order-1")
	_, err = snaps.SaveSnapshot(ctx, &esdv1.SaveSnapshotRequest{Stream: "order-1", Revision: 3})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "order-1")
	_, err = snaps.SaveSnapshot(ctx, &esdv1.SaveSnapshotRequest{Stream: "$deleted", Type: "T"})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "$deleted")
	_, err = snaps.GetSnapshot(ctx, &esdv1.GetSnapshotRequest{Stream: "order-1", SchemaVersion: 7})
	wantError(t, err, codes.NotFound, reasonSnapshotNotFound, "order-1")
	_, err = snaps.GetSnapshot(ctx, &esdv1.GetSnapshotRequest{Stream: "order-9"})
	wantError(t, err, codes.NotFound, reasonStreamNotFound, "order-9")
	_, err = ts.load(t, "order-9", 1)
	wantError(t, err, codes.NotFound, reasonStreamNotFound, "order-9")
	_, err = ts.load(t, "", 1)
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = snaps.ListSnapshots(ctx, &esdv1.ListSnapshotsRequest{Stream: "bad\x00name"})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = snaps.SetSnapshotPolicy(ctx, &esdv1.SetSnapshotPolicyRequest{Category: "order-1"})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	if resp, err := snaps.ListSnapshots(ctx, &esdv1.ListSnapshotsRequest{Stream: "never"}); err != nil || len(resp.GetSnapshots()) != 0 {
		t.Fatalf("list of a stream never written: %v %v", resp, err)
	}
	// A system stream loads (a plain read); it has no snapshots.
	ts.fill(t, "gone-1", 1, "Ev")
	// The subscriber below must have the event before the tombstone: one
	// that reads it from the log after the tombstone (still catching up,
	// on a busy machine) finds it hidden, as every reader does.
	eventually(t, "the event before its tombstone", func() bool { return len(sub.events()) == 1 })
	ts.mustDelete(t, "gone-1", true)
	pos = lastPos()
	if l := ts.mustLoad(t, "$deleted", 0); l.snap != nil || len(l.events) != 1 {
		t.Fatalf("load of $deleted: %+v", l)
	}

	// Delete.
	if resp, err := snaps.DeleteSnapshots(ctx, &esdv1.DeleteSnapshotsRequest{Stream: "order-1", BeforeRevision: 16}); err != nil || resp.GetDeleted() != 1 {
		t.Fatalf("delete before 16: %v %v", resp, err)
	}
	if got := fmt.Sprint(ts.listSnapshots(t, "order-1")); got != "[19/v1]" {
		t.Fatalf("snapshots %s", got)
	}

	// Nothing of it reached a subscriber of $all or $all itself.
	if lastPos() != pos {
		t.Fatal("a snapshot delete took a position")
	}
	ts.mustAppend(t, appendReq("order-1", xAny, event("Marker", "")))
	eventually(t, "the marker", func() bool { return len(sub.events()) == 3 })
	if evs := sub.events(); evs[0].GetStream() != "gone-1" || evs[1].GetStream() != "$deleted" || evs[2].GetType() != "Marker" {
		t.Fatalf("a subscriber of $all got %v", evs)
	}

	// Metrics.
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"esd_snapshot_loads_total", map[string]string{"snapshot": "hit"}, 2},
		{"esd_snapshot_loads_total", map[string]string{"snapshot": "miss"}, 2},
		{"esd_snapshot_load_replayed_events", nil, 4},
		{"esd_snapshot_saves_total", map[string]string{"result": "saved"}, 3},
		{"esd_snapshot_pruned_total", map[string]string{"cause": "retention"}, 1},
		{"esd_snapshot_pruned_total", map[string]string{"cause": "request"}, 1},
	} {
		if got := testutil.MetricValue(t, ts.reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
}

// TestSnapshotLoadChunksAndView: a load sends the events after its
// snapshot in chunks like ReadStream's; under concurrent appends each
// load is one view of the stream: its events run without a gap from the
// snapshot to the head it reports.
func TestSnapshotLoadChunksAndView(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	ts.fill(t, "big-1", 2000, "Ev")
	ts.mustSaveSnapshot(t, "big-1", 99, 1, "s")
	l := ts.mustLoad(t, "big-1", 1)
	if len(l.events) != 1900 || l.chunks != 4 { // 512 a chunk
		t.Fatalf("load: %d events in %d chunks, want 1900 in 4", len(l.events), l.chunks)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	var appended atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := ts.streams.Append(ctx, appendReq("big-1", xAny, events(1+int(appended.Load()%7), "More")...)); err != nil {
				if ctx.Err() == nil {
					t.Errorf("append: %v", err)
				}
				return
			}
			appended.Add(1)
		}
	}()
	for i := 0; i < 40 || appended.Load() < 20; i++ {
		if i%10 == 0 {
			head := ts.getStream(t, "big-1").GetHead()
			ts.mustSaveSnapshot(t, "big-1", head-uint64(i%3), 1, "s")
		}
		l := ts.mustLoad(t, "big-1", 1)
		next := l.snap.GetRevision() + 1
		for _, e := range l.events {
			if e.GetRevision() != next {
				t.Fatalf("load %d: revision %d after %d", i, e.GetRevision(), next-1)
			}
			next++
		}
		if l.end.GetHead() != next-1 {
			t.Fatalf("load %d: head %d, the last event sent %d", i, l.end.GetHead(), next-1)
		}
	}
	cancel()
	wg.Wait()
}

// TestSnapshotDeletesAcrossRestart: a snapshot of a deleted revision is
// refused; a soft delete makes the snapshots at or below the deleted head
// unusable (Get and Load skip them, List says so) and the next save
// prunes them; a tombstone removes them; all of it holds across a
// restart.
func TestSnapshotDeletesAcrossRestart(t *testing.T) {
	ts := newTestServer(t, withSnapshots(snapshot.Config{Retention: 3}))
	ts.fill(t, "soft-1", 10, "Ev")
	ts.fill(t, "tomb-1", 10, "Ev")
	for _, s := range []string{"soft-1", "tomb-1"} {
		ts.mustSaveSnapshot(t, s, 4, 1, "four")
		ts.mustSaveSnapshot(t, s, 9, 1, "nine")
	}
	ts.mustDelete(t, "soft-1", false)
	ts.mustDelete(t, "tomb-1", true)
	ts.restart()

	_, err := ts.saveSnapshot(t, "soft-1", 9, 1, "x")
	wantError(t, err, codes.NotFound, reasonStreamDeleted, "soft-1")
	_, err = ts.load(t, "soft-1", 1)
	wantError(t, err, codes.NotFound, reasonStreamDeleted, "soft-1")
	if got := fmt.Sprint(ts.listSnapshots(t, "soft-1")); got != "[4/v1(unusable) 9/v1(unusable)]" {
		t.Fatalf("snapshots after a soft delete: %s", got)
	}
	ts.fill(t, "soft-1", 5, "Again") // revisions 10..14
	_, err = ts.saveSnapshot(t, "soft-1", 9, 1, "x")
	wantError(t, err, codes.FailedPrecondition, reasonSnapshotRevision, "soft-1")
	if l := ts.mustLoad(t, "soft-1", 1); l.snap != nil || len(l.events) != 5 || l.events[0].GetRevision() != 10 {
		t.Fatalf("load after a soft delete: %+v", l)
	}
	_, err = ts.snapshots().GetSnapshot(testCtx(t), &esdv1.GetSnapshotRequest{Stream: "soft-1", SchemaVersion: 1})
	wantError(t, err, codes.NotFound, reasonSnapshotNotFound, "soft-1")
	if r := ts.mustSaveSnapshot(t, "soft-1", 12, 1, "twelve"); !r.GetSaved() || r.GetPruned() != 2 {
		t.Fatalf("save after a soft delete: %v, want 2 pruned", r)
	}
	ts.restart()
	if got := fmt.Sprint(ts.listSnapshots(t, "soft-1")); got != "[12/v1]" {
		t.Fatalf("snapshots: %s", got)
	}
	if l := ts.mustLoad(t, "soft-1", 1); l.snap.GetRevision() != 12 || len(l.events) != 2 {
		t.Fatalf("load: %+v", l)
	}

	if got := ts.listSnapshots(t, "tomb-1"); len(got) != 0 {
		t.Fatalf("snapshots of a tombstoned stream: %v", got)
	}
	_, err = ts.saveSnapshot(t, "tomb-1", 9, 1, "x")
	wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, "tomb-1")
	_, err = ts.load(t, "tomb-1", 1)
	wantError(t, err, codes.NotFound, reasonStreamTombstoned, "tomb-1")
	_, err = ts.snapshots().GetSnapshot(testCtx(t), &esdv1.GetSnapshotRequest{Stream: "tomb-1", SchemaVersion: 1})
	wantError(t, err, codes.NotFound, reasonStreamTombstoned, "tomb-1")
}

// TestSnapshotConcurrentSaves: concurrent SaveSnapshot calls for one
// stream leave the newest.
func TestSnapshotConcurrentSaves(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	ts.fill(t, "race-1", 300, "Ev")
	for round := range 3 {
		var wg sync.WaitGroup
		revs := rand.Perm(64)
		for _, r := range revs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rev := uint64(round*100 + r)
				if _, err := ts.saveSnapshot(t, "race-1", rev, 1, fmt.Sprint(rev)); err != nil {
					t.Errorf("save %d: %v", rev, err)
				}
			}()
		}
		wg.Wait()
		want := fmt.Sprintf("[%d/v1 %d/v1]", round*100+62, round*100+63)
		if got := fmt.Sprint(ts.listSnapshots(t, "race-1")); got != want {
			t.Fatalf("round %d: snapshots %s, want %s", round, got, want)
		}
		if l := ts.mustLoad(t, "race-1", 1); string(l.snap.GetData()) != fmt.Sprint(round*100+63) {
			t.Fatalf("round %d: load from %v", round, l.snap)
		}
	}
}

// TestSnapshotCrashDurability: a crash (the store cloned as a crash would
// leave it) keeps every acknowledged snapshot save: the newest snapshot of
// each stream after the crash is at least the last acknowledged one, and
// every snapshot found holds what was saved at its revision.
func TestSnapshotCrashDurability(t *testing.T) {
	fs := vfs.NewCrashableMem()
	ts := newTestServer(t, withShards(2), withDir(fs, "db"))
	const streams = 4
	for i := range streams {
		ts.fill(t, fmt.Sprint("crash-", i), 500, "Ev")
	}
	var (
		mu    sync.Mutex
		acked [streams]int64 // the last acknowledged revision, -1 none
		wg    sync.WaitGroup
	)
	for i := range acked {
		acked[i] = -1
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rev := 0; rev < 500 && ctx.Err() == nil; rev++ {
				_, err := ts.snapshots().SaveSnapshot(ctx, &esdv1.SaveSnapshotRequest{
					Stream: fmt.Sprint("crash-", i), Revision: uint64(rev), Type: "S", SchemaVersion: 1, Data: []byte(fmt.Sprint("rev ", rev)),
				})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("save: %v", err)
					}
					return
				}
				mu.Lock()
				acked[i] = int64(rev)
				mu.Unlock()
			}
		}()
	}
	for c := range 2 {
		eventually(t, "snapshots acknowledged", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return acked[0] >= int64(20*(c+1))
		})
		mu.Lock()
		want := acked
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(c), 9))})
		mu.Unlock()
		t.Run(fmt.Sprintf("crash %d", c), func(t *testing.T) {
			after := newTestServer(t, withDir(crashed, "db"))
			for i := range streams {
				s := fmt.Sprint("crash-", i)
				l := after.mustLoad(t, s, 1)
				if want[i] < 0 {
					continue
				}
				if l.snap == nil || int64(l.snap.GetRevision()) < want[i] {
					t.Fatalf("%s: loaded from %v after the crash, acknowledged up to %d", s, l.snap, want[i])
				}
				if string(l.snap.GetData()) != fmt.Sprint("rev ", l.snap.GetRevision()) {
					t.Fatalf("%s: snapshot at %d holds %q", s, l.snap.GetRevision(), l.snap.GetData())
				}
				if got := after.listSnapshots(t, s); len(got) > 2 {
					t.Fatalf("%s: %v after the crash, retention 2", s, got)
				}
			}
		})
	}
	cancel()
	wg.Wait()
}

// TestSnapshotAdviceEvery: the every-N policy advises exactly when a
// stream has had N events since its latest snapshot, on appends
// (AppendMulti too) and loads; per-category policies are stored and
// survive a restart, as does the count (the advice cache is rebuilt from
// the namespace).
func TestSnapshotAdviceEvery(t *testing.T) {
	ts := newTestServer(t, withSnapshots(snapshot.Config{Default: snapshot.Policy{Every: 3}}))
	snaps := ts.snapshots // after a restart, a client on the new connection
	if _, err := snaps().SetSnapshotPolicy(testCtx(t), &esdv1.SetSnapshotPolicyRequest{
		Category: "ord", Policy: &esdv1.SnapshotPolicy{Every: 10},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := snaps().SetSnapshotPolicy(testCtx(t), &esdv1.SetSnapshotPolicyRequest{Category: "quiet", Policy: &esdv1.SnapshotPolicy{}}); err != nil {
		t.Fatal(err)
	}
	check := func(resp *esdv1.AppendResponse, since uint64, advised bool) {
		t.Helper()
		if resp.GetEventsSinceSnapshot() != since || resp.GetSnapshotAdvised() != advised {
			t.Fatalf("head %d: events since %d advised %t, want %d %t", resp.GetLastRevision(),
				resp.GetEventsSinceSnapshot(), resp.GetSnapshotAdvised(), since, advised)
		}
	}
	app := func(stream string, n int) *esdv1.AppendResponse {
		return ts.mustAppend(t, appendReq(stream, xAny, events(n, "Ev")...))
	}
	check(app("ord-1", 9), 9, false)
	check(app("ord-1", 1), 10, true)
	check(app("ord-1", 1), 11, true) // until a snapshot is saved
	ts.mustSaveSnapshot(t, "ord-1", 10, 1, "s")
	check(app("ord-1", 1), 1, false)
	check(app("def-1", 2), 2, false) // the default: every 3
	check(app("def-1", 1), 3, true)
	check(app("quiet-1", 50), 0, false) // its own policy: none

	ts.restart()
	if resp, err := snaps().GetSnapshotPolicy(testCtx(t), &esdv1.GetSnapshotPolicyRequest{Category: "ord"}); err != nil ||
		resp.GetPolicy().GetEvery() != 10 || resp.GetIsDefault() {
		t.Fatalf("policy of ord after a restart: %v %v", resp, err)
	}
	check(app("ord-1", 7), 8, false)
	check(app("ord-1", 2), 10, true)
	if l := ts.mustLoad(t, "ord-1", 1); l.end.GetEventsSinceSnapshot() != 10 || !l.end.GetSnapshotAdvised() {
		t.Fatalf("load: %v", l.end)
	}
	resp, err := ts.streams.AppendMulti(testCtx(t), multiReq(appendReq("ord-1", xAny, event("E", "")), appendReq("def-2", xAny, events(4, "E")...)))
	if err != nil {
		t.Fatal(err)
	}
	check(resp.GetResults()[0], 11, true)
	check(resp.GetResults()[1], 4, true)

	// Deleting the category's policy brings back the default.
	if _, err := snaps().DeleteSnapshotPolicy(testCtx(t), &esdv1.DeleteSnapshotPolicyRequest{Category: "ord"}); err != nil {
		t.Fatal(err)
	}
	ts.restart()
	if resp, err := snaps().GetSnapshotPolicy(testCtx(t), &esdv1.GetSnapshotPolicyRequest{Category: "ord"}); err != nil ||
		resp.GetPolicy().GetEvery() != 3 || !resp.GetIsDefault() {
		t.Fatalf("policy of ord after its delete: %v %v", resp, err)
	}
	check(app("ord-1", 1), 12, true)
	// A soft delete starts the count again from the first visible event.
	ts.mustDelete(t, "ord-1", false)
	check(app("ord-1", 2), 2, false)
	if got := testutil.MetricValue(t, ts.reg, "esd_snapshot_advised_total", map[string]string{"policy": "every", "source": "append"}); got != 1 {
		t.Fatalf("esd_snapshot_advised_total{every,append} %g since the restart, want 1", got)
	}
}

// fakeClock is a settable clock for the snapshots' times.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestSnapshotAdviceDynamic: the dynamic policy advises once events since
// the latest snapshot times the stream's load rate reach the threshold. A
// stream alone in its sketch cells reads its exact decayed load count c
// (see internal/snapshot's rates.go), so with threshold T and tau = the
// half-life / ln 2 the first advice comes at ceil(T*tau/c) events since;
// the documented bound (an estimate at most e/width of the total decayed
// count too high) allows it down to ceil(T*tau/(c + e/width*total)). A
// stream never loaded is never advised. The rates survive a restart,
// decayed by the time that passed.
func TestSnapshotAdviceDynamic(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC).UnixNano())
	const halfLife = time.Minute
	const threshold = 100
	const width = snapshot.DefaultSketchWidth
	ts := newTestServer(t, withSnapshots(snapshot.Config{HalfLife: halfLife, Clock: clock.now}))
	if _, err := ts.snapshots().SetSnapshotPolicy(testCtx(t), &esdv1.SetSnapshotPolicyRequest{
		Category: "dyn", Policy: &esdv1.SnapshotPolicy{ReplayThreshold: threshold},
	}); err != nil {
		t.Fatal(err)
	}
	tau := halfLife.Seconds() / math.Ln2
	ts.fill(t, "dyn-hot", 1, "Ev")
	const loads = 50
	for range loads {
		ts.mustLoad(t, "dyn-hot", 1)
	}
	total := float64(loads)
	// firstAdvice checks that appends to the stream are advised from
	// between the bounds for a decayed count c on: it saves a snapshot at
	// the head, then appends up to lo-1 events (not advised) and then to
	// hi (advised).
	firstAdvice := func(c float64) {
		t.Helper()
		hi := uint64(math.Ceil(threshold * tau / c))
		lo := uint64(math.Ceil(threshold * tau / (c + math.E/width*total)))
		head := ts.getStream(t, "dyn-hot").GetHead()
		ts.mustSaveSnapshot(t, "dyn-hot", head, 1, "s")
		resp := ts.mustAppend(t, appendReq("dyn-hot", xAny, events(int(lo-1), "Ev")...))
		if resp.GetEventsSinceSnapshot() != lo-1 || resp.GetSnapshotAdvised() {
			t.Fatalf("%d events since (count %g): advised %t, want not before %d", resp.GetEventsSinceSnapshot(), c, resp.GetSnapshotAdvised(), lo)
		}
		resp = ts.mustAppend(t, appendReq("dyn-hot", xAny, events(int(hi-lo+1), "Ev")...))
		if resp.GetEventsSinceSnapshot() != hi || !resp.GetSnapshotAdvised() {
			t.Fatalf("%d events since (count %g): advised %t, want advised from %d", resp.GetEventsSinceSnapshot(), c, resp.GetSnapshotAdvised(), hi)
		}
		t.Logf("count %.2f: advised from %d events since (bounds %d..%d)", c, hi, lo, hi)
	}
	firstAdvice(loads)
	// A cold stream, however long, is not advised.
	if resp := ts.mustAppend(t, appendReq("dyn-cold", xAny, events(5000, "Ev")...)); resp.GetSnapshotAdvised() || resp.GetEventsSinceSnapshot() != 5000 {
		t.Fatalf("a cold stream: %v", resp)
	}
	// A half-life later, across a restart, the rate is half: the advice
	// comes after twice the events.
	ts.restart()
	clock.advance(halfLife)
	firstAdvice(loads / 2)
	if got := testutil.MetricValue(t, ts.reg, "esd_snapshot_advised_total", map[string]string{"policy": "dynamic"}); got != 1 {
		t.Fatalf("esd_snapshot_advised_total{dynamic} = %g, want 1", got)
	}
	// The load's own answer carries the advice too (its load counted).
	l := ts.mustLoad(t, "dyn-hot", 1)
	if !l.end.GetSnapshotAdvised() {
		t.Fatalf("load: %v", l.end)
	}
}

// TestSnapshotInvalidUTF8: a snapshot's stream or type, and a policy's
// category, that are not UTF-8 are INVALID_ARGUMENT naming the field.
func TestSnapshotInvalidUTF8(t *testing.T) {
	ts := newTestServer(t)
	field := func(num protowire.Number, s string) []byte {
		b := protowire.AppendTag(nil, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	for _, tc := range []struct {
		name, method string
		req          []byte
		field        string
	}{
		{"save stream", esdv1.SnapshotService_SaveSnapshot_FullMethodName, append(field(1, "bad-\xff"), field(3, "T")...), "stream"},
		{"save type", esdv1.SnapshotService_SaveSnapshot_FullMethodName, append(field(1, "ok-1"), field(3, "T\xc3")...), "type"},
		{"list stream", esdv1.SnapshotService_ListSnapshots_FullMethodName, field(1, "bad-\xff"), "stream"},
		{"policy category", esdv1.SnapshotService_SetSnapshotPolicy_FullMethodName, field(1, "cat\xfe"), "category"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp esdv1.SaveSnapshotResponse // any message: the call must fail
			err := ts.conn.Invoke(testCtx(t), tc.method, tc.req, &resp, grpc.ForceCodec(rawCodec{}))
			wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
			if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != tc.field {
				t.Fatalf("BadRequest %v, want %s", br, tc.field)
			}
		})
	}
}
