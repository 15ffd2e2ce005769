package writer

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/prometheus/client_golang/prometheus"
)

// Tunables; tests change them.
var (
	// maxRoundOps and maxRoundBytes bound what a shard takes in one round.
	maxRoundOps   = 1024
	maxRoundBytes = 32 << 20
	// stateCacheLen bounds the stream states a shard caches.
	stateCacheLen = 1 << 18
	// maxInflightBytes bounds the event bytes the writer holds (queued or
	// being committed); past it, appends get ErrOverloaded.
	maxInflightBytes int64 = 256 << 20
)

// Config configures a Writer.
type Config struct {
	// Shards is the number of shard goroutines; 0 means 1.
	Shards int
	// Clock gives commit times; nil means time.Now. The log keeps commit
	// times non-decreasing in position order whatever the clock says.
	Clock func() time.Time
	// Registerer gets the writer's metrics; nil means they are not
	// registered.
	Registerer prometheus.Registerer
	// QueueLen bounds each shard's queue; 0 means 4096. A full queue
	// answers ErrOverloaded rather than buffering without bound.
	QueueLen int
	// Fence, when set, is asked before every append or delete is decided
	// (in the stream's shard, so in the stream's order of writes) whether
	// the write may go on with its fencing token; its error is the
	// write's answer. nil: writes are never fenced.
	Fence Fencer
}

// Fencer decides whether a write of stream with a fencing token (0:
// none) may go on: the leases. Its errors should have a Reason() string
// method, for the writer's metrics.
type Fencer interface {
	Check(stream string, token uint64) error
}

// AppendOp is one validated append.
type AppendOp struct {
	Stream string
	Expect eslog.Expectation
	Events []eslog.Event
	// ClientIDs counts the events whose id the client chose.
	ClientIDs int
	// DeltaEvents bounds the events a conflict answer lists (the engine's
	// conflict delta; the writer does not use it): 0 means the default,
	// negative means none.
	DeltaEvents int
	// Token is the writer's fencing token (0: none), for Config.Fence.
	Token uint64
}

// DeleteOp is one validated delete.
type DeleteOp struct {
	Stream string
	Expect eslog.Expectation
	Mode   eslog.DeleteMode
	Token  uint64 // the fencing token (0: none), for Config.Fence
}

// AppendResult is the outcome of an append.
type AppendResult struct {
	FirstRevision, LastRevision uint64
	FirstPosition, LastPosition uint64
	CommitTime                  int64 // unix nanoseconds; 0 for no events
	Exists                      bool  // the stream has visible events
}

// DeleteResult is the outcome of a delete.
type DeleteResult struct {
	Position   uint64
	CommitTime int64
}

// Writer is the sharded writer. It is safe for concurrent use.
type Writer struct {
	store  Store
	commit Committer
	clock  func() time.Time
	fence  Fencer // nil: no leases
	shards []*shard
	seed   maphash.Seed
	met    *metrics

	mu      sync.RWMutex // guards closing against sends to the shards
	closing bool

	inflight atomic.Int64 // event bytes accepted and not yet answered
}

// New starts the shards of a writer that decides against store and
// commits through commit.
func New(store Store, commit Committer, cfg Config) *Writer {
	w := &Writer{store: store, commit: commit, clock: cfg.Clock, fence: cfg.Fence, seed: maphash.MakeSeed()}
	if w.clock == nil {
		w.clock = time.Now
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 4096
	}
	for i := range max(cfg.Shards, 1) {
		w.shards = append(w.shards, &shard{
			w:       w,
			idx:     i,
			in:      make(chan *op, cfg.QueueLen),
			quit:    make(chan struct{}),
			stopped: make(chan struct{}),
			cache:   newStateCache(stateCacheLen),
		})
	}
	w.met = newMetrics(cfg.Registerer, w)
	for _, s := range w.shards {
		go s.loop()
	}
	return w
}

// Shards is the number of shards.
func (w *Writer) Shards() int { return len(w.shards) }

// ShardOf is the index of the shard that owns stream.
func (w *Writer) ShardOf(stream string) int { return w.shardOf(stream).idx }

// QueueDepth is the number of requests waiting in shard i's queue.
func (w *Writer) QueueDepth(i int) int { return len(w.shards[i].in) }

// Hold stops shard i once it has committed what was queued before, and
// keeps it stopped (requests queue up behind it) until release is called,
// as an AppendMulti holds it while it commits. Tests of a full queue use
// it (from other packages too, hence exported).
func (w *Writer) Hold(i int) (release func(), err error) {
	p := &lockPart{ready: make(chan partReady, 1), release: make(chan bool, 1)}
	if err := w.send(w.shards[i], &op{kind: opLock, lock: p}); err != nil {
		return nil, err
	}
	<-p.ready
	var once sync.Once
	return func() { once.Do(func() { p.release <- false }) }, nil
}

// Close refuses new requests, lets the shards decide and commit what is
// queued, and waits for them. Requests already committed are answered by
// their handlers once durable; the log must be closed after Close.
func (w *Writer) Close() {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return
	}
	w.closing = true
	w.mu.Unlock()
	for _, s := range w.shards {
		close(s.quit)
	}
	for _, s := range w.shards {
		<-s.stopped
	}
}

func (w *Writer) shardOf(stream string) *shard {
	return w.shards[maphash.String(w.seed, stream)%uint64(len(w.shards))]
}

// send queues o at s without blocking: a full queue is ErrOverloaded.
func (w *Writer) send(s *shard, o *op) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closing {
		return ErrShuttingDown
	}
	select {
	case s.in <- o:
		return nil
	default:
		return ErrOverloaded
	}
}

