package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/auth"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// withClock gives the engine (commit times, max age) the clock c.
func withClock(c *fakeClock) serverOption {
	return func(ts *testServer) { ts.ecfg.Clock = c.now }
}

func setMeta(t *testing.T, ts *testServer, stream string, md *esdv1.StreamMetadata) uint64 {
	t.Helper()
	resp, err := ts.streams.SetStreamMetadata(testCtx(t), &esdv1.SetStreamMetadataRequest{
		Target: &esdv1.SetStreamMetadataRequest_Stream{Stream: stream}, Metadata: md})
	if err != nil {
		t.Fatalf("set metadata of %s: %v", stream, err)
	}
	return resp.GetMetadataRevision()
}

func setCategoryMeta(t *testing.T, ts *testServer, category string, md *esdv1.StreamMetadata) {
	t.Helper()
	if _, err := ts.streams.SetStreamMetadata(testCtx(t), &esdv1.SetStreamMetadataRequest{
		Target: &esdv1.SetStreamMetadataRequest_Category{Category: category}, Metadata: md}); err != nil {
		t.Fatalf("set metadata of category %s: %v", category, err)
	}
}

func u64(n uint64) *uint64 { return &n }

func revsOf(evs []*esdv1.RecordedEvent, stream string) []uint64 {
	var out []uint64
	for _, e := range evs {
		if e.GetStream() == stream {
			out = append(out, e.GetRevision())
		}
	}
	return out
}

// limitsServer starts a server on a fake clock with "lim-1": 10 events a
// minute apart (revision i at minute i; the clock then at minute 9), a
// snapshot at revision 2, "lim-2": one event at minute 0, and a group on
// the category "lim" that nobody has joined yet.
func limitsServer(t *testing.T) (*testServer, *fakeClock) {
	t.Helper()
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	ts := newTestServer(t, withClock(clock))
	ts.mustAppend(t, appendReq("lim-2", xAny, event("T", "other")))
	for i := range 10 {
		if i > 0 {
			clock.advance(time.Minute)
		}
		ts.mustAppend(t, appendReq("lim-1", xAny, event("T", fmt.Sprint(i))))
	}
	if _, err := ts.snapshots().SaveSnapshot(testCtx(t), &esdv1.SaveSnapshotRequest{Stream: "lim-1", Revision: 2, Type: "S", Data: []byte("s")}); err != nil {
		t.Fatal(err)
	}
	createGroup(t, ts, catGroup("lim-group", "lim"))
	return ts, clock
}

