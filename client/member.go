package client

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
)

// Handler handles one event delivered to a group member. Returning nil
// acknowledges the event; an error nacks it, with the error's text as the
// reason: delivered again now (to this member or another), unless the
// error wraps Park's or RetryLater's marker; after the group's max
// deliveries it is parked. A handler may see an event again
// (at-least-once delivery), so it must be idempotent; DeliveryCount(ctx)
// says how many times it came.
type Handler func(ctx context.Context, ev *esdv1.RecordedEvent) error

// Park marks a handler's error as final for the event: the group parks
// it (see ListParked, ReplayParked) with err's text as the reason,
// instead of delivering it again.
func Park(err error) error { return &nackError{err: err, action: esdv1.NackAction_NACK_ACTION_PARK} }

// RetryLater marks a handler's error as worth a retry after the group's
// ack timeout, instead of at once.
func RetryLater(err error) error {
	return &nackError{err: err, action: esdv1.NackAction_NACK_ACTION_RETRY_LATER}
}

type nackError struct {
	err    error
	action esdv1.NackAction
}

func (e *nackError) Error() string {
	if e.err == nil {
		return e.action.String()
	}
	return e.err.Error()
}

func (e *nackError) Unwrap() error { return e.err }

// MemberOption configures RunMember.
type MemberOption func(*memberOptions)

type memberOptions struct {
	name        string
	concurrency int
	drain       time.Duration
	onJoined    func(memberID string)
	once        bool
}

// MemberName names the member in the server's logs.
func MemberName(name string) MemberOption { return func(o *memberOptions) { o.name = name } }

// Concurrency runs up to n handlers at once (default 1). The events of
// one stream still go through one handler at a time, in delivery order.
func Concurrency(n int) MemberOption { return func(o *memberOptions) { o.concurrency = max(n, 1) } }

// DrainTimeout bounds how long a member stopping (its ctx ended) waits
// for the handlers in flight and then for the server to confirm its
// leaving, which says every ack and nack sent has counted (default
// 30 s). Past it the handlers' contexts are cancelled, the member leaves
// without their acks (those events are delivered again) and RunMember
// returns an error wrapping ErrDrainTimeout.
func DrainTimeout(d time.Duration) MemberOption { return func(o *memberOptions) { o.drain = d } }

// ErrDrainTimeout is wrapped by RunMember's error when the member did not
// drain within DrainTimeout; the error says how many handlers were cut
// short and how many acks and nacks sent while draining the server did
// not confirm (it may have counted them or not: their events may be
// delivered again).
var ErrDrainTimeout = errors.New("drain timed out")

// JoinOnce makes the member one Join call, for a caller that shows the
// server's view rather than keeps a member going (a command line tool):
// the first join is not retried, and a lost connection or a server
// restarting ends RunMember with the call's error instead of a new join
// (nil when the server ended the call cleanly).
func JoinOnce() MemberOption { return func(o *memberOptions) { o.once = true } }

// OnJoined calls fn with the member id the server gives the member each
// time it joins (again after a reconnection), for logs.
func OnJoined(fn func(memberID string)) MemberOption {
	return func(o *memberOptions) { o.onJoined = fn }
}

type deliveryCountKey struct{}

// DeliveryCount returns, in a Handler, how many times the group has
// delivered the event (1 the first time; the count starts again when the
// server restarts or every member left the group); 0 outside a Handler.
func DeliveryCount(ctx context.Context) uint32 {
	n, _ := ctx.Value(deliveryCountKey{}).(uint32)
	return n
}

// RunMember joins group and calls handler for each event delivered to
// it, until ctx ends or the member fails. Acks and nacks are sent in
// batches as handlers finish.
//
// When ctx ends, the member drains: it takes no more deliveries, lets
// the handlers in flight finish (see DrainTimeout), sends their acks and
// nacks, leaves the group (the events delivered and not handled go to
// the other members) and returns nil, or an error wrapping
// ErrDrainTimeout when that took longer than DrainTimeout. Handlers get a context that
// outlives ctx for this, cancelled only past the drain timeout or when
// the member fails.
//
// A lost connection or a server restarting is not a failure: the member
// joins again, with backoff, for as long as ctx lasts once it has joined
// once (before that, as often as WithRetries allows: a wrong address
// fails). It fails, and returns the *Error, when the group does not
// exist or is deleted (NOT_FOUND/GROUP_NOT_FOUND) or the server refuses
// it otherwise. JoinOnce turns the joining again off.
func (c *Client) RunMember(ctx context.Context, group string, handler Handler, opts ...MemberOption) error {
	o := memberOptions{concurrency: 1, drain: 30 * time.Second}
	for _, fn := range opts {
		fn(&o)
	}
	wait := serverBackoff()
	failures, everJoined := 0, false
	for {
		joined, err := c.member(ctx, group, handler, o)
		switch err = asError(err); {
		case errors.Is(err, ErrDrainTimeout):
			return err
		case ctx.Err() != nil:
			return nil //nolint:nilerr // the stop asked for: whatever ended the call, the member drained
		case o.once, !IsTemporary(err), !everJoined && !joined && failures >= c.opts.retries:
			return err
		}
		failures++
		if joined {
			everJoined = true
			wait.reset()
		}
		if !wait.wait(ctx) {
			return nil
		}
	}
}

type outcome struct {
	id  string
	err error
}

