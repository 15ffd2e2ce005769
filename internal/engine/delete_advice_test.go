package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
)

// TestDeleteCanceledButDurableDropsAdvice: a soft delete whose ctx ends
// after the writer took it returns the ctx's error, yet commits. The
// snapshot advice must not keep counting from the snapshot the delete
// made unusable (7 since), but from the new first visible revision (3
// since).
func TestDeleteCanceledButDurableDropsAdvice(t *testing.T) {
	e := open(t, engine.Config{Snapshots: snapshot.Config{Default: snapshot.Policy{Every: 100}}})
	ctx := context.Background()
	if _, err := e.Append(ctx, engine.AppendOp{Stream: "s-1", Events: events("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Snapshots().Save(ctx, snapshot.Snapshot{Stream: "s-1", Revision: 5, Type: "S", SchemaVersion: 1}); err != nil {
		t.Fatal(err)
	}
	e.SetDeletedHook(func(err error) error {
		if err == nil {
			return context.Canceled // as the writer answers when ctx ends after it took the delete
		}
		return err
	})
	_, err := e.Delete(ctx, engine.DeleteOp{Stream: "s-1", Expect: eslog.Expectation{Kind: eslog.ExpectAny}, Mode: eslog.DeleteSoft})
	e.SetDeletedHook(nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("delete: %v, want context.Canceled", err)
	}
	res, err := e.Append(ctx, engine.AppendOp{Stream: "s-1", Events: events("k", "l", "m")})
	if err != nil {
		t.Fatal(err)
	}
	if a := res.Snapshot; res.LastRevision != 12 || a.EventsSince != 3 {
		t.Fatalf("after the canceled delete: head %d, advice %+v; want head 12, 3 since", res.LastRevision, a)
	}
}
