package server

import (
	"context"
	"encoding/base64"
	"strings"
	"time"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Chunking of streamed reads (docs/api.md): about 1 MiB or 512 events a message.
const (
	chunkEvents = 512
	chunkBytes  = 1 << 20
)

// checkpointEvery is how many events a filtered read scans without a
// match before it sends a checkpoint. A var: tests lower it.
var checkpointEvery = 4096

// streamService implements esd.v1.StreamService. Handlers return plain
// errors; the error interceptor maps them with toStatus.
type streamService struct {
	esdv1.UnimplementedStreamServiceServer
	eng   *engine.Engine
	lim   Limits
	met   *readMetrics
	as    appendStreamConfig
	asMet *appendStreamMetrics
	lg    *zap.Logger
	deny  func(auth.Permission) error // Server.deny: counts the refusal
	lmt   *limiter                    // nil: no in-flight budgets (tests of parts)
}

func (s *streamService) Append(ctx context.Context, req *esdv1.AppendRequest) (*esdv1.AppendResponse, error) {
	op, err := validateAppend(s.lim, req)
	if err != nil {
		return nil, err
	}
	res, err := s.admittedAppend(ctx, op)
	if err != nil {
		return nil, err
	}
	return appendResponse(res), nil
}

// admittedAppend runs op within the in-flight budgets (limits.go).
func (s *streamService) admittedAppend(ctx context.Context, op engine.AppendOp) (engine.AppendResult, error) {
	if s.lmt == nil {
		return s.eng.Append(ctx, op)
	}
	release, err := s.lmt.admitAppend(ctx, opBytes(op))
	if err != nil {
		return engine.AppendResult{}, err
	}
	defer release()
	return s.eng.Append(ctx, op)
}

// opBytes is the event bytes of an append, as the writer's budget counts
// them: data and metadata.
func opBytes(ops ...engine.AppendOp) int64 {
	var n int64
	for i := range ops {
		for j := range ops[i].Events {
			n += int64(len(ops[i].Events[j].Data) + len(ops[i].Events[j].Metadata))
		}
	}
	return n
}

func (s *streamService) AppendMulti(ctx context.Context, req *esdv1.AppendMultiRequest) (*esdv1.AppendMultiResponse, error) {
	ops, err := validateAppendMulti(s.lim, req)
	if err != nil {
		return nil, err
	}
	if s.lmt != nil {
		release, err := s.lmt.admitAppend(ctx, opBytes(ops...))
		if err != nil {
			return nil, err
		}
		defer release()
	}
	res, err := s.eng.AppendMulti(ctx, ops)
	if err != nil {
		return nil, err
	}
	out := &esdv1.AppendMultiResponse{Results: make([]*esdv1.AppendResponse, len(res))}
	for i, r := range res {
		out.Results[i] = appendResponse(r)
	}
	return out, nil
}

func appendResponse(r engine.AppendResult) *esdv1.AppendResponse {
	resp := &esdv1.AppendResponse{
		FirstRevision: r.FirstRevision,
		LastRevision:  r.LastRevision,
		FirstPosition: r.FirstPosition,
		LastPosition:  r.LastPosition,
		StreamExists:  r.Exists,
		// Snapshot advice, decided by the engine (zero without a policy).
		EventsSinceSnapshot: r.Snapshot.EventsSince,
		SnapshotAdvised:     r.Snapshot.Advised,
	}
	if r.CommitTime != 0 {
		resp.CommitTime = timestamppb.New(time.Unix(0, r.CommitTime))
	}
	return resp
}

// deltaDetail is the WrongExpectedRevision detail of a conflict, with
// the events appended since the expected revision.
func deltaDetail(c *engine.ConflictError) *esdv1.WrongExpectedRevision {
	d := wrongRevisionDetail(c.WrongRevisionError)
	for _, e := range c.EventsSince {
		d.EventsSince = append(d.EventsSince, recordedEvent(e))
	}
	d.Truncated = c.Truncated
	return d
}

func (s *streamService) ReadStream(req *esdv1.ReadStreamRequest, stream grpc.ServerStreamingServer[esdv1.ReadStreamResponse]) error {
	q, err := validateReadStream(req)
	if err != nil {
		return err
	}
	var c wireChunk
	send := func() error {
		s.met.events.WithLabelValues("ReadStream").Add(float64(c.events))
		return stream.SendMsg(c.message(0))
	}
	err = s.eng.ReadStream(stream.Context(), q, func(e *eslog.EventView) error {
		if c.add(e) {
			return send()
		}
		return nil
	})
	if err == nil && (c.events > 0 || c.sent == 0) {
		err = send() // an empty read still answers once
	}
	return err
}

func (s *streamService) ReadAll(req *esdv1.ReadAllRequest, stream grpc.ServerStreamingServer[esdv1.ReadAllResponse]) error {
	q, err := validateReadAll(req)
	if err != nil {
		return err
	}
	q.CheckpointEvery = checkpointEvery
	var c wireChunk
	send := func(checkpoint uint64) error {
		s.met.events.WithLabelValues("ReadAll").Add(float64(c.events))
		return stream.SendMsg(c.message(checkpoint))
	}
	err = s.eng.ReadAll(stream.Context(), q,
		func(e *eslog.EventView) error {
			if c.add(e) {
				return send(0)
			}
			return nil
		},
		send, // a checkpoint flushes the events before it with it
	)
	if err == nil && (c.events > 0 || c.sent == 0) {
		err = send(0)
	}
	return err
}

func recordedEvent(e *eslog.RecordedEvent) *esdv1.RecordedEvent {
	ct := e.ContentType
	if ct == "" {
		ct = defaultContentType
	}
	return &esdv1.RecordedEvent{
		Id:          eslog.FormatID(e.ID),
		Stream:      e.Stream,
		Revision:    e.Revision,
		Position:    e.Position,
		Type:        e.Type,
		Data:        e.Data,
		Metadata:    e.Metadata,
		ContentType: ct,
		Tags:        e.Tags,
		Created:     timestamppb.New(time.Unix(0, e.Created)),
	}
}

func (s *streamService) DeleteStream(ctx context.Context, req *esdv1.DeleteStreamRequest) (*esdv1.DeleteStreamResponse, error) {
	expect, mode, err := validateDelete(req)
	if err != nil {
		return nil, err
	}
	res, err := s.eng.Delete(ctx, engine.DeleteOp{Stream: req.GetStream(), Expect: expect, Mode: mode, Token: req.GetFencingToken()})
	if err != nil {
		return nil, err
	}
	return &esdv1.DeleteStreamResponse{Position: res.Position, CommitTime: timestamppb.New(time.Unix(0, res.CommitTime))}, nil
}

func (s *streamService) GetStream(ctx context.Context, req *esdv1.GetStreamRequest) (*esdv1.GetStreamResponse, error) {
	if err := validateStream(req.GetStream()); err != nil {
		return nil, err
	}
	st, ok, err := s.eng.Stream(ctx, req.GetStream())
	if err != nil {
		return nil, err
	}
	resp := &esdv1.GetStreamResponse{Info: &esdv1.StreamInfo{Stream: req.GetStream()}}
	if ok {
		resp.Info = streamInfo(&st)
	}
	s.withMetadata(resp, req.GetStream(), &st, ok)
	return resp, nil
}

func streamInfo(st *eslog.StreamState) *esdv1.StreamInfo {
	info := &esdv1.StreamInfo{
		Stream:     st.Name,
		Head:       st.Head,
		Exists:     st.EventCount() > 0, // retention limits may hide every event
		Deleted:    st.Deleted(),
		Tombstoned: st.Tombstoned,
		EventCount: st.EventCount(),
	}
	if st.Created != 0 {
		info.Created = timestamppb.New(time.Unix(0, st.Created))
	}
	if st.Updated != 0 {
		info.Updated = timestamppb.New(time.Unix(0, st.Updated))
	}
	return info
}

func (s *streamService) ListStreams(ctx context.Context, req *esdv1.ListStreamsRequest) (*esdv1.ListStreamsResponse, error) {
	var v validator
	if p := req.GetPrefix(); len(p) > maxStreamNameBytes || !printableUTF8(p) {
		v.bad(reasonInvalidArgument, "prefix", "a prefix is at most %d bytes of UTF-8 without control characters", maxStreamNameBytes)
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 || len(b) > maxStreamNameBytes {
			v.bad(reasonInvalidArgument, "page_token", "not a page token from ListStreams")
		}
		after = string(b)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	states, more, err := s.listStreams(ctx, principalFrom(ctx), req.GetPrefix(), after, size)
	if err != nil {
		return nil, err
	}
	resp := &esdv1.ListStreamsResponse{Streams: make([]*esdv1.StreamInfo, len(states))}
	for i := range states {
		resp.Streams[i] = streamInfo(&states[i])
	}
	if more {
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(states[len(states)-1].Name))
	}
	return resp, nil
}

// listStreams lists up to size streams with prefix after after that who
// may read (nil: all). The engine is asked only for the ranges the
// caller's read grants and prefix have in common: the grants' prefixes are
// disjoint and sorted, so the ranges are too, and the last name of a page
// (the page token) is always one the caller may read: a token never names
// a stream the caller may not see, and no count covers one.
func (s *streamService) listStreams(ctx context.Context, who *auth.Principal, prefix, after string, size int) ([]eslog.StreamState, bool, error) {
	if who == nil {
		return s.eng.ListStreams(ctx, prefix, after, size)
	}
	var ranges []string // each: the names starting with it
	for _, g := range who.Prefixes(auth.Read) {
		switch {
		case strings.HasPrefix(prefix, g): // the grant covers the whole prefix
			ranges = append(ranges, prefix)
		case strings.HasPrefix(g, prefix): // the prefix covers the grant
			ranges = append(ranges, g)
		}
	}
	var out []eslog.StreamState
	for i, r := range ranges {
		if after >= r && !strings.HasPrefix(after, r) {
			continue // all of this range sorts before after
		}
		states, more, err := s.eng.ListStreams(ctx, r, after, size-len(out))
		if err != nil {
			return nil, false, err
		}
		out = append(out, states...)
		if len(out) == size {
			// More if this range has more, or a later one may: the last
			// page can then be empty.
			return out, more || i < len(ranges)-1, nil
		}
	}
	return out, false, nil
}
