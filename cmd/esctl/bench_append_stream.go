package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/status"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The append workload over AppendStream (--streaming): each client opens
// one AppendStream call for the run and keeps up to --inflight appends in
// flight on it, at most one per stream (so that it always knows the
// revision to expect), measuring each append from its send to its answer.

// streamAppendWorker is an appendWorker whose appends go through one
// AppendStream call.
type streamAppendWorker struct {
	*appendWorker
	inflight int
	call     esdv1.StreamService_AppendStreamClient
	cancel   context.CancelFunc // ends the call
	answers  chan streamAnswer  // from the receiving goroutine; closed when the call ends
	recvErr  error              // why the call ended; set before answers is closed
	msg      esdv1.AppendStreamRequest
	pending  map[uint64]sentAppend // by correlation id
	busy     []bool                // per stream: an append in flight
	seq      uint64
}

type streamAnswer struct {
	resp *esdv1.AppendStreamResponse
	at   time.Time
}

type sentAppend struct {
	k  int // the stream
	at time.Time
}

// newStreamAppendWorker opens client i's call, which lasts until
// b.close.
func (b *bench) newStreamAppendWorker(ctx context.Context, i int) (*streamAppendWorker, error) {
	w := &streamAppendWorker{
		appendWorker: b.newAppendWorker(i),
		inflight:     b.o.inflight,
		answers:      make(chan streamAnswer, b.o.inflight),
		pending:      make(map[uint64]sentAppend),
	}
	w.busy = make([]bool, len(w.names))
	w.msg.Append = w.req
	ctx, w.cancel = context.WithCancel(ctx)
	call, err := w.cli.AppendStream(ctx)
	if err != nil {
		w.cancel()
		return nil, err
	}
	w.call = call
	b.closers = append(b.closers, w.close)
	go w.receive()
	return w, nil
}

// receive hands the answers to the worker, stamped with their arrival.
func (w *streamAppendWorker) receive() {
	defer close(w.answers)
	for {
		resp, err := w.call.Recv()
		if err != nil {
			w.recvErr = err
			return
		}
		w.answers <- streamAnswer{resp: resp, at: time.Now()}
	}
}

// close ends the call and waits for the receiving goroutine.
func (w *streamAppendWorker) close() {
	w.cancel()
	for range w.answers { // until the receiver is gone
	}
}

func (w *streamAppendWorker) op(ctx context.Context, st *benchStats) error {
	k := -1
	for {
		if len(w.pending) < w.inflight {
			if k = w.free(); k >= 0 {
				break
			}
		}
		if err := w.await(ctx, st); err != nil {
			return err
		}
	}
	w.prepare(k)
	w.seq++
	var id [8]byte
	binary.BigEndian.PutUint64(id[:], w.seq)
	w.msg.CorrelationId = id[:]
	w.pending[w.seq] = sentAppend{k: k, at: time.Now()}
	w.busy[k] = true
	if err := w.call.Send(&w.msg); err != nil { // Send encodes w.msg before it returns: it may be reused
		return w.ended(ctx)
	}
	return nil
}

// finish waits for the answers to every append in flight, so that each
// is counted in the phase that sent it.
func (w *streamAppendWorker) finish(ctx context.Context, st *benchStats) error {
	for len(w.pending) > 0 {
		if err := w.await(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// free picks the next stream, round-robin, with no append in flight; -1
// if there is none.
func (w *streamAppendWorker) free() int {
	for range w.names {
		k := w.cur
		w.cur = (w.cur + 1) % len(w.names)
		if !w.busy[k] {
			return k
		}
	}
	return -1
}

// await takes one answer and records it.
func (w *streamAppendWorker) await(ctx context.Context, st *benchStats) error {
	var a streamAnswer
	var ok bool
	select {
	case a, ok = <-w.answers:
		if !ok {
			return w.ended(ctx)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	id := a.resp.GetCorrelationId()
	if len(id) != 8 {
		return fmt.Errorf("AppendStream answered correlation id %x, which no request had", id)
	}
	seq := binary.BigEndian.Uint64(id)
	p, ok := w.pending[seq]
	if !ok {
		return fmt.Errorf("AppendStream answered correlation id %d twice, or never sent", seq)
	}
	delete(w.pending, seq)
	w.busy[p.k] = false
	st.Lat.Record(a.at.Sub(p.at))
	st.Ops++
	var err error
	if e := a.resp.GetError(); e != nil {
		err = status.ErrorProto(e)
	}
	return w.answered(ctx, st, p.k, a.resp.GetSuccess(), err)
}

// ended returns why the call ended, which stops the run: an append in
// flight has no answer. It waits for the receiving goroutine to say.
func (w *streamAppendWorker) ended(ctx context.Context) error {
	for range w.answers { // until the receiver is gone
	}
	err := w.recvErr
	if errors.Is(err, io.EOF) {
		err = errors.New("AppendStream ended with appends unanswered")
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("AppendStream: %w", err)
}