// member is one Join call: it returns when ctx ended and the member
// drained (the error then does not matter), or when the call failed.
func (c *Client) member(ctx context.Context, group string, handler Handler, o memberOptions) (joined bool, err error) {
	// The call outlives ctx, so that the acks of a drain still go out.
	sctx, cancelCall := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCall()
	stopJoin := context.AfterFunc(ctx, cancelCall) // until joined, ctx ends the call
	js, err := c.groups.Join(sctx)
	if err != nil {
		return false, err
	}
	if err := js.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: group, Member: o.name}}}); err != nil {
		if errors.Is(err, io.EOF) { // the call ended: Recv has its status
			_, err = js.Recv()
		}
		return false, err
	}
	first, err := js.Recv()
	if err != nil {
		return false, err
	}
	if first.GetJoined() == nil {
		return false, fmt.Errorf("join %q: the server answered %T before joined", group, first.GetContent())
	}
	if o.onJoined != nil {
		o.onJoined(first.GetJoined().GetMemberId())
	}
	if !stopJoin() {
		return true, ctx.Err()
	}

	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	queues := make([]chan *esdv1.Delivery, o.concurrency)
	results := make(chan outcome, o.concurrency)
	var (
		workers sync.WaitGroup
		running atomic.Int64 // handlers running, for a drain timeout's error
		drained atomic.Int64 // acks and nacks sent since ctx ended, likewise
	)
	for i := range queues {
		q := make(chan *esdv1.Delivery, 16)
		queues[i] = q
		workers.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return // draining: what is queued is not taken
				case d, ok := <-q:
					if !ok || ctx.Err() != nil {
						return
					}
					hctx := context.WithValue(handlerCtx, deliveryCountKey{}, d.GetDeliveryCount())
					running.Add(1)
					err := handler(hctx, d.GetEvent())
					running.Add(-1)
					results <- outcome{d.GetEvent().GetId(), err}
				}
			}
		})
	}
	recvDone := make(chan error, 1)
	go func() {
		defer func() {
			for _, q := range queues {
				close(q)
			}
		}()
		for {
			m, err := js.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			d := m.GetDelivery()
			if d.GetEvent() == nil {
				continue
			}
			select {
			case queues[queueOf(d.GetEvent().GetStream(), len(queues))] <- d:
			case <-ctx.Done(): // draining: left to the other members
			}
		}
	}()
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		c.sendOutcomes(ctx, js, results, &drained)
	}()
	handled := make(chan struct{})
	go func() {
		workers.Wait()
		close(results) // the sender sends what is left, then closes its side
		close(handled)
	}()

	select {
	case err := <-recvDone:
		// The call is over: the acks of the handlers in flight could not
		// reach the server any more, and their events go to other members.
		cancelHandlers()
		waitFor(handled, o.drain)
		if errors.Is(err, io.EOF) {
			if o.once {
				return true, nil
			}
			err = &Error{Code: codes.Unavailable, Message: fmt.Sprintf("member of %q: the server ended the call", group)}
		}
		return true, err
	case <-ctx.Done():
	}
	timedOut := func() error {
		return fmt.Errorf("member of %q: %w after %v (handlers cut short: %d; acks and nacks sent while draining, not confirmed: %d)",
			group, ErrDrainTimeout, o.drain, running.Load(), drained.Load())
	}
	deadline := time.NewTimer(o.drain)
	defer deadline.Stop()
	select {
	case <-sendDone: // every outcome sent, the send side closed
	case err := <-recvDone: // the acks of the handlers in flight are lost
		return true, err
	case <-deadline.C:
		// The call ends first, so that no nack of a handler cut short
		// goes out: its event goes back to the group as unanswered.
		cancelCall()
		return true, timedOut()
	}
	// The server ends the call once it has read the close, after the acks.
	select {
	case err := <-recvDone:
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return true, err
	case <-deadline.C:
		return true, timedOut()
	}
}

// sendOutcomes sends the handlers' acks and nacks, as many a message as
// are ready, until results is closed, then closes the send side; it
// counts in drained the events answered once ctx ended. After a failed
// send it only drains results: the call is over.
func (c *Client) sendOutcomes(ctx context.Context, js esdv1.ConsumerGroupService_JoinClient, results <-chan outcome, drained *atomic.Int64) {
	failed := false
	send := func(m *esdv1.JoinRequest) {
		if failed {
			return
		}
		if js.Send(m) != nil {
			failed = true
			return
		}
		if ctx.Err() != nil {
			drained.Add(int64(len(m.GetAck().GetEventIds()) + len(m.GetNack().GetEventIds())))
		}
	}
	for first := range results {
		var acks []string
		add := func(o outcome) {
			if o.err == nil {
				acks = append(acks, o.id)
				return
			}
			// Each nack carries its own reason (kept if the event ends
			// up parked): one message each.
			action := esdv1.NackAction_NACK_ACTION_RETRY
			var ne *nackError
			if errors.As(o.err, &ne) {
				action = ne.action
			}
			send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Nack{Nack: &esdv1.Nack{EventIds: []string{o.id}, Action: action, Reason: reason(o.err)}}})
		}
		add(first)
	more:
		for len(acks) < 1000 {
			select {
			case o, ok := <-results:
				if !ok {
					break more
				}
				add(o)
			default:
				break more
			}
		}
		if len(acks) > 0 {
			send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: acks}}})
		}
	}
	if !failed {
		_ = js.CloseSend()
	}
}

// reason is a nack's reason: the error's text, cut to the 1024 bytes the
// server keeps (on a character boundary, as the server wants UTF-8).
func reason(err error) string {
	s := err.Error()
	if len(s) > 1024 {
		s = strings.ToValidUTF8(s[:1024], "")
	}
	return s
}

// queueOf spreads streams over n handlers, one stream always to the same
// one, so that its events are handled in order.
func queueOf(stream string, n int) int {
	if n == 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(stream))
	return int(h.Sum32() % uint32(n))
}

func waitFor(done <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
