package log

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// State returns the stored state of a stream by name, including writes
// applied but not yet durable. It is for the stream's writer, which made
// those writes; readers use StreamInfo.
func (l *Log) State(name string) (StreamState, bool, error) {
	var kb [64]byte
	v, ok, err := l.get(appendNameKey(kb[:0], name))
	if err != nil || !ok {
		return StreamState{}, false, err
	}
	sid, err := decodeU64(v)
	if err != nil {
		return StreamState{}, false, fmt.Errorf("stream %q id: %w", name, err)
	}
	s, ok, err := l.state(sid)
	if err == nil && !ok && !l.unpublishedNew(sid) {
		err = fmt.Errorf("%w: stream %q (id %d) has a name but no state", ErrCorrupt, name, sid)
	}
	return s, ok, err
}

// state returns the state of stream sid; after a storage failure, the
// durable one (see unpublished.go).
func (l *Log) state(sid uint64) (StreamState, bool, error) {
	if f, ok := l.frozenOf(sid); ok {
		return f.state, !f.new, nil
	}
	var kb [16]byte
	v, ok, err := l.get(appendStreamKey(kb[:0], sid))
	if err != nil || !ok {
		return StreamState{}, false, err
	}
	s, err := decodeState(sid, v)
	return s, err == nil, err
}

// StreamInfo returns a stream's state as readers may see it: it waits
// (bounded by ctx) until the stream's last change is published, and its
// LimitBefore is set from the retention limits as of now. ok is false for
// a stream never written nor tombstoned.
func (l *Log) StreamInfo(ctx context.Context, name string) (StreamState, bool, error) {
	s, ok, err := l.State(name)
	if err != nil || !ok {
		return s, ok, err
	}
	if err := l.WaitPublished(ctx, s.LastPosition); err != nil {
		if errors.Is(err, ErrStorageFailed) {
			// The commit waited for failed: the state as of the published
			// position is frozen now, and needs no wait.
			if s, ok, err = l.State(name); err == nil && ok && s.LastPosition > l.published.Load() {
				err = l.Failed() // not reached: frozen states are published
			}
			if err == nil && ok {
				s, err = l.withLimits(ctx, s)
			}
			return s, ok && err == nil, err
		}
		return StreamState{}, false, err
	}
	s, err = l.withLimits(ctx, s)
	return s, err == nil, err
}

// IDLocation is where an event id is stored.
type IDLocation struct {
	Found    bool
	StreamID uint64
	Revision uint64
	Position uint64
	// AppendFirst and AppendLast are the revisions of the first and last
	// events of the append that stored it.
	AppendFirst, AppendLast uint64
}

// LookupIDs finds where each id is stored, including writes applied but
// not yet durable (the writer waits for those before answering).
//
// The ids are looked up in key order through one iterator rather than a
// Get each: a Get sets up the memtables' and every level's iterators
// again, and seeks from the top of each; the iterator's prefix seeks still
// consult each sstable's bloom filter, and a seek just after the last one
// (time-ordered ids of one append, UUIDv7 as clients make them, land next
// to each other) moves a step instead of searching.
func (l *Log) LookupIDs(ids [][16]byte) ([]IDLocation, error) {
	out := make([]IDLocation, len(ids))
	if len(ids) == 1 { // a Get costs less than an iterator
		v, ok, err := l.get(appendIDKey(nil, ids[0]))
		if err != nil || !ok {
			return out, err
		}
		return out, out[0].decode(v)
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(ids[a][:], ids[b][:]) })
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kID}, UpperBound: []byte{kID + 1}})
	if err != nil {
		return nil, err
	}
	var kb [17]byte
	for _, i := range order {
		key := appendIDKey(kb[:0], ids[i])
		if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, errors.Join(err, it.Close())
		}
		if err := out[i].decode(v); err != nil {
			return nil, errors.Join(err, it.Close())
		}
	}
	return out, it.Close()
}

// decode sets loc from a stored id value.
func (loc *IDLocation) decode(v []byte) error {
	d, err := decodeIDValue(v)
	if err != nil {
		return err
	}
	*loc = IDLocation{Found: true, StreamID: d.sid, Revision: d.rev, Position: d.pos, AppendFirst: d.first, AppendLast: d.last}
	return nil
}