// Append appends one op and waits until it is durable.
func (w *Writer) Append(ctx context.Context, a AppendOp) (AppendResult, error) {
	start := time.Now()
	o := newAppendOp(a)
	r, err := w.submit(ctx, o)
	if err == nil {
		err = w.settle(ctx, &r)
	} else {
		err = w.refusal(ctx, r, err)
	}
	n := len(a.Events)
	if r.replay {
		n = 0 // stored by the original append
	}
	w.met.observe("append", err, n, start)
	return r.append, err
}

// Delete deletes a stream and waits until it is durable.
func (w *Writer) Delete(ctx context.Context, d DeleteOp) (DeleteResult, error) {
	start := time.Now()
	o := &op{kind: opDelete, stream: d.Stream, expect: d.Expect, mode: d.Mode, token: d.Token, done: make(chan opResult, 1)}
	r, err := w.deletion(ctx, o)
	w.met.observe("delete", err, 0, start)
	return DeleteResult{Position: r.append.FirstPosition, CommitTime: r.append.CommitTime}, err
}

// deletion submits o, a delete or a truncate, and settles its answer.
func (w *Writer) deletion(ctx context.Context, o *op) (opResult, error) {
	r, err := w.submit(ctx, o)
	if err == nil {
		err = w.settle(ctx, &r)
	} else {
		err = w.refusal(ctx, r, err)
	}
	return r, err
}

// Truncate hides the revisions of stream below before, for good, as a
// scavenge does before removing what the retention limits hide: capped
// at the stream's head, so that it still exists (eslog.DeleteTruncate: a
// change of its state, no event). It reports whether it wrote: not when
// the stream has no visible events or is truncated as far already. It
// waits until the write is durable. A ctx that ends first leaves the
// truncate queued: it may still be written.
func (w *Writer) Truncate(ctx context.Context, stream string, before uint64) (bool, error) {
	start := time.Now()
	o := &op{kind: opDelete, stream: stream, mode: eslog.DeleteTruncate, truncate: before, done: make(chan opResult, 1)}
	r, err := w.deletion(ctx, o)
	w.met.observe("truncate", err, 0, start)
	return err == nil && r.append.CommitTime != 0, err // only its own write has one
}

func (w *Writer) submit(ctx context.Context, o *op) (opResult, error) {
	if err := w.reserve(int64(o.size)); err != nil {
		return opResult{}, err
	}
	if err := w.send(w.shardOf(o.stream), o); err != nil {
		w.inflight.Add(-int64(o.size))
		return opResult{}, err
	}
	select {
	case r := <-o.done:
		return r, r.err
	case <-ctx.Done():
		return opResult{}, ctx.Err()
	}
}

// reserve takes n bytes of the in-flight budget.
func (w *Writer) reserve(n int64) error {
	if w.inflight.Add(n) > maxInflightBytes && n > 0 {
		w.inflight.Add(-n)
		return ErrOverloaded
	}
	return nil
}

// answer gives o its result and returns its bytes to the budget: the
// shard holds nothing of o after this.
func (w *Writer) answer(o *op, r opResult) {
	w.inflight.Add(-int64(o.size)) // first: the caller may look at the budget once answered
	o.done <- r
}

// refusal returns err, a refusal of r's op judged against the state of
// its stream (tombstoned, a wrong expected revision, not found, deleted),
// once that state is durable (r's ticket: a write of the same round;
// waitPos: an earlier one): the write that made it may still be on its
// way to disk, and if that write fails (a full disk), the refusal rested
// on a state that never was, and the answer is the storage failure. It
// also keeps a client from reading, after a conflict, a head older than
// the one it was refused for: reads see published positions only.
func (w *Writer) refusal(ctx context.Context, r opResult, err error) error {
	r.replay = false
	if serr := w.settle(ctx, &r); serr != nil {
		return serr
	}
	return err
}

// settle waits until what r reports is durable and visible.
func (w *Writer) settle(ctx context.Context, r *opResult) error {
	if r.ticket != nil {
		if err := wait(ctx, r.ticket); err != nil {
			return err
		}
	}
	if r.waitPos > 0 {
		if err := w.store.WaitPublished(ctx, r.waitPos); err != nil {
			return err
		}
	}
	if r.replay { // the original commit time, as the original answer had it
		t, err := w.store.CommitTime(r.append.FirstPosition)
		switch {
		case errors.Is(err, eslog.ErrScavenged):
			// The stream was deleted and its events scavenged; their ids
			// are kept, so the retry is still answered as the original
			// append was, less the commit time, which was in the record.
			t = 0
		case err != nil:
			return err
		}
		r.append.CommitTime = t
	}
	return nil
}

type opKind uint8

const (
	opAppend opKind = iota
	opDelete
	opLock // an AppendMulti locking this shard
)

// op is a request to a shard.
type op struct {
	kind      opKind
	stream    string
	expect    eslog.Expectation
	events    []eslog.Event
	clientIDs int
	token     uint64 // fencing token; 0: none
	mode      eslog.DeleteMode
	truncate  uint64 // DeleteTruncate's first visible revision
	size      int
	lock      *lockPart
	done      chan opResult // capacity 1: answering never blocks
}

func newAppendOp(a AppendOp) *op {
	size := 0
	for i := range a.Events {
		size += len(a.Events[i].Data) + len(a.Events[i].Metadata)
	}
	return &op{kind: opAppend, stream: a.Stream, expect: a.Expect, events: a.Events, clientIDs: a.ClientIDs,
		token: a.Token, size: size, done: make(chan opResult, 1)}
}

// opResult is a shard's answer. Success is final only after settle.
type opResult struct {
	append  AppendResult
	ticket  Durable // the commit to wait for; nil if none
	waitPos uint64  // a position to wait for (retries, pure checks)
	replay  bool    // an idempotent retry: fetch the original commit time
	err     error
}
