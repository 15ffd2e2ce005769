package engine

import (
	"context"
	"errors"

	"github.com/esdhq/esd/internal/lease"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/subscription"
	"github.com/esdhq/esd/internal/writer"
)

// The writer's request and result types are the engine's.
type (
	AppendOp     = writer.AppendOp
	DeleteOp     = writer.DeleteOp
	DeleteResult = writer.DeleteResult
)

// AppendResult is the writer's result of an append, with the snapshot
// advice the engine adds once it has returned.
type AppendResult struct {
	writer.AppendResult
	// Snapshot is the advice of the stream's snapshot policy at its new
	// head (zero when no policy applies to its category).
	Snapshot snapshot.Advice
}

// Errors of the engine's operations beyond the log's and the groups': the
// writer's.
var (
	ErrShuttingDown = writer.ErrShuttingDown
	ErrOverloaded   = writer.ErrOverloaded
	ErrRefused      = writer.ErrRefused
)

// Append appends op and waits until it is durable. A wrong expected
// revision is a *ConflictError.
//
// The result carries the snapshot advice of op's stream, decided here
// after the append returned (not in the writer: it reads the advice
// cache, and on a miss the store).
func (e *Engine) Append(ctx context.Context, op AppendOp) (AppendResult, error) {
	res, err := e.writer.Append(ctx, op)
	if err != nil {
		return AppendResult{AppendResult: res}, e.withConflictDelta(ctx, err, op.DeltaEvents)
	}
	return e.advised(op.Stream, res), nil
}

func (e *Engine) advised(stream string, res writer.AppendResult) AppendResult {
	return AppendResult{AppendResult: res, Snapshot: e.snaps.Advise(stream, res.LastRevision, res.Exists)}
}

// AppendMulti appends ops (each to a different stream) atomically and
// waits until they are durable. A wrong expected revision is a
// *ConflictError.
func (e *Engine) AppendMulti(ctx context.Context, ops []AppendOp) ([]AppendResult, error) {
	res, err := e.writer.AppendMulti(ctx, ops)
	if err != nil {
		limit := 0
		if wr := (*eslog.WrongRevisionError)(nil); errors.As(err, &wr) {
			for _, op := range ops {
				if op.Stream == wr.Stream {
					limit = op.DeltaEvents
				}
			}
		}
		return nil, e.withConflictDelta(ctx, err, limit)
	}
	out := make([]AppendResult, len(res))
	for i, r := range res {
		out[i] = e.advised(ops[i].Stream, r)
	}
	return out, nil
}

// Delete deletes a stream (soft, or forever with a tombstone) and waits
// until it is durable. A wrong expected revision is a *ConflictError.
//
// An error that is not a definite refusal (refusedDelete) may come after
// the writer took the delete: ctx ended, or the log failed, while it
// waited for durability, and the delete may commit all the same. The
// snapshot advice cache then drops the stream's base (ForgetAdvice), so
// that the next advice reloads it from the store rather than count from a
// snapshot the delete made unusable. A tombstone's purge is left to the
// next read of the stream's snapshots (snapshot invariant 4).
func (e *Engine) Delete(ctx context.Context, d DeleteOp) (DeleteResult, error) {
	stream := d.Stream
	res, err := e.writer.Delete(ctx, d)
	if h := e.testDeleted; h != nil {
		err = h(err)
	}
	if err != nil {
		if !refusedDelete(err) {
			e.snaps.ForgetAdvice(stream)
		}
		return res, e.withConflictDelta(ctx, err, 0)
	}
	e.snaps.StreamDeleted(stream, d.Mode == eslog.DeleteTombstone)
	return res, nil
}

// refusedDelete reports whether err is a definite refusal of a delete by
// the writer: nothing was or will be written.
func refusedDelete(err error) bool {
	var (
		wr *eslog.WrongRevisionError
		se *eslog.StreamError
	)
	return errors.As(err, &wr) || errors.As(err, &se) ||
		errors.Is(err, lease.ErrLeased) || errors.Is(err, lease.ErrStaleToken) ||
		errors.Is(err, writer.ErrOverloaded) || errors.Is(err, writer.ErrShuttingDown)
}

// Load sends stream's newest usable snapshot of schema version schema
// (if any) to onSnapshot, then every visible event after it to emit, up
// to the head the stream had when the load started (one view: see
// snapshot.Store.Load); the result has that head and the snapshot advice.
// Errors: as ReadStream's.
func (e *Engine) Load(ctx context.Context, stream string, schema uint32, onSnapshot func(*snapshot.Snapshot) error, emit func(*eslog.EventView) error) (snapshot.LoadResult, error) {
	return e.snaps.Load(ctx, stream, schema, onSnapshot, emit)
}

