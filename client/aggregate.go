package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Aggregate runs the load-decide-append loop of an event-sourced
// aggregate whose state is S, one stream per aggregate: Update loads the
// stream's state (from a snapshot and the events after it, in one round
// trip), asks a decide function for the events of a command, and appends
// them at exactly the revision the decision saw. When another writer got
// there first, it folds what that writer appended onto the state it holds
// and decides again, or hands the conflict to the caller (OnConflict).
//
// Fill in the fields, then use it from any number of goroutines; it must
// not be copied after first use. Apply and decide must not modify the
// state they are given (they return a new one): the aggregate folds new
// events onto states it already handed out, and keeps them in its cache.
//
// A fold of the events since a conflict cannot see a soft delete of the
// stream at exactly the revision held followed by new appends (the new
// events look like the old stream's continuation); Load reads such a
// stream afresh. Streams deleted and written again under live aggregates
// should be given new names instead.
type Aggregate[S any] struct {
	Client *Client
	// New returns the state of a stream without events.
	New func() S
	// Apply folds one event into the state.
	Apply func(S, *esdv1.RecordedEvent) (S, error)

	// Snapshots, optional: with Encode and Decode set, Load starts from
	// the stream's latest snapshot of SchemaVersion whose type is
	// SnapshotType, and the state is saved as a snapshot whenever esd
	// advises one (the category's snapshot policy, see SetSnapshotPolicy):
	// in the background, at most MaxSavesInFlight at once (default 4),
	// never delaying or failing a command. OnSnapshot, if set, hears of
	// every save (err nil) and every failure, encoding included.
	SnapshotType     string
	SchemaVersion    uint32
	Encode           func(S) ([]byte, error)
	Decode           func([]byte) (S, error)
	MaxSavesInFlight int
	OnSnapshot       func(stream string, revision uint64, err error)

	// OnConflict decides, for each conflict of an Update, whether to
	// decide again on the state with the conflict's events folded in
	// (true) or to return the conflict to the caller (false). Nil retries
	// every conflict (RetryConflicts). A conflict it is given carries
	// every event appended since the revision the decision saw.
	OnConflict ConflictPolicy
	// MaxRetries bounds the conflicts one Update retries (default 10;
	// negative: none). Each retry waits a random time between half of
	// the backoff and the backoff, which doubles from MinBackoff (default
	// 1 ms) to MaxBackoff (default 100 ms), so that writers that collided
	// spread out.
	MaxRetries             int
	MinBackoff, MaxBackoff time.Duration

	// CacheSize keeps the states of up to this many streams (the least
	// recently used are dropped; default 10,000), so that an Update on a
	// stream this process wrote last appends without loading it first: one
	// round trip instead of two. A stale state costs a conflict, whose
	// events bring it up to date, and a refusal decided on a cached state is
	// confirmed at the server first. Negative: no cache, every Update loads.
	CacheSize int

	once  sync.Once
	cache *stateCache[S]
	saves chan struct{}  // a token per save in flight
	busy  sync.Map       // stream -> struct{}: a save of it is in flight
	wg    sync.WaitGroup // the saves in flight
}

// ConflictPolicy says whether Update decides again after conflict c
// (true) or returns it (false).
type ConflictPolicy func(c *Conflict) bool

// RetryConflicts retries every conflict (up to MaxRetries).
func RetryConflicts(*Conflict) bool { return true }

// SurfaceConflicts returns every conflict to the caller, with the events
// appended since the state its decision saw: for commands a person
// decided on what they saw, who should see what changed before trying
// again.
func SurfaceConflicts(*Conflict) bool { return false }

// State is an aggregate's state as of a revision of its stream.
type State[S any] struct {
	Value S
	// Head is the revision of the last event folded into Value when
	// Exists; an append after it expects After(Head, Exists).
	Head   uint64
	Exists bool
}

// Expected is the expected revision of an append decided on s.
func (s State[S]) Expected() Expected { return After(s.Head, s.Exists) }

// Result is what an Update did.
type Result[S any] struct {
	// State is the state after the command: with its events folded in
	// when it appended any, the state decide saw otherwise.
	State State[S]
	// Append is the append's response; nil when decide returned no
	// events.
	Append *esdv1.AppendResponse
	// Retries counts the conflicts the Update decided again after.
	Retries int
}

const (
	defaultMaxRetries = 10
	defaultMinBackoff = time.Millisecond
	defaultMaxBackoff = 100 * time.Millisecond
	defaultSaves      = 4
	defaultCacheSize  = 10_000
)

func (a *Aggregate[S]) init() {
	a.once.Do(func() {
		switch {
		case a.CacheSize == 0:
			a.cache = newStateCache[S](defaultCacheSize)
		case a.CacheSize > 0:
			a.cache = newStateCache[S](a.CacheSize)
		}
		n := a.MaxSavesInFlight
		if n <= 0 {
			n = defaultSaves
		}
		a.saves = make(chan struct{}, n)
	})
}

