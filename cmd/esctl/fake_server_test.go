package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// fakeServer is an in-memory StreamService and AdminService with the real
// semantics of what esctl's tests touch: expected revisions with the
// ABORTED/WRONG_EXPECTED_REVISION status and its detail, soft delete and
// tombstones, chunked reads, paged listing, subscriptions (history,
// caught_up, live events, ended). Its ConsumerGroupService is groups.
type fakeServer struct {
	esdv1.UnimplementedStreamServiceServer
	esdv1.UnimplementedAdminServiceServer

	mu        sync.Mutex // guards every field below
	streams   map[string]*fakeStream
	log       []*esdv1.RecordedEvent // $all: log[p-1] is position p; nil once deleted
	listCalls int
	chunk     int   // events per read message, small so clients see several
	getErr    error // when set, GetStream fails with it
	getHang   bool  // when set, GetStream answers only when the caller gives up

	changed chan struct{}             // closed and replaced at each append or delete, for live subscriptions
	subReqs []*esdv1.SubscribeRequest // every Subscribe request, in order
	subEnd  string                    // when set, Subscribe ends with this reason right after caught_up

	groups *fakeGroups
}

type fakeStream struct {
	events           []*esdv1.RecordedEvent // the visible events
	next             uint64                 // the revision the next event gets
	written          bool
	deleted          bool
	tombstoned       bool
	created, updated time.Time
}

func newFakeServer() *fakeServer {
	f := &fakeServer{streams: make(map[string]*fakeStream), chunk: 3, changed: make(chan struct{})}
	f.groups = newFakeGroups(f)
	return f
}

// notify wakes the live subscriptions; call with f.mu held.
func (f *fakeServer) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// newTestServer serves a fake on a 127.0.0.1 port (esctl dials --addr like
// in production) and returns it with its address.
func newTestServer(t *testing.T) (*fakeServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	f := newFakeServer()
	esdv1.RegisterStreamServiceServer(srv, f)
	esdv1.RegisterAdminServiceServer(srv, f)
	esdv1.RegisterConsumerGroupServiceServer(srv, f.groups)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return f, lis.Addr().String()
}

func withReason(c codes.Code, msg, reason, stream string, extra ...protoadapt.MessageV1) error {
	st := status.New(c, msg)
	details := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{
		Domain: "esd", Reason: reason, Metadata: map[string]string{"stream": stream}}}, extra...)
	d, err := st.WithDetails(details...)
	if err != nil {
		panic(err)
	}
	return d.Err()
}

func invalid(stream, msg string) error {
	return withReason(codes.InvalidArgument, msg, "INVALID_ARGUMENT", stream)
}

func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "$") {
		return invalid(name, fmt.Sprintf("bad stream name %q", name))
	}
	return nil
}

var (
	expectAnyProto = &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Any{Any: &emptypb.Empty{}}}
)

func appendExpectation(req *esdv1.AppendRequest) *esdv1.ExpectedRevision {
	switch k := req.GetExpectedRevision().(type) {
	case *esdv1.AppendRequest_NoStream:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_NoStream{NoStream: &emptypb.Empty{}}}
	case *esdv1.AppendRequest_StreamExists:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_StreamExists{StreamExists: &emptypb.Empty{}}}
	case *esdv1.AppendRequest_Exact:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Exact{Exact: k.Exact}}
	}
	return expectAnyProto
}

func deleteExpectation(req *esdv1.DeleteStreamRequest) *esdv1.ExpectedRevision {
	switch k := req.GetExpectedRevision().(type) {
	case *esdv1.DeleteStreamRequest_NoStream:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_NoStream{NoStream: &emptypb.Empty{}}}
	case *esdv1.DeleteStreamRequest_StreamExists:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_StreamExists{StreamExists: &emptypb.Empty{}}}
	case *esdv1.DeleteStreamRequest_Exact:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Exact{Exact: k.Exact}}
	}
	return expectAnyProto
}

