package server

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/engine"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/zap"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// AppendStream (stream_service.proto has the contract) runs each request
// it reads as Append would, concurrently across streams and one after
// another within a stream, and answers each when it is done.
//
// One call has these goroutines:
//   - the handler's (serve): sends the answers, in the order they are
//     done, and decides when the call ends;
//   - a reader (read): reads requests while the call holds fewer than
//     maxInflight appends and maxInflightBytes bytes, and hands each to
//     its stream's queue. Not reading is the flow control: gRPC stops
//     returning window to the client, whose sends then block;
//   - a worker per stream with requests queued (work): carries them out
//     one at a time with engine.Append, in request order, so that each is
//     decided against what the one before it left, exactly as unary calls
//     made in turn. Workers of different streams run at once; the writer
//     takes what they queue into its group commits.
//
// An append is "in flight" from its read to its answer's send; the bounds
// hold over that whole time, so the answers waiting to be sent (the
// answers channel, of capacity maxInflight: a worker never blocks on it)
// are bounded too. A client that reads no answers stalls the sends, then
// the reader: the server holds at most maxInflight appends for it, plus
// what gRPC's write quota lets wait.
//
// Appends run under the RPC's own context (rpcContext): a client that
// goes cancels the ones in flight, which are then written or not as a
// cancelled Append is, and never answered; at shutdown they finish and are
// answered before the call ends with SHUTTING_DOWN. A request the reader
// hands over after the call stopped taking them at shutdown (it was
// between its read and take then) is answered SHUTTING_DOWN at once,
// before the call ends: every request taken gets its answer. Only once
// serve has ended the call (end: nothing in flight) is a request that the
// reader still hands over dropped; it is then as one that arrived after
// the end, and the handler's return makes further reads fail.

// appendStreamConfig bounds one AppendStream call (docs/api.md).
type appendStreamConfig struct {
	maxInflight      int   // appends read and not yet answered; 0 means 256
	maxInflightBytes int64 // their bytes, from which no more is read; 0 means 16 MiB
	// onRead, when set, is called after each request read, with the
	// call's appends in flight and their bytes (for tests).
	onRead func(inflight int, bytes int64)
	// beforeTake and afterTake, when set, are called with each request
	// read, before and after take; onStop, by serve once the call takes
	// no more requests because the server stops (for tests).
	beforeTake func(m *esdv1.AppendStreamRequest)
	afterTake  func(m *esdv1.AppendStreamRequest, taken bool)
	onStop     func()
}

// Defaults of appendStreamConfig, and the longest correlation id.
const (
	appendStreamMaxInflight      = 256
	appendStreamMaxInflightBytes = 16 << 20
	maxCorrelationIDBytes        = 256
)

func (c appendStreamConfig) withDefaults() appendStreamConfig {
	if c.maxInflight <= 0 {
		c.maxInflight = appendStreamMaxInflight
	}
	if c.maxInflightBytes <= 0 {
		c.maxInflightBytes = appendStreamMaxInflightBytes
	}
	return c
}

func (s *streamService) AppendStream(stream grpc.BidiStreamingServer[esdv1.AppendStreamRequest, esdv1.AppendStreamResponse]) error {
	c := &appendCall{
		s:       s,
		stream:  stream,
		cfg:     s.as,
		rpc:     rpcContext(stream.Context()),
		who:     principalFrom(stream.Context()),
		answers: make(chan appendAnswer, s.as.maxInflight),
		readEnd: make(chan error, 1),
		room:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		queues:  make(map[string]*appendQueue),
	}
	go c.read() // ends when it has nothing more to read, or once the call is over
	return c.serve()
}

// appendCall is one AppendStream call.
type appendCall struct {
	s      *streamService
	stream grpc.BidiStreamingServer[esdv1.AppendStreamRequest, esdv1.AppendStreamResponse]
	cfg    appendStreamConfig
	rpc    context.Context // the RPC's own: ends when the client goes, not at shutdown
	who    *auth.Principal // the caller; nil: security off

	answers chan appendAnswer // done appends, to send; capacity maxInflight
	readEnd chan error        // the reader's last word: io.EOF, a Recv error, a protocol violation
	room    chan struct{}     // capacity 1: an append's hold shrank, the reader may read again
	quit    chan struct{}     // closed when serve returns

	mu       sync.Mutex
	inflight int   // appends read and not yet answered
	bytes    int64 // what they hold: each its request's size, then its answer's
	closed   bool  // no more requests are taken
	stopped  bool  // closed because the server stops: a request read still gets an answer
	ended    bool  // the call is over (serve ends it or it aborted): nothing more is answered
	queues   map[string]*appendQueue
	workers  sync.WaitGroup
}

