package main

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The append workload: every client appends to streams of its own.

// appendWorker appends to its own streams (index ≡ client mod clients),
// round-robin, expecting the exact revision it tracks for each.
type appendWorker struct {
	cli      esdv1.StreamServiceClient
	req      *esdv1.AppendRequest
	names    []string
	next     []uint64 // per stream: the revision its next event gets; 0 = never written, expect no_stream
	cur      int
	exact    esdv1.AppendRequest_Exact
	noStream esdv1.AppendRequest_NoStream
	ids      *idGen // nil: the server makes ids
}

func (b *bench) newAppendWorker(i int) *appendWorker {
	w := &appendWorker{
		cli:      b.client(i),
		req:      &esdv1.AppendRequest{Events: b.newEvents(b.o.batch)},
		noStream: esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}},
		ids:      b.newIDGen(),
	}
	for n := i; n < b.o.streams; n += b.o.clients {
		w.names = append(w.names, b.o.prefix+"-"+strconv.Itoa(n))
	}
	if len(w.names) == 0 { // more clients than streams: share by wrapping around
		w.names = []string{b.o.prefix + "-" + strconv.Itoa(i%b.o.streams)}
	}
	w.next = make([]uint64, len(w.names))
	return w
}

func (w *appendWorker) op(ctx context.Context, st *benchStats) error {
	k := w.cur
	w.cur = (w.cur + 1) % len(w.names)
	w.prepare(k)
	t0 := time.Now()
	resp, err := w.cli.Append(ctx, w.req)
	st.Lat.Record(time.Since(t0))
	st.Ops++
	return w.answered(ctx, st, k, resp, err)
}

// prepare sets w.req up as the next append to stream k: the revision
// expected, fresh ids.
func (w *appendWorker) prepare(k int) {
	w.req.Stream = w.names[k]
	if w.next[k] == 0 {
		w.req.ExpectedRevision = &w.noStream
	} else {
		w.exact.Exact = w.next[k] - 1
		w.req.ExpectedRevision = &w.exact
	}
	w.ids.fill(w.req.Events)
}

// answered records the answer to an append to stream k (of the batch
// size of w.req) and learns the stream's next revision from it.
func (w *appendWorker) answered(ctx context.Context, st *benchStats, k int, resp *esdv1.AppendResponse, err error) error {
	if err != nil {
		if serr := stopError(ctx, err); serr != nil {
			return serr
		}
		st.AddError(errorKey(err))
		// After a conflict, go on from the head the server reported. After
		// any other failure the write may or may not have happened: the
		// next call on this stream finds out through a conflict.
		if exists, head, ok := learnHead(ctx, w.cli, st, w.names[k], err); ok {
			w.next[k] = 0
			if exists {
				w.next[k] = head + 1
			}
		}
		return nil
	}
	n := uint64(len(w.req.Events))
	if n == 0 { // --batch 0: a pure condition check, nothing written
		return nil
	}
	st.Events += int64(n)
	if resp.GetFirstRevision() != w.next[k] || resp.GetLastRevision() != w.next[k]+n-1 {
		st.AddError(errRevisionMismatch)
	}
	w.next[k] = resp.GetLastRevision() + 1
	return nil
}

// learnHead finds a stream's head after a failed append: from the
// WrongExpectedRevision detail of a conflict, or, should the detail be
// missing, from GetStream. ok is false for failures that are not conflicts.
func learnHead(ctx context.Context, cli esdv1.StreamServiceClient, st *benchStats, stream string, err error) (exists bool, head uint64, ok bool) {
	s := status.Convert(err)
	if errorReason(s) != reasonWrongExpectedRevision {
		return false, 0, false
	}
	if d := wrongRevision(s); d != nil {
		return d.GetStreamExists(), d.GetActualHead(), true
	}
	st.AddError(errMissingDetail)
	resp, gerr := cli.GetStream(ctx, &esdv1.GetStreamRequest{Stream: stream})
	if gerr != nil {
		st.AddError(errorKey(gerr))
		return false, 0, false
	}
	return resp.GetInfo().GetExists(), resp.GetInfo().GetHead(), true
}
