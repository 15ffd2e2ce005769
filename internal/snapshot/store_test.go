package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/writer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dir string, cfg snapshot.Config) *engine.Engine {
	t.Helper()
	e, err := engine.Open(engine.Config{Dir: dir, CacheBytes: 8 << 20, Snapshots: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func openTemp(t *testing.T, cfg snapshot.Config) *engine.Engine {
	t.Helper()
	e := open(t, t.TempDir(), cfg)
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

func appendN(t *testing.T, e *engine.Engine, stream string, n int) engine.AppendResult {
	t.Helper()
	evs := make([]eslog.Event, n)
	for i := range evs {
		evs[i] = eslog.Event{ID: eslog.NewEventID(), Type: "E", Data: []byte(fmt.Sprint(i))}
	}
	res, err := e.Append(context.Background(), engine.AppendOp{Stream: stream, Events: evs})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func save(e *engine.Engine, stream string, rev uint64, schema uint32) (snapshot.SaveResult, error) {
	return e.Snapshots().Save(context.Background(), snapshot.Snapshot{
		Stream: stream, Revision: rev, Type: "State", SchemaVersion: schema, Data: fmt.Appendf(nil, "%s@%d/v%d", stream, rev, schema),
	})
}

func mustSave(t *testing.T, e *engine.Engine, stream string, rev uint64, schema uint32) snapshot.SaveResult {
	t.Helper()
	res, err := save(e, stream, rev, schema)
	if err != nil {
		t.Fatalf("save %s@%d v%d: %v", stream, rev, schema, err)
	}
	return res
}

func revisions(t *testing.T, e *engine.Engine, stream string) []string {
	t.Helper()
	infos, err := e.Snapshots().List(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range infos {
		s := fmt.Sprintf("%d/v%d", in.Revision, in.SchemaVersion)
		if !in.Usable {
			s += "(unusable)"
		}
		out = append(out, s)
	}
	return out
}

func TestSaveRules(t *testing.T) {
	e := openTemp(t, snapshot.Config{Retention: 3})
	ctx := context.Background()
	appendN(t, e, "cart-1", 10) // 0..9

	var re *snapshot.RevisionError
	if _, err := save(e, "cart-1", 10, 1); !errors.As(err, &re) || re.Head != 9 {
		t.Fatalf("save past the head: %v, want a *RevisionError with head 9", err)
	}
	var se *eslog.StreamError
	if _, err := save(e, "cart-none", 0, 1); !errors.As(err, &se) || !errors.Is(err, eslog.ErrStreamNotFound) {
		t.Fatalf("save of a stream never written: %v", err)
	}

	for _, rev := range []uint64{2, 5, 7} {
		if r := mustSave(t, e, "cart-1", rev, 1); !r.Saved || r.Pruned != 0 {
			t.Fatalf("save at %d: %+v", rev, r)
		}
	}
	// Retention 3: a newer one prunes the oldest; an older one is not stored.
	if r := mustSave(t, e, "cart-1", 8, 1); !r.Saved || r.Pruned != 1 {
		t.Fatalf("save at 8: %+v, want saved, 1 pruned", r)
	}
	if r := mustSave(t, e, "cart-1", 1, 1); r.Saved {
		t.Fatalf("save at 1 behind 3 newer: %+v, want not saved", r)
	}
	if got := fmt.Sprint(revisions(t, e, "cart-1")); got != "[5/v1 7/v1 8/v1]" {
		t.Fatalf("snapshots %s", got)
	}
	// The same revision and schema version replaces; another schema
	// version is another snapshot.
	if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: "cart-1", Revision: 8, Type: "State", SchemaVersion: 1, Data: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	sn, err := e.Snapshots().Get(ctx, "cart-1", 0, 1)
	if err != nil || sn.Revision != 8 || string(sn.Data) != "new" {
		t.Fatalf("get after replace: %+v %v", sn, err)
	}
	mustSave(t, e, "cart-1", 8, 2)
	if got := fmt.Sprint(revisions(t, e, "cart-1")); got != "[7/v1 8/v1 8/v2]" {
		t.Fatalf("snapshots %s", got)
	}
	// Get: the latest at or below max_revision, of the schema version.
	for _, c := range []struct {
		max    uint64
		schema uint32
		want   uint64
	}{{0, 1, 8}, {7, 1, 7}, {9, 2, 8}} {
		sn, err := e.Snapshots().Get(ctx, "cart-1", c.max, c.schema)
		if err != nil || sn.Revision != c.want || string(sn.Data) == "" {
			t.Fatalf("get max %d v%d: %+v %v, want revision %d", c.max, c.schema, sn, err, c.want)
		}
	}
	var nf *snapshot.NotFoundError
	if _, err := e.Snapshots().Get(ctx, "cart-1", 6, 1); !errors.As(err, &nf) || !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("get max 6: %v, want not found", err)
	}
	if _, err := e.Snapshots().Get(ctx, "cart-1", 0, 3); !errors.As(err, &nf) {
		t.Fatalf("get v3: %v, want not found", err)
	}

	// A soft delete makes them unusable; revisions below the first visible
	// one are refused; the next save prunes the unusable ones.
	if _, err := e.Delete(ctx, engine.DeleteOp{Stream: "cart-1", Expect: eslog.Expectation{}, Mode: eslog.DeleteSoft}); err != nil {
		t.Fatal(err)
	}
	if _, err := save(e, "cart-1", 9, 1); !errors.Is(err, eslog.ErrStreamDeleted) {
		t.Fatalf("save on a soft-deleted stream: %v", err)
	}
	if got := fmt.Sprint(revisions(t, e, "cart-1")); got != "[7/v1(unusable) 8/v1(unusable) 8/v2(unusable)]" {
		t.Fatalf("snapshots after a soft delete %s", got)
	}
	appendN(t, e, "cart-1", 5) // 10..14
	if _, err := save(e, "cart-1", 9, 1); !errors.As(err, &re) || re.First != 10 {
		t.Fatalf("save of a deleted revision: %v, want a *RevisionError (first 10)", err)
	}
	if _, err := e.Snapshots().Get(ctx, "cart-1", 0, 1); !errors.As(err, &nf) {
		t.Fatalf("get after a soft delete: %v, want not found", err)
	}
	if r := mustSave(t, e, "cart-1", 12, 1); !r.Saved || r.Pruned != 3 {
		t.Fatalf("save after a soft delete: %+v, want 3 unusable pruned", r)
	}
	if got := fmt.Sprint(revisions(t, e, "cart-1")); got != "[12/v1]" {
		t.Fatalf("snapshots %s", got)
	}

	// DeleteSnapshots: below a revision, or all.
	mustSave(t, e, "cart-1", 14, 1)
	if n, err := e.Snapshots().Delete(ctx, "cart-1", 13); err != nil || n != 1 {
		t.Fatalf("delete below 13: %d %v", n, err)
	}
	if n, err := e.Snapshots().Delete(ctx, "cart-1", 13); err != nil || n != 0 {
		t.Fatalf("delete below 13 again: %d %v", n, err)
	}
	if n, err := e.Snapshots().Delete(ctx, "cart-1", 0); err != nil || n != 1 {
		t.Fatalf("delete all: %d %v", n, err)
	}
	if got := revisions(t, e, "cart-1"); len(got) != 0 {
		t.Fatalf("snapshots after delete all: %v", got)
	}
	if keys := auxKeys(t, e); len(keys) != 0 {
		t.Fatalf("namespace after delete all: %q", keys)
	}
}

// auxKeys lists the snapshot namespace's keys (policies and load rates
// aside).
func auxKeys(t *testing.T, e *engine.Engine) []string {
	t.Helper()
	var keys []string
	err := e.Log().Aux(eslog.NSSnapshots).Scan(nil, func(k, _ []byte) error {
		if k[0] == 's' || k[0] == 'i' {
			keys = append(keys, string(k))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestTombstonePurge: a tombstone through the engine purges the stream's
// snapshots; one the engine was not told of (a crash between the
// tombstone and the purge, simulated by tombstoning through the writer)
// leaves them until a read of the stream's snapshots finds the tombstone.
func TestTombstonePurge(t *testing.T) {
	e := openTemp(t, snapshot.Config{})
	ctx := context.Background()
	for _, s := range []string{"a-1", "b-1"} {
		appendN(t, e, s, 3)
		mustSave(t, e, s, 1, 1)
		mustSave(t, e, s, 2, 1)
	}
	if _, err := e.Delete(ctx, engine.DeleteOp{Stream: "a-1", Expect: eslog.Expectation{}, Mode: eslog.DeleteTombstone}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Writer().Delete(ctx, writer.DeleteOp{Stream: "b-1", Expect: eslog.Expectation{}, Mode: eslog.DeleteTombstone}); err != nil {
		t.Fatal(err)
	}
	if keys := auxKeys(t, e); len(keys) != 3 { // b-1's index and two records
		t.Fatalf("namespace after the tombstones: %q, want b-1's only", keys)
	}
	if _, err := save(e, "b-1", 2, 1); !errors.Is(err, writer.ErrRefused) || !errors.Is(err, eslog.ErrStreamTombstoned) {
		t.Fatalf("save on a tombstoned stream: %v", err)
	}
	if _, err := e.Snapshots().Get(ctx, "b-1", 0, 1); !errors.Is(err, eslog.ErrStreamTombstoned) {
		t.Fatalf("get on a tombstoned stream: %v", err)
	}
	if keys := auxKeys(t, e); len(keys) != 0 {
		t.Fatalf("namespace after a read of the tombstoned stream: %q", keys)
	}
	if got := revisions(t, e, "b-1"); len(got) != 0 {
		t.Fatalf("list of a tombstoned stream: %v", got)
	}
}

// TestConcurrentSavesKeepNewest: saves racing on one stream leave exactly
// the Retention newest, whatever the order they land in.
func TestConcurrentSavesKeepNewest(t *testing.T) {
	e := openTemp(t, snapshot.Config{Retention: 3})
	appendN(t, e, "hot-1", 100)
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := save(e, "hot-1", uint64(round*10+i), 1); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		want := fmt.Sprintf("[%d/v1 %d/v1 %d/v1]", round*10+29, round*10+30, round*10+31)
		if got := fmt.Sprint(revisions(t, e, "hot-1")); got != want {
			t.Fatalf("round %d: snapshots %s, want %s", round, got, want)
		}
		if keys := auxKeys(t, e); len(keys) != 4 {
			t.Fatalf("round %d: namespace %q, want an index and 3 records", round, keys)
		}
	}
}

// TestAdviceCacheSmall: advice stays exact with a cache far smaller than
// the streams it serves (every miss reads the store).
func TestAdviceCacheSmall(t *testing.T) {
	e := openTemp(t, snapshot.Config{Default: snapshot.Policy{Every: 5}, CacheStreams: 64})
	const streams = 300
	for round := range 3 {
		for i := range streams {
			s := fmt.Sprint("c-", i)
			res := appendN(t, e, s, 2)
			since := res.LastRevision + 1
			if round == 2 {
				since -= 4 // saved at revision 3 in round 1
			}
			if a := res.Snapshot; !a.Applies || a.EventsSince != since || a.Advised != (since >= 5) {
				t.Fatalf("round %d, %s at head %d: %+v, want %d since", round, s, res.LastRevision, a, since)
			}
			if round == 1 {
				mustSave(t, e, s, 3, 7)
			}
		}
	}
}

// BenchmarkAdvise: the advice of one append on a warm cache, with a policy
// of both rules (the dynamic one reads the load-rate sketch), and without
// a policy (nothing to do). Compare with an append's cost, some tens of
// microseconds.
func BenchmarkAdvise(b *testing.B) {
	for _, c := range []struct {
		name string
		p    snapshot.Policy
	}{{"off", snapshot.Policy{}}, {"on", snapshot.Policy{Every: 1000, ReplayThreshold: 1000}}} {
		b.Run(c.name, func(b *testing.B) {
			e, err := engine.Open(engine.Config{Dir: b.TempDir(), CacheBytes: 8 << 20, Snapshots: snapshot.Config{Default: c.p}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = e.Close() })
			names := make([]string, 1000)
			for i := range names {
				names[i] = fmt.Sprintf("adv%d-%d", i%10, i)
				if _, err := e.Append(context.Background(), engine.AppendOp{Stream: names[i], Events: []eslog.Event{{ID: eslog.NewEventID(), Type: "E"}}}); err != nil {
					b.Fatal(err)
				}
			}
			var i atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := i.Add(1)
					if a := e.Snapshots().Advise(names[n%1000], 5, true); a.Applies != !c.p.Off() {
						b.Errorf("advice %+v", a)
						return
					}
				}
			})
		})
	}
}
