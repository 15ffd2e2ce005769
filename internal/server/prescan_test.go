package server

import (
	"context"
	"strings"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// emptyEvents makes n events with nothing set: the cheapest on the wire
// (two bytes each) and the costliest to decode for their size.
func emptyEvents(n int) []*esdv1.ProposedEvent {
	out := make([]*esdv1.ProposedEvent, n)
	for i := range out {
		out[i] = &esdv1.ProposedEvent{}
	}
	return out
}

// decodedEvents is what proto.Unmarshal makes of an append request's
// events: the count the pre-scan must agree with.
func decodedEvents(m proto.Message) int {
	switch m := m.(type) {
	case *esdv1.AppendRequest:
		return len(m.GetEvents())
	case *esdv1.AppendMultiRequest:
		n := 0
		for _, a := range m.GetAppends() {
			n += len(a.GetEvents())
		}
		return n
	case *esdv1.AppendStreamRequest:
		return len(m.GetAppend().GetEvents())
	}
	return -1
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPrescanCount: the pre-scan counts what proto.Unmarshal decodes,
// including repeated occurrences of AppendStreamRequest.append (which
// merge) and field 6 with another wire type (an unknown field, no event).
func TestPrescanCount(t *testing.T) {
	req := appendReq("s-1", xExact(3), events(5, "Created")...)
	raw := mustMarshal(t, req)
	// Field 6 as a varint: not an event to proto.Unmarshal.
	varint6 := protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), raw...), 6, protowire.VarintType), 1)
	// AppendStreamRequest.append twice: the decoder merges both appends.
	twice := mustMarshal(t, &esdv1.AppendStreamRequest{Append: req})
	twice = append(twice, twice...)
	tests := []struct {
		name string
		new  func() proto.Message
		b    []byte
	}{
		{"append", func() proto.Message { return &esdv1.AppendRequest{} }, raw},
		{"append empty", func() proto.Message { return &esdv1.AppendRequest{} }, nil},
		{"append with field 6 as varint", func() proto.Message { return &esdv1.AppendRequest{} }, varint6},
		{"append of empty events", func() proto.Message { return &esdv1.AppendRequest{} },
			mustMarshal(t, &esdv1.AppendRequest{Stream: "s", Events: emptyEvents(1000)})},
		{"multi", func() proto.Message { return &esdv1.AppendMultiRequest{} }, mustMarshal(t, &esdv1.AppendMultiRequest{
			Appends: []*esdv1.AppendRequest{req, appendReq("s-2", xAny, events(7, "X")...), {Stream: "s-3"}}})},
		{"stream message", func() proto.Message { return &esdv1.AppendStreamRequest{} },
			mustMarshal(t, &esdv1.AppendStreamRequest{CorrelationId: []byte("c"), Append: req})},
		{"stream message, append twice", func() proto.Message { return &esdv1.AppendStreamRequest{} }, twice},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.new()
			if err := proto.Unmarshal(tc.b, m); err != nil {
				t.Fatal(err)
			}
			got, ok := appendEventCount(m, tc.b, 1<<30)
			if !ok || got != decodedEvents(m) {
				t.Fatalf("pre-scan counts %d (%v), the decoder %d", got, ok, decodedEvents(m))
			}
		})
	}
	if _, ok := appendEventCount(&esdv1.ReadStreamRequest{}, raw, 10); ok {
		t.Fatal("counted the events of a ReadStreamRequest")
	}
	if n := countEvents(raw, 2); n != 2 {
		t.Fatalf("stop at 2: counted %d", n)
	}
}

