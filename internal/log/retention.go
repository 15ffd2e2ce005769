package log

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Retention limits hide a stream's older events from every read, as a
// soft delete does (invariant 4), but as a view: the events stay stored,
// a limit raised or removed shows them again, and nothing is counted or
// written when they cross a limit. A scavenge ends the view: it writes
// the cut as a DeleteTruncate (through the writer, ordered with
// metadata writes by internal/streammeta's Enforce), after which the
// stream's TruncateBefore hides the events for good and the scavenge
// removes them. The limits come from stream metadata
// (internal/streammeta), which hands them to the log with SetLimits; the
// log keeps them in memory and applies them:
//
//   - to a stream's state as readers get it (StreamInfo, ListStreams):
//     LimitBefore, and so FirstVisible and EventCount, and every read of
//     the stream that starts from such a state (ReadStream, Load);
//   - to reads of $all and of categories, event by event (retentionCheck);
//   - to EventAt.
//
// Appends and deletes decide on the stored state, which limits do not
// touch: expected revisions are about the head. Live delivery of
// committed events (OnPublish, Hidden) is not filtered by limits.

// Limits are the retention limits of a stream: its metadata's, each
// missing one taken from its category's (Over).
type Limits struct {
	// MaxCount keeps the newest MaxCount events; 0: no limit.
	MaxCount uint64
	// MaxAge keeps the events committed within MaxAge of now (the
	// log's clock); 0: no limit.
	MaxAge time.Duration
	// TruncateBefore hides the revisions below it; 0: none.
	TruncateBefore uint64
}

// IsZero reports whether l limits nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

// Over returns l with each limit it does not set taken from def (a
// category's defaults).
func (l Limits) Over(def Limits) Limits {
	if l.MaxCount == 0 {
		l.MaxCount = def.MaxCount
	}
	if l.MaxAge == 0 {
		l.MaxAge = def.MaxAge
	}
	if l.TruncateBefore == 0 {
		l.TruncateBefore = def.TruncateBefore
	}
	return l
}

// FirstVisible is the first revision of a stream at head (written) that a
// reader sees: the largest of the soft delete's truncate, the limits'
// TruncateBefore, head+1-MaxCount, and ageFirst, the first revision
// committed within MaxAge of now (head+1 when none is; ignored without
// MaxAge). head+1 means none is visible.
func FirstVisible(truncate, head uint64, lim Limits, ageFirst uint64) uint64 {
	first := max(truncate, lim.TruncateBefore)
	if lim.MaxCount > 0 && head+1 > lim.MaxCount {
		first = max(first, head+1-lim.MaxCount)
	}
	if lim.MaxAge > 0 {
		first = max(first, ageFirst)
	}
	return min(first, head+1)
}

// limitsTable holds the limits set by SetLimits; copy on write.
type limitsTable struct {
	streams    map[string]Limits // a stream's own
	categories map[string]Limits // a category's defaults
}

// lookup returns the limits of stream name: a map lookup for a stream
// without any when no category has defaults, two with them.
func (t *limitsTable) lookup(name string) (Limits, bool) {
	own, ok := t.streams[name]
	if len(t.categories) > 0 {
		if def, dok := t.categories[Category(name)]; dok {
			return own.Over(def), true
		}
	}
	return own, ok
}

// limitsState is the log's part for retention limits.
type limitsState struct {
	mu    sync.Mutex                  // serializes SetLimits
	table atomic.Pointer[limitsTable] // nil: no limits anywhere
	now   func() time.Time            // the clock of MaxAge
}

// SetLimits sets the limits of a stream (category false) or the defaults
// of a category; zero Limits removes them. Reads that start after it
// returns apply them.
func (l *Log) SetLimits(name string, category bool, lim Limits) {
	l.lim.mu.Lock()
	defer l.lim.mu.Unlock()
	next := limitsTable{streams: map[string]Limits{}, categories: map[string]Limits{}}
	if old := l.lim.table.Load(); old != nil {
		for k, v := range old.streams {
			next.streams[k] = v
		}
		for k, v := range old.categories {
			next.categories[k] = v
		}
	}
	m := next.streams
	if category {
		m = next.categories
	}
	if lim.IsZero() {
		delete(m, name)
	} else {
		m[name] = lim
	}
	l.storeLimits(next)
}

// SetAllLimits replaces every stream's and category's limits at once (at
// open: one table, where a SetLimits each would copy it each time).
func (l *Log) SetAllLimits(streams, categories map[string]Limits) {
	l.lim.mu.Lock()
	defer l.lim.mu.Unlock()
	next := limitsTable{streams: map[string]Limits{}, categories: map[string]Limits{}}
	for k, v := range streams {
		if !v.IsZero() {
			next.streams[k] = v
		}
	}
	for k, v := range categories {
		if !v.IsZero() {
			next.categories[k] = v
		}
	}
	l.storeLimits(next)
}

// storeLimits publishes next; nil when it holds no limit, so that reads
// skip the limits altogether. Called with l.lim.mu held.
func (l *Log) storeLimits(next limitsTable) {
	if len(next.streams) == 0 && len(next.categories) == 0 {
		l.lim.table.Store(nil)
		return
	}
	l.lim.table.Store(&next)
}

// LimitsOf returns the limits that apply to stream name: its own, each
// missing one from its category's defaults.
func (l *Log) LimitsOf(name string) (Limits, bool) {
	if t := l.lim.table.Load(); t != nil {
		return t.lookup(name)
	}
	return Limits{}, false
}