// ErrStop, returned by a read's emit, ends the read early without error.
var ErrStop = errors.New("log: stop reading")

// StreamQuery selects events of one stream.
type StreamQuery struct {
	Stream   string
	To       uint64 // the last position (inclusive) to read; 0: the published one
	From     uint64 // the first revision (inclusive)
	FromSet  bool   // false: from the start (forward) or the head (backward)
	Backward bool
	Max      uint64 // 0: all
}

// ReadStream calls emit for the stream's visible events that q selects, in
// order, up to the published position at the start of the read. emit owns
// each event. It fails with *StreamError for a stream that does not
// exist, is deleted or tombstoned.
func (l *Log) ReadStream(ctx context.Context, q StreamQuery, emit func(*RecordedEvent) error) error {
	return l.ReadStreamViews(ctx, q, materializing(emit))
}

// ReadStreamViews is ReadStream handing out views: no copy, no allocation
// per event; each view is valid only during its call of emit.
func (l *Log) ReadStreamViews(ctx context.Context, q StreamQuery, emit func(*EventView) error) error {
	s, ok, err := l.StreamInfo(ctx, q.Stream)
	if err != nil {
		return err
	}
	switch {
	case !ok:
		return &StreamError{Stream: q.Stream, Err: ErrStreamNotFound}
	case s.Tombstoned:
		return &StreamError{Stream: q.Stream, Err: ErrStreamTombstoned}
	case !s.Exists():
		return &StreamError{Stream: q.Stream, Err: ErrStreamDeleted}
	}
	return l.readRevisions(ctx, &s, q, emit)
}

// ReadPublished reads the events of q from a stream in state s (as its
// writer knows it) without waiting: it returns those published now,
// however far the writer has gone, and nothing for a stream without
// visible events; the retention limits apply. It is for the conflict
// delta of a failed append, which must not wait for the commit it lost
// to.
func (l *Log) ReadPublished(ctx context.Context, s *StreamState, q StreamQuery, emit func(*RecordedEvent) error) error {
	ls, err := l.withLimits(ctx, *s)
	if err != nil {
		return err
	}
	return l.readRevisions(ctx, &ls, q, materializing(emit))
}

// ReadStateViews is ReadStreamViews of a stream in state s, as a reader
// got it from StreamInfo: it reads q's events up to s.Head (nothing for a
// stream without visible events in s), however far the stream has moved
// since, so that a caller reads the stream as of one moment (a snapshot
// load: the snapshot chosen, the events after it and the head reported
// agree).
func (l *Log) ReadStateViews(ctx context.Context, s *StreamState, q StreamQuery, emit func(*EventView) error) error {
	return l.readRevisions(ctx, s, q, emit)
}

func (l *Log) readRevisions(ctx context.Context, s *StreamState, q StreamQuery, emit func(*EventView) error) error {
	if !s.Exists() || s.FirstVisible() > s.Head {
		return nil
	}
	hi := l.published.Load()
	if q.To > 0 {
		hi = min(hi, q.To)
	}
	lo, up := s.FirstVisible(), s.Head // revisions [lo, up] to read
	if q.FromSet {
		if q.Backward {
			if q.From < lo {
				return nil
			}
			up = min(q.From, up)
		} else {
			if q.From > up {
				return nil
			}
			lo = max(q.From, lo)
		}
	}
	// The entry holding lo may start before it: the lower bound is the
	// stream's first entry.
	idx, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendIndexKey(nil, s.ID, 0),
		UpperBound: appendIndexKey(nil, s.ID, up+1), // up < MaxUint64: revisions come from counts
	})
	if err != nil {
		return err
	}
	// A clone: the same view of the store as idx, so that a scavenge
	// cannot remove between the two the events of an entry idx holds.
	it, err := idx.CloneWithContext(ctx, pebble.CloneOptions{IterOptions: &pebble.IterOptions{
		LowerBound: []byte{kEvent},
		UpperBound: appendEventKey(nil, hi+1),
	}})
	if err != nil {
		return errors.Join(err, idx.Close())
	}
	err = l.scanIndex(ctx, idx, &eventCursor{it: it}, s, q, lo, up, hi, emit)
	return errors.Join(err, idx.Close(), it.Close())
}

