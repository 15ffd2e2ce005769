package client

import (
	"context"
	"errors"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Append appends events to stream if its revision is as expected, and
// returns where they were written (revisions, positions, commit time,
// and whether the server advises a snapshot). Events without an id get
// one (in place), so that the retries after a temporary error (see
// WithRetries) never write an event twice.
//
// A conflict is an *Error for which IsWrongExpectedRevision holds; it
// carries the actual head and the events appended since the expected
// revision.
func (c *Client) Append(ctx context.Context, stream string, expected Expected, events ...*esdv1.ProposedEvent) (*esdv1.AppendResponse, error) {
	return c.appendFenced(ctx, stream, 0, expected, events)
}

// appendFenced is Append with a lease's fencing token (0: none).
func (c *Client) appendFenced(ctx context.Context, stream string, token uint64, expected Expected, events []*esdv1.ProposedEvent) (*esdv1.AppendResponse, error) {
	withIDs(events)
	req := &esdv1.AppendRequest{Stream: stream, Events: events, FencingToken: token}
	expected.setOn(req)
	piped := c.pipe != nil && pipelined(req)
	return retry(ctx, c, func(ctx context.Context) (*esdv1.AppendResponse, error) {
		if piped {
			resp, err := c.pipe.append(ctx, req)
			if !errors.Is(err, errUnpiped) {
				return resp, err
			}
		}
		return c.streams.Append(ctx, req)
	})
}

// AppendEntry is one stream's part of an AppendMulti.
type AppendEntry struct {
	Stream   string
	Expected Expected
	Events   []*esdv1.ProposedEvent // none: a pure condition on the stream
	// FencingToken is the token of the caller's lease on Stream (see
	// AcquireLease); 0: none.
	FencingToken uint64
}

// AppendMulti appends to several streams atomically: every expected
// revision holds and everything is written, or nothing is. The results
// are in the order of the entries. A conflict names its stream.
func (c *Client) AppendMulti(ctx context.Context, entries ...AppendEntry) ([]*esdv1.AppendResponse, error) {
	req := &esdv1.AppendMultiRequest{Appends: make([]*esdv1.AppendRequest, len(entries))}
	for i, e := range entries {
		withIDs(e.Events)
		r := &esdv1.AppendRequest{Stream: e.Stream, Events: e.Events, FencingToken: e.FencingToken}
		e.Expected.setOn(r)
		req.Appends[i] = r
	}
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.AppendMultiResponse, error) {
		return c.streams.AppendMulti(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	return resp.GetResults(), nil
}

// retry runs one idempotent unary call, bounded by the client's timeout
// each attempt, again after a temporary error (up to the client's
// retries), with jittered exponential backoff from 50 ms to 2 s.
func retry[T any](ctx context.Context, c *Client, call func(context.Context) (T, error)) (T, error) {
	wait := serverBackoff()
	for attempt := 0; ; attempt++ {
		cctx, cancel := c.callCtx(ctx)
		v, err := call(cctx)
		cancel()
		if err == nil {
			return v, nil
		}
		err = asError(err)
		if attempt >= c.opts.retries || !IsTemporary(err) || ctx.Err() != nil {
			return v, err
		}
		if !wait.wait(ctx) {
			return v, err
		}
	}
}
