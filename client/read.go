package client

import (
	"context"
	"errors"
	"io"
	"iter"

	"google.golang.org/grpc"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// ReadOption configures Read and ReadAll.
type ReadOption func(*readOptions)

type readOptions struct {
	backward bool
	from     uint64
	fromSet  bool
	max      uint64
	filter   *esdv1.Filter
}

// Backward reads newest first (from the head, or from FromRevision or
// FromPosition downwards).
func Backward() ReadOption { return func(o *readOptions) { o.backward = true } }

// FromRevision starts a Read at revision r (inclusive).
func FromRevision(r uint64) ReadOption {
	return func(o *readOptions) { o.from, o.fromSet = r, true }
}

// FromPosition starts a ReadAll at position p of $all (inclusive).
func FromPosition(p uint64) ReadOption {
	return func(o *readOptions) { o.from, o.fromSet = p, true }
}

// MaxCount ends a read after n events (0: all).
func MaxCount(n uint64) ReadOption { return func(o *readOptions) { o.max = n } }

// Filter selects events of $all: an event matches when its stream starts
// with any of StreamPrefixes and its type with any of TypePrefixes (an
// empty list matches everything; at most 32 prefixes a list).
type Filter struct {
	StreamPrefixes []string
	TypePrefixes   []string
}

func (f Filter) proto() *esdv1.Filter {
	return &esdv1.Filter{StreamPrefixes: f.StreamPrefixes, EventTypePrefixes: f.TypePrefixes}
}

// WithFilter makes ReadAll return only the events f matches.
func WithFilter(f Filter) ReadOption { return func(o *readOptions) { o.filter = f.proto() } }

func readOpts(opts []ReadOption) readOptions {
	var o readOptions
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

func (o readOptions) direction() esdv1.ReadDirection {
	if o.backward {
		return esdv1.ReadDirection_READ_DIRECTION_BACKWARD
	}
	return esdv1.ReadDirection_READ_DIRECTION_FORWARD
}

// Read returns the events of stream in revision order (forward unless
// Backward), fetched in chunks as the loop asks for them. A failure is
// yielded once, as the last pair (nil, err); a stream never written,
// deleted or tombstoned fails with a NOT_FOUND *Error (IsNotFound).
// Breaking out of the loop ends the call. After a temporary error the
// read goes on after the last event yielded (see WithRetries).
//
//	for ev, err := range c.Read(ctx, "order-1") {
//		if err != nil { ... }
//		...
//	}
func (c *Client) Read(ctx context.Context, stream string, opts ...ReadOption) iter.Seq2[*esdv1.RecordedEvent, error] {
	o := readOpts(opts)
	// Revisions start at 0.
	return read(ctx, c, o, (*esdv1.RecordedEvent).GetRevision, 0, func(ctx context.Context, from *uint64, count uint64) (grpc.ServerStreamingClient[esdv1.ReadStreamResponse], error) {
		return c.streams.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: stream, Direction: o.direction(), FromRevision: from, MaxCount: count})
	})
}

// ReadAll returns the events of $all in position order (forward unless
// Backward), optionally filtered (WithFilter); events of deleted streams
// are left out. It behaves as Read otherwise. Forward, it ends at the
// last position when the read began.
func (c *Client) ReadAll(ctx context.Context, opts ...ReadOption) iter.Seq2[*esdv1.RecordedEvent, error] {
	o := readOpts(opts)
	// Positions start at 1.
	return read(ctx, c, o, (*esdv1.RecordedEvent).GetPosition, 1, func(ctx context.Context, from *uint64, count uint64) (grpc.ServerStreamingClient[esdv1.ReadAllResponse], error) {
		return c.streams.ReadAll(ctx, &esdv1.ReadAllRequest{Direction: o.direction(), FromPosition: from, MaxCount: count, Filter: o.filter})
	})
}

// readChunk is a message of a read's response stream.
type readChunk interface {
	GetEvents() []*esdv1.RecordedEvent
}

// read runs a read, yielding its events; open starts it from a place
// (nil: the start, or the head backward) for at most count events (0:
// all).
// After a temporary error it opens the read again after the last event
// yielded (or checkpoint passed): place tells where an event is, first
// is the lowest place, below which a backward read has nothing left.
func read[M any, P interface {
	*M
	readChunk
}](ctx context.Context, c *Client, o readOptions, place func(*esdv1.RecordedEvent) uint64, first uint64,
	open func(ctx context.Context, from *uint64, count uint64) (grpc.ServerStreamingClient[M], error)) iter.Seq2[*esdv1.RecordedEvent, error] {
	return func(yield func(*esdv1.RecordedEvent, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // a break ends the call
		var from *uint64
		if o.fromSet {
			from = &o.from
		}
		var (
			count         = o.max
			yielded, last uint64
			moved         bool // last is set: something was yielded or passed
			failures      int
			wait          = serverBackoff()
		)
		for {
			err := func() error {
				rs, err := open(ctx, from, count)
				if err != nil {
					return err
				}
				for {
					m, err := rs.Recv()
					if err != nil {
						return err
					}
					for _, ev := range P(m).GetEvents() {
						if !yield(ev, nil) {
							return errStop
						}
						yielded++
						last, moved = place(ev), true
						failures = 0
						wait.reset()
					}
					// A filtered ReadAll passes its checkpoint: a
					// resumption need not scan again what it skipped.
					if cp, ok := any(m).(interface{ GetCheckpoint() uint64 }); ok && cp.GetCheckpoint() != 0 {
						last, moved = cp.GetCheckpoint(), true
					}
				}
			}()
			switch {
			case errors.Is(err, errStop), errors.Is(err, io.EOF):
				return
			}
			err = asError(err)
			if !IsTemporary(err) || failures >= c.opts.retries || ctx.Err() != nil {
				yield(nil, err)
				return
			}
			failures++
			if moved {
				if o.max > 0 {
					if yielded >= o.max {
						return
					}
					count = o.max - yielded
				}
				next := last + 1
				if o.backward {
					if last <= first {
						return
					}
					next = last - 1
				}
				from = &next
			}
			if !wait.wait(ctx) {
				yield(nil, err)
				return
			}
		}
	}
}

// errStop is how a read learns that its loop broke.
var errStop = errors.New("client: the loop stopped")
