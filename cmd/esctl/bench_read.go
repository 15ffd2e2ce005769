package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/esdhq/esd/internal/benchstat"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The read workloads: read-stream, read-all and catch-up, and what
// --prepare writes for them to read.

// prepareReadStream returns the number of events every read must return
// (-1 when reading a stream the bench did not write).
func (b *bench) prepareReadStream(ctx context.Context) (int64, error) {
	if b.o.prepare == 0 {
		b.report.Stream = b.o.stream
		cctx, cancel := b.app.callCtx(ctx)
		defer cancel()
		resp, err := b.client(0).GetStream(cctx, &esdv1.GetStreamRequest{Stream: b.o.stream})
		if err != nil {
			return 0, err
		}
		if !resp.GetInfo().GetExists() {
			return 0, fmt.Errorf("stream %q has no events to read", b.o.stream)
		}
		return -1, nil
	}
	b.report.Stream = b.o.prefix + "-read"
	b.report.Prepared = b.o.prepare
	if err := b.fillStream(ctx, b.client(0), b.report.Stream, b.o.prepare); err != nil {
		return 0, err
	}
	return int64(b.o.prepare), nil
}

// fillStream appends n events to a fresh stream in batches, each expecting
// the exact head of the last.
func (b *bench) fillStream(ctx context.Context, cli esdv1.StreamServiceClient, stream string, n int) error {
	req := &esdv1.AppendRequest{Stream: stream}
	evs := b.newEvents(min(n, prepareBatch))
	ids := b.newIDGen()
	var next uint64
	for done := 0; done < n; {
		req.Events = evs[:min(prepareBatch, n-done)]
		ids.fill(req.Events)
		if next == 0 {
			req.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
		} else {
			req.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: next - 1}
		}
		resp, err := b.prepareAppend(ctx, cli, req)
		if err != nil {
			return err
		}
		if resp.GetFirstRevision() != next {
			return fmt.Errorf("prepare %s: append landed at revision %d, want %d", stream, resp.GetFirstRevision(), next)
		}
		next = resp.GetLastRevision() + 1
		done += len(req.Events)
	}
	return nil
}

func (b *bench) prepareAppend(ctx context.Context, cli esdv1.StreamServiceClient, req *esdv1.AppendRequest) (*esdv1.AppendResponse, error) {
	cctx, cancel := b.app.callCtx(ctx)
	defer cancel()
	return cli.Append(cctx, req)
}

// prepareReadAll writes --prepare events over prepareStreams streams with
// prepareClients concurrent clients, batch i going to stream i mod
// prepareStreams. Expected revisions are not checked: several clients
// write to one stream.
func (b *bench) prepareReadAll(ctx context.Context) error {
	n := b.o.prepare
	if n == 0 {
		return nil
	}
	batches := (n + prepareBatch - 1) / prepareBatch
	var nextBatch atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, prepareClients)
	var wg sync.WaitGroup
	for c := range prepareClients {
		wg.Go(func() {
			cli := b.client(c)
			evs := b.newEvents(min(n, prepareBatch))
			ids := b.newIDGen()
			req := &esdv1.AppendRequest{}
			for {
				i := int(nextBatch.Add(1) - 1)
				if i >= batches || ctx.Err() != nil {
					return
				}
				req.Stream = b.o.prefix + "-" + strconv.Itoa(i%prepareStreams)
				req.Events = evs[:min(prepareBatch, n-i*prepareBatch)]
				ids.fill(req.Events)
				if _, err := b.prepareAppend(ctx, cli, req); err != nil {
					errs[c] = err
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	return benchstat.FirstCause(errs, isCanceled)
}

// readStreamWorker reads the stream start to end; revisions must follow
// each other without a gap.
type readStreamWorker struct {
	cli  esdv1.StreamServiceClient
	req  *esdv1.ReadStreamRequest
	want int64 // events each read must return; -1 = unknown
}

func (w *readStreamWorker) op(ctx context.Context, st *benchStats) error {
	t0 := time.Now()
	var n int64
	inOrder := true
	rs, err := w.cli.ReadStream(ctx, w.req)
	if err == nil {
		n, inOrder, err = drain(rs, revisionFollows)
	}
	return recordRead(ctx, st, t0, n, inOrder, w.want >= 0 && n != w.want, err)
}

// readAllWorker reads $all start to end; positions must increase (gaps are
// allowed: deleted streams' events are skipped).
type readAllWorker struct {
	cli     esdv1.StreamServiceClient
	req     *esdv1.ReadAllRequest
	atLeast int64 // events each read must return at least (what --prepare wrote)
}

func (w *readAllWorker) op(ctx context.Context, st *benchStats) error {
	t0 := time.Now()
	var n int64
	inOrder := true
	rs, err := w.cli.ReadAll(ctx, w.req)
	if err == nil {
		n, inOrder, err = drain(rs, positionIncreases)
	}
	return recordRead(ctx, st, t0, n, inOrder, n < w.atLeast, err)
}

// catchUpWorker subscribes to $all from the start and reads up to the
// caught_up marker; positions must increase.
type catchUpWorker struct {
	cli     esdv1.StreamServiceClient
	atLeast int64 // events each catch-up must deliver at least (what --prepare wrote)
}

var subscribeAllFromStart = &esdv1.SubscribeRequest{
	Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}},
	From:   &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}},
}

