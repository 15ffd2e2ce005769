package log

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/uuid"
)

// DeleteMode says whether a Write deletes its stream.
type DeleteMode uint8

const (
	DeleteNone DeleteMode = iota
	// DeleteSoft hides every event so far; later appends continue the
	// revisions.
	DeleteSoft
	// DeleteTombstone deletes the stream forever.
	DeleteTombstone
	// DeleteTruncate hides the revisions below Write.TruncateTo, for
	// good: a scavenge makes the retention limits' cut durable with it
	// before removing what they hide. It changes the stream's state
	// alone: no event, no position (FirstPosition 0). The stream keeps
	// existing (the writer caps TruncateTo at the head), its revisions
	// and expected revisions are unchanged, and its subscribers go on.
	DeleteTruncate
)

// A Write is one stream's part of a commit: events to append, or a
// deletion. Its owner (the writer shard of the stream) has checked the
// expected revision against State; the log trusts State and only checks
// what the owner cannot see alone: that client-chosen event ids are not
// stored on another stream.
type Write struct {
	// State is the stream before the write. A stream never stored has an
	// id from NewStreamID, its Name set and New true.
	State  StreamState
	New    bool
	Events []Event
	Delete DeleteMode
	// CheckIDs: the event ids were chosen by the client, so the log fails
	// the write with *IDConflictError if any is stored already.
	CheckIDs bool
	// LookupEpoch is IDEpoch() as the writer read it before looking the
	// ids up (LookupIDs): the log then checks only what was committed
	// since, in memory. It is this process's count: a write applied by
	// another node (a replica) must carry 0, which makes the log check
	// every id in Pebble.
	LookupEpoch uint64
	// Time is the commit time the writer chose (unix nanoseconds). The log
	// stamps max(Time, the previous commit's time), so that commit times
	// never go backwards in position order. 0 means the log's clock, which
	// a replicated write must not rely on: two nodes' clocks differ.
	Time int64
	// DeletionID is the id of the "$deleted" event that records a
	// deletion; zero means the log makes a random one, which a replicated
	// write must not rely on either.
	DeletionID [16]byte
	// TruncateTo is DeleteTruncate's new first visible revision: above
	// State.TruncateBefore, at most State.Head.
	TruncateTo uint64

	recs []byte // the encoded records, back to back (Prepare)
	ends []int  // ends[i] is the end of record i in recs

	// Set by Commit.
	Err           error       // nil: applied; *IDConflictError, ErrRetry, ErrAborted
	After         StreamState // the stream after the write
	FirstPosition uint64      // the first event's (or the deletion's) position
	LastPosition  uint64
	Created       int64 // the commit time, unix nanoseconds
}

// Prepare encodes the write's records. The writer calls it outside the
// commit lock (Commit calls it otherwise), so that commits from many
// shards spend their serialized time on positions and Pebble only.
func (w *Write) Prepare() {
	if w.ends != nil || len(w.Events) == 0 {
		return
	}
	n := 0
	for i := range w.Events {
		n += w.Events[i].size()
	}
	w.recs = make([]byte, 0, n)
	w.ends = make([]int, len(w.Events))
	rev := w.State.NextRevision()
	for i := range w.Events {
		w.recs = encodeRecord(w.recs, w.State.ID, rev+uint64(i), &w.Events[i])
		w.ends[i] = len(w.recs)
	}
}

func (w *Write) record(i int) []byte {
	start := 0
	if i > 0 {
		start = w.ends[i-1]
	}
	return w.recs[start:w.ends[i]]
}

// A Ticket follows a commit to durability. Done is closed when the commit
// is synced and published (or failed); Err then says which.
type Ticket struct {
	batch     *pebble.Batch
	last      uint64 // the commit's last position
	deletions map[uint64]deletion
	events    []Committed // for the publish hook
	// What the commit overwrote, for reads once the log has failed (see
	// unpublished.go): its applied writes (each holds the state before
	// it) and, when it deleted, the state of "$deleted" before it.
	writes    []*Write
	sysBefore *Write
	done      chan struct{}
	err       error
}

// Done is closed when the commit is durable and published, or failed.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Err is the commit's outcome; read it after Done is closed.
func (t *Ticket) Err() error { return t.err }