// ReadStream reads a stream's published events in q's order; emit may
// keep nothing of the view after it returns.
func (e *Engine) ReadStream(ctx context.Context, q eslog.StreamQuery, emit func(*eslog.EventView) error) error {
	return e.log.ReadStreamViews(ctx, q, emit)
}

// ReadAll reads $all's published events; checkpoint, when q asks for
// them, is called with the position a filtered read has scanned to.
func (e *Engine) ReadAll(ctx context.Context, q eslog.AllQuery, emit func(*eslog.EventView) error, checkpoint func(uint64) error) error {
	return e.log.ReadAllViews(ctx, q, emit, checkpoint)
}

// Stream returns a stream's state; ok is false for a stream never written.
func (e *Engine) Stream(ctx context.Context, name string) (st eslog.StreamState, ok bool, err error) {
	return e.log.StreamInfo(ctx, name)
}

// ListStreams lists streams by name after after, with prefix, up to limit.
func (e *Engine) ListStreams(ctx context.Context, prefix, after string, limit int) ([]eslog.StreamState, bool, error) {
	return e.log.ListStreams(ctx, prefix, after, limit)
}

// Subscribe delivers req's events to sink (history, then live) until ctx
// ends, the subscription ends or the engine stops (Stopping).
func (e *Engine) Subscribe(ctx context.Context, req subscription.Request, sink subscription.Sink) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.stopping, cancel)()
	return e.hub.Subscribe(ctx, req, sink)
}

// Stats are the store-wide counts.
func (e *Engine) Stats() eslog.Stats { return e.log.Stats() }

// DiskBytes is the space the store takes on disk.
func (e *Engine) DiskBytes() uint64 { return e.log.DiskBytes() }

// Conflict deltas: at most this many events, of at most about this many
// bytes as encoded. The bytes bound keeps the error (a gRPC trailer) under
// the 8 KiB of metadata that gRPC clients other than Go's accept by
// default.
const (
	conflictDeltaEvents = 16
	conflictDeltaBytes  = 4 << 10
)

// deltaSize is about what ev adds to an encoded conflict delta: its
// variable fields and a margin for the fixed ones (id, revision,
// position, time) and the framing.
func deltaSize(ev *eslog.RecordedEvent) int {
	n := 64 + len(ev.Stream) + len(ev.Type) + len(ev.ContentType) + len(ev.Data) + len(ev.Metadata)
	for _, t := range ev.Tags {
		n += len(t) + 2
	}
	return n
}

// ConflictError is an expected revision that did not hold, with the
// events appended after the expected revision so that the caller can
// decide again without another read. Head is the head the writer decided
// against, which may include a commit not yet durable (the one that won);
// EventsSince holds durable events only, and Truncated says the head is
// past the last of them (they did not fit, or are not durable yet).
type ConflictError struct {
	*eslog.WrongRevisionError
	EventsSince []*eslog.RecordedEvent
	Truncated   bool
}

func (e *ConflictError) Unwrap() error { return e.WrongRevisionError }

// withConflictDelta turns a wrong revision into a *ConflictError listing
// at most limit events (0: conflictDeltaEvents; negative: none, and no
// read). It answers at once rather than waiting for the winner's fsync,
// which would make every loser of a contended stream miss the next
// commit. Failing to read the events only leaves them out.
func (e *Engine) withConflictDelta(ctx context.Context, err error, limit int) error {
	var wr *eslog.WrongRevisionError
	if !errors.As(err, &wr) {
		return err
	}
	if limit == 0 || limit > conflictDeltaEvents {
		limit = conflictDeltaEvents
	}
	c := &ConflictError{WrongRevisionError: wr}
	q := eslog.StreamQuery{Stream: wr.Stream, Max: uint64(max(limit, 0))}
	switch wr.Expected.Kind {
	case eslog.ExpectExact:
		q.From, q.FromSet = wr.Expected.Revision+1, true
	case eslog.ExpectNoStream:
	default: // any never fails; stream_exists fails only when there is nothing to show
		return c
	}
	if !wr.Exists {
		return c
	}
	if limit > 0 {
		bytes := 0
		st := eslog.StreamState{ID: wr.StreamID, Name: wr.Stream, Written: true, Head: wr.Head, TruncateBefore: wr.TruncateBefore}
		_ = e.log.ReadPublished(ctx, &st, q, func(ev *eslog.RecordedEvent) error {
			size := deltaSize(ev)
			if len(c.EventsSince) == limit || bytes+size > conflictDeltaBytes {
				return eslog.ErrStop
			}
			bytes += size
			c.EventsSince = append(c.EventsSince, ev)
			return nil
		})
	}
	switch n := len(c.EventsSince); {
	case n > 0:
		c.Truncated = c.EventsSince[n-1].Revision < wr.Head
	case wr.Expected.Kind == eslog.ExpectNoStream:
		c.Truncated = true // it has events; none is listed
	default:
		c.Truncated = wr.Head > wr.Expected.Revision
	}
	return c
}