// TestStreamMetadataLimitsApplyToEveryRead: each limit hides the same
// events from ReadStream (both directions), ReadAll (plain, filtered),
// GetStream, Load (the snapshot below the limit is not used), a
// subscription's catch-up (stream and category) and a consumer group's;
// a new event arrives live.
func TestStreamMetadataLimitsApplyToEveryRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		md   *esdv1.StreamMetadata
	}{
		{"max_count", &esdv1.StreamMetadata{MaxCount: u64(3)}},
		{"max_age", &esdv1.StreamMetadata{MaxAge: durationpb.New(150 * time.Second)}},
		{"truncate_before", &esdv1.StreamMetadata{TruncateBefore: u64(7)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _ := limitsServer(t)
			want := []uint64{7, 8, 9}
			if rev := setMeta(t, ts, "lim-1", tc.md); rev != 0 {
				t.Fatalf("first metadata revision %d", rev)
			}

			fwd, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "lim-1"})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, revsOf(fwd, "lim-1")); diff != "" {
				t.Fatalf("ReadStream forward (-want +got):\n%s", diff)
			}
			bwd, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "lim-1", Direction: esdv1.ReadDirection_READ_DIRECTION_BACKWARD})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]uint64{9, 8, 7}, revsOf(bwd, "lim-1")); diff != "" {
				t.Fatalf("ReadStream backward (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, revsOf(ts.readAll(t), "lim-1")); diff != "" {
				t.Fatalf("ReadAll (-want +got):\n%s", diff)
			}
			msgs, err := ts.readAllMsgs(t, &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"lim-1"}}})
			if err != nil {
				t.Fatal(err)
			}
			var filtered []*esdv1.RecordedEvent
			for _, m := range msgs {
				filtered = append(filtered, m.GetEvents()...)
			}
			if diff := cmp.Diff(want, revsOf(filtered, "lim-1")); diff != "" {
				t.Fatalf("filtered ReadAll (-want +got):\n%s", diff)
			}

			gs, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: "lim-1"})
			if err != nil {
				t.Fatal(err)
			}
			if info := gs.GetInfo(); info.GetEventCount() != 3 || !info.GetExists() || info.GetHead() != 9 || gs.GetFirstVisibleRevision() != 7 {
				t.Fatalf("GetStream: %v", gs)
			}
			if gs.MetadataRevision == nil || gs.GetMetadataRevision() != 0 || gs.GetEffectiveLimits() == nil {
				t.Fatalf("GetStream metadata: %v", gs)
			}

			l := ts.mustLoad(t, "lim-1", 0)
			if l.snap != nil {
				t.Fatalf("Load used the snapshot at revision %d, below the first visible revision", l.snap.GetRevision())
			}
			if diff := cmp.Diff(want, revsOf(l.events, "lim-1")); diff != "" {
				t.Fatalf("Load (-want +got):\n%s", diff)
			}

			sub := subscribe(t, ts.streams, subStream("lim-1", subFromStart))
			cat := subscribe(t, ts.streams, subCategory("lim", subFromStart))
			eventually(t, "catch-up", func() bool {
				_, a := sub.caughtUp()
				_, b := cat.caughtUp()
				return a && b
			})
			if diff := cmp.Diff(want, revsOf(sub.events(), "lim-1")); diff != "" {
				t.Fatalf("stream subscription catch-up (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, revsOf(cat.events(), "lim-1")); diff != "" {
				t.Fatalf("category subscription catch-up (-want +got):\n%s", diff)
			}
			if got := revsOf(cat.events(), "lim-2"); len(got) != 1 {
				t.Fatalf("category subscription: lim-2 %v, want its one event", got)
			}

			m := join(t, groupsOf(ts), "lim-group")
			var got []string
			for range 4 {
				d := m.recv(t)
				got = append(got, fmt.Sprintf("%s@%d", d.GetEvent().GetStream(), d.GetEvent().GetRevision()))
				m.ack(d.GetEvent().GetId())
			}
			if diff := cmp.Diff([]string{"lim-2@0", "lim-1@7", "lim-1@8", "lim-1@9"}, got); diff != "" {
				t.Fatalf("group catch-up (-want +got):\n%s", diff)
			}
			m.noDelivery(t, 50*time.Millisecond)

			// A new event arrives live everywhere.
			ts.mustAppend(t, appendReq("lim-1", xAny, event("T", "new")))
			eventually(t, "live event", func() bool {
				return len(revsOf(sub.events(), "lim-1")) == 4 && len(revsOf(cat.events(), "lim-1")) == 4
			})
			if d := m.recv(t); d.GetEvent().GetRevision() != 10 {
				t.Fatalf("group live delivery: %v", d.GetEvent())
			}
		})
	}
}

// TestStreamMetadataMaxAgeFollowsTheClock: max_age is measured from the
// server's clock at each read.
func TestStreamMetadataMaxAgeFollowsTheClock(t *testing.T) {
	ts, clock := limitsServer(t)
	setMeta(t, ts, "lim-1", &esdv1.StreamMetadata{MaxAge: durationpb.New(5 * time.Minute)})
	if got := ts.getStream(t, "lim-1").GetEventCount(); got != 6 {
		t.Fatalf("event count %d at minute 9, want 6", got)
	}
	clock.advance(3 * time.Minute)
	if diff := cmp.Diff([]uint64{7, 8, 9}, revsOf(ts.mustReadStream(t, "lim-1"), "lim-1")); diff != "" {
		t.Fatalf("at minute 12 (-want +got):\n%s", diff)
	}
	clock.advance(time.Hour)
	if info := ts.getStream(t, "lim-1"); info.GetEventCount() != 0 || info.GetExists() || info.GetDeleted() {
		t.Fatalf("every event expired: %v", info)
	}
	if evs := ts.mustReadStream(t, "lim-1"); len(evs) != 0 {
		t.Fatalf("every event expired, read %d", len(evs))
	}
	// Appends decide on the head, which hiding does not change.
	ts.mustAppend(t, appendReq("lim-1", xExact(9), event("T", "new")))
	if diff := cmp.Diff([]uint64{10}, revsOf(ts.mustReadStream(t, "lim-1"), "lim-1")); diff != "" {
		t.Fatalf("after an append (-want +got):\n%s", diff)
	}
}

