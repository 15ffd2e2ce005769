package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/writer"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults and limits of Config.
const (
	DefaultRetention    = 2
	MaxRetention        = 1000
	DefaultHalfLife     = 5 * time.Minute
	DefaultCacheStreams = 100_000
	DefaultSketchWidth  = 1 << 14
)

// Config configures Open. The zero value is usable: retention 2, no
// default policy.
type Config struct {
	// Retention is how many snapshots a stream keeps, newest by revision;
	// 0 means DefaultRetention; at most MaxRetention.
	Retention int
	// Default is the policy of every category without its own.
	Default Policy
	// HalfLife is the half-life of the load rates (dynamic policy); 0
	// means DefaultHalfLife.
	HalfLife time.Duration
	// CacheStreams bounds the advice cache (streams whose latest snapshot
	// revision is held in memory); 0 means DefaultCacheStreams.
	CacheStreams int
	// SketchWidth is the number of cells in each of the load-rate
	// sketch's 4 rows, a power of two; 0 means DefaultSketchWidth.
	SketchWidth int
	// Clock gives the times of snapshots and loads; nil means time.Now.
	Clock func() time.Time
}

// Policy says when to advise a snapshot of a stream (SnapshotPolicy in
// the API). Either rule advises; both 0: no advice.
type Policy struct {
	// Every advises once the stream has had this many events since its
	// latest usable snapshot.
	Every uint64
	// ReplayThreshold advises once events since the latest snapshot times
	// the stream's load rate (loads per second) reaches it.
	ReplayThreshold uint64
}

// Off reports whether the policy never advises.
func (p Policy) Off() bool { return p.Every == 0 && p.ReplayThreshold == 0 }

// Snapshot is a stored snapshot.
type Snapshot struct {
	Stream        string
	Revision      uint64
	Type          string
	SchemaVersion uint32
	Data          []byte
	Created       int64 // unix nanoseconds, set by Save
}

// Info describes a stored snapshot without its data.
type Info struct {
	Stream        string
	Revision      uint64
	Type          string
	SchemaVersion uint32
	Size          uint64
	Created       int64
	// Usable: its revision is a visible event of its stream.
	Usable bool
}

// SaveResult is what a Save did.
type SaveResult struct {
	// Saved is false when the stream holds Retention newer snapshots.
	Saved bool
	// Pruned counts the older snapshots the save removed.
	Pruned int
}

// Advice is the snapshot advice for a stream at some head.
type Advice struct {
	// Applies: a policy applies to the stream's category, and the fields
	// below mean something.
	Applies bool
	// EventsSince is the number of events after the stream's latest
	// usable snapshot of any schema version (all visible events without
	// one).
	EventsSince uint64
	// Advised: the policy advises a snapshot now.
	Advised bool
}

var (
	// ErrNotFound: no usable snapshot matches (a *NotFoundError).
	ErrNotFound = errors.New("snapshot: not found")
	// ErrClosed: the store is closed (the engine drains).
	ErrClosed = errors.New("snapshot: closed")
)

// NotFoundError is ErrNotFound for a stream.
type NotFoundError struct {
	Stream        string
	SchemaVersion uint32
	MaxRevision   uint64 // 0: no bound
}

func (e *NotFoundError) Error() string {
	if e.MaxRevision > 0 {
		return fmt.Sprintf("stream %q: no usable snapshot of schema version %d at or below revision %d", e.Stream, e.SchemaVersion, e.MaxRevision)
	}
	return fmt.Sprintf("stream %q: no usable snapshot of schema version %d", e.Stream, e.SchemaVersion)
}

func (e *NotFoundError) Unwrap() error { return ErrNotFound }

// RevisionError refuses a snapshot of a revision that is not a visible
// event of its stream: past the head, or deleted.
type RevisionError struct {
	Stream   string
	Revision uint64
	Head     uint64
	First    uint64 // the first visible revision
}

func (e *RevisionError) Error() string {
	if e.Revision > e.Head {
		return fmt.Sprintf("stream %q: snapshot revision %d is past the head %d", e.Stream, e.Revision, e.Head)
	}
	return fmt.Sprintf("stream %q: snapshot revision %d is deleted (the first visible revision is %d)", e.Stream, e.Revision, e.First)
}

