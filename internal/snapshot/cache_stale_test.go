package snapshot_test

import (
	"context"
	"errors"
	"testing"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
)

// onceHook returns a save-swapped hook that runs f once, on the first
// successful swap, and passes every result on unchanged.
func onceHook(t *testing.T, f func(stream string)) func(string, error) error {
	done := false
	return func(stream string, err error) error {
		if err == nil && !done {
			done = true
			f(stream)
		}
		return err
	}
}

// TestSaveRacingSnapshotDelete: a Delete of the stream's snapshots that
// lands between a Save's swap and its update of the advice cache must not
// leave the cache with the base of the deleted snapshot. Without the
// generation check the advice counts from the save (5 since) instead of
// from the stream's first revision (11 since).
func TestSaveRacingSnapshotDelete(t *testing.T) {
	e := openTemp(t, snapshot.Config{Default: snapshot.Policy{Every: 100}})
	st := e.Snapshots()
	appendN(t, e, "s-1", 10) // revisions 0..9
	st.SetSaveSwappedHook(onceHook(t, func(stream string) {
		if n, err := st.Delete(context.Background(), stream, 0); err != nil || n != 1 {
			t.Errorf("delete in the race: %d, %v", n, err)
		}
	}))
	defer st.SetSaveSwappedHook(nil)
	if res := mustSave(t, e, "s-1", 5, 1); !res.Saved {
		t.Fatalf("save: %+v", res)
	}
	if got := revisions(t, e, "s-1"); len(got) != 0 {
		t.Fatalf("snapshots after the delete: %v", got)
	}
	res := appendN(t, e, "s-1", 1) // head 10
	if a := res.Snapshot; a.EventsSince != 11 {
		t.Fatalf("advice after the racing delete: %+v, want 11 since (no snapshot)", a)
	}
}

// TestSaveRacingSoftDelete: the same with a soft delete of the stream
// (the engine's StreamDeleted) in the race: the saved snapshot is below
// the new first visible revision, and the advice must count from that
// (3 since), not from the save (7 since).
func TestSaveRacingSoftDelete(t *testing.T) {
	e := openTemp(t, snapshot.Config{Default: snapshot.Policy{Every: 100}})
	st := e.Snapshots()
	appendN(t, e, "s-1", 10) // revisions 0..9
	st.SetSaveSwappedHook(onceHook(t, func(stream string) {
		if _, err := e.Delete(context.Background(), engine.DeleteOp{Stream: stream, Expect: eslog.Expectation{Kind: eslog.ExpectAny}, Mode: eslog.DeleteSoft}); err != nil {
			t.Errorf("soft delete in the race: %v", err)
		}
	}))
	defer st.SetSaveSwappedHook(nil)
	mustSave(t, e, "s-1", 5, 1)
	res := appendN(t, e, "s-1", 3) // revisions 10..12, the first visible 10
	if a := res.Snapshot; a.EventsSince != 3 {
		t.Fatalf("advice after the racing soft delete: %+v, want 3 since", a)
	}
}

// TestSaveCanceledButDurable: a Save whose ctx ends after the log took
// its swap returns the ctx's error, yet the snapshot is stored; the advice
// cache must not keep the base of the older snapshot (7 since instead of
// 3 since).
func TestSaveCanceledButDurable(t *testing.T) {
	e := openTemp(t, snapshot.Config{Default: snapshot.Policy{Every: 100}})
	st := e.Snapshots()
	appendN(t, e, "s-1", 10) // revisions 0..9
	mustSave(t, e, "s-1", 3, 1)
	if b, ok := st.CachedBase("s-1"); !ok || b != 4 {
		t.Fatalf("cached base after the first save: %d, %v; want 4", b, ok)
	}
	st.SetSaveSwappedHook(func(_ string, err error) error {
		if err == nil {
			return context.Canceled // as commitAux answers when ctx ends after the log took the swap
		}
		return err
	})
	_, err := save(e, "s-1", 7, 1)
	st.SetSaveSwappedHook(nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("save: %v, want context.Canceled", err)
	}
	if got := revisions(t, e, "s-1"); len(got) != 2 || got[1] != "7/v1" {
		t.Fatalf("snapshots: %v, want 3 and 7", got)
	}
	res := appendN(t, e, "s-1", 1) // head 10
	if a := res.Snapshot; a.EventsSince != 3 {
		t.Fatalf("advice after the canceled save: %+v, want 3 since (from the snapshot at 7)", a)
	}
}