// TestStreamMetadataLoweredShowsEventsAgain: limits are a view.
func TestStreamMetadataLoweredShowsEventsAgain(t *testing.T) {
	ts, _ := limitsServer(t)
	setMeta(t, ts, "lim-1", &esdv1.StreamMetadata{TruncateBefore: u64(9)})
	if n := len(ts.mustReadStream(t, "lim-1")); n != 1 {
		t.Fatalf("read %d events, want 1", n)
	}
	setMeta(t, ts, "lim-1", &esdv1.StreamMetadata{TruncateBefore: u64(5)})
	if n := len(ts.mustReadStream(t, "lim-1")); n != 5 {
		t.Fatalf("read %d events after lowering, want 5", n)
	}
	if l := ts.mustLoad(t, "lim-1", 0); l.snap != nil {
		t.Fatal("a snapshot below truncate_before used")
	}
	_, err := ts.snapshots().GetSnapshot(testCtx(t), &esdv1.GetSnapshotRequest{Stream: "lim-1"})
	wantError(t, err, codes.NotFound, reasonSnapshotNotFound, "lim-1")
	ls, err := ts.snapshots().ListSnapshots(testCtx(t), &esdv1.ListSnapshotsRequest{Stream: "lim-1"})
	if err != nil || len(ls.GetSnapshots()) != 1 || ls.GetSnapshots()[0].GetUsable() {
		t.Fatalf("ListSnapshots: %v %v, want the snapshot listed unusable", ls, err)
	}
	_, err = ts.snapshots().SaveSnapshot(testCtx(t), &esdv1.SaveSnapshotRequest{Stream: "lim-1", Revision: 4, Type: "S", Data: []byte("s")})
	wantError(t, err, codes.FailedPrecondition, reasonSnapshotRevision, "lim-1")
	setMeta(t, ts, "lim-1", &esdv1.StreamMetadata{})
	if l := ts.mustLoad(t, "lim-1", 0); l.snap.GetRevision() != 2 || len(l.events) != 7 {
		t.Fatalf("without limits, the snapshot is usable again: %v, %d events", l.snap, len(l.events))
	}
}

// TestStreamMetadataCategoryDefaults: a stream without its own limits
// follows its category's; its own win, limit by limit.
func TestStreamMetadataCategoryDefaults(t *testing.T) {
	ts, _ := limitsServer(t)
	setCategoryMeta(t, ts, "lim", &esdv1.StreamMetadata{MaxCount: u64(2)})
	if diff := cmp.Diff([]uint64{8, 9}, revsOf(ts.mustReadStream(t, "lim-1"), "lim-1")); diff != "" {
		t.Fatalf("lim-1 follows its category (-want +got):\n%s", diff)
	}
	setMeta(t, ts, "lim-1", &esdv1.StreamMetadata{MaxCount: u64(4), CustomJson: `{"team":"a"}`})
	if diff := cmp.Diff([]uint64{6, 7, 8, 9}, revsOf(ts.mustReadStream(t, "lim-1"), "lim-1")); diff != "" {
		t.Fatalf("lim-1's own max_count wins (-want +got):\n%s", diff)
	}
	gs, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: "lim-1"})
	if err != nil {
		t.Fatal(err)
	}
	if gs.GetMetadata().GetCustomJson() != `{"team":"a"}` || gs.GetEffectiveLimits().GetMaxCount() != 4 {
		t.Fatalf("GetStream: %v", gs)
	}
	cm, err := ts.streams.GetStreamMetadata(testCtx(t), &esdv1.GetStreamMetadataRequest{Target: &esdv1.GetStreamMetadataRequest_Category{Category: "lim"}})
	if err != nil || !cm.GetExists() || cm.GetMetadata().GetMaxCount() != 2 || cm.GetEffectiveLimits() != nil {
		t.Fatalf("category metadata: %v %v", cm, err)
	}
	// A stream of the category never written has the category's limits.
	sm, err := ts.streams.GetStreamMetadata(testCtx(t), &esdv1.GetStreamMetadataRequest{Target: &esdv1.GetStreamMetadataRequest_Stream{Stream: "lim-new"}})
	if err != nil || sm.GetExists() || sm.GetEffectiveLimits().GetMaxCount() != 2 {
		t.Fatalf("lim-new metadata: %v %v", sm, err)
	}
}