// Load returns the stream's current state: its latest usable snapshot
// (when snapshots are configured and one matches) with the events after
// it folded in. A stream never written or deleted is New() and does not
// exist.
func (a *Aggregate[S]) Load(ctx context.Context, stream string) (State[S], error) {
	a.init()
	st, err := a.load(ctx, stream)
	if err == nil {
		a.remember(stream, st)
	}
	return st, err
}

func (a *Aggregate[S]) load(ctx context.Context, stream string) (State[S], error) {
	l, err := a.Client.Load(ctx, stream, a.SchemaVersion)
	if err != nil {
		if r := ReasonOf(err); r == ReasonStreamNotFound || r == ReasonStreamDeleted {
			return State[S]{Value: a.New()}, nil
		}
		return State[S]{}, err
	}
	base, from, ok := a.fromSnapshot(l.Snapshot)
	if !ok {
		// A snapshot this aggregate cannot use (another type, or one it
		// cannot decode): the events it stands for are read instead.
		return a.replay(ctx, stream)
	}
	st, err := a.fold(State[S]{Value: base, Head: from, Exists: l.Snapshot != nil}, l.Events)
	if err != nil {
		return State[S]{}, err
	}
	st.Head, st.Exists = l.Head, true
	if l.SnapshotAdvised {
		a.saveSnapshot(stream, st)
	}
	return st, nil
}

// fromSnapshot returns the state a Load starts from and the snapshot's
// revision; false when the snapshot is unusable.
func (a *Aggregate[S]) fromSnapshot(s *esdv1.Snapshot) (S, uint64, bool) {
	if s == nil {
		return a.New(), 0, true
	}
	if a.Decode == nil || s.GetType() != a.SnapshotType {
		var zero S
		return zero, 0, false
	}
	v, err := a.Decode(s.GetData())
	if err != nil {
		if a.OnSnapshot != nil {
			a.OnSnapshot(s.GetStream(), s.GetRevision(), fmt.Errorf("decode snapshot: %w", err))
		}
		var zero S
		return zero, 0, false
	}
	return v, s.GetRevision(), true
}

// replay folds every visible event of the stream into New().
func (a *Aggregate[S]) replay(ctx context.Context, stream string) (State[S], error) {
	evs, err := a.Client.readStreamRange(ctx, stream, 0, 0)
	if err != nil {
		if r := ReasonOf(err); r == ReasonStreamNotFound || r == ReasonStreamDeleted {
			return State[S]{Value: a.New()}, nil
		}
		return State[S]{}, err
	}
	return a.fold(State[S]{Value: a.New()}, evs)
}

// fold applies events to st, which moves to the last one's revision.
func (a *Aggregate[S]) fold(st State[S], events []*esdv1.RecordedEvent) (State[S], error) {
	for _, ev := range events {
		v, err := a.Apply(st.Value, ev)
		if err != nil {
			return State[S]{}, fmt.Errorf("apply %s@%d (%s): %w", ev.GetStream(), ev.GetRevision(), ev.GetType(), err)
		}
		st = State[S]{Value: v, Head: ev.GetRevision(), Exists: true}
	}
	return st, nil
}