// Wait blocks until the commit is durable and published. A ctx that ends
// first leaves the commit's outcome unknown to the caller (it may still
// become durable).
func (t *Ticket) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Commit applies writes, in order, as one Pebble batch: it assigns their
// positions, stamps the commit time and writes the batch to the WAL and
// memtable, then returns without waiting for the fsync. The returned
// ticket (nil when no write was applied) is done once the batch is durable
// and published.
//
// Each write's Err says whether it was applied. With atomic, one failed
// write fails them all. Without it, a failed write makes the later writes
// to the same stream ErrRetry (their revisions assumed it).
//
// Concurrent calls are combined: whoever takes the commit lock applies
// every call queued by then as one batch, so that shards committing at
// the same moment share one WAL write and one fsync rather than queueing
// for the next. Aux writes and compare-and-swaps (auxspace.go) queue and
// combine the same way: they take no position, but they are ordered with
// the commits around them, and durable and acknowledged in that order.
//
// An error return means nothing was applied: ErrClosed, or ErrStorageFailed
// (and every later Commit fails too).
func (l *Log) Commit(writes []*Write, atomic bool) (*Ticket, error) {
	for _, w := range writes {
		w.Prepare()
	}
	r := &commitReq{writes: writes, atomic: atomic}
	l.submit(r)
	return r.ticket, r.err
}

// submit queues r and, unless whoever holds the commit lock applies it
// meanwhile, applies everything queued. On return r is done.
func (l *Log) submit(r *commitReq) {
	l.queueMu.Lock()
	l.queue = append(l.queue, r)
	l.queueMu.Unlock()

	l.commitMu.Lock()
	defer l.commitMu.Unlock()
	if !r.done { // no one has applied it yet: apply everything queued
		l.queueMu.Lock()
		reqs := l.queue
		l.queue = make([]*commitReq, 0, cap(reqs))
		l.queueMu.Unlock()
		l.commitLocked(reqs)
	}
}

// commitReq is one Commit call, or one aux write or compare-and-swap
// (auxspace.go), waiting to be applied.
type commitReq struct {
	writes []*Write
	atomic bool
	aux    *auxReq // instead of writes
	// Set under commitMu by whoever applies it.
	done    bool
	applied bool // some of it is in the batch
	ticket  *Ticket
	err     error // for aux: also a *CASError
}

// commitLocked applies reqs as one batch. Called with commitMu held.
func (l *Log) commitLocked(reqs []*commitReq) {
	finish := func(t *Ticket, err error) {
		for _, r := range reqs {
			r.done = true
			if err != nil {
				r.err = err
			} else if r.applied {
				r.ticket = t
			}
		}
	}
	if l.closed {
		finish(nil, ErrClosed)
		return
	}
	if err := l.Failed(); err != nil {
		finish(nil, err)
		return
	}
	c := commitState{
		l:     l,
		pos:   l.nextPos,
		now:   l.lastTime,
		clock: time.Now().UnixNano(),
		sys:   l.sys,
		sysNw: l.sysNew,
		st:    l.st,
	}
	size, reads, events := 0, false, 0
	for _, r := range reqs {
		for _, w := range r.writes {
			size += len(w.recs) + 64*len(w.Events) + 256
			events += len(w.Events) + 1 // + a deletion's event
		}
		if r.aux != nil {
			reads = reads || len(r.aux.conds) > 0
			size += r.aux.size()
		}
	}
	if reads { // a compare-and-swap reads through the batch
		c.b = l.db.NewIndexedBatchWithSize(size)
	} else {
		c.b = l.db.NewBatchWithSize(size)
	}
	c.seen = newIDSet(events)
	writes, auxes := 0, 0
	for _, r := range reqs {
		n := 0
		switch {
		case r.aux != nil:
			if r.err = applyAux(c.b, r.aux); r.err == nil {
				n = 1
				auxes++
			}
		case r.atomic:
			n = l.applyAtomic(&c, r.writes)
			writes += n
		default:
			n = l.applyEach(&c, r.writes)
			writes += n
		}
		r.applied = n > 0
	}
	if writes+auxes == 0 {
		_ = c.b.Close()
		finish(nil, nil)
		return
	}
	l.scratch = appendStats(l.scratch[:0], c.st)
	_ = c.b.Set(metaStatsKey, l.scratch, nil)

	t := &Ticket{last: c.pos - 1, deletions: c.deletions, events: c.committed, done: make(chan struct{})}
	if writes > 0 {
		t.writes = make([]*Write, 0, writes)
		for _, r := range reqs {
			for _, w := range r.writes {
				if w.Err == nil && r.applied {
					t.writes = append(t.writes, w)
				}
			}
		}
		if c.deletions != nil {
			t.sysBefore = &Write{State: l.sys, New: l.sysNew}
		}
	}
	if auxes > 0 {
		// Before the apply: a reader that sees the batch finds t (see
		// auxSnapshot).
		l.auxNewest.Store(t)
	}
	if err := applyNoSyncWait(l.db, c.b); err != nil {
		_ = c.b.Close()
		for _, r := range reqs {
			for _, w := range r.writes {
				w.Err = err
			}
		}
		t.err = l.fail(err)
		close(t.done)
		finish(nil, t.err)
		return
	}
	t.batch = c.b
	l.addPending(t) // before the syncer can see it
	l.nextPos, l.lastTime, l.sys, l.sysNew, l.st = c.pos, c.now, c.sys, c.sysNw, c.st
	if writes > 0 {
		epoch := l.epoch.Add(1) // after the apply: lookups from now on see this commit
		l.recent.add(epoch, c.seen)
		l.met.commit(writes, c.events, c.bytes)
	}
	l.syncq <- t // in position order: the syncer publishes in this order
	l.newest.Store(t)
	finish(t, nil)
}