// scanIndex emits the revisions lo..up of s (up..lo backward) at
// positions up to hi, at most q.Max of them. Each index entry is a range
// of revisions at contiguous positions: the first one read is the entry
// starting at or before the first revision wanted, and the events of an
// entry are read with one seek of evs and then steps.
func (l *Log) scanIndex(ctx context.Context, idx *pebble.Iterator, evs *eventCursor, s *StreamState, q StreamQuery, lo, up, hi uint64, emit func(*EventView) error) error {
	var (
		n   uint64
		ev  = EventView{Stream: s.Name}
		key [17]byte
	)
	want := lo // the next revision to read
	if q.Backward {
		want = up
	}
	valid := idx.SeekLT(appendIndexKey(key[:0], s.ID, want+1)) // want < MaxUint64, as up
	for top := true; valid; valid, top = step(idx, q.Backward), false {
		_, r, err := decodeIndexEntry(idx.Key(), idx.Value())
		if err != nil {
			return fmt.Errorf("stream %q: %w", s.Name, err)
		}
		if r.lastRev() < want && top {
			// The revisions from want on are not stored: s is a state its
			// writer predicts (ReadPublished), ahead of the commits
			// applied. They would be past hi.
			if !q.Backward {
				continue // the next entry, if any, is a hole
			}
			if want = r.lastRev(); want < lo {
				return nil
			}
		}
		if r.firstRev > want || r.lastRev() < want { // revisions are contiguous: a hole
			if l.Hidden(s.ID, want) {
				return nil // deleted and scavenged since s was read: the read ends there
			}
			return fmt.Errorf("%w: stream %q index has no revision %d", ErrCorrupt, s.Name, want)
		}
		// The revisions of r to read, in reading order: from want to end.
		end, dir := min(r.lastRev(), up), uint64(1)
		if q.Backward {
			end, dir = max(r.firstRev, lo), ^uint64(0) // dir -1
			if r.firstPos > hi {
				want = r.firstRev - 1 // applied, not yet durable: none of r is read
				if r.firstRev <= lo {
					return nil
				}
				continue
			}
			if r.pos(want) > hi { // the top of r is not durable yet
				if want = r.firstRev + (hi - r.firstPos); want < lo {
					return nil
				}
			}
		}
		for rev := want; ; rev += dir {
			pos := r.pos(rev)
			if pos > hi { // forward: applied, not yet durable; the read ends at hi
				return nil
			}
			if n&255 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			rec, err := evs.read(pos)
			if err != nil {
				return fmt.Errorf("stream %q revision %d: %w", s.Name, rev, err)
			}
			if err := decodeRecord(rec, &ev.v); err != nil {
				return fmt.Errorf("position %d: %w", pos, err)
			}
			if ev.v.sid != s.ID || ev.v.rev != rev {
				return fmt.Errorf("%w: stream %q revision %d: position %d holds stream %d revision %d", ErrCorrupt, s.Name, rev, pos, ev.v.sid, ev.v.rev)
			}
			ev.Position = pos
			if done, err := emitCounted(emit, &ev, &n, q.Max); done {
				return err
			}
			if rev == end {
				break
			}
		}
		if q.Backward {
			if end == lo {
				return nil
			}
			want = end - 1
		} else {
			if end == up {
				return nil
			}
			want = end + 1
		}
	}
	if err := idx.Error(); err != nil {
		return err
	}
	if !q.Backward || l.Hidden(s.ID, want) {
		// Forward: the revisions from want on are not stored yet (see
		// top). Backward: deleted and scavenged since s was read.
		return nil
	}
	return fmt.Errorf("%w: stream %q index has no revision %d", ErrCorrupt, s.Name, want)
}

// errNoEvent: no event is stored at a position an index names.
var errNoEvent = errors.New("no event at position")

// eventCursor reads events by position through one iterator: a step when
// the position is next to the last one read, else a seek.
type eventCursor struct {
	it  *pebble.Iterator
	at  uint64 // the position it is at; 0: not at an event
	key [9]byte
}

