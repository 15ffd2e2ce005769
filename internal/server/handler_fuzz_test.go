package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"
)

// fuzzMethod is one RPC of the esd.v1 services, as a fuzz target calls it.
type fuzzMethod struct {
	name     string // /esd.v1.Service/Method
	desc     protoreflect.MethodDescriptor
	request  protoreflect.MessageType
	response protoreflect.MessageType
}

// esdMethods lists every RPC of the esd.v1 services from their descriptors,
// so that an RPC added later is fuzzed without a change here.
func esdMethods(t testing.TB) []fuzzMethod {
	var ms []fuzzMethod
	for _, fd := range []protoreflect.FileDescriptor{
		esdv1.File_esd_v1_stream_service_proto,
		esdv1.File_esd_v1_snapshot_service_proto,
		esdv1.File_esd_v1_admin_service_proto,
		esdv1.File_esd_v1_consumer_group_service_proto,
	} {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
				if err != nil {
					t.Fatal(err)
				}
				out, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
				if err != nil {
					t.Fatal(err)
				}
				ms = append(ms, fuzzMethod{
					name: "/" + string(sd.FullName()) + "/" + string(md.Name()),
					desc: md, request: in, response: out,
				})
			}
		}
	}
	return ms
}

// answeredCodes are the codes a request of a client can get from a
// running esd (docs/api.md, Errors), and DeadlineExceeded: the fuzz
// target ends streaming calls with a short deadline.
var answeredCodes = []codes.Code{
	codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
	codes.FailedPrecondition, codes.Aborted, codes.ResourceExhausted, codes.DeadlineExceeded,
}

// FuzzHandlers sends a fuzzed request to a fuzzed RPC of a running server
// (every RPC of the esd.v1 services, in the order of their descriptors) on
// a store with streams, a snapshot and a consumer group in it. Whatever
// the request, the answer is a documented code, never INTERNAL or
// UNKNOWN; every error carries esd's ErrorInfo with a reason; an
// INVALID_ARGUMENT names at least one field; and a request refused as
// invalid wrote nothing. Requests that do not decode are
// FuzzStrictDecode's. The seeds, a valid and some invalid requests of
// each RPC, are in testdata/fuzz/FuzzHandlers.
func FuzzHandlers(f *testing.F) {
	methods := esdMethods(f)
	ts := newTestServer(f)
	seedHandlerStore(f, ts)
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		m := methods[int(which)%len(methods)]
		req := m.request.New().Interface()
		if proto.Unmarshal(body, req) != nil {
			t.Skip("does not decode")
		}
		before := lastPosition(t, ts)
		err := callFuzzed(ts.conn, m, req)
		st := status.Convert(err)
		if !slices.Contains(answeredCodes, st.Code()) {
			t.Fatalf("%s(%v): %v, not a documented answer", m.name, req, err)
		}
		if err == nil || st.Code() == codes.DeadlineExceeded {
			return
		}
		var info *errdetails.ErrorInfo
		var fields int
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				info = d
			case *errdetails.BadRequest:
				fields = len(d.GetFieldViolations())
			}
		}
		if info == nil || info.GetDomain() != "esd" || info.GetReason() == "" {
			t.Fatalf("%s(%v): %v without esd's ErrorInfo", m.name, req, err)
		}
		if st.Code() == codes.InvalidArgument {
			if fields == 0 {
				t.Fatalf("%s(%v): %v names no field", m.name, req, err)
			}
			if after := lastPosition(t, ts); after != before {
				t.Fatalf("%s(%v): refused as invalid (%v), but the store moved from %d to %d", m.name, req, err, before, after)
			}
		}
	})
}

// callFuzzed calls m with req: unary calls wait for their answer;
// streaming ones send req, close their side and read until the end, or
// for at most 200 ms (a live subscription never ends).
func callFuzzed(conn *grpc.ClientConn, m fuzzMethod, req proto.Message) error {
	if !m.desc.IsStreamingClient() && !m.desc.IsStreamingServer() {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		return conn.Invoke(ctx, m.name, req, m.response.New().Interface())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{
		ServerStreams: m.desc.IsStreamingServer(), ClientStreams: m.desc.IsStreamingClient(),
	}, m.name)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	for {
		if err := cs.RecvMsg(m.response.New().Interface()); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func lastPosition(t *testing.T, ts *testServer) uint64 {
	info, err := ts.admin.GetServerInfo(testCtx(t), &esdv1.GetServerInfoRequest{})
	if err != nil {
		t.Fatalf("GetServerInfo: %v", err)
	}
	return info.GetLastPosition()
}

// seedHandlerStore writes what the seeds name: streams order-1 and
// order-2, a deleted stream, a snapshot of order-1 and a group g1.
func seedHandlerStore(f *testing.F, ts *testServer) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	for _, req := range []*esdv1.AppendRequest{
		appendReq("order-1", xNoStream, event("Created", `{"a":1}`), event("Paid", `{}`)),
		appendReq("order-2", xNoStream, event("Created", `{"b":2}`)),
		appendReq("gone-1", xNoStream, event("Created", `{}`)),
	} {
		if _, err := ts.streams.Append(ctx, req); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := ts.streams.DeleteStream(ctx, deleteReq("gone-1", xAny, false)); err != nil {
		f.Fatal(err)
	}
	snaps := esdv1.NewSnapshotServiceClient(ts.conn)
	if _, err := snaps.SaveSnapshot(ctx, &esdv1.SaveSnapshotRequest{Stream: "order-1", Revision: 1, Type: "Order", Data: []byte(`{}`)}); err != nil {
		f.Fatal(err)
	}
	groups := esdv1.NewConsumerGroupServiceClient(ts.conn)
	if _, err := groups.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: &esdv1.Group{Name: "g1", Target: &esdv1.Group_All{All: &emptypb.Empty{}}}}); err != nil {
		f.Fatal(err)
	}
}