// applyEach applies writes one by one; a refused write makes the later
// writes to its stream ErrRetry. It returns how many were applied.
func (l *Log) applyEach(c *commitState, writes []*Write) int {
	var failedStreams []uint64
	applied := 0
	for _, w := range writes {
		w.Err = nil
		if containsID(failedStreams, w.State.ID) {
			w.Err = ErrRetry
			continue
		}
		if w.CheckIDs {
			if err := l.checkIDs(c, w); err != nil {
				w.Err = err
				failedStreams = append(failedStreams, w.State.ID)
				continue
			}
		}
		c.apply(w)
		applied++
	}
	return applied
}

// applyAtomic applies all of writes or, if one is refused, none: every
// check comes before the first write goes into the batch.
func (l *Log) applyAtomic(c *commitState, writes []*Write) int {
	mark := len(c.seen.ids)
	for _, w := range writes {
		w.Err = nil
		if !w.CheckIDs {
			continue
		}
		if err := l.checkIDs(c, w); err != nil {
			w.Err = err
			c.seen.truncate(mark) // the ids of the writes checked before are not written after all
			for _, other := range writes {
				if other.Err == nil {
					other.Err = ErrAborted
				}
			}
			return 0
		}
	}
	for _, w := range writes {
		c.apply(w)
	}
	return len(writes)
}

// checkIDs fails w if one of its ids is stored already, or is written by
// an earlier write of this commit (c.seen). The writer looked the ids up
// at w.LookupEpoch: the commits since are in l.recent, so Pebble is read
// only when they are not all there any more. Called with commitMu held.
func (l *Log) checkIDs(c *commitState, w *Write) error {
	inMemory := l.recent.covers(w.LookupEpoch, l.epoch.Load())
	for i := range w.Events {
		id := w.Events[i].ID
		if c.seen.has(id) {
			return &IDConflictError{Stream: w.State.Name, ID: id}
		}
		if inMemory {
			if l.recent.has(w.LookupEpoch, id) {
				return &IDConflictError{Stream: w.State.Name, ID: id}
			}
			continue
		}
		l.scratch = appendIDKey(l.scratch[:0], id)
		found, err := l.has(l.scratch)
		if err != nil {
			return fmt.Errorf("look up event id: %w", err)
		}
		if found {
			return &IDConflictError{Stream: w.State.Name, ID: id}
		}
	}
	for i := range w.Events {
		c.seen.add(w.Events[i].ID)
	}
	return nil
}

// IDEpoch counts applied commits of stream writes (aux writes alone do
// not count). A writer reads it before LookupIDs and passes it as
// Write.LookupEpoch: every commit up to it is visible to that lookup.
func (l *Log) IDEpoch() uint64 { return l.epoch.Load() }

// recentIDs remembers the event ids of the last commits, a set per
// commit, bounded by count; guarded by commitMu.
type recentIDs struct {
	commits []recentCommit // oldest first; one per epoch, contiguous
	ids     int
	limit   int
}

type recentCommit struct {
	epoch uint64
	ids   idSet
}

// maxRecentScan bounds the commits an id is checked against in memory; a
// write looked up longer ago is checked in Pebble.
const maxRecentScan = 64

// covers reports whether every commit after epoch since, up to epoch now,
// is remembered (and they are few enough to check).
func (r *recentIDs) covers(since, now uint64) bool {
	if since >= now {
		return true
	}
	return now-since <= maxRecentScan && len(r.commits) > 0 && r.commits[0].epoch <= since+1
}

// has reports whether a commit after epoch since wrote id.
func (r *recentIDs) has(since uint64, id [16]byte) bool {
	for i := len(r.commits) - 1; i >= 0 && r.commits[i].epoch > since; i-- {
		if r.commits[i].ids.has(id) {
			return true
		}
	}
	return false
}