// read returns the record at pos, valid until the next read.
func (c *eventCursor) read(pos uint64) ([]byte, error) {
	var ok bool
	switch {
	case c.at != 0 && pos == c.at+1:
		ok = c.it.Next()
	case c.at != 0 && pos == c.at-1:
		ok = c.it.Prev()
	default:
		ok = c.it.SeekGE(appendEventKey(c.key[:0], pos))
	}
	c.at = 0
	if !ok {
		if err := c.it.Error(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w %d", ErrCorrupt, errNoEvent, pos)
	}
	if k := c.it.Key(); len(k) != 9 || k[0] != kEvent || binary.BigEndian.Uint64(k[1:]) != pos {
		return nil, fmt.Errorf("%w: %w %d (found key %x)", ErrCorrupt, errNoEvent, pos, k)
	}
	c.at = pos
	return c.it.Value(), nil
}

// emitCounted hands ev to emit and counts it in n: done when the read
// ends there, with emit's error (nil for ErrStop, or when limit, if set,
// is reached).
func emitCounted(emit func(*EventView) error, ev *EventView, n *uint64, limit uint64) (done bool, err error) {
	if err := emit(ev); err != nil {
		if errors.Is(err, ErrStop) {
			return true, nil
		}
		return true, err
	}
	*n++
	return limit > 0 && *n >= limit, nil
}

func step(it *pebble.Iterator, backward bool) bool {
	if backward {
		return it.Prev()
	}
	return it.Next()
}

// AllQuery selects events of $all.
type AllQuery struct {
	From     uint64 // the first position (inclusive); 0: the start, or the end backward
	To       uint64 // the last position (inclusive); 0: the published one
	Backward bool
	Max      uint64 // 0: all
	// Categories: only streams of these categories (see Category).
	Categories []string
	// NoIndex: scan even where an index could serve (benchmarks, tests).
	NoIndex bool
	// An event matches when its stream has one of StreamPrefixes and its
	// type one of TypePrefixes (an empty list matches all).
	StreamPrefixes []string
	TypePrefixes   []string
	// CheckpointEvery: after this many events scanned without a match,
	// checkpoint is called with the last position scanned. 0: never.
	CheckpointEvery int
}

// ReadAll calls emit for the visible events of $all that q selects, in
// position order, up to the position published when the read starts.
// Deleted events, and those the retention limits hide (as of the read's
// start; a stream's MaxCount from its head when the read meets it), are
// skipped. checkpoint (may be nil) is
// called as AllQuery.CheckpointEvery says and once at the end of a
// filtered read, with the last position scanned.
func (l *Log) ReadAll(ctx context.Context, q AllQuery, emit func(*RecordedEvent) error, checkpoint func(pos uint64) error) error {
	return l.ReadAllViews(ctx, q, materializing(emit), checkpoint)
}

// ReadAllViews is ReadAll handing out views: no copy, no allocation per
// event; each view is valid only during its call of emit.
func (l *Log) ReadAllViews(ctx context.Context, q AllQuery, emit func(*EventView) error, checkpoint func(pos uint64) error) error {
	hi := l.published.Load()
	if q.To > 0 {
		hi = min(hi, q.To)
	}
	lo, up := uint64(1), hi
	if q.From > 0 {
		if q.Backward {
			up = min(q.From, hi)
		} else {
			lo = q.From
		}
	}
	if lo > up {
		return nil
	}
	if q.filtered() {
		runs, err := l.indexRuns(ctx, q)
		if err != nil {
			return err
		}
		if runs != nil {
			return l.scanRuns(ctx, runs, lo, up, q, emit, checkpoint)
		}
	}
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendEventKey(nil, lo),
		UpperBound: appendEventKey(nil, up+1),
	})
	if err != nil {
		return err
	}
	err = l.scanAll(ctx, it, q, emit, checkpoint)
	return errors.Join(err, it.Close())
}

