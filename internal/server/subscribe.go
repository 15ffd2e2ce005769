package server

import (
	"context"
	"errors"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
)

// reasonShuttingDown ends subscriptions at shutdown (the Ended message,
// then the status UNAVAILABLE/SHUTTING_DOWN).
const endedShuttingDown = reasonShuttingDown

func (s *streamService) Subscribe(req *esdv1.SubscribeRequest, stream grpc.ServerStreamingServer[esdv1.SubscribeResponse]) error {
	r, err := validateSubscribe(req)
	if err != nil {
		return err
	}
	if r.Target == subscription.TargetAll && (len(r.StreamPrefixes) > 0 || len(r.TypePrefixes) > 0) {
		r.CheckpointEvery = checkpointEvery // the API sends checkpoints to filtered all targets only
	}
	sink := &subscribeSink{stream: stream, chunk: wireChunk{wrap: fieldSubscribeEvents}, met: s.met}
	err = s.eng.Subscribe(stream.Context(), r, sink)
	if errors.Is(err, context.Canceled) && s.eng.Stopping().Err() != nil {
		// The server is stopping: say so in the stream, then in the status.
		return errors.Join(sink.Ended(endedShuttingDown), engine.ErrShuttingDown)
	}
	return err
}

// subscribeSink sends what a subscription delivers as SubscribeResponses.
type subscribeSink struct {
	stream grpc.ServerStreamingServer[esdv1.SubscribeResponse]
	chunk  wireChunk
	met    *readMetrics
}

func (k *subscribeSink) Event(v *eslog.EventView) error {
	if k.chunk.add(v) {
		return k.sendEvents()
	}
	return nil
}

func (k *subscribeSink) sendEvents() error {
	k.met.events.WithLabelValues("Subscribe").Add(float64(k.chunk.events))
	return k.stream.SendMsg(k.chunk.message(0))
}

func (k *subscribeSink) Flush(checkpoint uint64) error {
	if k.chunk.events > 0 {
		if err := k.sendEvents(); err != nil {
			return err
		}
	}
	if checkpoint == 0 {
		return nil
	}
	return k.stream.Send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Checkpoint{
		Checkpoint: &esdv1.Checkpoint{Position: checkpoint}}})
}

func (k *subscribeSink) CaughtUp(position uint64) error {
	return k.stream.Send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_CaughtUp{
		CaughtUp: &esdv1.CaughtUp{Position: position}}})
}

func (k *subscribeSink) Ended(reason string) error {
	return k.stream.Send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Ended{
		Ended: &esdv1.Ended{Reason: reason}}})
}

var _ subscription.Sink = (*subscribeSink)(nil)
