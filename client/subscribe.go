package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// SubscribeOption says what a subscription follows and from where.
type SubscribeOption func(*subOptions)

type subOptions struct {
	req  *esdv1.SubscribeRequest
	once bool
}

// SubscribeStream follows one stream (it need not exist yet).
func SubscribeStream(stream string) SubscribeOption {
	return func(o *subOptions) { o.req.Target = &esdv1.SubscribeRequest_Stream{Stream: stream} }
}

// SubscribeCategory follows every stream of category: "order" follows
// "order-1", "order-2" and "order" itself.
func SubscribeCategory(category string) SubscribeOption {
	return func(o *subOptions) { o.req.Target = &esdv1.SubscribeRequest_Category{Category: category} }
}

// SubscribeAll follows $all, only the events f matches (the zero Filter
// matches every event).
func SubscribeAll(f Filter) SubscribeOption {
	return func(o *subOptions) {
		o.req.Target = &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}}
		o.req.Filter = nil
		if len(f.StreamPrefixes)+len(f.TypePrefixes) > 0 {
			o.req.Filter = f.proto()
		}
	}
}

// AfterRevision starts a stream subscription after revision r, e.g. the
// last one the subscriber handled.
func AfterRevision(r uint64) SubscribeOption {
	return func(o *subOptions) { o.req.From = &esdv1.SubscribeRequest_AfterRevision{AfterRevision: r} }
}

// AfterPosition starts a category or $all subscription after position p,
// e.g. the last one the subscriber handled, or a checkpoint.
func AfterPosition(p uint64) SubscribeOption {
	return func(o *subOptions) { o.req.From = &esdv1.SubscribeRequest_AfterPosition{AfterPosition: p} }
}

// FromEnd starts with the events committed after the subscription began.
// Without it, or AfterRevision or AfterPosition, a subscription starts
// at the first event.
func FromEnd() SubscribeOption {
	return func(o *subOptions) { o.req.From = &esdv1.SubscribeRequest_End{End: &emptypb.Empty{}} }
}

// SubscribeOnce makes the subscription one call, for a caller that
// shows the server's view rather than keeps a reader going (a command
// line tool): it is not resumed or retried after an error, which is
// yielded, last; and the server's ending it (the stream deleted, the
// server shutting down) is yielded as a marker with Ended set, last,
// instead of being resumed after or returned as an error.
func SubscribeOnce() SubscribeOption { return func(o *subOptions) { o.once = true } }

// SubscriptionEvent is what a subscription yields: an event, or a
// marker without one.
type SubscriptionEvent struct {
	// Event is the next event; nil for a marker.
	Event *esdv1.RecordedEvent
	// CaughtUp marks the switch from history to live events: every event
	// before it was in the store when the subscription began.
	CaughtUp bool
	// Position, for a marker, is a position of $all up to which every
	// event was considered (the history's end for CaughtUp; a filtered
	// $all subscription's checkpoint otherwise): a subscriber may resume
	// after it.
	Position uint64
	// Ended, only with SubscribeOnce, is why the server ended the
	// subscription (ReasonStreamDeleted, ReasonStreamTombstoned,
	// ReasonShuttingDown): the last marker.
	Ended string
}

// Subscribe follows a stream, a category or $all (SubscribeStream,
// SubscribeCategory, SubscribeAll): history first, then live events,
// each once, in position order, with one CaughtUp marker in between. It
// runs until the loop breaks or ctx ends (ending the call, with no
// goroutine left) or it fails: a failure is yielded once, last, as
// (SubscriptionEvent{}, err). A stream subscription whose stream is
// deleted ends with a NOT_FOUND *Error (reason STREAM_DELETED or
// STREAM_TOMBSTONED) after the events before the deletion. When ctx
// ends, the loop ends without an error.
//
// After a temporary error (the server restarting, the connection lost)
// the subscription resumes after the last event or marker yielded, with
// backoff, for as long as ctx lasts once the server has answered it once
// (before that, as often as WithRetries allows: a wrong address fails);
// the resumed subscription has its own CaughtUp marker. SubscribeOnce
// turns both off.
func (c *Client) Subscribe(ctx context.Context, opts ...SubscribeOption) iter.Seq2[SubscriptionEvent, error] {
	o := subOptions{req: &esdv1.SubscribeRequest{}}
	for _, fn := range opts {
		fn(&o)
	}
	return func(yield func(SubscriptionEvent, error) bool) {
		req := proto.CloneOf(o.req) // moved on as events come: each run starts where asked
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // a break ends the call
		_, byStream := req.GetTarget().(*esdv1.SubscribeRequest_Stream)
		failures, wait := 0, serverBackoff()
		established := false   // a call got an answer: the target and address are right
		var skipThrough uint64 // events at or before this position were yielded or skipped already
		for {
			err := func() error {
				ss, err := c.streams.Subscribe(ctx, req)
				if err != nil {
					return err
				}
				for {
					m, err := ss.Recv()
					if err != nil {
						return err
					}
					established = true
					failures = 0
					wait.reset()
					switch m := m.GetContent().(type) {
					case *esdv1.SubscribeResponse_Events:
						for _, ev := range m.Events.GetEvents() {
							if ev.GetPosition() <= skipThrough {
								continue
							}
							if !yield(SubscriptionEvent{Event: ev}, nil) {
								return errStop
							}
							if byStream {
								req.From = &esdv1.SubscribeRequest_AfterRevision{AfterRevision: ev.GetRevision()}
							} else {
								req.From = &esdv1.SubscribeRequest_AfterPosition{AfterPosition: ev.GetPosition()}
							}
						}
					case *esdv1.SubscribeResponse_CaughtUp:
						if !yield(SubscriptionEvent{CaughtUp: true, Position: m.CaughtUp.GetPosition()}, nil) {
							return errStop
						}
						if _, fromEnd := req.GetFrom().(*esdv1.SubscribeRequest_End); fromEnd {
							// A resumption from the end would miss what was
							// committed in between: it starts after the
							// caught-up position instead, which a stream
							// subscription can only do by skipping.
							if byStream {
								req.From, skipThrough = nil, m.CaughtUp.GetPosition()
							} else {
								req.From = &esdv1.SubscribeRequest_AfterPosition{AfterPosition: m.CaughtUp.GetPosition()}
							}
						}
					case *esdv1.SubscribeResponse_Checkpoint:
						if !yield(SubscriptionEvent{Position: m.Checkpoint.GetPosition()}, nil) {
							return errStop
						}
						req.From = &esdv1.SubscribeRequest_AfterPosition{AfterPosition: m.Checkpoint.GetPosition()}
					case *esdv1.SubscribeResponse_Ended:
						if o.once {
							yield(SubscriptionEvent{Ended: m.Ended.GetReason()}, nil)
							return errStop // what follows (a status) says no more
						}
						if r := m.Ended.GetReason(); r != ReasonShuttingDown {
							return &Error{Code: codes.NotFound, Reason: r, Message: fmt.Sprintf("subscription to %q ended: the stream was deleted", req.GetStream())}
						}
						// The UNAVAILABLE status follows: resumed below like any temporary error.
					}
				}
			}()
			if errors.Is(err, errStop) || errors.Is(err, io.EOF) || ctx.Err() != nil {
				return
			}
			err = asError(err)
			if o.once || !IsTemporary(err) || (!established && failures >= c.opts.retries) || !wait.wait(ctx) {
				if ctx.Err() == nil {
					yield(SubscriptionEvent{}, err)
				}
				return
			}
			failures++
		}
	}
}
