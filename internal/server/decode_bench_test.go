package server

import (
	"context"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// codecStream receives data through the server's codec, as gRPC's stream
// does.
type codecStream struct {
	grpc.ServerStream
	c    codec
	data []byte
}

func (s *codecStream) RecvMsg(v any) error {
	return s.c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(s.data)}, v)
}

// BenchmarkDecodeRequest: what receiving an append request costs straight
// through the codec (as before strict decoding), through strictDecode (a
// unary call) and through strictStream (each message of a streaming call).
func BenchmarkDecodeRequest(b *testing.B) {
	data, err := proto.Marshal(appendReq("order-1", xExact(3), events(10, "Created")...))
	if err != nil {
		b.Fatal(err)
	}
	cs := &codecStream{c: newCodec(), data: data}
	b.Run("codec", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := cs.RecvMsg(&esdv1.AppendRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A handler as generated code has it, before and after strictService.
	handler := func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(esdv1.AppendRequest)
		if err := dec(in); err != nil {
			return nil, err
		}
		return in, nil
	}
	desc := &grpc.ServiceDesc{Methods: []grpc.MethodDesc{{MethodName: "Append", Handler: handler}}}
	for name, h := range map[string]grpc.MethodHandler{"unary-plain": handler, "unary-strict": strictService(desc, nil).Methods[0].Handler} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h(nil, ctx, cs.RecvMsg, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("stream", func(b *testing.B) {
		ss := &strictStream{ServerStream: cs}
		b.ReportAllocs()
		for b.Loop() {
			if err := ss.RecvMsg(&esdv1.AppendRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
