package server

import (
	"errors"
	"io"
	"sort"
	"strings"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// undecodable are requests no esd, health or reflection message decodes:
// a truncated tag, field number 0, a truncated varint, a length past the
// end, a group that does not end.
var undecodable = map[string][]byte{
	"truncated tag":    {0xff},
	"field 0":          {0x00},
	"truncated varint": {0x08, 0x80},
	"length past end":  {0x0a, 0x05, 'a'},
	"open group":       {0x0b},
}

// TestUndecodableRequests: every RPC of every service the server serves,
// unary or streaming, answers a request that does not decode with
// INVALID_ARGUMENT/INVALID_ARGUMENT (BadRequest field "request"), logs
// nothing at Info or above for it, and the server goes on serving.
func TestUndecodableRequests(t *testing.T) {
	ts := newTestServer(t, withObservedLogs())
	ts.mustAppend(t, appendReq("decode-1", xAny, event("Before", "")))
	infos := ts.srv.grpc.GetServiceInfo()
	services := make([]string, 0, len(infos))
	for name := range infos {
		services = append(services, name)
	}
	sort.Strings(services)
	methods := 0
	for _, svc := range services {
		for _, mi := range infos[svc].Methods {
			method := "/" + svc + "/" + mi.Name
			methods++
			for name, bad := range undecodable {
				t.Run(svc+"/"+mi.Name+"/"+name, func(t *testing.T) {
					var err error
					if !mi.IsClientStream && !mi.IsServerStream {
						err = ts.conn.Invoke(testCtx(t), method, bad, &emptypb.Empty{}, grpc.ForceCodec(rawCodec{}))
					} else {
						err = sendUndecodable(t, ts, method, mi, bad)
					}
					wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
					if !strings.Contains(status.Convert(err).Message(), "could not be decoded") {
						t.Errorf("message %q, want it to say the request could not be decoded", status.Convert(err).Message())
					}
					if br := badRequest(err); br == nil || br.GetFieldViolations()[0].GetField() != "request" {
						t.Errorf("BadRequest %v, want field request", br)
					}
				})
			}
		}
	}
	if methods < 20 {
		t.Fatalf("only %d methods served: %v", methods, services)
	}
	// Still serving, and nothing an operator is shown.
	ts.mustAppend(t, appendReq("decode-1", xExact(0), event("After", "")))
	if evs := ts.mustReadStream(t, "decode-1"); len(evs) != 2 {
		t.Fatalf("decode-1 holds %d events, want 2", len(evs))
	}
	for _, e := range ts.logs.All() {
		if e.Level >= zap.WarnLevel {
			t.Errorf("logged at %v: %s %v", e.Level, e.Message, e.ContextMap())
		}
		if _, ok := e.ContextMap()["method"]; ok {
			t.Errorf("request logged at %v: %s %v", e.Level, e.Message, e.ContextMap())
		}
	}
}

// sendUndecodable sends bad as the first message of a streaming call and
// returns the status the call ends with.
func sendUndecodable(t *testing.T, ts *testServer, method string, mi grpc.MethodInfo, bad []byte) error {
	t.Helper()
	cs, err := ts.conn.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: mi.IsClientStream, ServerStreams: mi.IsServerStream},
		method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(bad); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("send: %v", err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatalf("close send: %v", err)
	}
	for {
		if err := cs.RecvMsg(&emptypb.Empty{}); err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatal("the call ended with OK")
			}
			return err
		}
	}
}

// TestUndecodableAfterValid: a streaming call that received good messages
// ends with INVALID_ARGUMENT at the first that does not decode.
func TestUndecodableAfterValid(t *testing.T) {
	ts := newTestServer(t, withObservedLogs())
	createGroup(t, ts, catGroup("g", "decode"))
	cs, err := ts.conn.NewStream(testCtx(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		esdv1.ConsumerGroupService_Join_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	join := &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: "g", Member: "m"}}}
	if err := cs.SendMsg(join); err != nil {
		t.Fatal(err)
	}
	if err := cs.RecvMsg(&esdv1.JoinResponse{}); err != nil {
		t.Fatalf("joined: %v", err)
	}
	if err := cs.SendMsg([]byte{0x0a, 0x05, 'a'}); err != nil {
		t.Fatal(err)
	}
	for {
		if err = cs.RecvMsg(&esdv1.JoinResponse{}); err != nil {
			break
		}
	}
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	for _, e := range ts.logs.FilterField(zap.String("method", esdv1.ConsumerGroupService_Join_FullMethodName)).All() {
		t.Errorf("logged at %v: %s", e.Level, e.Message)
	}
}