// VisibleFrom returns the first revision of stream state s that readers
// see now: past its soft delete's truncate and the retention limits
// (FirstVisible). It is Head+1 when none is visible. Everything under it
// is hidden from every read until a limit is raised or removed; a
// scavenge's truncate at it (capped at the head) makes that for good.
func (l *Log) VisibleFrom(ctx context.Context, s *StreamState) (uint64, error) {
	if !s.Written {
		return 0, nil
	}
	if s.Tombstoned {
		return s.Head + 1, nil
	}
	lb, err := l.limitBefore(ctx, s)
	if err != nil {
		return 0, err
	}
	return max(s.TruncateBefore, lb), nil
}

// limitBefore returns the first revision of s the retention limits leave
// visible (0: they hide nothing), for StreamState.LimitBefore.
func (l *Log) limitBefore(ctx context.Context, s *StreamState) (uint64, error) {
	if !s.Written || s.Tombstoned {
		return 0, nil
	}
	lim, ok := l.LimitsOf(s.Name)
	if !ok {
		return 0, nil
	}
	ageFirst := uint64(0)
	if lim.MaxAge > 0 {
		var err error
		if ageFirst, err = l.firstSince(ctx, s, l.ageCutoff(lim.MaxAge)); err != nil {
			return 0, err
		}
	}
	return FirstVisible(0, s.Head, lim, ageFirst), nil
}

// ageCutoff is the commit time (unix nanoseconds) before which MaxAge
// hides an event.
func (l *Log) ageCutoff(maxAge time.Duration) int64 {
	now := l.lim.now().UnixNano()
	if now < math.MinInt64+int64(maxAge) { // maxAge > 0
		return math.MinInt64
	}
	return now - int64(maxAge)
}

// firstSince returns the first revision of s, from its truncate on,
// committed at or after cutoff (Head+1 when none): a binary search, as
// commit times never go backwards in position order, so neither in
// revision order. A revision not stored yet (s a writer's prediction)
// counts as new.
func (l *Log) firstSince(ctx context.Context, s *StreamState, cutoff int64) (uint64, error) {
	idx, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendIndexKey(nil, s.ID, 0),
		UpperBound: appendIndexKey(nil, s.ID, s.Head+1),
	})
	if err != nil {
		return 0, err
	}
	var view recordView
	created := func(rev uint64) (int64, error) {
		var key [17]byte
		if !idx.SeekLT(appendIndexKey(key[:0], s.ID, rev+1)) {
			return math.MaxInt64, idx.Error()
		}
		_, r, err := decodeIndexEntry(idx.Key(), idx.Value())
		if err != nil {
			return 0, fmt.Errorf("stream %q: %w", s.Name, err)
		}
		if r.lastRev() < rev {
			return math.MaxInt64, nil // not stored yet
		}
		pos := r.pos(rev)
		var kb [9]byte
		v, ok, err := l.get(appendEventKey(kb[:0], pos))
		if err != nil || !ok {
			return math.MaxInt64, err
		}
		if err := decodeRecord(v, &view); err != nil {
			return 0, fmt.Errorf("position %d: %w", pos, err)
		}
		return view.created, nil
	}
	lo, hi := s.TruncateBefore, s.Head+1 // the answer is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		t, err := created(mid)
		if err != nil {
			return 0, errors.Join(err, idx.Close())
		}
		if t >= cutoff {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, idx.Close()
}

// withLimits returns s with LimitBefore set, for a reader.
func (l *Log) withLimits(ctx context.Context, s StreamState) (StreamState, error) {
	var err error
	s.LimitBefore, err = l.limitBefore(ctx, &s)
	return s, err
}

// retentionCheck hides the events of streams with limits from one read of
// $all or of categories, with the limits and the time as of its start.
// Without limits anywhere it costs a nil test an event.
type retentionCheck struct {
	l    *Log
	t    *limitsTable
	cuts map[uint64]streamCut // the streams with limits met so far
	sid  uint64               // the stream of cur, when have
	cur  streamCut
	have bool
}

// streamCut is what hides a stream's events: a revision below before, or
// a commit time below notBefore.
type streamCut struct {
	before    uint64
	notBefore int64
}

func (l *Log) retention() retentionCheck {
	return retentionCheck{l: l, t: l.lim.table.Load()}
}

// hidden reports whether the event rev of stream sid (named name),
// committed at created, is hidden by its stream's limits. A stream's
// MaxCount is measured from its head when the read first meets it.
func (r *retentionCheck) hidden(sid uint64, name string, rev uint64, created int64) (bool, error) {
	if r.t == nil {
		return false, nil
	}
	if !r.have || sid != r.sid {
		c, ok := r.cuts[sid]
		if !ok {
			var (
				err     error
				limited bool
			)
			if c, limited, err = r.cut(sid, name); err != nil {
				return false, err
			}
			// Only streams with limits are kept: a scan of $all meets
			// every stream, and the others cost a lookup, not a read.
			if limited {
				if r.cuts == nil {
					r.cuts = make(map[uint64]streamCut)
				}
				r.cuts[sid] = c
			}
		}
		r.sid, r.cur, r.have = sid, c, true
	}
	return rev < r.cur.before || created < r.cur.notBefore, nil
}

// cut is the part of stream sid its limits hide; limited is false for a
// stream without limits.
func (r *retentionCheck) cut(sid uint64, name string) (c streamCut, limited bool, err error) {
	c = streamCut{notBefore: math.MinInt64}
	lim, ok := r.t.lookup(name)
	if !ok {
		return c, false, nil
	}
	c.before = lim.TruncateBefore
	if lim.MaxAge > 0 {
		c.notBefore = r.l.ageCutoff(lim.MaxAge)
	}
	if lim.MaxCount > 0 {
		s, ok, err := r.l.state(sid)
		if err != nil {
			return c, true, err
		}
		if ok && s.Written && s.Head+1 > lim.MaxCount {
			c.before = max(c.before, s.Head+1-lim.MaxCount)
		}
	}
	return c, true, nil
}
