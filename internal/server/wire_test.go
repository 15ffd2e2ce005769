package server

import (
	"context"
	"strings"
	"testing"

	eslog "github.com/esdhq/esd/internal/log"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestWireFieldNumbers: the hand-written encoder's field numbers are the
// generated messages'.
func TestWireFieldNumbers(t *testing.T) {
	num := func(m proto.Message, name string) protowire.Number {
		f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
		if f == nil {
			t.Fatalf("%T has no field %s", m, name)
		}
		return f.Number()
	}
	ev := &esdv1.RecordedEvent{}
	tests := []struct {
		got, want protowire.Number
	}{
		{fieldResponseEvents, num(&esdv1.ReadAllResponse{}, "events")},
		{fieldResponseEvents, num(&esdv1.ReadStreamResponse{}, "events")},
		{fieldResponseCheckpoint, num(&esdv1.ReadAllResponse{}, "checkpoint")},
		{fieldEventID, num(ev, "id")},
		{fieldEventStream, num(ev, "stream")},
		{fieldEventRevision, num(ev, "revision")},
		{fieldEventPosition, num(ev, "position")},
		{fieldEventType, num(ev, "type")},
		{fieldEventData, num(ev, "data")},
		{fieldEventMetadata, num(ev, "metadata")},
		{fieldEventContentType, num(ev, "content_type")},
		{fieldEventTags, num(ev, "tags")},
		{fieldEventCreated, num(ev, "created")},
	}
	for i, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("row %d: field %d, the proto says %d", i, tc.got, tc.want)
		}
	}
}

// TestWireEncodingMatchesProto: events encoded straight from the store
// decode to exactly the messages the generated code would send.
func TestWireEncodingMatchesProto(t *testing.T) {
	l, err := eslog.Open(t.TempDir(), eslog.Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	events := []eslog.Event{
		{ID: [16]byte{1}, Type: "Plain", Data: []byte("data")},
		{ID: [16]byte{2}, Type: "Everything", ContentType: "application/json", Data: []byte(`{"a":1}`),
			Metadata: []byte("meta"), Tags: []string{"t1", "tag two"}},
		{ID: [16]byte{3}, Type: "Empty"}, // no data: the field is left out
		{ID: [16]byte{0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00},
			Type: "Big", Data: []byte(strings.Repeat("x", 300<<10))},
	}
	w := &eslog.Write{State: eslog.StreamState{ID: l.NewStreamID(), Name: "wire-ü-1"}, New: true, Events: events}
	tk, err := l.Commit([]*eslog.Write{w}, false)
	if err != nil || w.Err != nil {
		t.Fatal(err, w.Err)
	}
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}

	var c wireChunk
	wrapped := wireChunk{wrap: fieldSubscribeEvents}
	var want esdv1.ReadAllResponse
	err = l.ReadAllViews(context.Background(), eslog.AllQuery{}, func(v *eslog.EventView) error {
		c.add(v)
		wrapped.add(v)
		want.Events = append(want.Events, recordedEvent(v.Materialize()))
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want.Checkpoint = 12345
	var got esdv1.ReadAllResponse
	if err := proto.Unmarshal(c.message(12345).bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&want, &got, protocmp.Transform()); diff != "" {
		t.Fatalf("decoded encoding differs from the generated message (-want +got):\n%s", diff)
	}
	if got.Events[0].Revision != 0 || got.Events[3].Revision != 3 {
		t.Fatalf("revisions %d, %d", got.Events[0].Revision, got.Events[3].Revision)
	}
	// The same events wrapped as a SubscribeResponse's EventBatch.
	var sub esdv1.SubscribeResponse
	if err := proto.Unmarshal(wrapped.message(0).bytes(), &sub); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Events, sub.GetEvents().GetEvents(), protocmp.Transform()); diff != "" {
		t.Fatalf("decoded wrapped encoding differs (-want +got):\n%s", diff)
	}
}

func TestSplitTime(t *testing.T) {
	tests := []struct {
		ns    int64
		secs  int64
		nanos int32
	}{
		{0, 0, 0},
		{1_500_000_000, 1, 500_000_000},
		{1_764_000_000_123_456_789, 1_764_000_000, 123_456_789},
		{-1, -1, 999_999_999},
	}
	for _, tc := range tests {
		if s, n := splitTime(tc.ns); s != tc.secs || n != tc.nanos {
			t.Errorf("splitTime(%d) = %d, %d; want %d, %d", tc.ns, s, n, tc.secs, tc.nanos)
		}
	}
}