// Store is the snapshots of a log: their namespace, the policies, the
// advice cache and the load rates. It is safe for concurrent use.
type Store struct {
	log   *eslog.Log
	aux   *eslog.Aux
	cfg   Config
	lg    *zap.Logger
	met   *metrics
	cache *baseCache
	rates *loadRates

	policies atomic.Pointer[map[string]Policy] // category -> its own policy; copy on write
	polMu    sync.Mutex                        // serializes policy changes

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	// testSaveSwapped, when set (by tests only), is called with the
	// result of Save's compare-and-swap and returns the result Save goes
	// on with.
	testSaveSwapped func(stream string, err error) error
}

// Open loads the policies and the load rates of l's snapshot namespace.
func Open(l *eslog.Log, cfg Config, lg *zap.Logger, reg prometheus.Registerer) (*Store, error) {
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Retention < 1 || cfg.Retention > MaxRetention {
		return nil, fmt.Errorf("snapshot: retention %d, want 1 to %d", cfg.Retention, MaxRetention)
	}
	if cfg.HalfLife == 0 {
		cfg.HalfLife = DefaultHalfLife
	}
	if cfg.HalfLife < 0 {
		return nil, fmt.Errorf("snapshot: half-life %v, want > 0", cfg.HalfLife)
	}
	if cfg.CacheStreams == 0 {
		cfg.CacheStreams = DefaultCacheStreams
	}
	if cfg.SketchWidth == 0 {
		cfg.SketchWidth = DefaultSketchWidth
	}
	if cfg.SketchWidth < 1 || cfg.SketchWidth&(cfg.SketchWidth-1) != 0 {
		return nil, fmt.Errorf("snapshot: sketch width %d, want a power of two", cfg.SketchWidth)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if lg == nil {
		lg = zap.NewNop()
	}
	s := &Store{
		log:   l,
		aux:   l.Aux(eslog.NSSnapshots),
		cfg:   cfg,
		lg:    lg,
		cache: newBaseCache(cfg.CacheStreams),
		rates: newLoadRates(cfg.HalfLife, cfg.SketchWidth, cfg.Clock()),
	}
	s.met = newMetrics(reg, s)
	pols := make(map[string]Policy)
	err := s.aux.Scan([]byte(policyPrefix), func(k, v []byte) error {
		p, err := decodePolicy(v)
		if err != nil {
			return fmt.Errorf("policy of %q: %w", k[len(policyPrefix):], err)
		}
		pols[string(k[len(policyPrefix):])] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load snapshot policies: %w", err)
	}
	s.policies.Store(&pols)
	if v, ok, err := s.aux.Get([]byte(ratesKey)); err != nil {
		return nil, fmt.Errorf("load snapshot load rates: %w", err)
	} else if ok {
		if restored, err := s.rates.restore(v); err != nil {
			lg.Warn("stored load rates unreadable: starting afresh", zap.Error(err))
		} else if !restored {
			lg.Info("stored load rates are of another half-life or size: starting afresh")
		}
	}
	return s, nil
}

// Close refuses further work and stores the load rates (durably), so
// that they survive a restart. Calling it again returns the first
// result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.aux.Apply((&eslog.AuxWrite{}).Put([]byte(ratesKey), s.rates.encode()))
	})
	return s.closeErr
}

// Retention is the number of snapshots a stream keeps.
func (s *Store) Retention() int { return s.cfg.Retention }

func (s *Store) now() time.Time { return s.cfg.Clock() }

// readIndex returns stream's index and its stored value (for a swap).
func (s *Store) readIndex(stream string) ([]entry, eslog.AuxValue, error) {
	v, ok, err := s.aux.Get(indexKey(stream))
	if err != nil || !ok {
		return nil, eslog.Absent(), err
	}
	es, err := decodeIndex(v)
	if err != nil {
		return nil, eslog.Absent(), fmt.Errorf("stream %q: snapshot index: %w", stream, err)
	}
	return es, eslog.Present(v), nil
}

