package client

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// WithPipelining turns the pipelining of appends on (the default) or
// off. With it, concurrent Append calls share one long-lived AppendStream
// call instead of a unary call each, which costs the client and the
// server less per append; results and errors are those of the unary
// call. A server without AppendStream gets unary calls. Pipelined
// appends pass no unary interceptor (WithDialOptions): stream
// interceptors see the one AppendStream call instead.
func WithPipelining(on bool) Option { return func(o *options) { o.noPipeline = !on } }

// Appends at least this large, or with this many events, go unary: the
// server reads no more of an AppendStream call while its appends hold
// 16 MiB, and one large append would hold back the small ones behind it.
const (
	pipelineMaxBytes  = 1 << 20
	pipelineMaxEvents = 1000
)

// pipeline carries appends over one AppendStream call at a time, opened
// on first use and again after it breaks.
type pipeline struct {
	c       *Client
	mu      sync.Mutex
	cur     *appendCall
	opening chan struct{}      // closed when the open in progress is done
	abort   context.CancelFunc // of the open in progress, for close
	off     bool               // the server has no AppendStream, or the client closed
	wg      sync.WaitGroup
}

// appendCall is one AppendStream call with its sender and receiver.
type appendCall struct {
	call   esdv1.StreamService_AppendStreamClient
	cancel context.CancelFunc
	sendq  chan *pendingAppend
	done   chan struct{} // closed when the call is over

	mu       sync.Mutex
	inflight map[uint64]*pendingAppend
	next     uint64
	broken   bool
}

type pendingAppend struct {
	corr    uint64
	req     *esdv1.AppendRequest
	answer  chan *esdv1.AppendStreamResponse // nil: the call broke first
	dropped atomic.Bool                      // its caller is gone: not worth sending
}

// pipelined reports whether req may go over the pipeline.
func pipelined(req *esdv1.AppendRequest) bool {
	return len(req.GetEvents()) < pipelineMaxEvents && proto.Size(req) < pipelineMaxBytes
}

// errUnpiped says an append could not go over the pipeline (no
// AppendStream, or the call broke before answering it): it is to run
// unary. Since its events carry ids, running it again after a broken
// call never writes it twice.
var errUnpiped = errors.New("client: append not pipelined")

// append runs one attempt of req over the pipeline: it returns what
// Append would, or errUnpiped.
func (p *pipeline) append(ctx context.Context, req *esdv1.AppendRequest) (*esdv1.AppendResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // as a unary call does: nothing sent
	}
	ac := p.call(ctx)
	if ac == nil {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errUnpiped
	}
	pa := &pendingAppend{req: req, answer: make(chan *esdv1.AppendStreamResponse, 1)}
	if !ac.add(pa) {
		return nil, errUnpiped
	}
	select {
	case ac.sendq <- pa:
	case <-ac.done: // receive hands it back
	case <-ctx.Done():
		ac.drop(pa)
		return nil, ctx.Err()
	}
	select {
	case a := <-pa.answer:
		if a == nil {
			return nil, errUnpiped
		}
		if st := a.GetError(); st != nil {
			return nil, status.ErrorProto(st)
		}
		return a.GetSuccess(), nil
	case <-ctx.Done():
		ac.drop(pa) // a late answer finds no one and is dropped
		return nil, ctx.Err()
	}
}

// call returns the open call, opening one if there is none; nil when the
// pipeline is off, the open failed, or ctx ended first.
func (p *pipeline) call(ctx context.Context) *appendCall {
	for tried := false; ; tried = true {
		p.mu.Lock()
		if p.off {
			p.mu.Unlock()
			return nil
		}
		if ac := p.cur; ac != nil && !ac.isBroken() {
			p.mu.Unlock()
			return ac
		}
		if tried && p.opening == nil {
			p.mu.Unlock()
			return nil // the open this caller waited for failed at once
		}
		if p.opening == nil {
			p.opening = make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background()) // the call outlives the append that opens it
			p.abort = cancel
			p.wg.Go(func() { p.open(ctx, cancel) })
		}
		opening := p.opening
		p.mu.Unlock()
		select {
		case <-opening:
		case <-ctx.Done():
			return nil
		}
	}
}

// open opens a call; it runs apart from the appends that wait for it, so
// that each can give up when its context ends.
func (p *pipeline) open(ctx context.Context, cancel context.CancelFunc) {
	call, err := p.c.streams.AppendStream(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.opening)
	p.opening, p.abort = nil, nil
	if err != nil || p.off {
		cancel()
		if refused(err) {
			p.off = true
		}
		return
	}
	ac := &appendCall{call: call, cancel: cancel, sendq: make(chan *pendingAppend, 256), done: make(chan struct{}), inflight: map[uint64]*pendingAppend{}}
	p.cur = ac
	p.wg.Go(ac.send)
	p.wg.Go(func() {
		if refused(ac.receive()) {
			p.mu.Lock()
			p.off = true
			p.mu.Unlock()
		}
	})
}

// refused reports whether err says the server has no AppendStream (or
// refuses it to this client): the pipeline then stays off.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unimplemented, codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// close ends the call and waits for its goroutines.
func (p *pipeline) close() {
	p.mu.Lock()
	p.off = true
	ac := p.cur
	if p.abort != nil {
		p.abort()
	}
	p.mu.Unlock()
	if ac != nil {
		ac.cancel()
	}
	p.wg.Wait()
}

func (ac *appendCall) add(pa *pendingAppend) bool {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.broken {
		return false
	}
	ac.next++
	pa.corr = ac.next
	ac.inflight[pa.corr] = pa
	return true
}

func (ac *appendCall) drop(pa *pendingAppend) {
	pa.dropped.Store(true)
	ac.mu.Lock()
	delete(ac.inflight, pa.corr)
	ac.mu.Unlock()
}

func (ac *appendCall) isBroken() bool {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	return ac.broken
}

// send sends the queued appends in order until the call is over.
func (ac *appendCall) send() {
	var corr [8]byte
	for {
		select {
		case <-ac.done:
			return
		case pa := <-ac.sendq:
			if pa.dropped.Load() {
				continue
			}
			binary.BigEndian.PutUint64(corr[:], pa.corr)
			if err := ac.call.Send(&esdv1.AppendStreamRequest{CorrelationId: corr[:], Append: pa.req}); err != nil {
				// The call is over; receive learns why and hands the
				// appends in flight back.
				<-ac.done
				return
			}
		}
	}
}

// receive hands each answer to its append until the call ends, then
// hands the appends left unanswered back to their callers (to run unary)
// and returns the call's error.
func (ac *appendCall) receive() error {
	defer ac.cancel()
	for {
		m, err := ac.call.Recv()
		if err != nil {
			ac.mu.Lock()
			ac.broken = true
			left := ac.inflight
			ac.inflight = nil
			ac.mu.Unlock()
			close(ac.done)
			for _, pa := range left {
				pa.answer <- nil
			}
			return err
		}
		id := m.GetCorrelationId()
		if len(id) != 8 {
			continue
		}
		ac.mu.Lock()
		pa := ac.inflight[binary.BigEndian.Uint64(id)]
		delete(ac.inflight, binary.BigEndian.Uint64(id))
		ac.mu.Unlock()
		if pa != nil {
			pa.answer <- m
		}
	}
}
