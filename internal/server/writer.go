package server

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
)

// The writer serializes appends per stream and decides expected revisions
// in memory. Its invariants:
//
//  1. One shard goroutine owns each stream (hash(name) % N). It alone
//     decides the stream's expected revisions, idempotent retries and
//     deletes, from a cache of stream states it keeps current; a state is
//     read from Pebble only on a cache miss.
//  2. A shard takes every request already waiting in its queue (never
//     waiting for more), decides them in arrival order against the cached
//     states plus what the earlier requests of the same round will write,
//     and hands the round to the log as one commit. The log assigns
//     positions under one lock, so positions are gap-free and in commit
//     order, and the log publishes a position only when every position up
//     to it is durable. The shard does not wait for the fsync: requests
//     pile up behind the one in flight and the next fsync serves them all
//     (group commit, across shards too, since Pebble syncs its WAL once
//     for every batch written meanwhile).
//  3. A request is answered only after its commit is durable and
//     published (the handler waits on the commit's ticket).
//  4. A decision made against a predicted state is kept only if that
//     prediction came true: when the log refuses a write (an event id
//     stored on another stream, which the shard cannot see alone), the
//     requests decided after it on the same stream are decided again.
//
// AppendMulti spans shards. Its coordinator (the handler goroutine) sends
// a lock request to each shard involved, one at a time in shard index
// order, and waits for each to answer before the next. A locked shard has
// committed everything queued before the lock, decides the entries for
// its streams, answers with their writes and blocks until the
// coordinator reports the outcome. When all are locked, the coordinator
// commits every write as one atomic Pebble batch. Locks taken in index
// order cannot deadlock: a coordinator never waits for a shard while
// holding a shard of higher index. A shard is held for the time of one
// Pebble apply, not of an fsync.
//
// Simpler designs rejected: a single writer goroutine (serializes the
// per-request work of every stream, one core at most); a commit per
// request without group commit (one fsync per append, ~600/s on this
// class of disk); taking stream locks in handlers (a mutex per stream,
// unbounded memory, no batching).

// Tunables; tests change them.
var (
	// shardQueueLen bounds each shard's queue; a full queue answers
	// RESOURCE_EXHAUSTED rather than buffering without bound.
	shardQueueLen = 4096
	// maxRoundOps and maxRoundBytes bound what a shard takes in one round.
	maxRoundOps   = 1024
	maxRoundBytes = 32 << 20
	// stateCacheLen bounds the stream states a shard caches.
	stateCacheLen = 1 << 18
	// maxInflightBytes bounds the event bytes the writer holds (queued or
	// being committed); past it, appends get RESOURCE_EXHAUSTED/OVERLOADED.
	maxInflightBytes int64 = 256 << 20
)

var (
	// ErrShuttingDown: the writer takes no more requests.
	ErrShuttingDown = errors.New("server: shutting down")
	// ErrOverloaded: a shard's queue is full.
	ErrOverloaded = errors.New("server: writer queue full")
)

// store is what the writer needs of the log.
type store interface {
	State(name string) (eslog.StreamState, bool, error)
	LookupIDs(ids [][16]byte) ([]eslog.IDLocation, error)
	NewStreamID() uint64
	Commit(ws []*eslog.Write, atomic bool) (*eslog.Ticket, error)
	IDEpoch() uint64
	Pending() *eslog.Ticket
	WaitPublished(ctx context.Context, pos uint64) error
	CommitTime(pos uint64) (int64, error)
}

// AppendOp is one validated append.
type AppendOp struct {
	Stream string
	Expect eslog.Expectation
	Events []eslog.Event
	// ClientIDs counts the events whose id the client chose.
	ClientIDs int
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
	log    store
	shards []*shard
	seed   maphash.Seed
	met    *writerMetrics

	mu      sync.RWMutex // guards closing against sends to the shards
	closing bool

	inflight atomic.Int64 // event bytes accepted and not yet answered
}