// readState returns a stream's state for a read: an error, as a read of
// the stream gets, when it has no visible events. A tombstoned stream's
// snapshots are purged on the way (those a racing save left behind, or
// that a crash kept from being purged at the tombstone).
func (s *Store) readState(ctx context.Context, stream string) (eslog.StreamState, error) {
	st, ok, err := s.log.StreamInfo(ctx, stream)
	switch {
	case err != nil:
		return st, err
	case !ok:
		return st, &eslog.StreamError{Stream: stream, Err: eslog.ErrStreamNotFound}
	case st.Tombstoned:
		s.purgeQuietly(stream)
		return st, &eslog.StreamError{Stream: stream, Err: eslog.ErrStreamTombstoned}
	case !st.Exists():
		return st, &eslog.StreamError{Stream: stream, Err: eslog.ErrStreamDeleted}
	}
	return st, nil
}

// maxAttempts bounds the retries of a read that finds the index and a
// data record disagree (a concurrent change between the two reads): a
// change of a stream's snapshots is atomic, so the next read agrees
// unless snapshots of the stream change again and again meanwhile.
const maxAttempts = 64

// Save stores sn (its Created is set here) as of sn.Revision, which must
// be a visible event of sn.Stream. Errors: *eslog.StreamError (no visible
// events: not found, deleted; tombstoned, with writer.ErrRefused),
// *RevisionError, ErrClosed, and the log's (ErrStorageFailed, ...).
func (s *Store) Save(ctx context.Context, sn Snapshot) (SaveResult, error) {
	if s.closed.Load() {
		return SaveResult{}, ErrClosed
	}
	// Before the state and the index: a delete of the stream or of its
	// snapshots after this keeps the save from raising the advice base.
	gen := s.cache.gen(sn.Stream)
	st, ok, err := s.log.StreamInfo(ctx, sn.Stream)
	switch {
	case err != nil:
		return SaveResult{}, err
	case !ok:
		return SaveResult{}, &eslog.StreamError{Stream: sn.Stream, Err: eslog.ErrStreamNotFound}
	case st.Tombstoned:
		return SaveResult{}, fmt.Errorf("%w: %w", writer.ErrRefused, &eslog.StreamError{Stream: sn.Stream, Err: eslog.ErrStreamTombstoned})
	case !st.Exists():
		return SaveResult{}, &eslog.StreamError{Stream: sn.Stream, Err: eslog.ErrStreamDeleted}
	case sn.Revision > st.Head || sn.Revision < st.FirstVisible():
		return SaveResult{}, &RevisionError{Stream: sn.Stream, Revision: sn.Revision, Head: st.Head, First: st.FirstVisible()}
	}
	ne := entry{rev: sn.Revision, schema: sn.SchemaVersion, created: s.now().UnixNano(), size: uint64(len(sn.Data)), typ: sn.Type}
	rec := encodeData(sn.Data)
	for range maxAttempts {
		if err := ctx.Err(); err != nil {
			return SaveResult{}, err
		}
		old, oldRaw, err := s.readIndex(sn.Stream)
		if err != nil {
			return SaveResult{}, err
		}
		var (
			keep     = make([]entry, 0, len(old)+1)
			unusable []entry
			replaced bool
		)
		for _, e := range old {
			switch {
			case e.same(&ne):
				replaced = true
			case e.rev < st.TruncateBefore:
				unusable = append(unusable, e)
			default:
				keep = append(keep, e)
			}
		}
		i, _ := slices.BinarySearchFunc(keep, ne, compareEntries)
		keep = slices.Insert(keep, i, ne)
		var retired []entry
		if n := len(keep) - s.cfg.Retention; n > 0 {
			retired, keep = keep[:n], keep[n:]
		}
		if !slices.ContainsFunc(keep, func(e entry) bool { return e.same(&ne) }) {
			s.met.saves.WithLabelValues("stale").Inc()
			return SaveResult{}, nil // older than the Retention newest: it would go at once
		}
		swaps := []eslog.Swap{{Key: indexKey(sn.Stream), Old: oldRaw, New: eslog.Present(encodeIndex(keep))}}
		newSwap := eslog.Swap{Key: dataKey(sn.Stream, ne.rev, ne.schema), New: eslog.Present(rec)}
		if replaced {
			if newSwap.Old, err = s.dataValue(sn.Stream, ne); err != nil {
				return SaveResult{}, err
			}
			if !newSwap.Old.Exists {
				continue // the index changed under us
			}
		}
		swaps = append(swaps, newSwap)
		removes, err := s.removals(sn.Stream, append(unusable, retired...))
		if err != nil {
			return SaveResult{}, err
		}
		if removes == nil {
			continue
		}
		err = s.aux.CompareAndSwapMany(ctx, append(swaps, removes...))
		if h := s.testSaveSwapped; h != nil {
			err = h(sn.Stream, err)
		}
		if errors.Is(err, eslog.ErrCASMismatch) {
			continue // another change of the stream's snapshots: decide again
		}
		if err != nil {
			// The swap may be durable all the same (ctx ended after the
			// log took it): the next advice reloads the base.
			s.cache.remove(sn.Stream)
			return SaveResult{}, err
		}
		s.met.saves.WithLabelValues("saved").Inc()
		s.met.pruned.WithLabelValues(causeRetention).Add(float64(len(retired)))
		s.met.pruned.WithLabelValues(causeUnusable).Add(float64(len(unusable)))
		// keep holds usable ones only; a delete since the start drops
		// the cached base instead.
		s.cache.raiseUnlessRemoved(sn.Stream, keep[len(keep)-1].rev+1, gen)
		return SaveResult{Saved: true, Pruned: len(retired) + len(unusable)}, nil
	}
	return SaveResult{}, fmt.Errorf("stream %q: snapshots changed by others %d times in a row while saving", sn.Stream, maxAttempts)
}

