package main

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The contention workload: all clients append to a few shared streams.

// contentionWorker appends to a few shared streams. Each append expects the
// head the worker last knew; a conflict teaches it the new head from the
// error detail and it retries the same events (same ids) at once.
type contentionWorker struct {
	cli      esdv1.StreamServiceClient
	req      *esdv1.AppendRequest
	names    []string
	head     []int64 // per key: the head last seen; -1 = no stream
	cur      int
	retrying bool // the current events failed and are being sent again
	exact    esdv1.AppendRequest_Exact
	noStream esdv1.AppendRequest_NoStream
	ids      *idGen
}

func (b *bench) newContentionWorker(i int) *contentionWorker {
	w := &contentionWorker{
		cli:      b.client(i),
		req:      &esdv1.AppendRequest{Events: b.newEvents(b.o.batch)},
		names:    make([]string, b.o.keys),
		head:     make([]int64, b.o.keys),
		cur:      i % b.o.keys, // spread the clients' first writes over the keys
		noStream: esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}},
		ids:      b.newIDGen(),
	}
	if d := b.o.delta; d >= 0 {
		w.req.ConflictDeltaEvents = proto.Uint32(uint32(d))
	}
	for k := range w.names {
		w.names[k] = b.o.prefix + "-" + strconv.Itoa(k)
		w.head[k] = -1
	}
	return w
}

func (w *contentionWorker) op(ctx context.Context, st *benchStats) error {
	k := w.cur
	w.req.Stream = w.names[k]
	if w.head[k] < 0 {
		w.req.ExpectedRevision = &w.noStream
	} else {
		w.exact.Exact = uint64(w.head[k])
		w.req.ExpectedRevision = &w.exact
	}
	if !w.retrying {
		w.ids.fill(w.req.Events)
	}

	t0 := time.Now()
	resp, err := w.cli.Append(ctx, w.req)
	st.Lat.Record(time.Since(t0))
	st.Ops++
	if err == nil {
		n := uint64(len(w.req.Events))
		st.Successes++
		st.Events += int64(n)
		if want := uint64(w.head[k] + 1); resp.GetFirstRevision() != want || resp.GetLastRevision() != want+n-1 {
			st.AddError(errRevisionMismatch)
		}
		w.head[k] = int64(resp.GetLastRevision())
		w.retrying = false
		w.cur = (w.cur + 1) % len(w.names)
		return nil
	}
	if serr := stopError(ctx, err); serr != nil {
		return serr
	}
	// Retry the same events: after a conflict nothing was written; after
	// another failure the same ids make the retry idempotent.
	w.retrying = true
	if exists, head, ok := learnHead(ctx, w.cli, st, w.req.Stream, err); ok {
		st.Conflicts++
		st.Retries++
		w.head[k] = -1
		if exists {
			w.head[k] = int64(head)
		}
		return nil
	}
	st.AddError(errorKey(err))
	return nil
}
