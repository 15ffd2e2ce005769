package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
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
	if s.lmt != nil {
		release, err := s.lmt.acquireSubscription(stream.Context())
		if err != nil {
			return err
		}
		defer release()
		sink.lmt, sink.stall = s.lmt, s.lmt.lim.SubscriberStallTimeout
		sink.drained = make(chan struct{}, 1)
		sink.chunk.pool = sinkPool{sink}
		sink.chunk.chunkFor(s.lmt.subscriberShare()) // the first message too
		defer sink.end()
	}
	err = s.eng.Subscribe(stream.Context(), r, sink)
	if errors.Is(err, context.Canceled) && s.eng.Stopping().Err() != nil {
		// The server is stopping: say so in the stream, then in the status.
		return errors.Join(sink.Ended(endedShuttingDown), engine.ErrShuttingDown)
	}
	return err
}

// subscribeSink sends what a subscription delivers as SubscribeResponses.
//
// Memory: a client that does not read stops gRPC from writing (HTTP/2
// flow control), and what the server has handed to gRPC stays in its
// write queue until the client reads or goes, even after the call ends.
// Unbounded, each subscriber that stopped reading held about two messages
// of up to 1 MiB queued in gRPC (one written past gRPC's write quota of
// 64 KiB, one blocked in SendMsg) and the one it was gathering. With the
// limiter set, the sink counts the bytes it handed to gRPC and gRPC has
// not written (gRPC gives each buffer back through sinkPool once
// written), gathers messages of at most half its share of
// --subscription-memory-bytes (the budget divided by the subscriptions
// running), and hands over the next one only once the last is nearly
// written, so that SendMsg never waits on the write quota: it holds at
// most its share. A subscriber whose client lets gRPC write nothing for
// --subscriber-stall-timeout while it waits is ended with
// SUBSCRIBER_TOO_SLOW, and its message gathered is dropped.
type subscribeSink struct {
	stream grpc.ServerStreamingServer[esdv1.SubscribeResponse]
	chunk  wireChunk
	met    *readMetrics

	lmt     *limiter // nil: no accounting
	stall   time.Duration
	drained chan struct{} // capacity 1: gRPC gave a buffer back
	mu      sync.Mutex    // guards ended, and held's share of lmt.subMem
	ended   bool
	held    atomic.Int64 // bytes handed to gRPC and not yet written
}

// sendQuota is what the sink may leave unwritten in gRPC when it hands
// over another message: under gRPC's per-stream write quota (64 KiB), so
// that SendMsg does not block.
const sendQuota = 32 << 10

// sinkPool gives a subscriber's buffers back to wirePool once gRPC has
// written them, and counts them as no longer held.
type sinkPool struct{ k *subscribeSink }

func (p sinkPool) Get(n int) *[]byte { return wirePool.Get(n) }

func (p sinkPool) Put(b *[]byte) {
	k := p.k
	n := int64(len(*b))
	k.mu.Lock()
	if !k.ended {
		k.held.Add(-n)
		k.lmt.subMem.Add(-n)
		k.lmt.subMemG.Sub(float64(n))
	}
	k.mu.Unlock()
	select {
	case k.drained <- struct{}{}:
	default:
	}
	wirePool.Put(b)
}

// end stops the accounting: what gRPC still holds of the subscriber is no
// longer counted (it is freed with the connection or when written).
func (k *subscribeSink) end() {
	k.mu.Lock()
	k.ended = true
	n := k.held.Load()
	k.lmt.subMem.Add(-n)
	k.lmt.subMemG.Sub(float64(n))
	k.mu.Unlock()
}

// ready waits until the sink may hand gRPC a message of size more bytes:
// until gRPC has written all but sendQuota of what it holds. A client
// that lets gRPC write nothing for the stall timeout, while the sink
// waits, is ended: SUBSCRIBER_TOO_SLOW. It also sizes the next message
// to gather: at most half the subscriber's share (chunkFor).
func (k *subscribeSink) ready(size int) error {
	if k.lmt == nil {
		return nil
	}
	share := k.lmt.subscriberShare()
	k.chunk.chunkFor(share)
	if !k.mustWait(size) {
		return nil
	}
	timer, since := time.NewTimer(k.stall), time.Now()
	defer timer.Stop()
	for k.mustWait(size) {
		select {
		case <-k.drained:
		case <-k.stream.Context().Done():
			return k.stream.Context().Err()
		case <-timer.C:
			k.lmt.refuse(limitSubscriptionMemory, peerField(k.stream.Context()))
			return &limitError{reason: reasonSubscriberTooSlow, limit: "subscriber-stall-timeout", value: int64(k.stall / time.Millisecond),
				msg: fmt.Sprintf("the subscriber read nothing for %v while the server held %d bytes for it (its share of --subscription-memory-bytes: %d): "+
					"resubscribe after the last position (or revision) it processed", time.Since(since).Round(time.Millisecond),
					k.held.Load()+int64(size), share)}
		}
	}
	return nil
}

// mustWait reports whether the sink must wait before handing gRPC size
// more bytes: gRPC has more than sendQuota of its bytes unwritten, or it
// has some and all subscribers' together would pass the budget (a
// subscriber holding nothing may always send one message: it was sized
// to its share).
func (k *subscribeSink) mustWait(size int) bool {
	held := k.held.Load()
	return held > sendQuota || (held > 0 && k.lmt.subMem.Load()+int64(size) > k.lmt.lim.SubscriptionMemoryBytes)
}

// sendMsg hands an encoded message to gRPC, counted as held until gRPC
// gives its buffer back.
func (k *subscribeSink) sendMsg(m *encodedMessage) error {
	if k.lmt == nil {
		return k.stream.SendMsg(m)
	}
	n := int64(len(*m.buf))
	if err := k.ready(int(n)); err != nil {
		wirePool.Put(m.buf)
		return err
	}
	k.mu.Lock()
	k.held.Add(n)
	k.lmt.subMem.Add(n)
	k.lmt.subMemG.Add(float64(n))
	k.mu.Unlock()
	return k.stream.SendMsg(m)
}

// send sends a small message of the protocol (checkpoint, caught-up,
// ended) after what the sink handed over before.
func (k *subscribeSink) send(m *esdv1.SubscribeResponse) error {
	if err := k.ready(proto.Size(m)); err != nil {
		return err
	}
	return k.stream.Send(m)
}

func (k *subscribeSink) Event(v *eslog.EventView) error {
	if k.chunk.add(v) {
		return k.sendEvents()
	}
	return nil
}

func (k *subscribeSink) sendEvents() error {
	k.met.events.WithLabelValues("Subscribe").Add(float64(k.chunk.events))
	return k.sendMsg(k.chunk.message(0))
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
	return k.send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Checkpoint{
		Checkpoint: &esdv1.Checkpoint{Position: checkpoint}}})
}

func (k *subscribeSink) CaughtUp(position uint64) error {
	return k.send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_CaughtUp{
		CaughtUp: &esdv1.CaughtUp{Position: position}}})
}

func (k *subscribeSink) Ended(reason string) error {
	return k.send(&esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Ended{
		Ended: &esdv1.Ended{Reason: reason}}})
}

var _ subscription.Sink = (*subscribeSink)(nil)