// TestStreamMetadataExpectedRevision: a wrong expected metadata revision
// is ABORTED with the actual one; of concurrent writers expecting the
// same revision exactly one wins.
func TestStreamMetadataExpectedRevision(t *testing.T) {
	ts := newTestServer(t)
	req := func(exp any) *esdv1.SetStreamMetadataRequest {
		r := &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Stream{Stream: "m-1"},
			Metadata: &esdv1.StreamMetadata{MaxCount: u64(5)}}
		switch e := exp.(type) {
		case uint64:
			r.ExpectedMetadataRevision = &esdv1.SetStreamMetadataRequest_Exact{Exact: e}
		case string:
			r.ExpectedMetadataRevision = &esdv1.SetStreamMetadataRequest_NoMetadata{NoMetadata: &emptypb.Empty{}}
		}
		return r
	}
	_, err := ts.streams.SetStreamMetadata(testCtx(t), req(uint64(0)))
	if info := wantError(t, err, codes.Aborted, reasonWrongExpectedMetadataRevision, "m-1"); info.GetMetadata()["actual_metadata_revision"] != "none" {
		t.Fatalf("ErrorInfo %v", info)
	}
	if r, err := ts.streams.SetStreamMetadata(testCtx(t), req("none")); err != nil || r.GetMetadataRevision() != 0 {
		t.Fatalf("no metadata yet: %v %v", r, err)
	}
	_, err = ts.streams.SetStreamMetadata(testCtx(t), req("none"))
	if info := wantError(t, err, codes.Aborted, reasonWrongExpectedMetadataRevision, "m-1"); info.GetMetadata()["actual_metadata_revision"] != "0" {
		t.Fatalf("ErrorInfo %v", info)
	}
	if r, err := ts.streams.SetStreamMetadata(testCtx(t), req(uint64(0))); err != nil || r.GetMetadataRevision() != 1 {
		t.Fatalf("exact 0: %v %v", r, err)
	}
	_, err = ts.streams.SetStreamMetadata(testCtx(t), req(uint64(0)))
	if info := wantError(t, err, codes.Aborted, reasonWrongExpectedMetadataRevision, "m-1"); info.GetMetadata()["actual_metadata_revision"] != "1" {
		t.Fatalf("ErrorInfo %v", info)
	}

	const writers = 8
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		won, lost int
	)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ts.streams.SetStreamMetadata(testCtx(t), req(uint64(1)))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
			} else if msg := errorMismatch(err, codes.Aborted, reasonWrongExpectedMetadataRevision, "m-1"); msg == "" {
				lost++
			} else {
				t.Error(msg)
			}
		}()
	}
	wg.Wait()
	if won != 1 || lost != writers-1 {
		t.Fatalf("%d won, %d lost; want exactly one winner", won, lost)
	}
}

// TestStreamMetadataSurvivesRestart, and a soft delete keeps it; a
// tombstoned stream's metadata cannot change.
func TestStreamMetadataSurvivesRestart(t *testing.T) {
	ts := newTestServer(t)
	ts.mustAppend(t, appendReq("r-1", xAny, events(5, "T")...))
	setMeta(t, ts, "r-1", &esdv1.StreamMetadata{MaxCount: u64(2), CustomJson: `{"a":[1,2]}`})
	setCategoryMeta(t, ts, "r", &esdv1.StreamMetadata{MaxAge: durationpb.New(time.Hour)})
	ts.restart()
	gs, err := ts.streams.GetStream(testCtx(t), &esdv1.GetStreamRequest{Stream: "r-1"})
	if err != nil {
		t.Fatal(err)
	}
	if gs.GetInfo().GetEventCount() != 2 || gs.GetMetadata().GetCustomJson() != `{"a":[1,2]}` ||
		gs.GetEffectiveLimits().GetMaxAge().AsDuration() != time.Hour {
		t.Fatalf("after restart: %v", gs)
	}
	ts.mustDelete(t, "r-1", false)
	if md, err := ts.streams.GetStreamMetadata(testCtx(t), &esdv1.GetStreamMetadataRequest{Target: &esdv1.GetStreamMetadataRequest_Stream{Stream: "r-1"}}); err != nil || md.GetMetadata().GetMaxCount() != 2 {
		t.Fatalf("a soft delete keeps the metadata: %v %v", md, err)
	}
	ts.mustDelete(t, "r-1", true)
	_, err = ts.streams.SetStreamMetadata(testCtx(t), &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Stream{Stream: "r-1"}})
	wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, "r-1")
}

