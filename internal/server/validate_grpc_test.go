package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// validationLimits are small, so that oversized requests stay cheap.
var validationLimits = Limits{MaxEventBytes: 1024, MaxAppendBytes: 128 << 10}

// TestValidation: every malformed or oversized request is answered
// INVALID_ARGUMENT with the right reason and a BadRequest naming the
// field, and leaves the store as it was.
func TestValidation(t *testing.T) {
	ts := newTestServer(t, withLimits(validationLimits))
	ts.fill(t, "known-1", 3, "Known")
	known := ts.mustReadStream(t, "known-1")
	lastPos := ts.lastPosition(t)

	id := newID()
	ev := func(mod func(e *esdv1.ProposedEvent)) *esdv1.ProposedEvent {
		e := event("Ok", "x")
		mod(e)
		return e
	}
	withID := func(s string) *esdv1.ProposedEvent { return ev(func(e *esdv1.ProposedEvent) { e.Id = s }) }
	appendCall := func(req *esdv1.AppendRequest) func(ctx context.Context) error {
		return func(ctx context.Context) error { _, err := ts.streams.Append(ctx, req); return err }
	}
	appendOne := func(stream string, e *esdv1.ProposedEvent) func(ctx context.Context) error {
		return appendCall(appendReq(stream, xAny, e))
	}
	multiCall := func(entries ...*esdv1.AppendRequest) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := ts.streams.AppendMulti(ctx, multiReq(entries...))
			return err
		}
	}
	readStreamCall := func(req *esdv1.ReadStreamRequest) func(ctx context.Context) error {
		return func(ctx context.Context) error { _, err := ts.readStream(t, req); return err }
	}
	readAllCall := func(req *esdv1.ReadAllRequest) func(ctx context.Context) error {
		return func(ctx context.Context) error { _, err := ts.readAllMsgs(t, req); return err }
	}
	deleteCall := func(stream string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := ts.streams.DeleteStream(ctx, deleteReq(stream, xAny, true))
			return err
		}
	}
	listCall := func(req *esdv1.ListStreamsRequest) func(ctx context.Context) error {
		return func(ctx context.Context) error { _, err := ts.streams.ListStreams(ctx, req); return err }
	}
	many := func(n int) []*esdv1.AppendRequest {
		out := make([]*esdv1.AppendRequest, n)
		for i := range out {
			out[i] = appendReq(fmt.Sprintf("many-%d", i), xAny, event("Ok", ""))
		}
		return out
	}
	bigMeta := func() *esdv1.ProposedEvent {
		return ev(func(e *esdv1.ProposedEvent) { e.Metadata = make([]byte, 64<<10) })
	}
	long513 := strings.Repeat("s", 513)
	tests := []struct {
		name   string
		call   func(ctx context.Context) error
		reason string
		field  string
		stream string // the ErrorInfo's "stream" metadata, when one is named
	}{
		// Stream names.
		{"empty stream", appendOne("", event("Ok", "")), reasonInvalidArgument, "stream", ""},
		{"513-byte stream", appendOne(long513, event("Ok", "")), reasonInvalidArgument, "stream", long513},
		{"control char in stream", appendOne("a\x01b", event("Ok", "")), reasonInvalidArgument, "stream", "a\x01b"},
		{"DEL in stream", appendOne("a\x7fb", event("Ok", "")), reasonInvalidArgument, "stream", ""},
		{"C1 control in stream", appendOne("a\u0085b", event("Ok", "")), reasonInvalidArgument, "stream", ""},
		{"newline in stream", appendOne("a\nb", event("Ok", "")), reasonInvalidArgument, "stream", ""},
		{"leading $", appendOne("$all", event("Ok", "")), reasonInvalidArgument, "stream", "$all"},
		{"leading $ in a pure check", appendCall(appendReq("$deleted", xAny)), reasonInvalidArgument, "stream", ""},
		// Event types.
		{"missing type", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Type = "" })), reasonInvalidArgument, "events[0].type", "v-1"},
		{"257-byte type", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Type = strings.Repeat("t", 257) })), reasonInvalidArgument, "events[0].type", ""},
		{"control char in type", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Type = "A\tB" })), reasonInvalidArgument, "events[0].type", ""},
		{"second event without type", appendCall(appendReq("v-1", xAny, event("Ok", ""), ev(func(e *esdv1.ProposedEvent) { e.Type = "" }))),
			reasonInvalidArgument, "events[1].type", ""},
		// Event ids.
		{"id in braces", appendOne("v-1", withID("{"+id+"}")), reasonInvalidArgument, "events[0].id", ""},
		{"id as urn", appendOne("v-1", withID("urn:uuid:"+id)), reasonInvalidArgument, "events[0].id", ""},
		{"id without hyphens", appendOne("v-1", withID(strings.ReplaceAll(id, "-", ""))), reasonInvalidArgument, "events[0].id", ""},
		{"id with hyphens moved", appendOne("v-1", withID("0123456-789ab-cdef-0123-456789abcdef0")), reasonInvalidArgument, "events[0].id", ""},
		{"id with a non-hex digit", appendOne("v-1", withID("g"+id[1:])), reasonInvalidArgument, "events[0].id", ""},
		{"id with signs", appendOne("v-1", withID("+1234567-89ab-cdef-0123-456789abcdef")), reasonInvalidArgument, "events[0].id", ""},
		{"nil id", appendOne("v-1", withID("00000000-0000-0000-0000-000000000000")), reasonInvalidArgument, "events[0].id", ""},
		{"short id", appendOne("v-1", withID("1234")), reasonInvalidArgument, "events[0].id", ""},
		{"id with a trailing space", appendOne("v-1", withID(id+" ")), reasonInvalidArgument, "events[0].id", ""},
		{"an id twice", appendCall(appendReq("v-1", xAny, withID(id), withID(id))), reasonInvalidArgument, "events[1].id", ""},
		// Sizes.
		{"data over max event bytes", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Data = make([]byte, 1025) })),
			reasonEventTooLarge, "events[0].data", "v-1"},
		{"metadata over 64 KiB", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Metadata = make([]byte, 64<<10+1) })),
			reasonEventTooLarge, "events[0].metadata", ""},
		{"request over max append bytes", appendCall(appendReq("v-1", xAny, bigMeta(), bigMeta())), reasonRequestTooLarge, "events", "v-1"},
		{"257-byte content type", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.ContentType = strings.Repeat("c", 257) })),
			reasonInvalidArgument, "events[0].content_type", ""},
		// Tags.
		{"33 tags", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Tags = make([]string, 33); fillTags(e.Tags) })),
			reasonInvalidArgument, "events[0].tags", ""},
		{"empty tag", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Tags = []string{""} })), reasonInvalidArgument, "events[0].tags[0]", ""},
		{"129-byte tag", appendOne("v-1", ev(func(e *esdv1.ProposedEvent) { e.Tags = []string{"ok", strings.Repeat("t", 129)} })),
			reasonInvalidArgument, "events[0].tags[1]", ""},
		// AppendMulti.
		{"multi without entries", multiCall(), reasonInvalidArgument, "appends", ""},
		{"129 multi entries", multiCall(many(129)...), reasonInvalidArgument, "appends", ""},
		{"multi stream twice", multiCall(appendReq("v-1", xAny, event("A", "")), appendReq("v-2", xAny), appendReq("v-1", xAny, event("B", ""))),
			reasonInvalidArgument, "appends[2].stream", ""},
		{"multi bad stream", multiCall(appendReq("v-1", xAny, event("A", "")), appendReq("$v", xAny, event("B", ""))),
			reasonInvalidArgument, "appends[1].stream", ""},
		{"multi bad event", multiCall(appendReq("v-1", xAny, ev(func(e *esdv1.ProposedEvent) { e.Type = "" }))),
			reasonInvalidArgument, "appends[0].events[0].type", ""},
		{"multi id in two entries", multiCall(appendReq("v-1", xAny, withID(id)), appendReq("v-2", xAny, withID(id))),
			reasonInvalidArgument, "appends[1].events[0].id", ""},
		{"multi over max append bytes", multiCall(appendReq("v-1", xAny, bigMeta()), appendReq("v-2", xAny, bigMeta())),
			reasonRequestTooLarge, "appends", ""},
		// DeleteStream, GetStream.
		{"delete empty stream", deleteCall(""), reasonInvalidArgument, "stream", ""},
		{"delete system stream", deleteCall("$deleted"), reasonInvalidArgument, "stream", "$deleted"},
		{"get empty stream", func(ctx context.Context) error {
			_, err := ts.streams.GetStream(ctx, &esdv1.GetStreamRequest{})
			return err
		}, reasonInvalidArgument, "stream", ""},
		// Reads.
		{"read empty stream", readStreamCall(&esdv1.ReadStreamRequest{}), reasonInvalidArgument, "stream", ""},
		{"read bad direction", readStreamCall(&esdv1.ReadStreamRequest{Stream: "known-1", Direction: 7}), reasonInvalidArgument, "direction", "known-1"},
		{"read 513-byte stream", readStreamCall(&esdv1.ReadStreamRequest{Stream: long513}), reasonInvalidArgument, "stream", ""},
		{"read all bad direction", readAllCall(&esdv1.ReadAllRequest{Direction: -1}), reasonInvalidArgument, "direction", ""},
		{"read all backward from 0", readAllCall(&esdv1.ReadAllRequest{Direction: esdv1.ReadDirection_READ_DIRECTION_BACKWARD, FromPosition: new(uint64(0))}),
			reasonInvalidArgument, "from_position", ""},
		{"33 stream prefixes", readAllCall(&esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: fillTags(make([]string, 33))}}),
			reasonInvalidArgument, "filter.stream_prefixes", ""},
		{"empty type prefix", readAllCall(&esdv1.ReadAllRequest{Filter: &esdv1.Filter{EventTypePrefixes: []string{""}}}),
			reasonInvalidArgument, "filter.event_type_prefixes[0]", ""},
		{"513-byte stream prefix", readAllCall(&esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"a", long513}}}),
			reasonInvalidArgument, "filter.stream_prefixes[1]", ""},
		// ListStreams.
		{"bad page token", listCall(&esdv1.ListStreamsRequest{PageToken: "!!not base64!!"}), reasonInvalidArgument, "page_token", ""},
		{"oversized page token", listCall(&esdv1.ListStreamsRequest{PageToken: strings.Repeat("QUFB", 200)}), reasonInvalidArgument, "page_token", ""},
		{"control char in prefix", listCall(&esdv1.ListStreamsRequest{Prefix: "a\x00"}), reasonInvalidArgument, "prefix", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(testCtx(t))
			wantError(t, err, codes.InvalidArgument, tc.reason, tc.stream)
			br := badRequest(err)
			if br == nil {
				t.Fatalf("no BadRequest in %v", err)
			}
			var fields []string
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
				if v.GetDescription() == "" {
					t.Errorf("violation of %s without description", v.GetField())
				}
			}
			if len(fields) == 0 || fields[0] != tc.field {
				t.Fatalf("violations name %v, want %s first", fields, tc.field)
			}
			if lp := ts.lastPosition(t); lp != lastPos {
				t.Fatalf("last position %d after a refused request, want %d", lp, lastPos)
			}
		})
	}
	if diff := cmp.Diff(known, ts.mustReadStream(t, "known-1"), protocmp.Transform()); diff != "" {
		t.Fatalf("known-1 changed (-before +after):\n%s", diff)
	}
	for _, s := range []string{"v-1", "v-2", "many-0"} {
		if info := ts.getStream(t, s); info.GetCreated() != nil || info.GetTombstoned() {
			t.Fatalf("refused requests created %s: %v", s, info)
		}
	}
}

