package main

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// category is the part of a stream name before its first "-", or the
// whole name, as the server has it.
func category(stream string) string {
	c, _, _ := strings.Cut(stream, "-")
	return c
}

// subscriptionMatch checks a subscription's target, start and filter as
// the server does and returns which events it follows.
func subscriptionMatch(req *esdv1.SubscribeRequest) (func(*esdv1.RecordedEvent) bool, error) {
	_, stream := req.GetTarget().(*esdv1.SubscribeRequest_Stream)
	_, all := req.GetTarget().(*esdv1.SubscribeRequest_All)
	_, afterRev := req.GetFrom().(*esdv1.SubscribeRequest_AfterRevision)
	_, afterPos := req.GetFrom().(*esdv1.SubscribeRequest_AfterPosition)
	switch {
	case req.GetTarget() == nil:
		return nil, invalid("", "a target is required")
	case req.GetFilter() != nil && !all:
		return nil, invalid("", "filter only with all")
	case afterRev && !stream:
		return nil, invalid("", "after_revision only with a stream")
	case afterPos && stream:
		return nil, invalid("", "after_position only with a category or all")
	}
	switch t := req.GetTarget().(type) {
	case *esdv1.SubscribeRequest_Stream:
		if err := checkName(t.Stream); err != nil {
			return nil, err
		}
		after, hasAfter := req.GetAfterRevision(), afterRev
		return func(ev *esdv1.RecordedEvent) bool {
			return ev.GetStream() == t.Stream && (!hasAfter || ev.GetRevision() > after)
		}, nil
	case *esdv1.SubscribeRequest_Category:
		return func(ev *esdv1.RecordedEvent) bool { return category(ev.GetStream()) == t.Category }, nil
	}
	return func(ev *esdv1.RecordedEvent) bool { return matches(req.GetFilter(), ev) }, nil
}

// Subscribe sends the matching history in chunks, a checkpoint (filtered
// $all), caught_up, then live events as they are appended, until the
// stream is deleted (ended) or the client goes. With subEnd set it ends
// right after caught_up as a stopping server does: ended, then the status
// UNAVAILABLE/SHUTTING_DOWN.
func (f *fakeServer) Subscribe(req *esdv1.SubscribeRequest, ss grpc.ServerStreamingServer[esdv1.SubscribeResponse]) error {
	f.mu.Lock()
	f.subReqs = append(f.subReqs, req)
	subEnd := f.subEnd
	f.mu.Unlock()
	match, err := subscriptionMatch(req)
	if err != nil {
		return err
	}
	name := req.GetStream()
	f.mu.Lock()
	s := f.streams[name]
	if s != nil && s.tombstoned {
		f.mu.Unlock()
		return withReason(codes.NotFound, "stream tombstoned", "STREAM_TOMBSTONED", name)
	}
	wasDeleted := s != nil && s.deleted
	next := 0 // index into f.log of the next event to consider
	switch req.GetFrom().(type) {
	case *esdv1.SubscribeRequest_End:
		next = len(f.log)
	case *esdv1.SubscribeRequest_AfterPosition:
		next = int(min(req.GetAfterPosition(), uint64(len(f.log))))
	}
	f.mu.Unlock()

	send := ss.Send
	for caughtUp := false; ; caughtUp = true {
		f.mu.Lock()
		var sel []*esdv1.RecordedEvent
		for _, ev := range f.log[next:] {
			if ev != nil && match(ev) {
				sel = append(sel, ev)
			}
		}
		next = len(f.log)
		ended := ""
		if s := f.streams[name]; name != "" && s != nil && (s.tombstoned || (s.deleted && !wasDeleted)) {
			ended = "STREAM_DELETED"
			if s.tombstoned {
				ended = "STREAM_TOMBSTONED"
			}
		}
		changed, chunk := f.changed, f.chunk
		f.mu.Unlock()

		for len(sel) > 0 {
			n := min(chunk, len(sel))
			if err := send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Events{Events: &esdv1.EventBatch{Events: sel[:n]}}}); err != nil {
				return err
			}
			sel = sel[n:]
		}
		if !caughtUp {
			if req.GetFilter() != nil {
				if err := send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Checkpoint{Checkpoint: &esdv1.Checkpoint{Position: uint64(next)}}}); err != nil {
					return err
				}
			}
			if err := send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_CaughtUp{CaughtUp: &esdv1.CaughtUp{Position: uint64(next)}}}); err != nil {
				return err
			}
			if subEnd != "" {
				if err := send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Ended{Ended: &esdv1.Ended{Reason: subEnd}}}); err != nil {
					return err
				}
				return withReason(codes.Unavailable, "server is shutting down", subEnd, "")
			}
		}
		if ended != "" {
			return send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Ended{Ended: &esdv1.Ended{Reason: ended}}})
		}
		select {
		case <-changed:
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
	}
}

// lastSubscribe returns the last Subscribe request the fake got.
func (f *fakeServer) lastSubscribe() *esdv1.SubscribeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subReqs) == 0 {
		return nil
	}
	return f.subReqs[len(f.subReqs)-1]
}