// dataValue returns the stored data record of e.
func (s *Store) dataValue(stream string, e entry) (eslog.AuxValue, error) {
	v, ok, err := s.aux.Get(dataKey(stream, e.rev, e.schema))
	if err != nil || !ok {
		return eslog.Absent(), err
	}
	return eslog.Present(v), nil
}

// removals returns the swaps that delete the data records of es, which
// must hold what they hold now (the index swap beside them makes sure
// nothing changed since). It returns nil, nil when one is missing: the
// index changed since it was read.
func (s *Store) removals(stream string, es []entry) ([]eslog.Swap, error) {
	out := make([]eslog.Swap, 0, len(es))
	for _, e := range es {
		v, err := s.dataValue(stream, e)
		if err != nil {
			return nil, err
		}
		if !v.Exists {
			return nil, nil
		}
		out = append(out, eslog.Swap{Key: dataKey(stream, e.rev, e.schema), Old: v, New: eslog.Absent()})
	}
	return out, nil
}

// latest returns the newest usable snapshot of schema at or below maxRev
// (0: no bound) of a stream in state st (nil when there is none), and the
// advice base: the revision after the newest usable snapshot of any
// schema version, or the first visible revision without one. Snapshots
// past st.Head (saved after st was read) are not usable in st.
func (s *Store) latest(stream string, st *eslog.StreamState, maxRev uint64, schema uint32) (*Snapshot, uint64, error) {
	hi := st.Head
	if maxRev > 0 {
		hi = min(hi, maxRev)
	}
	for range maxAttempts {
		es, _, err := s.readIndex(stream)
		if err != nil {
			return nil, 0, err
		}
		// Below the first visible revision (a soft delete's or the
		// retention limits'), a snapshot would be followed by a gap.
		base := st.FirstVisible()
		var pick *entry
		for i := len(es) - 1; i >= 0; i-- {
			e := &es[i]
			if e.rev < st.FirstVisible() || e.rev > st.Head {
				continue
			}
			base = max(base, e.rev+1)
			if e.schema == schema && e.rev <= hi {
				pick = e
				break
			}
		}
		if pick == nil {
			return nil, base, nil
		}
		v, err := s.dataValue(stream, *pick)
		if err != nil {
			return nil, 0, err
		}
		if !v.Exists {
			continue // pruned since the index was read
		}
		data, err := decodeData(v.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("stream %q: snapshot at revision %d: %w", stream, pick.rev, err)
		}
		return &Snapshot{Stream: stream, Revision: pick.rev, Type: pick.typ, SchemaVersion: pick.schema, Data: data, Created: pick.created}, base, nil
	}
	return nil, 0, fmt.Errorf("stream %q: snapshots changed by others %d times in a row while reading", stream, maxAttempts)
}

