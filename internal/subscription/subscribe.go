package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"math"

	eslog "github.com/esdhq/esd/internal/log"
)

// TargetKind is what a subscription follows.
type TargetKind uint8

const (
	TargetStream TargetKind = iota
	TargetCategory
	TargetAll
)

// StartKind is where a subscription starts; also where a consumer group
// starts (FromStart, FromEnd or AfterPosition: its checkpoint is a
// position).
type StartKind uint8

const (
	FromStart StartKind = iota
	FromEnd
	AfterRevision // stream targets
	AfterPosition // category and all targets
)

// Request is a validated subscription.
type Request struct {
	Target TargetKind
	Name   string // the stream or category
	// Filter for TargetAll, as in ReadAll.
	StreamPrefixes, TypePrefixes []string
	Start                        StartKind
	After                        uint64 // the revision or position for After*
	// CheckpointEvery: after this many events considered without a match,
	// a filtered subscription sends a checkpoint. 0: never.
	CheckpointEvery int
}

// Sink receives what a subscription delivers, in order. Event may keep
// nothing of the view after it returns.
type Sink interface {
	// Event adds an event to the message being gathered (sending it when
	// full).
	Event(v *eslog.EventView) error
	// Flush sends the message gathered, with a checkpoint when not 0.
	Flush(checkpoint uint64) error
	// CaughtUp marks the end of the history: position is the last one it
	// covered.
	CaughtUp(position uint64) error
	// Ended ends the subscription with a reason.
	Ended(reason string) error
}

// Reasons a subscription ends.
const (
	EndedStreamDeleted    = "STREAM_DELETED"
	EndedStreamTombstoned = "STREAM_TOMBSTONED"
)

// liveBatch bounds the events taken from the buffer at a time.
const liveBatch = 512