// Update runs one command on the stream's aggregate: decide returns the
// events the command appends on the current state (none: nothing to
// do), and Update appends them at exactly that state's revision.
//
// On a conflict it asks OnConflict: to retry, it folds the conflict's
// events onto the state (or loads the stream again when they are not
// all there) and calls decide again, up to MaxRetries times, after which
// it returns the last conflict (IsWrongExpectedRevision holds for the
// error). To surface, it returns the conflict with every event appended
// since the state decide saw (read from the stream when the server's
// conflict delta was truncated). With a conflict returned, the Result's
// State is the state that decision saw: the conflict's events are those
// after its Head.
//
// An error decide returns is returned as it is, and nothing is appended.
// When decide rejected a command, or found nothing to do, on a state from
// the cache, Update first checks that the state is current (an append of
// no events at its revision), so that no answer rests on a stale state.
func (a *Aggregate[S]) Update(ctx context.Context, stream string, decide func(S) ([]*esdv1.ProposedEvent, error)) (Result[S], error) {
	a.init()
	st, cached := State[S]{}, false
	if a.cache != nil {
		st, cached = a.cache.get(stream)
	}
	if !cached {
		var err error
		if st, err = a.load(ctx, stream); err != nil {
			return Result[S]{}, err
		}
	}
	maxRetries := a.MaxRetries
	if maxRetries == 0 {
		maxRetries = defaultMaxRetries
	}
	first, most := a.MinBackoff, a.MaxBackoff
	if first <= 0 {
		first = defaultMinBackoff
	}
	if most <= 0 {
		most = defaultMaxBackoff
	}
	wait := newBackoff(first, most)
	res := Result[S]{}
	for {
		events, decideErr := decide(st.Value)
		var resp *esdv1.AppendResponse
		var err error
		switch {
		case (decideErr != nil || len(events) == 0) && !cached:
			res.State = st
			return res, decideErr
		case decideErr != nil || len(events) == 0:
			// Confirm the cached state the answer rests on: an append
			// of no events checks the revision and writes nothing.
			_, err = a.Client.Append(ctx, stream, st.Expected())
			if err == nil {
				res.State = st
				return res, decideErr
			}
		default:
			resp, err = a.Client.Append(ctx, stream, st.Expected(), events...)
		}
		if err == nil {
			next, ferr := a.fold(st, recorded(stream, events, resp))
			if ferr != nil {
				a.forget(stream)
				return res, fmt.Errorf("appended to %s at %d, but: %w", stream, resp.GetLastRevision(), ferr)
			}
			a.remember(stream, next)
			if resp.GetSnapshotAdvised() {
				a.saveSnapshot(stream, next)
			}
			res.State, res.Append = next, resp
			return res, nil
		}
		conflict, ok := IsWrongExpectedRevision(err)
		if !ok {
			// The stream's state is unknown now (an append cut short
			// may still have been written).
			a.forget(stream)
			return res, err
		}
		if decideErr == nil && len(events) > 0 {
			// A command's append conflicted: the policy's business.
			exhausted := res.Retries >= maxRetries
			policy := a.OnConflict
			// A conflict handed to anyone, the policy or the caller,
			// carries every event since st; one only retried needs them
			// just to fold.
			if policy != nil || exhausted {
				if cerr := a.Client.completeConflict(ctx, conflict); cerr != nil {
					return res, errors.Join(err, cerr)
				}
			}
			if exhausted {
				res.State = st
				if maxRetries > 0 {
					err = fmt.Errorf("%s: %d conflicts retried, giving up: %w", stream, res.Retries, err)
				}
				return res, err
			}
			if policy != nil && !policy(conflict) {
				res.State = st
				return res, err
			}
			res.Retries++
		}
		// Else the cached state a rejection rested on was stale: decide
		// again on the current one, which no policy needs to hear of.
		if st, err = a.catchUp(ctx, stream, st, conflict); err != nil {
			a.forget(stream)
			return res, err
		}
		cached = false // st is what the server just said
		a.remember(stream, st)
		if !wait.wait(ctx) {
			return res, asError(ctx.Err())
		}
	}
}

// catchUp returns st moved to the conflict's head: the conflict's events
// folded in when they are every event since st, else a fresh load.
func (a *Aggregate[S]) catchUp(ctx context.Context, stream string, st State[S], c *Conflict) (State[S], error) {
	if !c.StreamExists { // deleted since st
		return State[S]{Value: a.New()}, nil
	}
	if !since(st, c) {
		return a.load(ctx, stream)
	}
	base := st
	if !st.Exists {
		base = State[S]{Value: a.New()}
	}
	return a.fold(base, c.Events)
}

// since reports whether c.Events are every event after st up to the
// conflict's head, without a gap.
func since[S any](st State[S], c *Conflict) bool {
	if c.Truncated || len(c.Events) == 0 {
		return false
	}
	next := c.Events[0].GetRevision()
	if st.Exists && next != st.Head+1 {
		return false
	}
	for _, ev := range c.Events {
		if ev.GetRevision() != next {
			return false
		}
		next++
	}
	return next-1 == c.ActualHead
}

// recorded returns the events an append wrote as a reader would get
// them, for folding into the state.
func recorded(stream string, events []*esdv1.ProposedEvent, resp *esdv1.AppendResponse) []*esdv1.RecordedEvent {
	out := make([]*esdv1.RecordedEvent, len(events))
	for i, ev := range events {
		out[i] = &esdv1.RecordedEvent{
			Id: ev.GetId(), Stream: stream, Type: ev.GetType(), Data: ev.GetData(), Metadata: ev.GetMetadata(),
			ContentType: ev.GetContentType(), Tags: ev.GetTags(), Created: resp.GetCommitTime(),
			Revision: resp.GetFirstRevision() + uint64(i),
			// The events of one commit take consecutive positions.
			Position: resp.GetFirstPosition() + uint64(i),
		}
	}
	return out
}

// remember caches st. A state without events replaces whatever the
// cache holds: the stream was deleted since.
func (a *Aggregate[S]) remember(stream string, st State[S]) {
	if a.cache == nil {
		return
	}
	if !st.Exists {
		a.cache.remove(stream)
	}
	a.cache.put(stream, st)
}

func (a *Aggregate[S]) forget(stream string) {
	if a.cache != nil {
		a.cache.remove(stream)
	}
}

