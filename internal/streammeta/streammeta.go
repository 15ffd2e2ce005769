// Package streammeta keeps stream metadata: per stream, retention limits
// (max count, max age, truncate-before) and free-form JSON for
// applications; per category, default limits for its streams. It stores
// them in the log's aux namespace NSStreamMeta, one key each, changed by
// compare-and-swap against an expected metadata revision, and hands the
// limits to the log (eslog.Log.SetLimits), which applies them to every
// read (internal/log/retention.go).
//
// Keys, relative to the namespace:
//
//	s/<stream>    -> record   a stream's metadata
//	c/<category>  -> record   a category's default limits
//
// A record is JSON (record below). Metadata is never deleted: setting
// empty metadata writes a new revision without limits. A soft delete of
// the stream keeps it; a tombstone keeps it too, but it can no longer be
// changed.
package streammeta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/writer"
)

// MaxCustomJSONBytes bounds Metadata.CustomJSON.
const MaxCustomJSONBytes = 64 << 10

// Metadata is a stream's metadata, or a category's defaults (limits
// MaxCount and MaxAge only).
type Metadata struct {
	Limits eslog.Limits
	// CustomJSON is the applications' JSON text, stored as given; empty:
	// none.
	CustomJSON string
}

// Entry is stored metadata and its revision: 0 for the first write, one
// more for each write after it.
type Entry struct {
	Revision uint64
	Metadata Metadata
}

// Target is what metadata belongs to: a stream, or a category.
type Target struct {
	Name     string
	Category bool
}

func (t Target) String() string {
	if t.Category {
		return "category " + strconv.Quote(t.Name)
	}
	return "stream " + strconv.Quote(t.Name)
}

func (t Target) key() []byte {
	if t.Category {
		return []byte("c/" + t.Name)
	}
	return []byte("s/" + t.Name)
}

// ExpectKind is the kind of an expected metadata revision.
type ExpectKind uint8

const (
	// ExpectAny always holds.
	ExpectAny ExpectKind = iota
	// ExpectNone holds when the target has no metadata yet.
	ExpectNone
	// ExpectExact holds when the target's metadata is at Revision.
	ExpectExact
)

// Expected is the metadata revision a write expects.
type Expected struct {
	Kind     ExpectKind
	Revision uint64
}

func (e Expected) String() string {
	switch e.Kind {
	case ExpectNone:
		return "no metadata"
	case ExpectExact:
		return "revision " + strconv.FormatUint(e.Revision, 10)
	}
	return "any"
}

// WrongRevisionError is an expected metadata revision that did not hold.
type WrongRevisionError struct {
	Target   Target
	Expected Expected
	Exists   bool   // the target has metadata
	Actual   uint64 // its revision, when Exists
}

func (e *WrongRevisionError) Error() string {
	actual := "no metadata"
	if e.Exists {
		actual = "revision " + strconv.FormatUint(e.Actual, 10)
	}
	return fmt.Sprintf("%s: expected metadata %s, found %s", e.Target, e.Expected, actual)
}

// ErrInvalid: metadata that the store refuses (the server validates
// requests first and names the field).
var ErrInvalid = errors.New("invalid metadata")

// Store is the stream metadata. It is safe for concurrent use.
type Store struct {
	log *eslog.Log
	aux *eslog.Aux
	// mu serializes Set: its check, swap and cache update, so that the
	// cache and the limits handed to the log follow the stored order.
	mu      sync.Mutex
	entries atomic.Pointer[map[Target]stored] // copy on write
}

// stored is an entry and its stored bytes, which the next Set's swap
// expects.
type stored struct {
	Entry
	raw []byte
}