// Subscribe runs a subscription until ctx ends (returning ctx.Err()), the
// sink fails, or the subscription ends (the stream is deleted: Ended is
// sent and Subscribe returns nil). It fails with *eslog.StreamError for a
// tombstoned stream.
//
// It reads history from the log up to the last published position, then
// takes events from the hub's buffer; whenever the subscriber is further
// behind than the buffer reaches (it read slowly, or history grew while it
// was read), it reads the log again up to the then last position. A
// position is delivered once: every step continues after the last
// position considered. The subscriber's memory is one batch of the buffer
// and the sink's message, however slow it is.
func (h *Hub) Subscribe(ctx context.Context, req Request, sink Sink) error {
	s := &subscriber{h: h, req: req, sink: sink, began: h.log.LastPosition()}
	switch req.Target {
	case TargetStream:
		s.in = interest{stream: req.Name}
		st, ok, err := h.log.StreamInfo(ctx, req.Name)
		if err != nil {
			return err
		}
		if ok && st.Tombstoned {
			return &eslog.StreamError{Stream: req.Name, Err: eslog.ErrStreamTombstoned}
		}
		if req.Start == AfterRevision {
			s.nextRev, s.noRev = req.After+1, req.After == math.MaxUint64
		}
	case TargetCategory:
		s.in = interest{category: req.Name}
	default:
		s.in = interest{all: true}
	}
	switch req.Start {
	case FromEnd:
		s.cursor = s.began
	case AfterPosition:
		s.cursor = req.After
	}
	w := h.register(s.in)
	defer h.unregister(s.in, w)
	kind := targetLabel(req.Target)
	h.met.active.WithLabelValues(kind, "catching_up").Inc()
	state := "catching_up"
	defer func() { h.met.active.WithLabelValues(kind, state).Dec() }()

	if ended, err := s.catchUp(ctx); err != nil || ended {
		return err
	}
	if err := s.sink.CaughtUp(s.cursor); err != nil {
		return err
	}
	h.met.active.WithLabelValues(kind, "catching_up").Dec()
	h.met.active.WithLabelValues(kind, "live").Inc()
	state = "live"

	// The batch buffer grows with the batches taken (up to liveBatch), so
	// a subscriber that never had a live event holds none.
	var buf []eslog.Committed
	for {
		evs, newest, ok := h.since(s.cursor, buf[:0], liveBatch)
		buf = evs
		if !ok { // fell behind the buffer: back to the log
			h.met.fallbacks.Inc()
			if ended, err := s.catchUp(ctx); err != nil || ended {
				return err
			}
			continue
		}
		if len(evs) == 0 {
			select {
			case <-w.wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		h.met.lag.Observe(float64(newest - s.cursor))
		ended, err := s.deliver(evs)
		if err != nil || ended {
			return err
		}
		clear(evs) // drop the references to the records
	}
}

// subscriber is one running subscription.
type subscriber struct {
	h      *Hub
	req    Request
	sink   Sink
	in     interest
	cursor uint64 // every position up to it has been considered
	began  uint64 // the last position when it began: older deletions do not end it
	// nextRev is the least revision still to deliver (stream targets), so
	// that a revision is never delivered twice; noRev: none can follow.
	nextRev   uint64
	noRev     bool
	unmatched int // events considered without a match since the last message
	view      eslog.EventView
}

// catchUp reads the log from the cursor up to the last published position,
// again until the hub's buffer reaches back to the cursor.
func (s *subscriber) catchUp(ctx context.Context) (ended bool, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if hi := s.h.log.LastPosition(); hi > s.cursor {
			if ended, err := s.readLog(ctx, hi); err != nil || ended {
				return ended, err
			}
		}
		if _, _, ok := s.h.since(s.cursor, nil, 0); ok {
			return false, s.sink.Flush(0)
		}
	}
}

// readLog delivers the target's events in (cursor, hi] from the log.
func (s *subscriber) readLog(ctx context.Context, hi uint64) (ended bool, err error) {
	from := s.cursor + 1
	emit := func(v *eslog.EventView) error {
		s.h.met.delivered.Inc()
		return s.sink.Event(v)
	}
	switch s.req.Target {
	case TargetStream:
		// A deletion of the stream within (cursor, hi] ends the subscription
		// there: find it first, in the "$deleted" stream's category.
		endAt, reason := uint64(0), ""
		err = s.h.log.ReadAllViews(ctx, eslog.AllQuery{From: max(from, s.began+1), To: hi, Categories: []string{"$deleted"}},
			func(v *eslog.EventView) error {
				if name, tomb, ok := deletedStream(v); ok && name == s.req.Name {
					endAt, reason = v.Position, EndedStreamDeleted
					if tomb {
						reason = EndedStreamTombstoned
					}
					return eslog.ErrStop
				}
				return nil
			}, nil)
		if err != nil {
			return false, err
		}
		to := hi
		if endAt > 0 {
			to = endAt
		}
		q := eslog.StreamQuery{Stream: s.req.Name, From: s.nextRev, FromSet: true, To: to}
		if !s.noRev {
			err = s.h.log.ReadStreamViews(ctx, q, func(v *eslog.EventView) error {
				if v.Revision() < s.nextRev || v.Position <= s.cursor {
					return nil
				}
				s.nextRev = v.Revision() + 1
				return emit(v)
			})
		}
		var se *eslog.StreamError
		if err != nil && !errors.As(err, &se) {
			return false, err
		}
		err = nil // a StreamError: no visible events, nothing to deliver
		if endAt > 0 {
			return true, errors.Join(s.sink.Flush(0), s.sink.Ended(reason))
		}
	case TargetCategory:
		err = s.h.log.ReadAllViews(ctx, eslog.AllQuery{From: from, To: hi, Categories: []string{s.req.Name}}, emit, nil)
	default:
		q := eslog.AllQuery{From: from, To: hi, StreamPrefixes: s.req.StreamPrefixes, TypePrefixes: s.req.TypePrefixes,
			CheckpointEvery: s.req.CheckpointEvery}
		var checkpoint func(uint64) error
		if len(q.StreamPrefixes) > 0 || len(q.TypePrefixes) > 0 {
			checkpoint = s.sink.Flush
		}
		err = s.h.log.ReadAllViews(ctx, q, emit, checkpoint)
	}
	if err != nil {
		return false, err
	}
	s.cursor = hi
	return false, nil
}

// deliver hands the buffered events evs (in order, after the cursor) to the
// sink.
func (s *subscriber) deliver(evs []eslog.Committed) (ended bool, err error) {
	sent := false
	for i := range evs {
		e := &evs[i]
		s.cursor = e.Position
		if s.req.Target == TargetStream && e.Deletes == s.req.Name && e.Position > s.began {
			reason := EndedStreamDeleted
			if e.Tombstone {
				reason = EndedStreamTombstoned
			}
			return true, errors.Join(s.sink.Flush(0), s.sink.Ended(reason))
		}
		if !s.matches(e) {
			s.unmatched++
			continue
		}
		if err := s.view.Decode(e); err != nil {
			return false, err
		}
		if !s.matchesType() {
			s.unmatched++
			continue
		}
		if s.req.Target == TargetStream {
			if s.noRev || e.Revision < s.nextRev {
				continue
			}
			s.nextRev = e.Revision + 1
		}
		s.h.met.delivered.Inc()
		if err := s.sink.Event(&s.view); err != nil {
			return false, err
		}
		sent = true
		s.unmatched = 0
	}
	switch {
	case sent:
		return false, s.sink.Flush(0)
	case s.req.CheckpointEvery > 0 && s.unmatched >= s.req.CheckpointEvery:
		s.unmatched = 0
		return false, s.sink.Flush(s.cursor)
	}
	return false, nil
}

// matches is the cheap part of the target's test (no decoding).
func (s *subscriber) matches(e *eslog.Committed) bool {
	if s.h.log.Hidden(e.StreamID, e.Revision) {
		return false
	}
	switch s.req.Target {
	case TargetStream:
		return e.Stream == s.req.Name
	case TargetCategory:
		return eslog.Category(e.Stream) == s.req.Name
	default:
		return eslog.HasAnyPrefix(e.Stream, s.req.StreamPrefixes)
	}
}

// matchesType is the type filter of an all target, on the decoded view.
func (s *subscriber) matchesType() bool {
	return eslog.HasAnyPrefix(s.view.Type(), s.req.TypePrefixes)
}

func targetLabel(t TargetKind) string {
	switch t {
	case TargetStream:
		return "stream"
	case TargetCategory:
		return "category"
	default:
		return "all"
	}
}

// deletedStream reads a "$deleted" event: the stream it deletes and
// whether forever.
func deletedStream(v *eslog.EventView) (name string, tombstone, ok bool) {
	if t := string(v.Type()); t != eslog.TypeStreamDeleted && t != eslog.TypeStreamTombstoned {
		return "", false, false
	}
	var d struct {
		Stream string `json:"stream"`
	}
	if json.Unmarshal(v.Data(), &d) != nil || d.Stream == "" {
		return "", false, false
	}
	return d.Stream, string(v.Type()) == eslog.TypeStreamTombstoned, true
}