func (l *Log) scanAll(ctx context.Context, it *pebble.Iterator, q AllQuery, emit func(*EventView) error, checkpoint func(uint64) error) error {
	filtered := q.filtered()
	deleted := *l.deleted.Load()
	ret := l.retention()
	var (
		n, scanned, sinceMatch uint64
		ev                     EventView
		view                   = &ev.v
		pos                    uint64
		lastSID                uint64 // the stream of the previous event, often the same
	)
	valid := it.First()
	if q.Backward {
		valid = it.Last()
	}
	for ; valid; valid = step(it, q.Backward) {
		scanned++
		if scanned&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			deleted = *l.deleted.Load() // deletions published since the start
		}
		var err error
		if pos, err = decodeEventKey(it.Key()); err != nil {
			return err
		}
		if err := decodeRecord(it.Value(), view); err != nil {
			return fmt.Errorf("position %d: %w", pos, err)
		}
		if d, ok := deleted[view.sid]; ok && (d.tombstoned || view.rev < d.truncateBefore) {
			continue
		}
		if view.sid != lastSID || ev.Stream == "" {
			if ev.Stream, err = l.streamName(view.sid); err != nil {
				return fmt.Errorf("position %d: %w", pos, err)
			}
			lastSID = view.sid
		}
		// The filter first: the limits of a stream it drops are not worth
		// looking up (a MaxCount costs a read of its state).
		skip := filtered && !q.matches(ev.Stream, view.typ)
		if !skip && ret.t != nil { // no call per event without limits
			if skip, err = ret.hidden(view.sid, ev.Stream, view.rev, view.created); err != nil {
				return fmt.Errorf("position %d: %w", pos, err)
			}
		}
		// A hidden event counts as scanned without a match: a long run of
		// them gets checkpoints.
		if skip {
			sinceMatch++
			if checkpoint != nil && q.CheckpointEvery > 0 && sinceMatch >= uint64(q.CheckpointEvery) {
				sinceMatch = 0
				if err := checkpoint(pos); err != nil {
					return err
				}
			}
			continue
		}
		sinceMatch = 0
		ev.Position = pos
		if done, err := emitCounted(emit, &ev, &n, q.Max); done {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if filtered && checkpoint != nil && pos > 0 {
		return checkpoint(pos)
	}
	return nil
}

// HasAnyPrefix reports whether s starts with one of prefixes; with no
// prefixes, it holds for everything (an empty filter list).
func HasAnyPrefix[T string | []byte](s T, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if len(s) >= len(p) && string(s[:len(p)]) == p {
			return true
		}
	}
	return false
}

// streamName resolves a stream id through the name cache.
func (l *Log) streamName(sid uint64) (string, error) {
	if name, ok := l.names.get(sid); ok {
		return name, nil
	}
	s, ok, err := l.state(sid)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: event of unknown stream id %d", ErrCorrupt, sid)
	}
	l.names.put(sid, s.Name)
	return s.Name, nil
}