// TestStreamMetadataValidation: each bad field is named.
func TestStreamMetadataValidation(t *testing.T) {
	ts := newTestServer(t)
	stream := &esdv1.SetStreamMetadataRequest_Stream{Stream: "v-1"}
	for _, tc := range []struct {
		name  string
		req   *esdv1.SetStreamMetadataRequest
		field string
	}{
		{"no target", &esdv1.SetStreamMetadataRequest{}, "target"},
		{"empty stream", &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Stream{}}, "stream"},
		{"system stream", &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Stream{Stream: "$deleted"}}, "stream"},
		{"category with a dash", &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Category{Category: "a-b"}}, "category"},
		{"empty category", &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Category{}}, "category"},
		{"max_count 0", &esdv1.SetStreamMetadataRequest{Target: stream, Metadata: &esdv1.StreamMetadata{MaxCount: u64(0)}}, "metadata.max_count"},
		{"max_age 0", &esdv1.SetStreamMetadataRequest{Target: stream, Metadata: &esdv1.StreamMetadata{MaxAge: durationpb.New(0)}}, "metadata.max_age"},
		{"max_age negative", &esdv1.SetStreamMetadataRequest{Target: stream, Metadata: &esdv1.StreamMetadata{MaxAge: durationpb.New(-time.Second)}}, "metadata.max_age"},
		{"max_age too long", &esdv1.SetStreamMetadataRequest{Target: stream, Metadata: &esdv1.StreamMetadata{MaxAge: durationpb.New(200 * 365 * 24 * time.Hour)}}, "metadata.max_age"},
		{"bad JSON", &esdv1.SetStreamMetadataRequest{Target: stream, Metadata: &esdv1.StreamMetadata{CustomJson: `{"a":`}}, "metadata.custom_json"},
		{"JSON too large", &esdv1.SetStreamMetadataRequest{Target: stream, Metadata: &esdv1.StreamMetadata{CustomJson: `"` + strings.Repeat("x", 64<<10) + `"`}}, "metadata.custom_json"},
		{"category truncate_before", &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Category{Category: "c"}, Metadata: &esdv1.StreamMetadata{TruncateBefore: u64(3)}}, "metadata.truncate_before"},
		{"category custom_json", &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Category{Category: "c"}, Metadata: &esdv1.StreamMetadata{CustomJson: `{}`}}, "metadata.custom_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.streams.SetStreamMetadata(testCtx(t), tc.req)
			wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
			br := badRequest(err)
			if len(br.GetFieldViolations()) != 1 || br.GetFieldViolations()[0].GetField() != tc.field {
				t.Fatalf("violations %v, want one naming %s", br.GetFieldViolations(), tc.field)
			}
		})
	}
	for _, req := range []*esdv1.GetStreamMetadataRequest{{}, {Target: &esdv1.GetStreamMetadataRequest_Category{Category: "x-y"}}} {
		_, err := ts.streams.GetStreamMetadata(testCtx(t), req)
		wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	}
}

// TestStreamMetadataCategoryNeedsAdmin: a category's defaults reach every
// stream of it: delete on some streams is not enough.
func TestStreamMetadataCategoryNeedsAdmin(t *testing.T) {
	as := newAuthServer(t, authTestFile())
	req := &esdv1.SetStreamMetadataRequest{Target: &esdv1.SetStreamMetadataRequest_Category{Category: "zzq"}}
	_, err := as.streams.SetStreamMetadata(as.as(testCtx(t), "p-delete"), req)
	checkDenied(t, status.Convert(err), auth.Admin, "zzq")
	if _, err := as.streams.SetStreamMetadata(as.as(testCtx(t), "p-admin"), req); err != nil {
		t.Fatalf("admin: %v", err)
	}
	get := &esdv1.GetStreamMetadataRequest{Target: &esdv1.GetStreamMetadataRequest_Category{Category: "zzq"}}
	_, err = as.streams.GetStreamMetadata(as.as(testCtx(t), "p-read"), get)
	checkDenied(t, status.Convert(err), auth.Read, "zzq")
}