func (w *catchUpWorker) op(ctx context.Context, st *benchStats) error {
	t0 := time.Now()
	sctx, cancel := context.WithCancel(ctx) // ends the subscription after caught_up
	defer cancel()
	var n int64
	inOrder := true
	ss, err := w.cli.Subscribe(sctx, subscribeAllFromStart)
	for prev := uint64(0); err == nil; {
		var m *esdv1.SubscribeResponse
		if m, err = ss.Recv(); err != nil {
			break
		}
		if m.GetCaughtUp() != nil {
			break
		}
		for _, ev := range m.GetEvents().GetEvents() {
			if n > 0 && ev.GetPosition() <= prev {
				inOrder = false
			}
			prev = ev.GetPosition()
			n++
		}
	}
	return recordRead(ctx, st, t0, n, inOrder, n < w.atLeast, err)
}

// recordRead records a read that began at t0 and delivered n events: its
// latency, and its failure (err), or else whether the events were out of
// order or too few (short).
func recordRead(ctx context.Context, st *benchStats, t0 time.Time, n int64, inOrder, short bool, err error) error {
	st.Lat.Record(time.Since(t0))
	st.Ops++
	st.Events += n
	if err != nil {
		if serr := stopError(ctx, err); serr != nil {
			return serr
		}
		st.AddError(errorKey(err))
		return nil
	}
	if !inOrder {
		st.AddError(errOutOfOrder)
	}
	if short {
		st.AddError(errShortRead)
	}
	return nil
}

// eventsResponse is a chunk of ReadStream or ReadAll.
type eventsResponse[T any] interface {
	*T
	GetEvents() []*esdv1.RecordedEvent
}

func revisionFollows(ev, prev *esdv1.RecordedEvent) bool {
	return ev.GetRevision() == prev.GetRevision()+1
}

func positionIncreases(ev, prev *esdv1.RecordedEvent) bool {
	return ev.GetPosition() > prev.GetPosition()
}

// drain reads a server stream to its end, counting events and checking
// each against the one before with follows. It always reads to the end (or
// the first error), so the stream is finished without cancelling.
func drain[T any, P eventsResponse[T]](rs grpc.ServerStreamingClient[T], follows func(ev, prev *esdv1.RecordedEvent) bool) (n int64, inOrder bool, err error) {
	inOrder = true
	var prev *esdv1.RecordedEvent
	for {
		resp, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return n, inOrder, nil
		}
		if err != nil {
			return n, inOrder, err
		}
		for _, ev := range P(resp).GetEvents() {
			if prev != nil && !follows(ev, prev) {
				inOrder = false
			}
			prev = ev
			n++
		}
	}
}
