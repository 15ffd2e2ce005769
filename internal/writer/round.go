package writer

import (
	"fmt"

	eslog "github.com/esdhq/esd/internal/log"
)

// shard owns the streams that hash to it.
type shard struct {
	w       *Writer
	idx     int
	in      chan *op
	quit    chan struct{}
	stopped chan struct{}
	cache   *stateCache // touched only by the shard goroutine
	rs      roundState  // the round being decided (newRound)
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
	pending := s.w.commit.Pending()
	for open && pending != nil {
		select {
		case o := <-s.in:
			open = add(o)
		case <-pending.Done():
			pending = nil
		}
	}
	if pending != nil { // the round filled up first
		<-pending.Done()
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
	writes  []*eslog.Write // the round's writes, handed to the committer
	bytes   int
	epoch   uint64 // the id epoch of the last id lookup
}

type idRef struct {
	dec, event int
}

// newRound starts a round. A shard has one roundState, reused from round
// to round (its maps and slices keep their room), since a shard decides
// one round at a time.
func (s *shard) newRound() *roundState {
	rs := &s.rs
	if rs.s == nil {
		*rs = roundState{
			s:       s,
			states:  make(map[string]*eslog.StreamState),
			touched: make(map[string]bool),
			ids:     make(map[[16]byte]idRef),
		}
		return rs
	}
	clear(rs.states)
	clear(rs.touched)
	clear(rs.ids)
	clear(rs.dec) // let go of the ops and writes
	clear(rs.writes)
	rs.dec, rs.writes = rs.dec[:0], rs.writes[:0]
	rs.bytes, rs.epoch = 0, 0
	return rs
}

// commit commits the round's writes and answers its ops; it returns the
// ops to decide again (invariant 4).
func (rs *roundState) commit() (retry []*op) {
	s := rs.s
	writes := rs.writes[:0]
	now := s.w.clock().UnixNano()
	for i := range rs.dec {
		if w := rs.dec[i].write; w != nil {
			w.Time = now
			writes = append(writes, w)
		}
	}
	rs.writes = writes
	var ticket Durable
	if len(writes) > 0 {
		var err error
		ticket, err = s.w.commit.Commit(writes, false)
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
			if rs.touched[d.stream] {
				// Its answer, a result or a refusal, rests on this
				// round's writes: it stands once they are durable.
				d.res.ticket = ticket
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
	st, ok, err := s.w.store.State(stream)
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
	st, err := rs.state(o.stream)
	switch {
	case err != nil:
		d.res.err = err
	case o.kind == opDelete:
		d.write, d.res = rs.s.decideDelete(o, st)
	default: // decideAppend takes len(rs.dec) as this decision's index
		d.write, d.res, d.leader, d.offset = rs.decideAppend(o, st)
	}
	if d.write != nil {
		rs.touched[o.stream] = true
		predict(st, d.write)
	}
	rs.dec = append(rs.dec, d)
}

// decideAppend decides one append against st: a write, an answer, or an
// in-round retry of an earlier decision (leader >= 0).
func (rs *roundState) decideAppend(o *op, st *eslog.StreamState) (w *eslog.Write, res opResult, leader, offset int) {
	leader = -1
	if st.Tombstoned {
		res.err, res.waitPos = tombstonedWrite(o.stream), st.LastPosition
		return
	}
	if o.clientIDs > 0 {
		var done bool
		if leader, offset, res, done = rs.checkIDs(o, st); done {
			return
		}
	}
	// After the id check, so that the retry of an append written before
	// a lease was taken still gets its original answer; before the
	// expected revision, so that a writer without the lease learns of the
	// lease rather than of a revision it must not act on.
	if res.err = rs.s.fenced(o); res.err != nil {
		return
	}
	if !o.expect.Holds(st) {
		res.err, res.waitPos = wrongRevision(o.stream, o.expect, st), st.LastPosition
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
	rs.epoch = rs.s.w.store.IDEpoch() // before the lookup: see eslog.Write.LookupEpoch
	locs, err := rs.s.w.store.LookupIDs(ids)
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
	if o.mode == eslog.DeleteTruncate {
		return s.decideTruncate(o, st)
	}
	var res opResult
	if !st.Tombstoned {
		if res.err = s.fenced(o); res.err != nil {
			return nil, res // a lease, not the stream's state: nothing to wait for
		}
	}
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
		w.DeletionID = eslog.NewEventID()
		return w, res
	}
	res.waitPos = st.LastPosition // a refusal stands once the state it saw is durable (refusal)
	return nil, res
}

// decideTruncate raises st's first visible revision to o.truncate,
// capped at the head so that the stream still exists. It is the server's
// own write, not a client's: no lease fences it and it expects no
// revision, as it changes none that a writer expects. Nothing to raise
// (a stream without visible events, or already truncated as far), it
// writes nothing.
func (s *shard) decideTruncate(o *op, st *eslog.StreamState) (*eslog.Write, opResult) {
	to := min(o.truncate, st.Head)
	if !st.Exists() || to <= st.TruncateBefore {
		return nil, opResult{waitPos: st.LastPosition}
	}
	w := s.newWrite(st)
	w.Delete, w.TruncateTo, w.DeletionID = eslog.DeleteTruncate, to, eslog.NewEventID()
	return w, opResult{}
}

// fenced asks the leases whether o may write its stream. Decided in the
// stream's shard, the answer is ordered with the stream's writes: a
// lease granted before this point fences o, and one granted after it
// finds o's write in the stream's state (its holder's expected revision
// sees it).
func (s *shard) fenced(o *op) error {
	if s.w.fence == nil {
		return nil
	}
	return s.w.fence.Check(o.stream, o.token)
}

// newWrite starts a write to st, allocating an id for a new stream.
func (s *shard) newWrite(st *eslog.StreamState) *eslog.Write {
	w := &eslog.Write{State: *st}
	if st.ID == 0 {
		w.State.ID = s.w.store.NewStreamID()
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
	case eslog.DeleteTruncate:
		st.TruncateBefore = max(st.TruncateBefore, w.TruncateTo)
	}
}

func wrongRevision(stream string, e eslog.Expectation, st *eslog.StreamState) *eslog.WrongRevisionError {
	return &eslog.WrongRevisionError{
		Stream: stream, StreamID: st.ID, Expected: e, Head: st.Head, Exists: st.Exists(),
		HeadPosition: st.LastPosition, TruncateBefore: st.TruncateBefore,
	}
}
