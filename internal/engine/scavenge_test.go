package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
)

// TestScavengeSnapshotsAndRetry: a scavenge removes a soft-deleted
// stream's hidden events and its snapshots of hidden revisions (the one
// of a visible revision stays, and loads), and a retry of an append whose
// events it removed is answered as the original append was (same
// positions and revisions, no commit time) without writing anything.
func TestScavengeSnapshotsAndRetry(t *testing.T) {
	e := open(t, engine.Config{Shards: 2})
	ctx := context.Background()
	first := engine.AppendOp{Stream: "acct-1", Events: events("Opened", "Deposited", "Deposited"), ClientIDs: 3}
	orig, err := e.Append(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: "acct-1", Revision: 2, Type: "Balance", Data: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Delete(ctx, engine.DeleteOp{Stream: "acct-1", Mode: eslog.DeleteSoft}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "acct-1", Events: events("Opened", "Deposited")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: "acct-1", Revision: 4, Type: "Balance", Data: []byte("4")}); err != nil {
		t.Fatal(err)
	}
	before := e.Stats()
	if _, err := e.Scavenge(); !errors.Is(err, engine.ErrNoScavenge) {
		t.Fatalf("Scavenge before any: %v, want ErrNoScavenge", err)
	}
	if _, err := e.StartScavenge(0); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitScavenge(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := e.Scavenge()
	if err != nil || j.State != eslog.ScavengeDone || j.EventsRemoved != 3 || j.StreamsDone != 1 || j.Fraction() != 1 {
		t.Fatalf("scavenge: %+v, %v", j, err)
	}
	if got := e.Stats(); got != before {
		t.Fatalf("stats %+v, were %+v", got, before)
	}
	infos, err := e.Snapshots().List(ctx, "acct-1")
	if err != nil || len(infos) != 1 || infos[0].Revision != 4 {
		t.Fatalf("snapshots after the scavenge: %+v, %v; want the one of revision 4", infos, err)
	}
	// The retry: same ids, same expectation.
	again, err := e.Append(ctx, first)
	if err != nil {
		t.Fatalf("retry of a scavenged append: %v", err)
	}
	if again.FirstPosition != orig.FirstPosition || again.LastPosition != orig.LastPosition ||
		again.FirstRevision != orig.FirstRevision || again.LastRevision != orig.LastRevision || again.CommitTime != 0 {
		t.Fatalf("retry answered %+v; the original %+v (commit time 0 expected)", again.AppendResult, orig.AppendResult)
	}
	if got := e.Stats(); got != before {
		t.Fatalf("the retry wrote: stats %+v, were %+v", got, before)
	}
}

// TestScavengeOneAtATimeStopAndResume: a second start while one runs is
// refused; a stop leaves it stopped; a new one started and interrupted by
// a close goes on when the store is opened again, and completes.
func TestScavengeOneAtATimeStopAndResume(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := engine.Open(engine.Config{Dir: dir, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		name := fmt.Sprintf("cart-%d", i)
		for range 3 {
			if _, err := e.Append(ctx, engine.AppendOp{Stream: name, Events: events("Added", "Added", "Removed")}); err != nil {
				t.Fatal(err)
			}
		}
		if i%2 == 0 {
			if _, err := e.Delete(ctx, engine.DeleteOp{Stream: name, Mode: eslog.DeleteTombstone}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// At 50 keys a second, the 30 streams' 270 events and their index
	// entries take seconds.
	j, err := e.StartScavenge(50)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.StartScavenge(0); !errors.Is(err, engine.ErrScavengeRunning) {
		t.Fatalf("second start: %v, want ErrScavengeRunning", err)
	}
	stopped, err := e.StopScavenge(ctx)
	if err != nil || stopped.ID != j.ID || stopped.State != eslog.ScavengeStopped {
		t.Fatalf("stop: %+v, %v", stopped, err)
	}
	j, err = e.StartScavenge(50)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e, err = engine.Open(engine.Config{Dir: dir, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	resumed, err := e.Scavenge()
	if err != nil || resumed.ID != j.ID || resumed.State != eslog.ScavengeRunning || resumed.KeysRemoved == 0 {
		t.Fatalf("after reopening: %+v, %v; want %s running, resumed with keys removed", resumed, err, j.ID)
	}
	if _, err := e.StopScavenge(ctx); err != nil { // the rest at full speed
		t.Fatal(err)
	}
	j, err = e.StartScavenge(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.WaitScavenge(ctx); err != nil {
		t.Fatal(err)
	}
	if j, err = e.Scavenge(); err != nil || j.State != eslog.ScavengeDone || j.StreamsDone != 30 {
		t.Fatalf("last run: %+v, %v", j, err)
	}
	for i := range 60 {
		var n int
		err := e.Log().ReadStream(ctx, eslog.StreamQuery{Stream: fmt.Sprintf("cart-%d", i)}, func(*eslog.RecordedEvent) error { n++; return nil })
		if i%2 == 0 && !errors.Is(err, eslog.ErrStreamTombstoned) || i%2 == 1 && (err != nil || n != 9) {
			t.Fatalf("cart-%d: %d events, %v", i, n, err)
		}
	}
}