func fillTags(tags []string) []string {
	for i := range tags {
		tags[i] = fmt.Sprintf("t%d", i)
	}
	return tags
}

// TestValidationLimitsInclusive: what is at a limit is accepted, and
// stored and returned as given.
func TestValidationLimitsInclusive(t *testing.T) {
	ts := newTestServer(t, withLimits(validationLimits))
	upper := "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"
	tags := make([]string, 32)
	for i := range tags {
		tags[i] = fmt.Sprintf("%03d", i) + strings.Repeat("t", 125)
	}
	tests := []struct {
		name   string
		stream string
		ev     *esdv1.ProposedEvent
		check  func(t *testing.T, got *esdv1.RecordedEvent)
	}{
		{"512-byte stream", strings.Repeat("s", 512), event("Ok", ""), nil},
		{"non-ASCII stream", "produkt-ü-42", event("Ok", ""), nil},
		{"256-byte type", "lim-1", &esdv1.ProposedEvent{Type: strings.Repeat("t", 256)}, nil},
		{"data of max event bytes", "lim-1", &esdv1.ProposedEvent{Type: "Full", Data: make([]byte, 1024)}, nil},
		{"64 KiB metadata", "lim-1", &esdv1.ProposedEvent{Type: "Meta", Metadata: make([]byte, 64<<10)}, nil},
		{"32 tags of 128 bytes", "lim-1", &esdv1.ProposedEvent{Type: "Tagged", Tags: tags}, nil},
		{"uppercase id, read back lowercase", "lim-1", &esdv1.ProposedEvent{Id: upper, Type: "Upper"},
			func(t *testing.T, got *esdv1.RecordedEvent) {
				if got.GetId() != strings.ToLower(upper) {
					t.Fatalf("id %q", got.GetId())
				}
			}},
		{"server-made id", "lim-1", &esdv1.ProposedEvent{Type: "NoID"},
			func(t *testing.T, got *esdv1.RecordedEvent) {
				if len(got.GetId()) != 36 || got.GetId()[14] != '7' {
					t.Fatalf("server-made id %q is not a UUIDv7", got.GetId())
				}
			}},
		{"content type defaults", "lim-1", &esdv1.ProposedEvent{Type: "CT"},
			func(t *testing.T, got *esdv1.RecordedEvent) {
				if got.GetContentType() != "application/octet-stream" {
					t.Fatalf("content type %q", got.GetContentType())
				}
			}},
		{"content type kept", "lim-1", &esdv1.ProposedEvent{Type: "CT", ContentType: "application/json"},
			func(t *testing.T, got *esdv1.RecordedEvent) {
				if got.GetContentType() != "application/json" {
					t.Fatalf("content type %q", got.GetContentType())
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ts.streams.Append(testCtx(t), appendReq(tc.stream, xAny, tc.ev))
			if err != nil {
				t.Fatal(err)
			}
			evs := ts.mustReadStream(t, tc.stream)
			got := evs[len(evs)-1]
			if got.GetPosition() != resp.GetLastPosition() || got.GetType() != tc.ev.GetType() ||
				string(got.GetData()) != string(tc.ev.GetData()) || string(got.GetMetadata()) != string(tc.ev.GetMetadata()) ||
				!cmp.Equal(got.GetTags(), tc.ev.GetTags()) {
				t.Fatalf("stored %v", got)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

// rawCodec sends requests that are already encoded, so that a test can
// send bytes the generated code would refuse to marshal.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }

func (rawCodec) Name() string { return "proto" }

// TestValidationInvalidUTF8: names, types and tags that are not valid
// UTF-8 are INVALID_ARGUMENT with a BadRequest like every other bad
// field (docs/api.md: "Every error status carries a google.rpc.ErrorInfo").
func TestValidationInvalidUTF8(t *testing.T) {
	ts := newTestServer(t)
	field := func(num protowire.Number, s string) []byte {
		b := protowire.AppendTag(nil, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	eventBytes := func(typ string, tags ...string) []byte {
		b := field(2, typ)
		for _, tg := range tags {
			b = append(b, field(6, tg)...)
		}
		return b
	}
	appendBytes := func(stream string, ev []byte) []byte {
		return append(field(1, stream), field(6, string(ev))...)
	}
	tests := []struct {
		name   string
		method string
		req    []byte
		field  string
	}{
		{"stream", esdv1.StreamService_Append_FullMethodName, appendBytes("bad-\xff", eventBytes("Ok")), "stream"},
		{"type", esdv1.StreamService_Append_FullMethodName, appendBytes("ok-1", eventBytes("Bad\xc3")), "events[0].type"},
		{"tag", esdv1.StreamService_Append_FullMethodName, appendBytes("ok-1", eventBytes("Ok", "\xfe")), "events[0].tags[0]"},
		{"get stream", esdv1.StreamService_GetStream_FullMethodName, field(1, "bad-\xff"), "stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp esdv1.AppendResponse // any message: the call must fail
			err := ts.conn.Invoke(testCtx(t), tc.method, tc.req, &resp, grpc.ForceCodec(rawCodec{}))
			wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
			if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != tc.field {
				t.Fatalf("BadRequest %v, want %s", br, tc.field)
			}
		})
	}
}

// TestInvalidStreamKeepsDetails: the mapping of a bad request keeps its
// ErrorInfo and BadRequest even when the offending stream name is not
// UTF-8 (proto3 refuses to marshal such a string in ErrorInfo.metadata,
// and withReason then drops every detail). This is the second half of
// what TestValidationInvalidUTF8 needs once such names reach validation.
func TestInvalidStreamKeepsDetails(t *testing.T) {
	_, err := validateAppend(DefaultLimits, &esdv1.AppendRequest{Stream: "bad-\xff", Events: []*esdv1.ProposedEvent{{Type: "Ok"}}})
	if err == nil {
		t.Fatal("a stream name that is not UTF-8 passed validation")
	}
	st := toStatus(err)
	wantError(t, st, codes.InvalidArgument, reasonInvalidArgument, "")
	if br := badRequest(st); br == nil || br.GetFieldViolations()[0].GetField() != "stream" {
		t.Fatalf("BadRequest %v, want stream", br)
	}
}

// TestNoForgedDeletions: a read model that follows the server's deletions
// by filtering $all on the "$stream-" types sees real deletions only: a
// client can neither append events of those types (plainly or behind an
// invisible character) nor write to a stream that passes for "$deleted".
func TestNoForgedDeletions(t *testing.T) {
	ts := newTestServer(t)
	ts.fill(t, "victim-1", 2, "Placed")
	for _, tc := range []struct {
		stream, typ string
	}{
		{"victim-1", "$stream-deleted"},
		{"victim-1", "$stream-tombstoned"},
		{"victim-1", "\u200b$stream-deleted"},
		{" $deleted", "Deleted"},
		{"\u200b$deleted", "Deleted"},
		{"\ufeff$deleted", "Deleted"},
	} {
		_, err := ts.streams.Append(testCtx(t), appendReq(tc.stream, xAny, event(tc.typ, `{"stream":"victim-1"}`)))
		wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, tc.stream)
	}
	ts.mustDelete(t, "victim-1", false)
	msgs, err := ts.readAllMsgs(t, &esdv1.ReadAllRequest{Filter: &esdv1.Filter{EventTypePrefixes: []string{"$stream-"}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		for _, e := range m.GetEvents() {
			got = append(got, e.GetStream()+" "+e.GetType())
		}
	}
	if want := []string{"$deleted $stream-deleted"}; !cmp.Equal(got, want) {
		t.Fatalf("deletions in $all: %q, want %q", got, want)
	}
}