// check tests an expectation against a stream (nil: never written). Call
// with f.mu held.
func (f *fakeServer) check(name string, s *fakeStream, e *esdv1.ExpectedRevision) error {
	visible := s != nil && len(s.events) > 0
	var head uint64
	if visible {
		head = s.events[len(s.events)-1].GetRevision()
	}
	ok, after := true, int64(-1) // events_since: those with revision > after
	switch k := e.GetKind().(type) {
	case *esdv1.ExpectedRevision_NoStream:
		ok = !visible
	case *esdv1.ExpectedRevision_StreamExists:
		ok, after = visible, int64(head)
	case *esdv1.ExpectedRevision_Exact:
		ok, after = visible && head == k.Exact, int64(k.Exact)
	}
	if ok {
		return nil
	}
	d := &esdv1.WrongExpectedRevision{Stream: name, Expected: e, ActualHead: head, StreamExists: visible}
	if visible {
		for _, ev := range s.events {
			if int64(ev.GetRevision()) <= after {
				continue
			}
			if len(d.EventsSince) == 16 {
				d.Truncated = true
				break
			}
			d.EventsSince = append(d.EventsSince, ev)
		}
	}
	msg := fmt.Sprintf("stream %q: expected %s, head %d (exists %t)", name, formatExpected(e), head, visible)
	return withReason(codes.Aborted, msg, "WRONG_EXPECTED_REVISION", name, d)
}

