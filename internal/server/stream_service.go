package server

import (
	"context"
	"encoding/base64"
	"errors"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Chunking of streamed reads (API.md): about 1 MiB or 512 events a message.
const (
	chunkEvents = 512
	chunkBytes  = 1 << 20
	// conflictDelta bounds the events of a WrongExpectedRevision detail.
	conflictDeltaEvents = 16
	conflictDeltaBytes  = 256 << 10
)

// checkpointEvery is how many events a filtered read scans without a
// match before it sends a checkpoint. A var: tests lower it.
var checkpointEvery = 4096

// reader is what the read RPCs need of the log.
type reader interface {
	ReadStreamViews(ctx context.Context, q eslog.StreamQuery, emit func(*eslog.EventView) error) error
	ReadPublished(ctx context.Context, s *eslog.StreamState, q eslog.StreamQuery, emit func(*eslog.RecordedEvent) error) error
	ReadAllViews(ctx context.Context, q eslog.AllQuery, emit func(*eslog.EventView) error, checkpoint func(uint64) error) error
	StreamInfo(ctx context.Context, name string) (eslog.StreamState, bool, error)
	ListStreams(ctx context.Context, prefix, after string, limit int) ([]eslog.StreamState, bool, error)
}

// streamService implements esd.v1.StreamService. Handlers return plain
// errors; the error interceptor maps them with toStatus.
type streamService struct {
	esdv1.UnimplementedStreamServiceServer
	writer   *Writer
	log      reader
	hub      *subscription.Hub
	lim      Limits
	met      *readMetrics
	stopping context.Context // ends when the server shuts down
}

func (s *streamService) Append(ctx context.Context, req *esdv1.AppendRequest) (*esdv1.AppendResponse, error) {
	op, err := validateAppend(s.lim, req)
	if err != nil {
		return nil, err
	}
	res, err := s.writer.Append(ctx, op)
	if err != nil {
		return nil, s.withConflictDelta(ctx, err)
	}
	return appendResponse(res), nil
}

func (s *streamService) AppendMulti(ctx context.Context, req *esdv1.AppendMultiRequest) (*esdv1.AppendMultiResponse, error) {
	ops, err := validateAppendMulti(s.lim, req)
	if err != nil {
		return nil, err
	}
	res, err := s.writer.AppendMulti(ctx, ops)
	if err != nil {
		return nil, s.withConflictDelta(ctx, err)
	}
	out := &esdv1.AppendMultiResponse{Results: make([]*esdv1.AppendResponse, len(res))}
	for i, r := range res {
		out.Results[i] = appendResponse(r)
	}
	return out, nil
}

func appendResponse(r AppendResult) *esdv1.AppendResponse {
	resp := &esdv1.AppendResponse{
		FirstRevision: r.FirstRevision,
		LastRevision:  r.LastRevision,
		FirstPosition: r.FirstPosition,
		LastPosition:  r.LastPosition,
		StreamExists:  r.Exists,
	}
	if r.CommitTime != 0 {
		resp.CommitTime = timestamppb.New(time.Unix(0, r.CommitTime))
	}
	return resp
}

// withConflictDelta gives a wrong-revision error its detail, with the
// events appended after the expected revision so that the caller can
// re-decide without another read. The detail is answered at once: its
// actual_head is the head the writer decided against, which may include a
// commit not yet durable (the one that won), and events_since holds the
// durable events only (truncated is then set). Waiting for the winner's
// fsync would make every loser of a contended stream miss the next
// commit. Failing to read the events only leaves the delta out.
func (s *streamService) withConflictDelta(ctx context.Context, err error) error {
	var wr *eslog.WrongRevisionError
	if !errors.As(err, &wr) {
		return err
	}
	detail := wrongRevisionDetail(wr)
	q := eslog.StreamQuery{Stream: wr.Stream, Max: conflictDeltaEvents + 1}
	switch wr.Expected.Kind {
	case eslog.ExpectExact:
		q.From, q.FromSet = wr.Expected.Revision+1, true
	case eslog.ExpectNoStream:
	default: // any never fails; stream_exists fails only when there is nothing to show
		return &conflictError{WrongRevisionError: wr, detail: detail}
	}
	if wr.Exists {
		bytes := 0
		st := eslog.StreamState{ID: wr.StreamID, Name: wr.Stream, Written: true, Head: wr.Head, TruncateBefore: wr.TruncateBefore}
		_ = s.log.ReadPublished(ctx, &st, q, func(e *eslog.RecordedEvent) error {
			size := len(e.Data) + len(e.Metadata)
			if len(detail.EventsSince) == conflictDeltaEvents || (len(detail.EventsSince) > 0 && bytes+size > conflictDeltaBytes) {
				detail.Truncated = true
				return eslog.ErrStop
			}
			bytes += size
			detail.EventsSince = append(detail.EventsSince, recordedEvent(e))
			return nil
		})
		// Truncated: the head is past what is listed (the rest did not fit,
		// or is not durable yet).
		switch n := len(detail.EventsSince); {
		case n > 0:
			detail.Truncated = detail.EventsSince[n-1].Revision < wr.Head
		case wr.Expected.Kind == eslog.ExpectNoStream:
			detail.Truncated = true // it has events; none is listed
		default:
			detail.Truncated = wr.Head > wr.Expected.Revision
		}
	}
	return &conflictError{WrongRevisionError: wr, detail: detail}
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
	err = s.log.ReadStreamViews(stream.Context(), q, func(e *eslog.EventView) error {
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
	err = s.log.ReadAllViews(stream.Context(), q,
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
	res, err := s.writer.Delete(ctx, req.GetStream(), expect, mode)
	if err != nil {
		return nil, s.withConflictDelta(ctx, err)
	}
	return &esdv1.DeleteStreamResponse{Position: res.Position, CommitTime: timestamppb.New(time.Unix(0, res.CommitTime))}, nil
}

func (s *streamService) GetStream(ctx context.Context, req *esdv1.GetStreamRequest) (*esdv1.GetStreamResponse, error) {
	v := validator{stream: req.GetStream()}
	v.streamName("stream", req.GetStream(), false)
	if err := v.err(); err != nil {
		return nil, err
	}
	st, ok, err := s.log.StreamInfo(ctx, req.GetStream())
	if err != nil {
		return nil, err
	}
	if !ok {
		return &esdv1.GetStreamResponse{Info: &esdv1.StreamInfo{Stream: req.GetStream()}}, nil
	}
	return &esdv1.GetStreamResponse{Info: streamInfo(&st)}, nil
}

func streamInfo(st *eslog.StreamState) *esdv1.StreamInfo {
	info := &esdv1.StreamInfo{
		Stream:     st.Name,
		Head:       st.Head,
		Exists:     st.Exists(),
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
	states, more, err := s.log.ListStreams(ctx, req.GetPrefix(), after, size)
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
