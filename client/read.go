package client

import (
	"context"
	"errors"
	"io"
	"iter"
	"time"

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
	return func(yield func(*esdv1.RecordedEvent, error) bool) {
		req := &esdv1.ReadStreamRequest{Stream: stream, Direction: o.direction(), MaxCount: o.max}
		if o.fromSet {
			req.FromRevision = &o.from
		}
		c.readLoop(ctx, yield, o, func(ctx context.Context) (recvFunc, error) {
			rs, err := c.streams.ReadStream(ctx, req)
			if err != nil {
				return nil, err
			}
			return func() ([]*esdv1.RecordedEvent, uint64, error) {
				m, err := rs.Recv()
				return m.GetEvents(), 0, err
			}, nil
		}, func(last uint64, remaining uint64) bool {
			req.MaxCount = remaining
			if o.backward {
				if last == 0 {
					return false
				}
				last--
			} else {
				last++
			}
			req.FromRevision = &last
			return true
		}, (*esdv1.RecordedEvent).GetRevision)
	}
}

// ReadAll returns the events of $all in position order (forward unless
// Backward), optionally filtered (WithFilter); events of deleted streams
// are left out. It behaves as Read otherwise. Forward, it ends at the
// last position when the read began.
func (c *Client) ReadAll(ctx context.Context, opts ...ReadOption) iter.Seq2[*esdv1.RecordedEvent, error] {
	o := readOpts(opts)
	return func(yield func(*esdv1.RecordedEvent, error) bool) {
		req := &esdv1.ReadAllRequest{Direction: o.direction(), MaxCount: o.max, Filter: o.filter}
		if o.fromSet {
			req.FromPosition = &o.from
		}
		c.readLoop(ctx, yield, o, func(ctx context.Context) (recvFunc, error) {
			rs, err := c.streams.ReadAll(ctx, req)
			if err != nil {
				return nil, err
			}
			return func() ([]*esdv1.RecordedEvent, uint64, error) {
				m, err := rs.Recv()
				return m.GetEvents(), m.GetCheckpoint(), err
			}, nil
		}, func(last uint64, remaining uint64) bool {
			req.MaxCount = remaining
			if o.backward {
				if last <= 1 {
					return false
				}
				last--
			} else {
				last++
			}
			req.FromPosition = &last
			return true
		}, (*esdv1.RecordedEvent).GetPosition)
	}
}

// recvFunc returns the next chunk of a read: its events and its
// checkpoint (0: none), or io.EOF at the end.
type recvFunc func() ([]*esdv1.RecordedEvent, uint64, error)

// readLoop runs a read, yielding its events; after a temporary error it
// opens the read again after the last event yielded (or checkpoint
// passed), with resume, which returns false when nothing is left.
func (c *Client) readLoop(ctx context.Context, yield func(*esdv1.RecordedEvent, error) bool, o readOptions,
	open func(context.Context) (recvFunc, error), resume func(last, remaining uint64) bool, place func(*esdv1.RecordedEvent) uint64) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // a break ends the call
	var (
		yielded, last uint64
		moved         bool // last is set: something was yielded or passed
		failures      int
		wait          = 50 * time.Millisecond
	)
	for {
		err := func() error {
			recv, err := open(ctx)
			if err != nil {
				return err
			}
			for {
				events, checkpoint, err := recv()
				if err != nil {
					return err
				}
				for _, ev := range events {
					if !yield(ev, nil) {
						return errStop
					}
					yielded++
					last, moved = place(ev), true
					failures, wait = 0, 50*time.Millisecond
				}
				if checkpoint != 0 {
					last, moved = checkpoint, true
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
			remaining := uint64(0)
			if o.max > 0 {
				if yielded >= o.max {
					return
				}
				remaining = o.max - yielded
			}
			if !resume(last, remaining) {
				return
			}
		}
		if !sleep(ctx, &wait) {
			yield(nil, err)
			return
		}
	}
}

// errStop is how a read learns that its loop broke.
var errStop = errors.New("client: the loop stopped")

// sleep waits a jittered *wait (doubling it for next time, up to 2 s)
// and reports false when ctx ended first.
func sleep(ctx context.Context, wait *time.Duration) bool {
	d := *wait/2 + jitter(*wait/2+1) // jitter: retries of many clients spread out
	*wait = min(2**wait, 2*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