// TestPrescanLimits: through the server's codec and strictDecode (a unary
// call), each limit's status: code, reason, ErrorInfo metadata and
// message; under the limits the request decodes as before.
func TestPrescanLimits(t *testing.T) {
	lim := Limits{MaxAppendEvents: 100, MaxRequestDecodedBytes: 1 << 20}.withDefaults()
	c := newCodec()
	c.lim = &lim
	tests := []struct {
		name        string
		msg         proto.Message
		reason      string
		limit       string
		max         string
		msgContains string
	}{
		{name: "append at the limit", msg: &esdv1.AppendRequest{Stream: "s", Events: emptyEvents(100)}},
		{name: "append over", msg: &esdv1.AppendRequest{Stream: "s", Events: emptyEvents(101)},
			reason: reasonTooManyEvents, limit: "max-append-events", max: "100", msgContains: "more than 100 events in one request"},
		{name: "multi over in all", msg: &esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{
			{Stream: "a", Events: emptyEvents(60)}, {Stream: "b", Events: emptyEvents(60)}}},
			reason: reasonTooManyEvents, limit: "max-append-events", max: "100", msgContains: "more than 100 events"},
		{name: "stream message over", msg: &esdv1.AppendStreamRequest{Append: &esdv1.AppendRequest{Stream: "s", Events: emptyEvents(101)}},
			reason: reasonTooManyEvents, limit: "max-append-events", max: "100"},
		{name: "decoded size over", msg: &esdv1.AppendRequest{Stream: "s", Events: []*esdv1.ProposedEvent{
			{Type: "t", Data: make([]byte, 1<<20)}}},
			reason: reasonRequestTooLarge, limit: "max-request-decoded-bytes", max: "1048576", msgContains: "would decode to"},
		{name: "not an append", msg: &esdv1.ReadStreamRequest{Stream: strings.Repeat("x", 100)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := mustMarshal(t, tc.msg)
			got := tc.msg.ProtoReflect().New().Interface()
			err := strictDecode(context.Background(), func(v any) error { return c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v) }, got)
			if tc.reason == "" {
				if err != nil || !proto.Equal(got, tc.msg) {
					t.Fatalf("err %v, equal %v", err, proto.Equal(got, tc.msg))
				}
				return
			}
			st, _ := status.FromError(err)
			if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), tc.msgContains) {
				t.Fatalf("status %v, want RESOURCE_EXHAUSTED with %q", err, tc.msgContains)
			}
			info := statusInfo(st)
			if info.GetReason() != tc.reason || info.GetDomain() != "esd" || info.GetMetadata()["limit"] != tc.limit || info.GetMetadata()["max"] != tc.max {
				t.Fatalf("ErrorInfo %v, want reason %s limit %s max %s", info, tc.reason, tc.limit, tc.max)
			}
		})
	}
	// Split into several buffers, as gRPC hands over large messages.
	data := mustMarshal(t, &esdv1.AppendRequest{Stream: "s", Events: emptyEvents(101)})
	parts := mem.BufferSlice{mem.SliceBuffer(data[:7]), mem.SliceBuffer(data[7:50]), mem.SliceBuffer(data[50:])}
	lm := lenientMessage{msg: &esdv1.AppendRequest{}}
	if err := c.Unmarshal(parts, &lm); err != nil || !isLimitError(lm.err) {
		t.Fatalf("in pieces: %v %v", err, lm.err)
	}
	data = mustMarshal(t, &esdv1.AppendRequest{Stream: "s", Events: emptyEvents(100)})
	parts = mem.BufferSlice{mem.SliceBuffer(data[:7]), mem.SliceBuffer(data[7:])}
	lm = lenientMessage{msg: &esdv1.AppendRequest{}}
	if err := c.Unmarshal(parts, &lm); err != nil || lm.err != nil || len(lm.msg.(*esdv1.AppendRequest).GetEvents()) != 100 {
		t.Fatalf("in pieces, at the limit: %v %v", err, lm.err)
	}
}

func statusInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i
		}
	}
	return nil
}

// FuzzPrescan: the pre-scan never panics, and on every message that
// decodes it counts the events the decoder makes. The seeds are in
// testdata/fuzz/FuzzPrescan.
func FuzzPrescan(f *testing.F) {
	req := appendReq("s-1", xExact(3), events(3, "Created")...)
	for _, m := range []proto.Message{
		req,
		&esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{req, {Stream: "b", Events: emptyEvents(2)}}},
		&esdv1.AppendStreamRequest{CorrelationId: []byte("c"), Append: req},
	} {
		f.Add(mustMarshal(f, m))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range []proto.Message{&esdv1.AppendRequest{}, &esdv1.AppendMultiRequest{}, &esdv1.AppendStreamRequest{}} {
			n, _ := appendEventCount(m, data, 1<<30)
			if proto.Unmarshal(data, m) != nil {
				continue
			}
			if want := decodedEvents(m); n != want {
				t.Fatalf("%T: pre-scan counts %d, the decoder %d", m, n, want)
			}
		}
	})
}