// appendQueue holds a stream's requests not yet started, in request
// order; a worker runs while it is in the call's queues.
type appendQueue struct {
	items []appendItem
}

type appendItem struct {
	id   []byte
	req  *esdv1.AppendRequest
	size int64
}

type appendAnswer struct {
	resp *esdv1.AppendStreamResponse
	size int64 // its share of appendCall.bytes
}

// serve sends answers until the call is over, and returns its status.
func (c *appendCall) serve() error {
	defer close(c.quit)
	stopping := c.s.eng.Stopping().Done()
	var end error   // the call's status once everything read is answered
	ending := false // nothing more is read
	for {
		if ending && c.end() {
			c.finish()
			return end
		}
		select {
		case a := <-c.answers:
			if err := c.stream.Send(a.resp); err != nil {
				c.abort()
				return err
			}
			c.release(a.size)
		case err := <-c.readEnd:
			c.close()
			ending = true
			switch {
			case errors.Is(err, io.EOF): // the client is done sending: OK once all is answered
			case c.rpc.Err() != nil:
				// The client went, or gRPC ended the call itself (a message
				// too large: RESOURCE_EXHAUSTED; one it could not decompress).
				c.abort()
				return err
			default: // a protocol violation: an undecodable message, a long correlation id
				end = err
			}
		case <-stopping:
			// The server stops: read no more, answer what was read (the
			// writer has committed what it queued), then say why it ended.
			stopping = nil
			if !ending {
				c.stop()
				ending, end = true, engine.ErrShuttingDown
				if c.cfg.onStop != nil {
					c.cfg.onStop()
				}
			}
		case <-c.rpc.Done():
			c.abort()
			return c.rpc.Err()
		}
	}
}

// read reads requests while the call has room, and hands them out.
func (c *appendCall) read() {
	for c.waitRoom() {
		m := &esdv1.AppendStreamRequest{}
		lm := lenientMessage{msg: m}
		err := c.stream.RecvMsg(&lm)
		var le *limitError
		switch {
		case err != nil: // io.EOF, or the call is over (gRPC has sent its status)
		case errors.As(lm.err, &le):
			err = le.counted() // refused before decoding (prescan.go); the caller is authenticated
		case lm.err != nil:
			var v validator
			badDecode(&v, m, lm.err)
			err = v.err()
		case len(m.GetCorrelationId()) > maxCorrelationIDBytes:
			var v validator
			v.bad(reasonInvalidArgument, "correlation_id", "correlation id of %d bytes, at most %d", len(m.GetCorrelationId()), maxCorrelationIDBytes)
			err = v.err()
		}
		if err != nil {
			c.readEnd <- err
			return
		}
		if c.cfg.beforeTake != nil {
			c.cfg.beforeTake(m)
		}
		taken := c.take(m, int64(lm.size))
		if c.cfg.afterTake != nil {
			c.cfg.afterTake(m, taken)
		}
		if !taken {
			return
		}
	}
}

// waitRoom waits until the call holds less than its bounds; false: the
// call takes no more requests.
func (c *appendCall) waitRoom() bool {
	for {
		c.mu.Lock()
		closed := c.closed
		ok := c.inflight < c.cfg.maxInflight && c.bytes < c.cfg.maxInflightBytes
		c.mu.Unlock()
		switch {
		case closed:
			return false
		case ok:
			return true
		}
		select {
		case <-c.room:
		case <-c.quit:
			return false
		}
	}
}

// take queues m behind the requests of its stream, starting the stream's
// worker if it has none; false: the call takes no more requests. m was
// read, so it must be answered unless the call is over: if the server
// stops (the call was closed by stop, and serve has not ended it yet), m
// is answered SHUTTING_DOWN at once and counted in flight until that
// answer is sent, which serve waits for before it ends the call.
func (c *appendCall) take(m *esdv1.AppendStreamRequest, size int64) bool {
	it := appendItem{id: m.GetCorrelationId(), req: m.GetAppend(), size: size}
	name := it.req.GetStream()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		if c.stopped && !c.ended {
			c.refuse(it.id)
		}
		return false
	}
	c.inflight++
	c.bytes += it.size
	c.s.asMet.inflight.Inc()
	if q := c.queues[name]; q != nil {
		q.items = append(q.items, it)
	} else {
		q = &appendQueue{items: []appendItem{it}}
		c.queues[name] = q
		c.workers.Add(1)
		go c.work(name, q)
	}
	if c.cfg.onRead != nil {
		c.cfg.onRead(c.inflight, c.bytes)
	}
	return true
}

