package server

import (
	"context"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// FuzzStrictDecode: strictDecode through the server's codec decodes what
// proto.Unmarshal decodes, to the same message, and answers
// INVALID_ARGUMENT/INVALID_ARGUMENT, field request, for what it refuses.
// The seeds are in testdata/fuzz/FuzzStrictDecode.
func FuzzStrictDecode(f *testing.F) {
	for _, m := range []proto.Message{
		appendReq("order-1", xExact(3), event("Created", `{"a":1}`)),
		&esdv1.ReadStreamRequest{Stream: "order-1", FromRevision: proto.Uint64(7)},
		&esdv1.SubscribeRequest{},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	c := newCodec()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, newMsg := range []func() proto.Message{
			func() proto.Message { return &esdv1.AppendRequest{} },
			func() proto.Message { return &esdv1.ReadStreamRequest{} },
			func() proto.Message { return &esdv1.SubscribeRequest{} },
		} {
			want := newMsg()
			werr := proto.Unmarshal(data, want)
			got := newMsg()
			dec := func(v any) error { return c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v) }
			err := strictDecode(context.Background(), dec, got)
			if werr == nil {
				if err != nil {
					t.Fatalf("%T: %v, proto.Unmarshal decodes it", got, err)
				}
				if !proto.Equal(got, want) {
					t.Fatalf("%T: decoded %v, proto.Unmarshal %v", got, got, want)
				}
				continue
			}
			st, ok := status.FromError(err)
			if !ok || st.Code() != codes.InvalidArgument {
				t.Fatalf("%T: %v, want INVALID_ARGUMENT (proto.Unmarshal: %v)", got, err, werr)
			}
			var reason, field string
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.ErrorInfo:
					reason = d.GetReason()
				case *errdetails.BadRequest:
					field = d.GetFieldViolations()[0].GetField()
				}
			}
			if reason != reasonInvalidArgument || field != "request" {
				t.Fatalf("%T: reason %q field %q, want %s and request", got, reason, field, reasonInvalidArgument)
			}
		}
		// A value that is no message goes to gRPC's codec as is.
		var s string
		if err := strictDecode(context.Background(), func(v any) error { return c.Unmarshal(nil, v) }, &s); err == nil {
			t.Fatalf("decoding into a string: %v", err)
		}
	})
}