// saveSnapshot saves st as the stream's snapshot in the background,
// unless a save of the stream is in flight already or MaxSavesInFlight
// are: the server advises again after the next append until one is
// saved.
func (a *Aggregate[S]) saveSnapshot(stream string, st State[S]) {
	if a.Encode == nil || !st.Exists {
		return
	}
	if _, inFlight := a.busy.LoadOrStore(stream, struct{}{}); inFlight {
		return
	}
	select {
	case a.saves <- struct{}{}:
	default:
		a.busy.Delete(stream)
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() { <-a.saves; a.busy.Delete(stream) }()
		data, err := a.Encode(st.Value)
		if err != nil {
			err = fmt.Errorf("encode snapshot: %w", err)
		} else {
			_, err = a.Client.SaveSnapshot(context.Background(), Snapshot{
				Stream: stream, Revision: st.Head, Type: a.SnapshotType, SchemaVersion: a.SchemaVersion, Data: data,
			})
		}
		if a.OnSnapshot != nil {
			a.OnSnapshot(stream, st.Head, err)
		}
	}()
}

// Wait waits for the snapshot saves in flight (each bounded by the
// client's timeout).
func (a *Aggregate[S]) Wait() { a.wg.Wait() }

// completeConflict reads the events of c's stream that c.Events lacks,
// up to its head, so that they are every visible event since the
// expected revision.
func (c *Client) completeConflict(ctx context.Context, conflict *Conflict) error {
	if !conflict.Truncated || !conflict.StreamExists {
		return nil
	}
	var from uint64
	if n := len(conflict.Events); n > 0 {
		from = conflict.Events[n-1].GetRevision() + 1
	} else if r, ok := conflict.Expected.Revision(); ok {
		from = r + 1
	}
	if from > conflict.ActualHead {
		conflict.Truncated = false
		return nil
	}
	rest, err := c.readStreamRange(ctx, conflict.Stream, from, conflict.ActualHead-from+1)
	if err != nil {
		return fmt.Errorf("read the events since the conflict's delta: %w", err)
	}
	for _, ev := range rest {
		if ev.GetRevision() <= conflict.ActualHead {
			conflict.Events = append(conflict.Events, ev)
		}
	}
	conflict.Truncated = false
	return nil
}

// readStreamRange reads up to count events of stream (0: all) from
// revision from on.
func (c *Client) readStreamRange(ctx context.Context, stream string, from, count uint64) ([]*esdv1.RecordedEvent, error) {
	var out []*esdv1.RecordedEvent
	for ev, err := range c.Read(ctx, stream, FromRevision(from), MaxCount(count)) {
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// stateCache keeps the latest known states of the most recently used
// streams.
type stateCache[S any] struct {
	mu    sync.Mutex
	max   int
	items map[string]*cacheItem[S]
	// head and tail of the recency list: head is the most recent.
	head, tail *cacheItem[S]
}

type cacheItem[S any] struct {
	stream     string
	st         State[S]
	prev, next *cacheItem[S]
}

func newStateCache[S any](n int) *stateCache[S] {
	return &stateCache[S]{max: n, items: make(map[string]*cacheItem[S], n)}
}

func (c *stateCache[S]) get(stream string) (State[S], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.items[stream]
	if !ok {
		return State[S]{}, false
	}
	c.toFront(it)
	return it.st, true
}

// put keeps st unless the cache holds a later state of the stream: of
// two writers racing, the one that saw less must not win.
func (c *stateCache[S]) put(stream string, st State[S]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if it, ok := c.items[stream]; ok {
		if it.st.Exists && (!st.Exists || st.Head < it.st.Head) {
			return
		}
		it.st = st
		c.toFront(it)
		return
	}
	it := &cacheItem[S]{stream: stream, st: st}
	c.items[stream] = it
	c.toFront(it)
	if len(c.items) > c.max {
		last := c.tail
		c.unlink(last)
		delete(c.items, last.stream)
	}
}

func (c *stateCache[S]) remove(stream string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if it, ok := c.items[stream]; ok {
		c.unlink(it)
		delete(c.items, stream)
	}
}

func (c *stateCache[S]) toFront(it *cacheItem[S]) {
	if c.head == it {
		return
	}
	c.unlink(it)
	it.next = c.head
	if c.head != nil {
		c.head.prev = it
	}
	c.head = it
	if c.tail == nil {
		c.tail = it
	}
}

func (c *stateCache[S]) unlink(it *cacheItem[S]) {
	if it.prev != nil {
		it.prev.next = it.next
	} else if c.head == it {
		c.head = it.next
	}
	if it.next != nil {
		it.next.prev = it.prev
	} else if c.tail == it {
		c.tail = it.prev
	}
	it.prev, it.next = nil, nil
}
