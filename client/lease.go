package client

import (
	"context"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Lease is a lease on a stream: while it is live, the server takes
// appends and deletes of the stream only with its fencing token, which
// the Lease's Append, AppendMulti entries (AppendEntry.FencingToken) and
// DeleteStream carry. Use one for the rare command that must not race
// with any other writer of the stream (a refund that needs a settled
// balance); everything else is better served by expected revisions.
//
// A Lease ends when released or when its TTL passes on the server's
// clock; renew it well before Expires. A holder whose lease has ended
// and whose stream was leased since is refused (STALE_FENCING_TOKEN)
// whatever it tries: it must reload and start over.
type Lease struct {
	c       *Client
	Stream  string
	Owner   string
	Token   uint64    // the fencing token
	Expires time.Time // the server's clock
}

// AcquireLease takes a lease on stream for ttl (at most the server's
// --max-lease-ttl), named owner (shown to the writers it refuses). When
// the stream is leased it waits up to wait (0: not at all) behind earlier
// waiters, then fails with STREAM_LEASED (ReasonOf; the *Error's Meta has
// the holder's "owner" and "expires"). It is not retried: a retry after a
// lost answer could only find the stream leased, by the caller itself.
func (c *Client) AcquireLease(ctx context.Context, stream, owner string, ttl, wait time.Duration) (*Lease, error) {
	req := &esdv1.AcquireLeaseRequest{Stream: stream, Owner: owner, Ttl: durationpb.New(ttl)}
	if wait > 0 {
		req.Wait = durationpb.New(wait)
	}
	ctx, cancel := c.callCtxFor(ctx, wait)
	defer cancel()
	resp, err := c.locks.AcquireLease(ctx, req)
	if err != nil {
		return nil, asError(err)
	}
	return c.lease(resp.GetLease()), nil
}

// LeaseOf is a handle on a lease known by its token (taken by another
// process, or given on a command line): its writes carry the token.
// Owner and Expires are unknown until Renew.
func (c *Client) LeaseOf(stream string, token uint64) *Lease {
	return &Lease{c: c, Stream: stream, Token: token}
}

// GetLease returns stream's live lease, or nil when it has none.
func (c *Client) GetLease(ctx context.Context, stream string) (*Lease, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.GetLeaseResponse, error) {
		return c.locks.GetLease(ctx, &esdv1.GetLeaseRequest{Stream: stream})
	})
	if err != nil || resp.GetLease() == nil {
		return nil, err
	}
	return c.lease(resp.GetLease()), nil
}

// ListLeases returns the live leases of the streams whose names start
// with prefix, by stream name.
func (c *Client) ListLeases(ctx context.Context, prefix string) ([]*Lease, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.ListLeasesResponse, error) {
		return c.locks.ListLeases(ctx, &esdv1.ListLeasesRequest{Prefix: prefix})
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Lease, 0, len(resp.GetLeases()))
	for _, l := range resp.GetLeases() {
		out = append(out, c.lease(l))
	}
	return out, nil
}

// Renew extends the lease to ttl from now (the same token) and updates
// Expires. Renewing is idempotent, so it is retried like a read.
func (l *Lease) Renew(ctx context.Context, ttl time.Duration) error {
	resp, err := retry(ctx, l.c, func(ctx context.Context) (*esdv1.RenewLeaseResponse, error) {
		return l.c.locks.RenewLease(ctx, &esdv1.RenewLeaseRequest{Stream: l.Stream, FencingToken: l.Token, Ttl: durationpb.New(ttl)})
	})
	if err != nil {
		return err
	}
	l.Owner, l.Expires = resp.GetLease().GetOwner(), resp.GetLease().GetExpires().AsTime()
	return nil
}

// Release ends the lease at once; the next waiter gets the stream. A
// lease that has expired already fails with LEASE_NOT_HELD.
func (l *Lease) Release(ctx context.Context) error {
	ctx, cancel := l.c.callCtx(ctx)
	defer cancel()
	_, err := l.c.locks.ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: l.Stream, FencingToken: l.Token})
	return asError(err)
}

// Append appends to the lease's stream with its fencing token, as
// Client.Append.
func (l *Lease) Append(ctx context.Context, expected Expected, events ...*esdv1.ProposedEvent) (*esdv1.AppendResponse, error) {
	return l.c.appendFenced(ctx, l.Stream, l.Token, expected, events)
}

// DeleteStream deletes the lease's stream with its fencing token, as
// Client.DeleteStream.
func (l *Lease) DeleteStream(ctx context.Context, expected Expected, tombstone bool) (*esdv1.DeleteStreamResponse, error) {
	return l.c.deleteFenced(ctx, l.Stream, l.Token, expected, tombstone)
}

func (c *Client) lease(p *esdv1.Lease) *Lease {
	return &Lease{c: c, Stream: p.GetStream(), Owner: p.GetOwner(), Token: p.GetFencingToken(), Expires: p.GetExpires().AsTime()}
}