// Open loads the stored metadata and hands every limit to l.
func Open(l *eslog.Log) (*Store, error) {
	s := &Store{log: l, aux: l.Aux(eslog.NSStreamMeta)}
	m := make(map[Target]stored)
	err := s.aux.Scan(nil, func(key, value []byte) error {
		t, err := parseKey(key)
		if err != nil {
			return err
		}
		e, err := decodeRecord(value)
		if err != nil {
			return fmt.Errorf("stream metadata of %s: %w", t, err)
		}
		m[t] = stored{Entry: e, raw: append([]byte(nil), value...)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	streams, categories := map[string]eslog.Limits{}, map[string]eslog.Limits{}
	for t, e := range m {
		if t.Category {
			categories[t.Name] = e.Metadata.Limits
		} else {
			streams[t.Name] = e.Metadata.Limits
		}
	}
	l.SetAllLimits(streams, categories)
	s.entries.Store(&m)
	return s, nil
}

func parseKey(k []byte) (Target, error) {
	if len(k) > 2 && k[1] == '/' {
		switch k[0] {
		case 's':
			return Target{Name: string(k[2:])}, nil
		case 'c':
			return Target{Name: string(k[2:]), Category: true}, nil
		}
	}
	return Target{}, fmt.Errorf("%w: stream metadata key %q", eslog.ErrCorrupt, k)
}

// Get returns the metadata of t, if any was ever set.
func (s *Store) Get(t Target) (Entry, bool) {
	e, ok := (*s.entries.Load())[t]
	return e.Entry, ok
}

// Set writes md as t's metadata if exp holds, and returns its new
// revision. Errors: *WrongRevisionError, ErrInvalid, a *eslog.StreamError
// (with writer.ErrRefused) for a tombstoned stream, and the log's
// (ErrClosed, ErrStorageFailed). Once the write is taken it completes
// even if ctx ends, so that the answer and the cache agree with the
// store.
func (s *Store) Set(ctx context.Context, t Target, exp Expected, md Metadata) (uint64, error) {
	if t.Category && (md.Limits.TruncateBefore != 0 || md.CustomJSON != "") {
		return 0, fmt.Errorf("%w: %s: a category's defaults are max count and max age only", ErrInvalid, t)
	}
	if md.CustomJSON != "" && (len(md.CustomJSON) > MaxCustomJSONBytes || !json.Valid([]byte(md.CustomJSON))) {
		return 0, fmt.Errorf("%w: %s: custom JSON of %d bytes is not valid JSON of at most %d bytes", ErrInvalid, t, len(md.CustomJSON), MaxCustomJSONBytes)
	}
	if md.Limits.MaxAge < 0 {
		return 0, fmt.Errorf("%w: %s: max age %v is negative", ErrInvalid, t, md.Limits.MaxAge)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !t.Category {
		st, ok, err := s.log.State(t.Name)
		if err != nil {
			return 0, err
		}
		if ok && st.Tombstoned {
			return 0, fmt.Errorf("%w: %w", writer.ErrRefused, &eslog.StreamError{Stream: t.Name, Err: eslog.ErrStreamTombstoned})
		}
	}
	cur, exists := (*s.entries.Load())[t]
	switch {
	case exp.Kind == ExpectNone && exists, exp.Kind == ExpectExact && (!exists || cur.Revision != exp.Revision):
		return 0, &WrongRevisionError{Target: t, Expected: exp, Exists: exists, Actual: cur.Revision}
	}
	next := stored{Entry: Entry{Metadata: md}}
	old := eslog.Absent()
	if exists {
		next.Revision = cur.Revision + 1
		old = eslog.Present(cur.raw)
	}
	next.raw = encodeRecord(next.Entry)
	// The swap checks the cache against the store: they differ only if
	// something else wrote the namespace, and then nothing is written.
	if err := s.aux.CompareAndSwap(context.WithoutCancel(ctx), t.key(), old, eslog.Present(next.raw)); err != nil {
		return 0, fmt.Errorf("store the metadata of %s: %w", t, err)
	}
	m := make(map[Target]stored, len(*s.entries.Load())+1)
	for k, v := range *s.entries.Load() {
		m[k] = v
	}
	m[t] = next
	s.entries.Store(&m)
	s.log.SetLimits(t.Name, t.Category, md.Limits)
	return next.Revision, nil
}

// Truncator hides a stream's revisions below before, for good, and
// reports whether it wrote (the writer's Truncate).
type Truncator func(ctx context.Context, stream string, before uint64) (bool, error)

// enforceBatch is the streams whose cuts Enforce decides under one hold
// of the lock and writes at once (the writer commits them together).
const enforceBatch = 256

// Enforce makes the retention limits' cut durable, for a scavenge to
// remove what they hide: for every stream with limits (its own, or its
// category's defaults), it hands truncate the first revision they leave
// visible now, when that is past the stream's truncate, and returns how
// many streams it truncated. A limit is a view, which raising or
// removing undoes; once truncated, the events below are gone whatever
// the limits say later. The cuts are decided and written under the lock
// of Set, a batch of streams at a time, so that a limit raised meanwhile
// either comes first, and counts, or waits for the truncates and applies
// to what is left.
func (s *Store) Enforce(ctx context.Context, truncate Truncator) (int, error) {
	var own []string
	categories := make(map[string]bool)
	for t, e := range *s.entries.Load() {
		switch {
		case e.Metadata.Limits.IsZero():
		case t.Category:
			categories[t.Name] = true
		default:
			own = append(own, t.Name)
		}
	}
	done := 0
	batch := make([]string, 0, enforceBatch)
	flush := func() error {
		n, err := s.enforce(ctx, batch, truncate)
		done += n
		batch = batch[:0]
		return err
	}
	for _, name := range own {
		if batch = append(batch, name); len(batch) == enforceBatch {
			if err := flush(); err != nil {
				return done, err
			}
		}
	}
	// The streams of categories with defaults, from the names index; the
	// ones with limits of their own are done above.
	for cat := range categories {
		after := ""
		for {
			page, more, err := s.log.ListStreams(ctx, cat, after, enforceBatch)
			if err != nil {
				return done, err
			}
			for i := range page {
				name := page[i].Name
				if eslog.Category(name) != cat {
					continue
				}
				if e, has := s.Get(Target{Name: name}); has && !e.Metadata.Limits.IsZero() {
					continue
				}
				if batch = append(batch, name); len(batch) == enforceBatch {
					if err := flush(); err != nil {
						return done, err
					}
				}
			}
			if !more || len(page) == 0 {
				break
			}
			after = page[len(page)-1].Name
		}
	}
	return done, flush()
}

// enforce truncates the streams names as their limits say, and returns
// how many it truncated.
func (s *Store) enforce(ctx context.Context, names []string, truncate Truncator) (int, error) {
	if err := ctx.Err(); err != nil || len(names) == 0 {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	type cut struct {
		name  string
		first uint64
	}
	var cuts []cut
	for _, name := range names {
		// The published state: the writer's may be ahead (more events,
		// so a MaxCount cut further on), never behind; the cut is made
		// from this one, which hides no more than the limits do.
		st, ok, err := s.log.State(name)
		if err != nil {
			return 0, err
		}
		if !ok || !st.Exists() {
			continue
		}
		first, err := s.log.VisibleFrom(ctx, &st)
		if err != nil {
			return 0, fmt.Errorf("stream %q: %w", name, err)
		}
		if min(first, st.Head) > st.TruncateBefore {
			cuts = append(cuts, cut{name, first})
		}
	}
	// Not cancelled by ctx: a truncate given up on would stay queued in
	// the writer and could be written after the lock is released, past a
	// limit raised meanwhile. Each is one quick commit.
	wctx := context.WithoutCancel(ctx)
	errs := make([]error, len(cuts))
	wrote := make([]bool, len(cuts))
	var wg sync.WaitGroup
	for i, c := range cuts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if wrote[i], err = truncate(wctx, c.name, c.first); err != nil {
				errs[i] = fmt.Errorf("truncate stream %q below revision %d: %w", c.name, c.first, err)
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, w := range wrote {
		if w {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// record is the stored form of an Entry.
type record struct {
	Version        int    `json:"v"`
	Revision       uint64 `json:"revision"`
	MaxCount       uint64 `json:"max_count,omitempty"`
	MaxAgeNanos    int64  `json:"max_age_ns,omitempty"`
	TruncateBefore uint64 `json:"truncate_before,omitempty"`
	CustomJSON     string `json:"custom_json,omitempty"`
}

const recordVersion = 1

func encodeRecord(e Entry) []byte {
	b, err := json.Marshal(record{
		Version: recordVersion, Revision: e.Revision,
		MaxCount: e.Metadata.Limits.MaxCount, MaxAgeNanos: int64(e.Metadata.Limits.MaxAge),
		TruncateBefore: e.Metadata.Limits.TruncateBefore, CustomJSON: e.Metadata.CustomJSON,
	})
	if err != nil {
		panic(fmt.Sprintf("streammeta: encode a record: %v", err)) // not reached: the fields always encode
	}
	return b
}

func decodeRecord(v []byte) (Entry, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", eslog.ErrCorrupt, err)
	}
	if r.Version != recordVersion || r.MaxAgeNanos < 0 {
		return Entry{}, fmt.Errorf("%w: record version %d, max age %d ns", eslog.ErrCorrupt, r.Version, r.MaxAgeNanos)
	}
	return Entry{Revision: r.Revision, Metadata: Metadata{
		Limits:     eslog.Limits{MaxCount: r.MaxCount, MaxAge: time.Duration(r.MaxAgeNanos), TruncateBefore: r.TruncateBefore},
		CustomJSON: r.CustomJSON,
	}}, nil
}