// add remembers the ids a commit wrote.
func (r *recentIDs) add(epoch uint64, set idSet) {
	r.commits = append(r.commits, recentCommit{epoch: epoch, ids: set})
	r.ids += len(set.ids)
	for r.ids > r.limit || len(r.commits) > 4096 {
		r.ids -= len(r.commits[0].ids.ids)
		r.commits[0] = recentCommit{}
		r.commits = r.commits[1:]
	}
}

func containsID(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// commitState is one commit under construction; its fields become the
// log's only if the batch is applied.
type commitState struct {
	l         *Log
	b         *pebble.Batch
	pos       uint64
	now       int64 // the time stamped on the last write applied
	clock     int64 // the time of writes that bring none (Write.Time 0)
	sys       StreamState
	sysNw     bool
	st        stats
	deletions map[uint64]deletion
	seen      idSet            // every id written, and the client ids checked so far (checkIDs), for l.recent
	committed []Committed      // every event written, for the publish hook
	created   map[uint64]int64 // stream id -> creation time, for streams this commit creates
	events    int
	bytes     int
	key       [32]byte
	val       [40]byte
}

func (c *commitState) apply(w *Write) {
	t := w.Time
	if t == 0 {
		t = c.clock
	}
	c.now = max(c.now, t)
	s := w.State
	wasVisible, wasCount := s.Exists(), s.EventCount()
	w.FirstPosition = c.pos
	w.Created = c.now
	if w.New {
		_ = c.b.Set(appendNameKey(c.key[:0], s.Name), binary.BigEndian.AppendUint64(c.val[:0], s.ID), nil)
	}
	if n := len(w.Events); n > 0 {
		rev := s.NextRevision()
		first, last := rev, rev+uint64(n)-1
		firstPos := c.pos
		category := Category(s.Name)
		copies := n < categoryRangeMin // see index.go
		run := 0                       // the first event of the current run of one type
		for i := range w.Events {
			rec := w.record(i)
			stampRecord(rec, c.now)
			_ = c.b.Set(appendEventKey(c.key[:0], c.pos), rec, nil)
			_ = c.b.Set(appendIDKey(c.key[:0], w.Events[i].ID), appendIDValue(c.val[:0], idLoc{sid: s.ID, rev: rev, pos: c.pos, first: first, last: last}), nil)
			if copies {
				_ = c.b.Set(appendCategoryKey(c.key[:0], category, c.pos), rec, nil)
			}
			if i+1 == n || w.Events[i+1].Type != w.Events[i].Type {
				_ = c.b.Set(appendTypeKey(c.key[:0], w.Events[i].Type, firstPos+uint64(run)), binary.AppendUvarint(c.val[:0], uint64(i+1-run)), nil)
				run = i + 1
			}
			c.committed = append(c.committed, Committed{Position: c.pos, StreamID: s.ID, Revision: rev, Stream: s.Name, Record: rec})
			if !w.CheckIDs { // checkIDs added the client's
				c.seen.add(w.Events[i].ID)
			}
			c.bytes += len(rec)
			rev++
			c.pos++
		}
		_ = c.b.Set(appendIndexKey(c.key[:0], s.ID, first), appendIndexValue(c.val[:0], firstPos, uint64(n)), nil)
		if !copies {
			_ = c.b.Set(appendCategoryKey(c.key[:0], category, firstPos), appendCategoryRange(c.val[:0], uint64(n)), nil)
		}
		c.events += n
		switch {
		case !s.Written: // created by this write
			s.Created = c.now
			if c.created == nil {
				c.created = make(map[uint64]int64)
			}
			c.created[s.ID] = c.now
		case s.Created == 0: // predicted by the writer after a write of this commit
			if t, ok := c.created[s.ID]; ok {
				s.Created = t
			} else {
				s.Created = c.now
			}
		}
		s.Written = true
		s.Head = rev - 1
		s.LastPosition = c.pos - 1
	}
	switch w.Delete {
	case DeleteNone:
	case DeleteTruncate:
		c.truncate(&s, w)
	default:
		c.delete(&s, w)
	}
	s.Updated = c.now
	_ = c.b.Set(appendStreamKey(c.key[:0], s.ID), appendState(nil, &s), nil)
	w.After = s
	w.LastPosition = s.LastPosition

	if s.Exists() != wasVisible {
		if wasVisible {
			c.st.streams--
		} else {
			c.st.streams++
		}
	}
	c.st.events = c.st.events - wasCount + s.EventCount()
}

// The types of the "$deleted" events that record deletions.
const (
	TypeStreamDeleted    = "$stream-deleted"
	TypeStreamTombstoned = "$stream-tombstoned"
)

// truncate applies a DeleteTruncate to s. Unlike a deletion it is not an
// event: the limits it makes durable hid the events already, so readers
// of $all have nothing to learn, and an event a truncate would make
// every scavenge grow "$deleted" by one per limited stream. The state,
// the stream's 0x06 key and the deletions map carry it.
func (c *commitState) truncate(s *StreamState, w *Write) {
	// The writer's bounds, kept here too: a truncate never hides the head
	// (the stream would look deleted) nor shows anything again.
	s.TruncateBefore = max(s.TruncateBefore, min(w.TruncateTo, s.Head))
	c.deleted(s)
	w.FirstPosition = 0 // it takes none
}

// deleted records that s has deleted events, as it now hides them: its
// 0x06 key, and the deletions map for readers once the commit is
// published.
func (c *commitState) deleted(s *StreamState) {
	_ = c.b.Set(appendDeletedKey(c.key[:0], s.ID), nil, nil)
	if c.deletions == nil {
		c.deletions = make(map[uint64]deletion)
	}
	c.deletions[s.ID] = deletion{truncateBefore: s.TruncateBefore, tombstoned: s.Tombstoned}
}

// delete applies w's deletion to s and records it as an event of
// "$deleted".
func (c *commitState) delete(s *StreamState, w *Write) {
	mode, id := w.Delete, w.DeletionID
	if id == ([16]byte{}) {
		id = newEventID()
	}
	typ := TypeStreamDeleted
	if mode == DeleteTombstone {
		typ = TypeStreamTombstoned
		s.Tombstoned = true
		s.TruncateBefore = s.NextRevision()
	} else {
		s.TruncateBefore = s.Head + 1
	}
	data, _ := json.Marshal(struct {
		Stream         string `json:"stream"`
		TruncateBefore uint64 `json:"truncate_before"`
	}{s.Name, s.TruncateBefore})
	ev := Event{ID: id, Type: typ, ContentType: "application/json", Data: data}
	rev := c.sys.NextRevision()
	rec := encodeRecord(nil, deletedStreamID, rev, &ev)
	stampRecord(rec, c.now)
	_ = c.b.Set(appendEventKey(c.key[:0], c.pos), rec, nil)
	_ = c.b.Set(appendIndexKey(c.key[:0], deletedStreamID, rev), appendIndexValue(c.val[:0], c.pos, 1), nil)
	_ = c.b.Set(appendIDKey(c.key[:0], ev.ID), appendIDValue(c.val[:0], idLoc{sid: deletedStreamID, rev: rev, pos: c.pos, first: rev, last: rev}), nil)
	_ = c.b.Set(appendCategoryKey(c.key[:0], Category(deletedStreamName), c.pos), rec, nil)
	c.committed = append(c.committed, Committed{Position: c.pos, StreamID: deletedStreamID, Revision: rev, Stream: deletedStreamName, Record: rec,
		Deletes: s.Name, Tombstone: mode == DeleteTombstone})
	_ = c.b.Set(appendTypeKey(c.key[:0], typ, c.pos), binary.AppendUvarint(c.val[:0], 1), nil)
	c.seen.add(ev.ID)
	c.deleted(s)
	if c.sysNw {
		_ = c.b.Set(appendNameKey(c.key[:0], c.sys.Name), binary.BigEndian.AppendUint64(c.val[:0], c.sys.ID), nil)
		c.sysNw = false
	}
	if !c.sys.Written {
		c.sys.Created = c.now
		c.st.streams++
	}
	c.sys.Written, c.sys.Head, c.sys.LastPosition, c.sys.Updated = true, rev, c.pos, c.now
	c.st.events++
	_ = c.b.Set(appendStreamKey(c.key[:0], deletedStreamID), appendState(nil, &c.sys), nil)
	c.events++
	c.bytes += len(rec)

	s.LastPosition = c.pos
	c.pos++
}

// newEventID makes a UUIDv7: time-ordered, so that ids the server makes
// cluster in the id index.
func newEventID() [16]byte {
	id, err := uuid.NewV7()
	if err != nil { // only if the system's random source fails
		return uuid.New()
	}
	return id
}

// NewEventID makes an event id for an event whose client gave none.
func NewEventID() [16]byte { return newEventID() }

// Pending returns the newest commit if it is not yet durable, else nil.
func (l *Log) Pending() *Ticket {
	t := l.newest.Load()
	if t == nil {
		return nil
	}
	select {
	case <-t.done:
		return nil
	default:
		return t
	}
}