func (f *fakeServer) Append(_ context.Context, req *esdv1.AppendRequest) (*esdv1.AppendResponse, error) {
	if err := checkName(req.GetStream()); err != nil {
		return nil, err
	}
	for _, ev := range req.GetEvents() {
		if ev.GetType() == "" {
			return nil, invalid(req.GetStream(), "event type is required")
		}
		if ev.GetId() != "" {
			if _, err := uuid.Parse(ev.GetId()); err != nil || len(ev.GetId()) != 36 {
				return nil, invalid(req.GetStream(), fmt.Sprintf("bad event id %q", ev.GetId()))
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.streams[req.GetStream()]
	if s != nil && s.tombstoned {
		return nil, withReason(codes.FailedPrecondition, "stream is tombstoned", "STREAM_TOMBSTONED", req.GetStream())
	}
	if err := f.check(req.GetStream(), s, appendExpectation(req)); err != nil {
		return nil, err
	}
	if len(req.GetEvents()) == 0 {
		resp := &esdv1.AppendResponse{}
		if s != nil && len(s.events) > 0 {
			resp.FirstRevision, resp.LastRevision, resp.StreamExists = s.next-1, s.next-1, true
		}
		return resp, nil
	}
	now := time.Now()
	if s == nil {
		s = &fakeStream{}
		f.streams[req.GetStream()] = s
	}
	if !s.written {
		s.written, s.created = true, now
	}
	s.deleted, s.updated = false, now
	resp := &esdv1.AppendResponse{FirstRevision: s.next, FirstPosition: uint64(len(f.log) + 1),
		CommitTime: timestamppb.New(now), StreamExists: true}
	for _, pe := range req.GetEvents() {
		id := pe.GetId()
		if id == "" {
			id = uuid.Must(uuid.NewV7()).String()
		}
		ct := pe.GetContentType()
		if ct == "" {
			ct = "application/octet-stream"
		}
		ev := &esdv1.RecordedEvent{
			Id: id, Stream: req.GetStream(), Revision: s.next, Position: uint64(len(f.log) + 1),
			Type: pe.GetType(), Data: pe.GetData(), Metadata: pe.GetMetadata(), ContentType: ct,
			Tags: pe.GetTags(), Created: timestamppb.New(now),
		}
		s.events = append(s.events, ev)
		f.log = append(f.log, ev)
		s.next++
	}
	resp.LastRevision, resp.LastPosition = s.next-1, uint64(len(f.log))
	f.notify()
	return resp, nil
}

func (f *fakeServer) streamErr(name string, s *fakeStream) error {
	switch {
	case s == nil || (!s.written && !s.tombstoned):
		return withReason(codes.NotFound, "stream not found", "STREAM_NOT_FOUND", name)
	case s.tombstoned:
		return withReason(codes.NotFound, "stream tombstoned", "STREAM_TOMBSTONED", name)
	case s.deleted:
		return withReason(codes.NotFound, "stream deleted", "STREAM_DELETED", name)
	}
	return nil
}

func (f *fakeServer) ReadStream(req *esdv1.ReadStreamRequest, ss grpc.ServerStreamingServer[esdv1.ReadStreamResponse]) error {
	if err := checkName(req.GetStream()); err != nil {
		return err
	}
	f.mu.Lock()
	s := f.streams[req.GetStream()]
	if err := f.streamErr(req.GetStream(), s); err != nil {
		f.mu.Unlock()
		return err
	}
	evs := slices.Clone(s.events)
	chunk := f.chunk
	f.mu.Unlock()

	backward := req.GetDirection() == esdv1.ReadDirection_READ_DIRECTION_BACKWARD
	var sel []*esdv1.RecordedEvent
	if backward {
		slices.Reverse(evs)
	}
	for _, ev := range evs {
		if req.FromRevision != nil && ((!backward && ev.GetRevision() < req.GetFromRevision()) ||
			(backward && ev.GetRevision() > req.GetFromRevision())) {
			continue
		}
		sel = append(sel, ev)
	}
	if m := req.GetMaxCount(); m > 0 && uint64(len(sel)) > m {
		sel = sel[:m]
	}
	for len(sel) > 0 {
		n := min(chunk, len(sel))
		if err := ss.Send(&esdv1.ReadStreamResponse{Events: sel[:n]}); err != nil {
			return err
		}
		sel = sel[n:]
	}
	return nil
}

func matches(flt *esdv1.Filter, ev *esdv1.RecordedEvent) bool {
	has := func(prefixes []string, s string) bool {
		if len(prefixes) == 0 {
			return true
		}
		for _, p := range prefixes {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	}
	return has(flt.GetStreamPrefixes(), ev.GetStream()) && has(flt.GetEventTypePrefixes(), ev.GetType())
}

func (f *fakeServer) ReadAll(req *esdv1.ReadAllRequest, ss grpc.ServerStreamingServer[esdv1.ReadAllResponse]) error {
	f.mu.Lock()
	evs := slices.Clone(f.log)
	chunk := f.chunk
	f.mu.Unlock()
	backward := req.GetDirection() == esdv1.ReadDirection_READ_DIRECTION_BACKWARD
	if backward {
		slices.Reverse(evs)
	}
	var sel []*esdv1.RecordedEvent
	for i, ev := range evs {
		pos := uint64(i + 1)
		if backward {
			pos = uint64(len(evs) - i)
		}
		if req.FromPosition != nil && ((!backward && pos < req.GetFromPosition()) || (backward && pos > req.GetFromPosition())) {
			continue
		}
		if ev == nil || !matches(req.GetFilter(), ev) {
			continue
		}
		sel = append(sel, ev)
	}
	if m := req.GetMaxCount(); m > 0 && uint64(len(sel)) > m {
		sel = sel[:m]
	}
	for len(sel) > 0 {
		n := min(chunk, len(sel))
		resp := &esdv1.ReadAllResponse{Events: sel[:n]}
		if req.GetFilter() != nil {
			resp.Checkpoint = sel[n-1].GetPosition()
		}
		if err := ss.Send(resp); err != nil {
			return err
		}
		sel = sel[n:]
	}
	return nil
}

func (f *fakeServer) DeleteStream(_ context.Context, req *esdv1.DeleteStreamRequest) (*esdv1.DeleteStreamResponse, error) {
	name := req.GetStream()
	if err := checkName(name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.streams[name]
	switch {
	case s != nil && s.tombstoned:
		return nil, withReason(codes.FailedPrecondition, "stream is tombstoned", "STREAM_TOMBSTONED", name)
	case !req.GetTombstone() && (s == nil || !s.written):
		return nil, withReason(codes.NotFound, "stream not found", "STREAM_NOT_FOUND", name)
	case !req.GetTombstone() && s.deleted:
		return nil, withReason(codes.NotFound, "stream deleted", "STREAM_DELETED", name)
	}
	if err := f.check(name, s, deleteExpectation(req)); err != nil {
		return nil, err
	}
	if s == nil {
		s = &fakeStream{}
		f.streams[name] = s
	}
	for _, ev := range s.events {
		f.log[ev.GetPosition()-1] = nil
	}
	now := time.Now()
	s.events, s.updated = nil, now
	typ := "$stream-deleted"
	if req.GetTombstone() {
		s.tombstoned, typ = true, "$stream-tombstoned"
	} else {
		s.deleted = true
	}
	pos := uint64(len(f.log) + 1)
	f.log = append(f.log, &esdv1.RecordedEvent{
		Id: uuid.Must(uuid.NewV7()).String(), Stream: "$deleted", Position: pos, Type: typ,
		Data: fmt.Appendf(nil, `{"stream":%q}`, name), Created: timestamppb.New(now),
	})
	f.notify()
	return &esdv1.DeleteStreamResponse{Position: pos, CommitTime: timestamppb.New(now)}, nil
}

// info describes s; call with f.mu held.
func info(name string, s *fakeStream) *esdv1.StreamInfo {
	in := &esdv1.StreamInfo{Stream: name}
	if s == nil {
		return in
	}
	in.Exists, in.Deleted, in.Tombstoned = len(s.events) > 0, s.deleted, s.tombstoned
	in.EventCount = uint64(len(s.events))
	if s.written {
		in.Head = s.next - 1
		in.Created = timestamppb.New(s.created)
	}
	if !s.updated.IsZero() {
		in.Updated = timestamppb.New(s.updated)
	}
	return in
}

func (f *fakeServer) GetStream(ctx context.Context, req *esdv1.GetStreamRequest) (*esdv1.GetStreamResponse, error) {
	if err := checkName(req.GetStream()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	hang := f.getHang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return nil, f.getErr
	}
	return &esdv1.GetStreamResponse{Info: info(req.GetStream(), f.streams[req.GetStream()])}, nil
}

// ListStreams pages by name; the page token is the last name sent.
func (f *fakeServer) ListStreams(_ context.Context, req *esdv1.ListStreamsRequest) (*esdv1.ListStreamsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	var names []string
	for name := range f.streams {
		if strings.HasPrefix(name, req.GetPrefix()) && name > req.GetPageToken() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	resp := &esdv1.ListStreamsResponse{}
	for i, name := range names {
		if i == size {
			resp.NextPageToken = names[i-1]
			break
		}
		resp.Streams = append(resp.Streams, info(name, f.streams[name]))
	}
	return resp, nil
}

func (f *fakeServer) GetServerInfo(context.Context, *esdv1.GetServerInfoRequest) (*esdv1.GetServerInfoResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &esdv1.GetServerInfoResponse{
		Version: "test", Commit: "abc123", DataDir: "/tmp/esd", LastPosition: uint64(len(f.log)),
		Uptime: durationpb.New(90 * time.Second), Started: timestamppb.Now(), Shards: 4, DiskBytes: 3 << 20,
	}
	for _, s := range f.streams {
		if len(s.events) > 0 {
			resp.StreamCount++
			resp.EventCount += uint64(len(s.events))
		}
	}
	return resp, nil
}

// events returns a copy of a stream's visible events.
func (f *fakeServer) events(name string) []*esdv1.RecordedEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.streams[name]; s != nil {
		return slices.Clone(s.events)
	}
	return nil
}

// eventsWithPrefix counts the visible events of streams starting with prefix.
func (f *fakeServer) eventsWithPrefix(prefix string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for name, s := range f.streams {
		if strings.HasPrefix(name, prefix) {
			n += int64(len(s.events))
		}
	}
	return n
}