// refuse answers a request read after the call stopped taking them at
// shutdown: UNAVAILABLE/SHUTTING_DOWN, as Append would answer it then.
// The answer is in flight until sent, like any other. c.mu is held.
//
// The answers channel has room: the reader read the request only once
// inflight < maxInflight (waitRoom; only take adds to inflight), and every
// answer waiting in the channel is counted in inflight.
func (c *appendCall) refuse(id []byte) {
	resp := &esdv1.AppendStreamResponse{CorrelationId: id,
		Result: &esdv1.AppendStreamResponse_Error{Error: c.errorStatus(engine.ErrShuttingDown)}}
	size := int64(proto.Size(resp))
	c.inflight++
	c.bytes += size
	c.s.asMet.inflight.Inc()
	if c.cfg.onRead != nil {
		c.cfg.onRead(c.inflight, c.bytes)
	}
	c.answers <- appendAnswer{resp: resp, size: size} // never blocks (above)
}

// work carries out a stream's requests in order until its queue is empty.
func (c *appendCall) work(name string, q *appendQueue) {
	defer c.workers.Done()
	for {
		c.mu.Lock()
		if len(q.items) == 0 {
			delete(c.queues, name)
			c.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items[0] = appendItem{}
		q.items = q.items[1:]
		c.mu.Unlock()
		c.answers <- c.append(it) // never blocks: at most maxInflight answers exist
	}
}

// append carries out one request as Append does and makes its answer.
func (c *appendCall) append(it appendItem) appendAnswer {
	resp := &esdv1.AppendStreamResponse{CorrelationId: it.id}
	var (
		op  engine.AppendOp
		err error
		res engine.AppendResult
	)
	if c.who != nil && !c.who.Allowed(auth.Append, it.req.GetStream()) {
		// Answered in band like any failed append: the call goes on.
		err = c.s.deny(auth.Append)
	} else {
		op, err = validateAppend(c.s.lim, it.req)
	}
	switch {
	case err != nil:
	case c.rpc.Err() != nil: // the client is gone: start nothing more (the answer is never sent)
		err = c.rpc.Err()
	default:
		res, err = c.s.admittedAppend(c.rpc, op)
	}
	if err != nil {
		resp.Result = &esdv1.AppendStreamResponse_Error{Error: c.errorStatus(err)}
	} else {
		resp.Result = &esdv1.AppendStreamResponse_Success{Success: appendResponse(res)}
	}
	size := int64(proto.Size(resp))
	c.mu.Lock()
	c.bytes += size - it.size // the request is dropped; the answer waits to be sent
	c.mu.Unlock()
	if size < it.size {
		c.wake()
	}
	return appendAnswer{resp: resp, size: size}
}

// errorStatus is the status Append would fail with for err.
func (c *appendCall) errorStatus(err error) *spb.Status {
	st := toStatus(err)
	if status.Code(st) == codes.Internal {
		c.s.lg.Error("request failed", zap.String("method", esdv1.StreamService_AppendStream_FullMethodName), zap.Error(err))
	}
	return status.Convert(st).Proto()
}

// release returns a sent answer's hold.
func (c *appendCall) release(size int64) {
	c.mu.Lock()
	c.inflight--
	c.bytes -= size
	c.mu.Unlock()
	c.s.asMet.inflight.Dec()
	c.wake()
}

func (c *appendCall) wake() {
	select {
	case c.room <- struct{}{}:
	default:
	}
}

// end ends the call if nothing is in flight; true: it is over, and a
// request the reader still hands over is not answered (take). Deciding
// under c.mu orders it with take: a request taken before is answered
// first.
func (c *appendCall) end() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight == 0 {
		c.ended = true
	}
	return c.ended
}

// close makes the call take no more requests.
func (c *appendCall) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// stop makes the call take no more requests because the server stops: a
// request read from now on is answered SHUTTING_DOWN (take).
func (c *appendCall) stop() {
	c.mu.Lock()
	c.closed, c.stopped = true, true
	c.mu.Unlock()
}

// abort ends the call with appends perhaps in flight: the RPC's context
// has ended (or a send failed, which only happens then), so they end
// soon, unanswered, and so does a request read from now on.
func (c *appendCall) abort() {
	c.mu.Lock()
	c.closed, c.ended = true, true
	c.mu.Unlock()
	c.finish()
}

// finish waits for the workers and returns what the call still holds.
func (c *appendCall) finish() {
	c.workers.Wait()
	c.mu.Lock()
	c.s.asMet.inflight.Sub(float64(c.inflight))
	c.inflight, c.bytes = 0, 0
	c.mu.Unlock()
}
