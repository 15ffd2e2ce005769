package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Requests that do not decode. grpc-go ends a call whose request its codec
// fails to decode with INTERNAL: recv (rpc_util.go) wraps any Unmarshal
// error in codes.Internal, and the server stream's RecvMsg writes that
// status at once, so no handler or interceptor can change it. The codec
// therefore never fails for a lenientMessage (wire.go): it keeps the error
// there, and the receiving side below turns it into INVALID_ARGUMENT with
// reason INVALID_ARGUMENT. Every request goes through it: unary ones
// through strictService's handlers, streaming ones through strictStream
// (the outermost stream interceptor, so that Config.StreamInterceptors see
// the messages handlers pass). AppendStream receives lenientMessage itself.

// badDecode records that a request m did not decode: field "request".
func badDecode(v *validator, m proto.Message, err error) {
	v.bad(reasonInvalidArgument, "request", "the request could not be decoded as %s: %v",
		m.ProtoReflect().Descriptor().FullName(), err)
}

// decodeError is the status of a request m that did not decode, or that
// the codec refused to decode (a *limitError: RESOURCE_EXHAUSTED).
func decodeError(m proto.Message, err error) error {
	var le *limitError
	if errors.As(err, &le) {
		return le.counted().status()
	}
	var v validator
	badDecode(&v, m, err)
	return toStatus(v.err())
}

// strictDecode decodes a request into v with dec (gRPC's), and returns
// decodeError if it does not decode. A refusal with a pause (a large
// append refused before decoding) is answered after it, once gRPC has
// freed the request's bytes: a client that retries at once is slowed to
// a few of them a second, instead of taking the server's CPU to copy
// requests it refuses.
func strictDecode(ctx context.Context, dec func(any) error, v any) error {
	return strictDecodeFor(ctx, dec, v, nil)
}

// strictDecodeFor is strictDecode for a call of ctx. A unary request is
// decoded before gRPC runs the interceptors: undecoded, if set, decides
// first whether the caller may hear why (with security on, only an
// authenticated caller with the method's permission on some stream: the
// limit errors name the server's limits and its appends in flight).
func strictDecodeFor(ctx context.Context, dec func(any) error, v any, undecoded func(context.Context) error) error {
	m, ok := v.(proto.Message)
	if !ok {
		return dec(v)
	}
	lm := lenientMessage{msg: m}
	if err := dec(&lm); err != nil {
		return err
	}
	if lm.err != nil {
		if undecoded != nil {
			if err := undecoded(ctx); err != nil {
				return err
			}
		}
		var le *limitError
		if errors.As(lm.err, &le) && le.pause > 0 {
			t := time.NewTimer(le.pause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		return decodeError(m, lm.err)
	}
	return nil
}

// strictService returns a copy of desc whose unary handlers decode their
// request with strictDecode; undecoded (nil: none) is given the method's
// full name.
func strictService(desc *grpc.ServiceDesc, undecoded func(ctx context.Context, method string) error) *grpc.ServiceDesc {
	d := *desc
	d.Methods = make([]grpc.MethodDesc, len(desc.Methods))
	for i, md := range desc.Methods {
		h := md.Handler
		var before func(context.Context) error
		if undecoded != nil {
			method := "/" + desc.ServiceName + "/" + md.MethodName
			before = func(ctx context.Context) error { return undecoded(ctx, method) }
		}
		md.Handler = func(srv any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			return h(srv, ctx, func(v any) error { return strictDecodeFor(ctx, dec, v, before) }, in)
		}
		d.Methods[i] = md
	}
	return &d
}

// strictStreams is the outermost stream interceptor: the call's messages
// are received through strictStream.
func strictStreams(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &strictStream{ServerStream: ss})
}

// strictStream receives each message through its one lenientMessage (no
// allocation per message), and answers decodeError for one that does not
// decode. A lenientMessage passed in (AppendStream's) goes through as is.
type strictStream struct {
	grpc.ServerStream
	lm lenientMessage
}

func (s *strictStream) RecvMsg(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return s.ServerStream.RecvMsg(v)
	}
	s.lm = lenientMessage{msg: m}
	err := s.ServerStream.RecvMsg(&s.lm)
	derr := s.lm.err
	s.lm = lenientMessage{}
	if err != nil {
		return err
	}
	if derr != nil {
		return decodeError(m, derr)
	}
	return nil
}
