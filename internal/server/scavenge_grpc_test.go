package server

import (
	"fmt"
	"testing"

	"time"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
)

// TestScavengeRPCs: GetScavenge and StopScavenge answer NOT_FOUND before
// any scavenge; StartScavenge starts one (a second start while it runs is
// FAILED_PRECONDITION/SCAVENGE_RUNNING), StopScavenge stops it, and a
// scavenge run to its end reports the events removed of a deleted stream
// while the visible stream reads as before.
func TestScavengeRPCs(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	for i := range 20 {
		if _, err := ts.streams.Append(ctx, appendReq(fmt.Sprintf("gone-%d", i), xAny, event("A", "x"), event("B", "y"))); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.streams.DeleteStream(ctx, &esdv1.DeleteStreamRequest{Stream: fmt.Sprintf("gone-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.streams.Append(ctx, appendReq("kept-1", xAny, event("A", "x"))); err != nil {
		t.Fatal(err)
	}
	_, err := ts.admin.GetScavenge(ctx, &esdv1.GetScavengeRequest{})
	wantError(t, err, codes.NotFound, reasonScavengeNotFound, "")
	_, err = ts.admin.StopScavenge(ctx, &esdv1.StopScavengeRequest{})
	wantError(t, err, codes.NotFound, reasonScavengeNotFound, "")
	// 1 key a second: it runs until stopped.
	started, err := ts.admin.StartScavenge(ctx, &esdv1.StartScavengeRequest{KeysPerSecond: 1})
	if err != nil || started.GetScavenge().GetState() != esdv1.ScavengeState_SCAVENGE_STATE_RUNNING || started.GetScavenge().GetKeysPerSecond() != 1 {
		t.Fatalf("start: %v, %v", started, err)
	}
	_, err = ts.admin.StartScavenge(ctx, &esdv1.StartScavengeRequest{})
	wantError(t, err, codes.FailedPrecondition, reasonScavengeRunning, "")
	stopped, err := ts.admin.StopScavenge(ctx, &esdv1.StopScavengeRequest{})
	if err != nil || stopped.GetScavenge().GetId() != started.GetScavenge().GetId() || stopped.GetScavenge().GetState() != esdv1.ScavengeState_SCAVENGE_STATE_STOPPED || stopped.GetScavenge().GetFinished() == nil {
		t.Fatalf("stop: %v, %v", stopped, err)
	}
	if _, err := ts.admin.StartScavenge(ctx, &esdv1.StartScavengeRequest{}); err != nil {
		t.Fatal(err)
	}
	var last *esdv1.Scavenge
	testutil.Eventually(t, 10*time.Second, "the scavenge to end", func() bool {
		r, err := ts.admin.GetScavenge(ctx, &esdv1.GetScavengeRequest{})
		last = r.GetScavenge()
		return err == nil && last.GetState() != esdv1.ScavengeState_SCAVENGE_STATE_RUNNING
	})
	if last.GetState() != esdv1.ScavengeState_SCAVENGE_STATE_DONE || last.GetProgress() != 1 || last.GetStreamsDone() != 20 ||
		last.GetBytesReclaimed() == 0 || last.GetDiskBytesBefore() == 0 || last.GetDiskBytesAfter() == 0 ||
		stopped.GetScavenge().GetEventsRemoved()+last.GetEventsRemoved() != 40 || last.GetEventsRemoved() == 0 {
		t.Fatalf("stopped %v, then %v; want the 40 events removed, most by the second", stopped.GetScavenge(), last)
	}
	r, err := ts.streams.GetStream(ctx, &esdv1.GetStreamRequest{Stream: "kept-1"})
	if err != nil || r.GetInfo().GetEventCount() != 1 {
		t.Fatalf("kept-1 after the scavenge: %v, %v", r, err)
	}
}