// Get returns the newest usable snapshot of stream with schema version
// schema at or below maxRev (0: no bound). Errors: *NotFoundError, and
// *eslog.StreamError as a read of the stream gets.
func (s *Store) Get(ctx context.Context, stream string, maxRev uint64, schema uint32) (*Snapshot, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st, err := s.readState(ctx, stream)
	if err != nil {
		return nil, err
	}
	sn, _, err := s.latest(stream, &st, maxRev, schema)
	if err != nil {
		return nil, err
	}
	if sn == nil {
		return nil, &NotFoundError{Stream: stream, SchemaVersion: schema, MaxRevision: maxRev}
	}
	return sn, nil
}

// List describes stream's stored snapshots in revision order, usable or
// not. A stream never written, or tombstoned, has none.
func (s *Store) List(ctx context.Context, stream string) ([]Info, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	st, ok, err := s.log.StreamInfo(ctx, stream)
	if err != nil {
		return nil, err
	}
	if ok && st.Tombstoned {
		s.purgeQuietly(stream)
		return nil, nil
	}
	es, _, err := s.readIndex(stream)
	if err != nil {
		return nil, err
	}
	out := make([]Info, len(es))
	for i, e := range es {
		out[i] = Info{
			Stream: stream, Revision: e.rev, Type: e.typ, SchemaVersion: e.schema, Size: e.size, Created: e.created,
			Usable: ok && st.Exists() && e.rev >= st.FirstVisible() && e.rev <= st.Head,
		}
	}
	return out, nil
}

// Delete deletes stream's snapshots below before (0: all) and returns how
// many it deleted.
func (s *Store) Delete(ctx context.Context, stream string, before uint64) (int, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	for range maxAttempts {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		es, raw, err := s.readIndex(stream)
		if err != nil || !raw.Exists {
			return 0, err
		}
		var keep, del []entry
		for _, e := range es {
			if before == 0 || e.rev < before {
				del = append(del, e)
			} else {
				keep = append(keep, e)
			}
		}
		if len(del) == 0 {
			return 0, nil
		}
		idx := eslog.Swap{Key: indexKey(stream), Old: raw, New: eslog.Absent()}
		if len(keep) > 0 {
			idx.New = eslog.Present(encodeIndex(keep))
		}
		removes, err := s.removals(stream, del)
		if err != nil {
			return 0, err
		}
		if removes == nil {
			continue
		}
		err = s.aux.CompareAndSwapMany(ctx, append([]eslog.Swap{idx}, removes...))
		if errors.Is(err, eslog.ErrCASMismatch) {
			continue
		}
		if err != nil {
			s.cache.remove(stream) // it may be durable all the same
			return 0, err
		}
		s.cache.remove(stream)
		s.met.pruned.WithLabelValues(causeRequest).Add(float64(len(del)))
		return len(del), nil
	}
	return 0, fmt.Errorf("stream %q: snapshots changed by others %d times in a row while deleting", stream, maxAttempts)
}

// StreamDeleted is told of a stream's deletion once it is durable. A
// soft delete leaves the snapshots (unusable at or below the deleted
// head; the next save prunes them); a tombstone purges them. Either way
// the advice starts again from the stream's first visible revision.
func (s *Store) StreamDeleted(stream string, tombstone bool) {
	s.cache.remove(stream)
	if tombstone {
		s.purgeQuietly(stream)
	}
}

// ForgetAdvice drops stream's advice base from the cache, so that the
// next advice loads it from the store: the engine calls it when a delete
// of the stream failed in a way that may have let it commit (ctx ended
// while it waited for durability).
func (s *Store) ForgetAdvice(stream string) { s.cache.remove(stream) }

// purge removes every snapshot of a tombstoned stream.
func (s *Store) purge(stream string) error {
	es, raw, err := s.readIndex(stream)
	if err != nil {
		// Unreadable index: remove what is there all the same.
		s.lg.Warn("purging unreadable snapshot index", zap.String("stream", stream), zap.Error(err))
	} else if !raw.Exists {
		return nil
	}
	w := (&eslog.AuxWrite{}).DeletePrefix(dataStreamPrefix(stream)).Delete(indexKey(stream))
	if err := s.aux.Apply(w); err != nil {
		return err
	}
	s.cache.remove(stream)
	s.met.pruned.WithLabelValues(causeTombstone).Add(float64(len(es)))
	return nil
}

func (s *Store) purgeQuietly(stream string) {
	if err := s.purge(stream); err != nil {
		s.lg.Warn("purge snapshots of a tombstoned stream (retried by its next read)", zap.String("stream", stream), zap.Error(err))
	}
}
