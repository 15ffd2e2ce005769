package main

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// fakeServer answers what a real esd (startESD) cannot be made to answer
// on demand, each call the same way:
//   - GetStream fails with getErr, or with getHang answers only when the
//     caller gives up;
//   - GetServerInfo reports set figures (an uptime of 90s, 3 MiB on disk);
//   - Subscribe ends as when the server stops: one event, caught_up,
//     ended SHUTTING_DOWN, then the status UNAVAILABLE/SHUTTING_DOWN;
//   - Join delivers one event and then does not end the stream when the
//     member closes its side.
type fakeServer struct {
	esdv1.UnimplementedStreamServiceServer
	esdv1.UnimplementedAdminServiceServer
	esdv1.UnimplementedConsumerGroupServiceServer

	getErr  error
	getHang bool
}

// startFake serves f on a 127.0.0.1 port and returns its address.
func startFake(t *testing.T, f *fakeServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	esdv1.RegisterStreamServiceServer(srv, f)
	esdv1.RegisterAdminServiceServer(srv, f)
	esdv1.RegisterConsumerGroupServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// withReason is a status with the google.rpc.ErrorInfo reason esd gives.
func withReason(c codes.Code, msg, reason string) error {
	st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Domain: "esd", Reason: reason})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// fakeEvent is the one event the fake delivers.
var fakeEvent = &esdv1.RecordedEvent{
	Id: "0190c6c3-6d2a-7b8e-9f00-0123456789ab", Stream: "user-1", Revision: 0, Position: 8,
	Type: "UserJoined", Data: []byte("joined"), ContentType: "application/octet-stream",
}

func (f *fakeServer) GetStream(ctx context.Context, _ *esdv1.GetStreamRequest) (*esdv1.GetStreamResponse, error) {
	if f.getHang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return nil, f.getErr
}

func (f *fakeServer) GetServerInfo(context.Context, *esdv1.GetServerInfoRequest) (*esdv1.GetServerInfoResponse, error) {
	return &esdv1.GetServerInfoResponse{
		Version: "test", Commit: "abc123", DataDir: "/tmp/esd", LastPosition: 8, StreamCount: 2, EventCount: 8,
		Uptime: durationpb.New(90 * time.Second), Started: timestamppb.Now(), Shards: 4, DiskBytes: 3 << 20,
	}, nil
}

func (f *fakeServer) Subscribe(_ *esdv1.SubscribeRequest, ss grpc.ServerStreamingServer[esdv1.SubscribeResponse]) error {
	for _, m := range []*esdv1.SubscribeResponse{
		{Content: &esdv1.SubscribeResponse_Events{Events: &esdv1.EventBatch{Events: []*esdv1.RecordedEvent{fakeEvent}}}},
		{Content: &esdv1.SubscribeResponse_CaughtUp{CaughtUp: &esdv1.CaughtUp{Position: 8}}},
		{Content: &esdv1.SubscribeResponse_Ended{Ended: &esdv1.Ended{Reason: "SHUTTING_DOWN"}}},
	} {
		if err := ss.Send(m); err != nil {
			return err
		}
	}
	return withReason(codes.Unavailable, "server is shutting down", "SHUTTING_DOWN")
}

func (f *fakeServer) Join(ss grpc.BidiStreamingServer[esdv1.JoinRequest, esdv1.JoinResponse]) error {
	if _, err := ss.Recv(); err != nil { // join
		return err
	}
	for _, m := range []*esdv1.JoinResponse{
		{Content: &esdv1.JoinResponse_Joined{Joined: &esdv1.Joined{MemberId: "7"}}},
		{Content: &esdv1.JoinResponse_Delivery{Delivery: &esdv1.Delivery{Event: fakeEvent, DeliveryCount: 1}}},
	} {
		if err := ss.Send(m); err != nil {
			return err
		}
	}
	for { // the acks, then the member's close, which this server ignores
		if _, err := ss.Recv(); errors.Is(err, io.EOF) {
			<-ss.Context().Done()
			return ss.Context().Err()
		} else if err != nil {
			return err
		}
	}
}