// NewWriter starts n shards writing to log.
func NewWriter(log store, n int, met *writerMetrics) *Writer {
	w := &Writer{log: log, seed: maphash.MakeSeed(), met: met}
	for i := range n {
		s := &shard{
			w:       w,
			idx:     i,
			in:      make(chan *op, shardQueueLen),
			quit:    make(chan struct{}),
			stopped: make(chan struct{}),
			cache:   newStateCache(stateCacheLen),
		}
		w.shards = append(w.shards, s)
		go s.loop()
	}
	if met != nil {
		met.watchQueues(w)
	}
	return w
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
	}
	n := len(a.Events)
	if r.replay {
		n = 0 // stored by the original append
	}
	w.met.observe("append", err, n, start)
	return r.append, err
}

// Delete deletes a stream and waits until it is durable.
func (w *Writer) Delete(ctx context.Context, stream string, expect eslog.Expectation, mode eslog.DeleteMode) (DeleteResult, error) {
	start := time.Now()
	o := &op{kind: opDelete, stream: stream, expect: expect, mode: mode, done: make(chan opResult, 1)}
	r, err := w.submit(ctx, o)
	if err == nil {
		err = w.settle(ctx, &r)
	}
	w.met.observe("delete", err, 0, start)
	return DeleteResult{Position: r.append.FirstPosition, CommitTime: r.append.CommitTime}, err
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
	o.done <- r
	w.inflight.Add(-int64(o.size))
}