// ListStreams returns up to limit stream states whose names start with
// prefix and sort after the name after (exclusive; "" from the first), in
// name order. more says whether another page follows.
func (l *Log) ListStreams(ctx context.Context, prefix, after string, limit int) (out []StreamState, more bool, err error) {
	lower := appendNameKey(nil, prefix)
	if after != "" {
		if a := append(appendNameKey(nil, after), 0); bytes.Compare(a, lower) > 0 { // the least key after it
			lower = a
		}
	}
	upper := prefixEnd(appendNameKey(nil, prefix))
	if upper != nil && bytes.Compare(lower, upper) >= 0 {
		return nil, false, nil // the token is past every name with the prefix
	}
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	var lastPos uint64
	for valid := it.First(); valid; valid = it.Next() {
		if len(out) == limit {
			more = true
			break
		}
		name, err := decodeNameKey(it.Key())
		if err != nil {
			return nil, false, err
		}
		sid, err := decodeU64(it.Value())
		if err != nil {
			return nil, false, err
		}
		s, ok, err := l.state(sid)
		if err != nil {
			return nil, false, err
		}
		if !ok && l.unpublishedNew(sid) {
			continue // created by a commit the storage failure left unpublished
		}
		if !ok || s.Name != name {
			return nil, false, fmt.Errorf("%w: stream %q (id %d) state missing or misnamed", ErrCorrupt, name, sid)
		}
		lastPos = max(lastPos, s.LastPosition)
		if s, err = l.withLimits(ctx, s); err != nil {
			return nil, false, err
		}
		out = append(out, s)
	}
	if err := it.Error(); err != nil {
		return nil, false, err
	}
	// A stream created by a commit not yet durable must not be listed as
	// if it were: wait for it (an fsync at most).
	if err := l.WaitPublished(ctx, lastPos); err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// nameCache maps stream ids to names, bounded: when full it forgets a
// random half (Go's map order), which keeps the hot names with high odds
// and costs nothing to maintain.
type nameCache struct {
	mu    sync.RWMutex // guards m
	m     map[uint64]string
	limit int
}

func (c *nameCache) init(limit int) {
	c.m = make(map[uint64]string)
	c.limit = limit
}

func (c *nameCache) get(sid uint64) (string, bool) {
	c.mu.RLock()
	name, ok := c.m[sid]
	c.mu.RUnlock()
	return name, ok
}

func (c *nameCache) put(sid uint64, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.limit {
		n := 0
		for k := range c.m {
			if n >= c.limit/2 {
				break
			}
			delete(c.m, k)
			n++
		}
	}
	c.m[sid] = name
}

// CommitTime returns the commit time of the event at pos (unix
// nanoseconds), for the result of a retried append; ErrScavenged when a
// scavenge removed the event.
func (l *Log) CommitTime(pos uint64) (int64, error) {
	var kb [9]byte
	v, ok, err := l.get(appendEventKey(kb[:0], pos))
	if err != nil {
		return 0, err
	}
	if !ok {
		if pos > 0 && pos < l.removedBelow.Load() {
			// Positions up to the published one are contiguous: a gap
			// where scavenges removed events is one of them.
			return 0, fmt.Errorf("position %d: %w", pos, ErrScavenged)
		}
		return 0, fmt.Errorf("%w: no event at position %d", ErrCorrupt, pos)
	}
	var view recordView
	if err := decodeRecord(v, &view); err != nil {
		return 0, fmt.Errorf("position %d: %w", pos, err)
	}
	return view.created, nil
}

// EventView is a stored event as a read meets it. Its slices alias the
// store's buffers: valid only during the callback that receives it.
type EventView struct {
	Position uint64
	Stream   string
	v        recordView
}

func (e *EventView) Revision() uint64    { return e.v.rev }
func (e *EventView) ID() [16]byte        { return e.v.id }
func (e *EventView) Type() []byte        { return e.v.typ }
func (e *EventView) ContentType() []byte { return e.v.ctype }
func (e *EventView) Tags() [][]byte      { return e.v.tags }
func (e *EventView) Metadata() []byte    { return e.v.meta }
func (e *EventView) Data() []byte        { return e.v.data }
func (e *EventView) Created() int64      { return e.v.created } // unix nanoseconds

// Decode points the view at a committed event.
func (e *EventView) Decode(c *Committed) error {
	e.Position, e.Stream = c.Position, c.Stream
	return decodeRecord(c.Record, &e.v)
}

// Materialize copies the event out of the view.
func (e *EventView) Materialize() *RecordedEvent {
	ev := new(RecordedEvent)
	e.v.materialize(ev, e.Position, e.Stream)
	return ev
}

// materializing adapts an emit of owned events to views.
func materializing(emit func(*RecordedEvent) error) func(*EventView) error {
	return func(v *EventView) error { return emit(v.Materialize()) }
}

// EventAt returns the event at pos, if it is published and visible
// (neither deleted nor hidden by its stream's retention limits).
func (l *Log) EventAt(pos uint64) (*RecordedEvent, bool, error) {
	if pos == 0 || pos > l.published.Load() {
		return nil, false, nil
	}
	var kb [9]byte
	v, ok, err := l.get(appendEventKey(kb[:0], pos))
	if err != nil || !ok {
		return nil, false, err
	}
	var ev EventView
	if err := decodeRecord(v, &ev.v); err != nil {
		return nil, false, fmt.Errorf("position %d: %w", pos, err)
	}
	if l.Hidden(ev.v.sid, ev.v.rev) {
		return nil, false, nil
	}
	if ev.Stream, err = l.streamName(ev.v.sid); err != nil {
		return nil, false, err
	}
	ret := l.retention()
	if hidden, err := ret.hidden(ev.v.sid, ev.Stream, ev.v.rev, ev.v.created); err != nil || hidden {
		return nil, false, err
	}
	ev.Position = pos
	return ev.Materialize(), true, nil
}
