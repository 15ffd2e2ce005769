package server

import (
	"encoding/json"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
)

// TestDeleteStream: soft delete, re-append after it, tombstone, and their
// errors, the same before and after a restart.
func TestDeleteStream(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	keepIDs := ts.fill(t, "keep-1", 2, "Kept")
	ts.fill(t, "del-1", 3, "Old")
	ts.fill(t, "tomb-1", 2, "Gone")

	// Soft delete.
	before := ts.lastPosition(t)
	del := ts.mustDelete(t, "del-1", false)
	if del.GetPosition() != before+1 || del.GetCommitTime() == nil {
		t.Fatalf("soft delete: %v, want position %d and a commit time", del, before+1)
	}
	// Deleting it again: it is deleted already.
	_, err := ts.streams.DeleteStream(testCtx(t), deleteReq("del-1", xAny, false))
	wantError(t, err, codes.NotFound, reasonStreamDeleted, "del-1")
	// Deleting with a wrong expected revision.
	_, err = ts.streams.DeleteStream(testCtx(t), deleteReq("keep-1", xExact(0), false))
	wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, "keep-1")
	// A stream never written cannot be soft-deleted.
	_, err = ts.streams.DeleteStream(testCtx(t), deleteReq("ghost-1", xAny, false))
	wantError(t, err, codes.NotFound, reasonStreamNotFound, "ghost-1")
	// ... but a tombstone reserves its name.
	ts.mustDelete(t, "reserved-1", true)

	checkDeleted := func(t *testing.T) {
		t.Helper()
		_, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "del-1"})
		wantError(t, err, codes.NotFound, reasonStreamDeleted, "del-1")
		_, err = ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "del-1", Direction: esdv1.ReadDirection_READ_DIRECTION_BACKWARD})
		wantError(t, err, codes.NotFound, reasonStreamDeleted, "del-1")
		info := ts.getStream(t, "del-1")
		if info.GetExists() || !info.GetDeleted() || info.GetTombstoned() || info.GetHead() != 2 || info.GetEventCount() != 0 ||
			info.GetCreated() == nil || info.GetUpdated() == nil {
			t.Fatalf("GetStream of a soft-deleted stream: %v", info)
		}
		all := ts.readAll(t)
		var deletions []*esdv1.RecordedEvent
		for _, e := range all {
			switch e.GetStream() {
			case "del-1":
				t.Fatalf("$all returns a deleted event: %v", e)
			case "$deleted":
				if e.GetType() == "$stream-deleted" {
					deletions = append(deletions, e)
				}
			}
		}
		if len(deletions) != 1 || deletions[0].GetPosition() != del.GetPosition() {
			t.Fatalf("$stream-deleted events %v, want one at %d", deletions, del.GetPosition())
		}
		var data struct {
			Stream         string `json:"stream"`
			TruncateBefore uint64 `json:"truncate_before"`
		}
		if err := json.Unmarshal(deletions[0].GetData(), &data); err != nil || data.Stream != "del-1" || data.TruncateBefore != 3 {
			t.Fatalf("deletion data %s (%v)", deletions[0].GetData(), err)
		}
		if ct := deletions[0].GetContentType(); ct != "application/json" {
			t.Fatalf("deletion content type %q", ct)
		}
		if got := ts.mustReadStream(t, "keep-1"); len(got) != 2 || got[0].GetId() != keepIDs[0] || got[1].GetId() != keepIDs[1] {
			t.Fatalf("keep-1 after deleting another stream: %v", got)
		}
	}
	checkDeleted(t)
	ts.restart()
	t.Run("soft deleted after restart", checkDeleted)

	// Appending again: no_stream holds; revisions continue after the old head.
	ev := event("New", "")
	resp := ts.mustAppend(t, appendReq("del-1", xNoStream, ev))
	if resp.GetFirstRevision() != 3 || resp.GetLastRevision() != 3 {
		t.Fatalf("append after soft delete: %v, want revision 3", resp)
	}

	// Tombstone.
	tomb := ts.mustDelete(t, "tomb-1", true)
	checkAll := func(t *testing.T) {
		t.Helper()
		got := ts.mustReadStream(t, "del-1")
		if len(got) != 1 || got[0].GetId() != ev.GetId() || got[0].GetRevision() != 3 {
			t.Fatalf("del-1 after re-append reads %v, want only the new event at revision 3", got)
		}
		back, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "del-1", Direction: esdv1.ReadDirection_READ_DIRECTION_BACKWARD})
		if err != nil || len(back) != 1 {
			t.Fatalf("backward read of del-1: %v %v", back, err)
		}
		old, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "del-1", FromRevision: new(uint64(0))})
		if err != nil || len(old) != 1 || old[0].GetRevision() != 3 {
			t.Fatalf("read of del-1 from revision 0: %v %v, want only revision 3", old, err)
		}
		info := ts.getStream(t, "del-1")
		if !info.GetExists() || info.GetDeleted() || info.GetHead() != 3 || info.GetEventCount() != 1 {
			t.Fatalf("GetStream after re-append: %v", info)
		}

		for _, stream := range []string{"tomb-1", "reserved-1"} {
			_, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: stream})
			wantError(t, err, codes.NotFound, reasonStreamTombstoned, stream)
			for _, x := range []xrev{xAny, xNoStream, xExact(1)} {
				_, err = ts.streams.Append(testCtx(t), appendReq(stream, x, event("Zombie", "")))
				wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, stream)
			}
			_, err = ts.streams.Append(testCtx(t), appendReq(stream, xAny)) // a pure check too
			wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, stream)
			for _, tombstone := range []bool{false, true} {
				_, err = ts.streams.DeleteStream(testCtx(t), deleteReq(stream, xAny, tombstone))
				wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, stream)
			}
			_, err = ts.streams.AppendMulti(testCtx(t), multiReq(appendReq("keep-1", xAny, event("X", "")), appendReq(stream, xAny, event("Y", ""))))
			wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, stream)
			info := ts.getStream(t, stream)
			if info.GetExists() || info.GetDeleted() || !info.GetTombstoned() || info.GetEventCount() != 0 {
				t.Fatalf("GetStream of tombstoned %s: %v", stream, info)
			}
		}

		var sys []string
		for _, e := range ts.readAll(t) {
			switch e.GetStream() {
			case "tomb-1", "reserved-1":
				t.Fatalf("$all returns an event of a tombstoned stream: %v", e)
			case "$deleted":
				sys = append(sys, e.GetType())
			}
		}
		if diff := cmp.Diff([]string{"$stream-deleted", "$stream-tombstoned", "$stream-tombstoned"}, sys); diff != "" {
			t.Fatalf("$deleted event types (-want +got):\n%s", diff)
		}
		// Visible: keep-1 (2 events), del-1 (1), $deleted (3 deletions).
		if si := ts.info(t); si.GetEventCount() != 6 || si.GetStreamCount() != 3 || si.GetLastPosition() != tomb.GetPosition() {
			t.Fatalf("server info %v, want 6 events in 3 streams, last position %d", si, tomb.GetPosition())
		}
	}
	checkAll(t)
	ts.restart()
	t.Run("after restart", checkAll)

	// A soft-deleted stream can be tombstoned.
	ts.fill(t, "del-2", 1, "Old")
	ts.mustDelete(t, "del-2", false)
	ts.mustDelete(t, "del-2", true)
	_, err = ts.streams.Append(testCtx(t), appendReq("del-2", xNoStream, event("Zombie", "")))
	wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, "del-2")
	_, err = ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "del-2"})
	wantError(t, err, codes.NotFound, reasonStreamTombstoned, "del-2")
}