// settle waits until what r reports is durable and visible.
func (w *Writer) settle(ctx context.Context, r *opResult) error {
	if r.ticket != nil {
		if err := r.ticket.Wait(ctx); err != nil {
			return err
		}
	}
	if r.waitPos > 0 {
		if err := w.log.WaitPublished(ctx, r.waitPos); err != nil {
			return err
		}
	}
	if r.replay { // the original commit time, as the original answer had it
		t, err := w.log.CommitTime(r.append.FirstPosition)
		if err != nil {
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
	mode      eslog.DeleteMode
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
		size: size, done: make(chan opResult, 1)}
}

// opResult is a shard's answer. Success is final only after settle.
type opResult struct {
	append  AppendResult
	ticket  *eslog.Ticket // the commit to wait for; nil if none
	waitPos uint64        // a position to wait for (retries, pure checks)
	replay  bool          // an idempotent retry: fetch the original commit time
	err     error
}

// shard owns the streams that hash to it.
type shard struct {
	w       *Writer
	idx     int
	in      chan *op
	quit    chan struct{}
	stopped chan struct{}
	cache   *stateCache // touched only by the shard goroutine
}

func (s *shard) loop() {
	defer close(s.stopped)
	for {
		select {
		case first := <-s.in:
			s.round(first)
		case <-s.quit: // closed after new requests are refused
			for {
				select {
				case o := <-s.in:
					s.round(o)
				default:
					return
				}
			}
		}
	}
}

// round decides first, then what arrives while the shard's previous
// commit syncs, then what is queued when it is durable (never waiting for
// more), and commits it all as one. Deciding while the fsync runs keeps
// that work (id lookups above all) off the requests' latency. An
// AppendMulti's lock ends the round: everything queued before it must be
// committed before its entries are decided.
func (s *shard) round(first *op) {
	rs := s.newRound()
	var lock *op
	add := func(o *op) bool { // reports whether the round takes more
		if o.kind == opLock {
			lock = o
			return false
		}
		rs.decide(o)
		return len(rs.dec) < maxRoundOps && rs.bytes < maxRoundBytes
	}
	open := add(first)
	// Commit only once the newest commit (of any shard) is durable: a
	// commit applied meanwhile would wait for the next fsync anyway, so
	// waiting costs no latency, and what piles up meanwhile, in this shard
	// and in the others, goes into that next fsync as a few large commits.
	wait := s.w.log.Pending()
	for open && wait != nil {
		select {
		case o := <-s.in:
			open = add(o)
		case <-wait.Done():
			wait = nil
		}
	}
	if wait != nil { // the round filled up first
		<-wait.Done()
	}
	for open {
		select {
		case o := <-s.in:
			open = add(o)
		default:
			open = false
		}
	}
	s.w.met.roundOps.Observe(float64(len(rs.dec)))
	for retry := rs.commit(); len(retry) > 0; retry = rs.commit() {
		rs = s.newRound()
		for _, o := range retry {
			rs.decide(o)
		}
	}
	if lock != nil {
		s.lockFor(lock.lock)
	}
}

// decision is what a shard decided for one op of a round.
type decision struct {
	o      *op
	stream string
	write  *eslog.Write // the write to commit, if any
	res    opResult     // the answer when there is no write
	leader int          // for an in-round retry: the decision it repeats; -1 if none
	offset int          // ... and where its events start in the leader's
}

// roundState is one round of decisions.
type roundState struct {
	s       *shard
	states  map[string]*eslog.StreamState // predicted states of the streams touched
	touched map[string]bool               // streams whose prediction includes a write of this round
	ids     map[[16]byte]idRef            // client ids written by this round
	dec     []decision
	bytes   int
	epoch   uint64 // the id epoch of the last id lookup
}

type idRef struct {
	dec, event int
}

func (s *shard) newRound() *roundState {
	return &roundState{
		s:       s,
		states:  make(map[string]*eslog.StreamState),
		touched: make(map[string]bool),
		ids:     make(map[[16]byte]idRef),
	}
}

// commit commits the round's writes and answers its ops; it returns the
// ops to decide again (invariant 4).
func (rs *roundState) commit() (retry []*op) {
	s := rs.s
	var writes []*eslog.Write
	for i := range rs.dec {
		if w := rs.dec[i].write; w != nil {
			writes = append(writes, w)
		}
	}
	var ticket *eslog.Ticket
	if len(writes) > 0 {
		var err error
		ticket, err = s.w.log.Commit(writes, false)
		if err != nil { // nothing applied; the log takes no more writes
			for i := range rs.dec {
				s.w.answer(rs.dec[i].o, opResult{err: err})
			}
			s.cache.clear()
			return nil
		}
	}
	// The first refused write of each stream: decisions after it on that
	// stream rested on it and are made again.
	failedAt := make(map[string]int)
	for i := range rs.dec {
		d := &rs.dec[i]
		if d.write != nil && d.write.Err != nil {
			if _, ok := failedAt[d.stream]; !ok {
				failedAt[d.stream] = i
			}
		}
	}
	for i := range rs.dec {
		d := &rs.dec[i]
		if k, ok := failedAt[d.stream]; ok && i > k {
			retry = append(retry, d.o)
			continue
		}
		switch {
		case d.write != nil && d.write.Err != nil:
			s.w.answer(d.o, opResult{err: d.write.Err})
		case d.write != nil:
			s.cache.put(d.write.After)
			s.w.answer(d.o, opResult{append: writeResult(d.write), ticket: ticket})
		case d.leader >= 0:
			lw := rs.dec[d.leader].write
			r := writeResult(lw)
			n := uint64(len(d.o.events))
			r.FirstRevision += uint64(d.offset)
			r.FirstPosition += uint64(d.offset)
			r.LastRevision, r.LastPosition = r.FirstRevision+n-1, r.FirstPosition+n-1
			s.w.answer(d.o, opResult{append: r, ticket: ticket})
		default:
			if d.res.err == nil && rs.touched[d.stream] {
				d.res.ticket = ticket // its answer includes this round's writes
			}
			s.w.answer(d.o, d.res)
		}
	}
	return retry
}

func writeResult(w *eslog.Write) AppendResult {
	if w.Delete != eslog.DeleteNone {
		return AppendResult{FirstPosition: w.FirstPosition, LastPosition: w.LastPosition, CommitTime: w.Created}
	}
	return AppendResult{
		FirstRevision: w.State.NextRevision(),
		LastRevision:  w.After.Head,
		FirstPosition: w.FirstPosition,
		LastPosition:  w.LastPosition,
		CommitTime:    w.Created,
		Exists:        true,
	}
}

// state returns the predicted state of stream for this round.
func (rs *roundState) state(stream string) (*eslog.StreamState, error) {
	if st, ok := rs.states[stream]; ok {
		return st, nil
	}
	st, err := rs.s.loadState(stream)
	if err != nil {
		return nil, err
	}
	rs.states[stream] = &st
	return &st, nil
}

// loadState returns the cached state of stream, reading it on a miss. A
// stream never stored comes back with ID 0.
func (s *shard) loadState(stream string) (eslog.StreamState, error) {
	if st, ok := s.cache.get(stream); ok {
		return st, nil
	}
	st, ok, err := s.w.log.State(stream)
	if err != nil {
		return eslog.StreamState{}, fmt.Errorf("load stream %q: %w", stream, err)
	}
	if !ok {
		st = eslog.StreamState{Name: stream}
	}
	s.cache.put(st)
	return st, nil
}

func (rs *roundState) decide(o *op) {
	rs.bytes += o.size
	d := decision{o: o, stream: o.stream, leader: -1}
	defer func() { rs.dec = append(rs.dec, d) }()
	st, err := rs.state(o.stream)
	if err != nil {
		d.res.err = err
		return
	}
	if o.kind == opDelete {
		d.write, d.res = rs.s.decideDelete(o, st)
	} else {
		d.write, d.res, d.leader, d.offset = rs.decideAppend(o, st)
	}
	if d.write != nil {
		rs.touched[o.stream] = true
		predict(st, d.write)
	}
}

// decideAppend decides one append against st: a write, an answer, or an
// in-round retry of an earlier decision (leader >= 0).
func (rs *roundState) decideAppend(o *op, st *eslog.StreamState) (w *eslog.Write, res opResult, leader, offset int) {
	leader = -1
	if st.Tombstoned {
		res.err = tombstonedWrite(o.stream)
		return
	}
	if o.clientIDs > 0 {
		var done bool
		if leader, offset, res, done = rs.checkIDs(o, st); done {
			return
		}
	}
	if !o.expect.Holds(st) {
		res.err = wrongRevision(o.stream, o.expect, st)
		return
	}
	if len(o.events) == 0 {
		res.append = AppendResult{FirstRevision: st.Head, LastRevision: st.Head, Exists: st.Exists()}
		if !st.Exists() {
			res.append.FirstRevision, res.append.LastRevision = 0, 0
		}
		res.waitPos = st.LastPosition
		return
	}
	w = rs.s.newWrite(st)
	w.Events = o.events
	w.CheckIDs = o.clientIDs > 0
	w.LookupEpoch = rs.epoch
	w.Prepare() // here, in parallel with other shards, not under the commit lock
	for i := range o.events {
		if o.clientIDs > 0 {
			rs.ids[o.events[i].ID] = idRef{dec: len(rs.dec), event: i}
		}
	}
	return w, res, -1, 0
}

// checkIDs classifies an append's client ids: fresh (done false), an
// in-round retry of an earlier op (leader), an idempotent retry of a
// stored append (res), or a conflict (res.err).
func (rs *roundState) checkIDs(o *op, st *eslog.StreamState) (leader, offset int, res opResult, done bool) {
	evs := o.events
	inRound := 0
	for i := range evs {
		if _, ok := rs.ids[evs[i].ID]; ok {
			inRound++
		}
	}
	if inRound > 0 {
		first := rs.ids[evs[0].ID]
		ld := &rs.dec[first.dec]
		// A retry repeats a whole append: the same ids, in order, no more.
		same := inRound == len(evs) && o.clientIDs == len(evs) && ld.stream == o.stream &&
			first.event == 0 && len(ld.o.events) == len(evs)
		for i := 1; same && i < len(evs); i++ {
			r := rs.ids[evs[i].ID]
			same = r.dec == first.dec && r.event == first.event+i
		}
		if !same {
			return -1, 0, opResult{err: &eslog.IDConflictError{Stream: o.stream, ID: evs[0].ID}}, true
		}
		return first.dec, first.event, res, true
	}
	ids := make([][16]byte, 0, len(evs))
	for i := range evs {
		ids = append(ids, evs[i].ID)
	}
	rs.epoch = rs.s.w.log.IDEpoch() // before the lookup: see eslog.Write.LookupEpoch
	locs, err := rs.s.w.log.LookupIDs(ids)
	if err != nil {
		return -1, 0, opResult{err: err}, true
	}
	found := 0
	for _, l := range locs {
		if l.Found {
			found++
		}
	}
	if found == 0 {
		return -1, 0, res, false
	}
	// A retry repeats a whole stored append: the same ids, in the same
	// order, from its first event to its last.
	replay := found == len(evs) && o.clientIDs == len(evs) && st.ID != 0 &&
		locs[0].Revision == locs[0].AppendFirst && locs[len(locs)-1].Revision == locs[0].AppendLast
	for i, l := range locs {
		replay = replay && l.StreamID == st.ID && l.Revision == locs[0].Revision+uint64(i)
	}
	if !replay {
		for i, l := range locs {
			if l.Found {
				return -1, 0, opResult{err: &eslog.IDConflictError{Stream: o.stream, ID: evs[i].ID}}, true
			}
		}
	}
	last := locs[len(locs)-1]
	res.append = AppendResult{
		FirstRevision: locs[0].Revision, LastRevision: last.Revision,
		FirstPosition: locs[0].Position, LastPosition: last.Position,
		Exists: true,
	}
	res.waitPos, res.replay = last.Position, true
	return -1, 0, res, true
}

func (s *shard) decideDelete(o *op, st *eslog.StreamState) (*eslog.Write, opResult) {
	var res opResult
	switch {
	case st.Tombstoned:
		res.err = tombstonedWrite(o.stream)
	case !o.expect.Holds(st):
		res.err = wrongRevision(o.stream, o.expect, st)
	case o.mode == eslog.DeleteSoft && !st.Written:
		res.err = &eslog.StreamError{Stream: o.stream, Err: eslog.ErrStreamNotFound}
	case o.mode == eslog.DeleteSoft && !st.Exists():
		res.err = &eslog.StreamError{Stream: o.stream, Err: eslog.ErrStreamDeleted}
	default:
		w := s.newWrite(st)
		w.Delete = o.mode
		return w, res
	}
	return nil, res
}

// newWrite starts a write to st, allocating an id for a new stream.
func (s *shard) newWrite(st *eslog.StreamState) *eslog.Write {
	w := &eslog.Write{State: *st}
	if st.ID == 0 {
		w.State.ID = s.w.log.NewStreamID()
		w.New = true
	}
	return w
}

// predict updates st to what it will be once w is committed.
func predict(st *eslog.StreamState, w *eslog.Write) {
	st.ID = w.State.ID
	if n := uint64(len(w.Events)); n > 0 {
		st.Head = st.NextRevision() + n - 1
		st.Written = true
	}
	switch w.Delete {
	case eslog.DeleteSoft:
		st.TruncateBefore = st.Head + 1
	case eslog.DeleteTombstone:
		st.TruncateBefore = st.NextRevision()
		st.Tombstoned = true
	}
}

func wrongRevision(stream string, e eslog.Expectation, st *eslog.StreamState) *eslog.WrongRevisionError {
	return &eslog.WrongRevisionError{
		Stream: stream, StreamID: st.ID, Expected: e, Head: st.Head, Exists: st.Exists(),
		HeadPosition: st.LastPosition, TruncateBefore: st.TruncateBefore,
	}
}

// AppendMulti appends ops (each to a different stream) atomically and
// waits until they are durable.
func (w *Writer) AppendMulti(ctx context.Context, ops []AppendOp) ([]AppendResult, error) {
	start := time.Now()
	res, err := w.appendMulti(ctx, ops)
	n := 0
	for i := range ops {
		n += len(ops[i].Events)
	}
	w.met.observe("append_multi", err, n, start)
	return res, err
}

// lockPart is an AppendMulti's business with one shard.
type lockPart struct {
	entries []int // indexes into the multi's ops
	ops     []*op
	ready   chan partReady // capacity 1
	release chan bool      // capacity 1: true when the writes were applied
}

type partReady struct {
	writes []*eslog.Write // one per entry; nil for no write
	res    []opResult     // one per entry
}

func (w *Writer) appendMulti(ctx context.Context, ops []AppendOp) ([]AppendResult, error) {
	var size int64
	for i := range ops {
		for j := range ops[i].Events {
			size += int64(len(ops[i].Events[j].Data) + len(ops[i].Events[j].Metadata))
		}
	}
	if err := w.reserve(size); err != nil {
		return nil, err
	}
	defer w.inflight.Add(-size)
	byShard := make(map[int]*lockPart)
	for i := range ops {
		s := w.shardOf(ops[i].Stream)
		p := byShard[s.idx]
		if p == nil {
			p = &lockPart{ready: make(chan partReady, 1), release: make(chan bool, 1)}
			byShard[s.idx] = p
		}
		p.entries = append(p.entries, i)
		p.ops = append(p.ops, newAppendOp(ops[i]))
	}
	order := make([]int, 0, len(byShard))
	for idx := range byShard {
		order = append(order, idx)
	}
	sort.Ints(order)

	var locked []*lockPart
	release := func(applied bool) {
		for _, p := range locked {
			p.release <- applied
		}
	}
	writes := make([]*eslog.Write, len(ops))
	results := make([]opResult, len(ops))
	for _, idx := range order {
		p := byShard[idx]
		if err := w.send(w.shards[idx], &op{kind: opLock, lock: p}); err != nil {
			release(false)
			return nil, err
		}
		r := <-p.ready // prompt: a shard answers a lock before anything queued after it
		locked = append(locked, p)
		for j, e := range p.entries {
			writes[e], results[e] = r.writes[j], r.res[j]
			if r.res[j].err != nil {
				release(false)
				return nil, r.res[j].err
			}
		}
	}

	// A retried AppendMulti finds all its events stored: return the
	// original results. Some stored and some not cannot be a retry.
	var toCommit []*eslog.Write
	replays, appends := 0, 0
	for i := range ops {
		if len(ops[i].Events) == 0 {
			continue
		}
		appends++
		if results[i].replay {
			replays++
		} else {
			toCommit = append(toCommit, writes[i])
		}
	}
	if replays > 0 && replays < appends {
		release(false)
		for i := range ops {
			if len(ops[i].Events) > 0 && !results[i].replay {
				return nil, &eslog.IDConflictError{Stream: ops[i].Stream, ID: ops[i].Events[0].ID}
			}
		}
	}
	var ticket *eslog.Ticket
	if len(toCommit) > 0 {
		var err error
		ticket, err = w.log.Commit(toCommit, true)
		if err == nil {
			for _, wr := range toCommit {
				if wr.Err != nil && !errors.Is(wr.Err, eslog.ErrAborted) {
					err = wr.Err
				}
			}
		}
		if err != nil {
			release(false)
			return nil, err
		}
	}
	release(true)
	out := make([]AppendResult, len(ops))
	for i := range ops {
		r := results[i]
		if wr := writes[i]; wr != nil && !r.replay {
			r = opResult{append: writeResult(wr), ticket: ticket}
		}
		if err := w.settle(ctx, &r); err != nil {
			return nil, err
		}
		out[i] = r.append
	}
	return out, nil
}

// lockFor decides an AppendMulti's entries for this shard, hands them to
// the coordinator and blocks until it reports the outcome.
func (s *shard) lockFor(p *lockPart) {
	rs := s.newRound()
	ready := partReady{writes: make([]*eslog.Write, len(p.ops)), res: make([]opResult, len(p.ops))}
	for j, o := range p.ops {
		rs.decide(o)
		d := rs.dec[len(rs.dec)-1]
		ready.writes[j], ready.res[j] = d.write, d.res
		if d.leader >= 0 { // ids repeated across entries: validation forbids it
			ready.res[j].err = &eslog.IDConflictError{Stream: o.stream, ID: o.events[0].ID}
		}
	}
	p.ready <- ready
	if applied := <-p.release; applied {
		for _, wr := range ready.writes {
			if wr != nil && wr.Err == nil && wr.FirstPosition > 0 {
				s.cache.put(wr.After)
			}
		}
	}
}

// stateCache is a shard's bounded cache of stream states. When full it
// forgets a random half (Go's map order): no bookkeeping on hits.
type stateCache struct {
	m     map[string]eslog.StreamState
	limit int
}

func newStateCache(limit int) *stateCache {
	return &stateCache{m: make(map[string]eslog.StreamState), limit: limit}
}

func (c *stateCache) get(name string) (eslog.StreamState, bool) {
	st, ok := c.m[name]
	return st, ok
}

func (c *stateCache) put(st eslog.StreamState) {
	if _, ok := c.m[st.Name]; !ok && len(c.m) >= c.limit {
		n := 0
		for k := range c.m {
			if n >= c.limit/2 {
				break
			}
			delete(c.m, k)
			n++
		}
	}
	c.m[st.Name] = st
}

func (c *stateCache) clear() { clear(c.m) }

// shardLabel names a shard in metrics.
func shardLabel(i int) string { return strconv.Itoa(i) }
