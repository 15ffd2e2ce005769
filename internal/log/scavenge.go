package log

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A scavenge removes, online, the keys of events no read can see any
// more: the events of deleted streams, below the first revision their
// deletions leave (DeletedBefore), and the index entries that cover only
// such events. Retention limits hide events as a view (retention.go),
// which a limit raised or removed undoes: the job first has their cut
// made durable (ScavengeOptions.EnforceLimits: a DeleteTruncate of each
// stream, which raises its TruncateBefore), so that what they hide is
// deleted too. It walks the streams with deleted events (0x06) in id
// order and, for each, the stream index entries below that revision; per
// entry it deletes, in one Pebble batch:
//
//   - the records (0x01) of the entry's hidden events, with one range
//     deletion (their positions are the append's alone);
//   - the entry itself (0x02) when all its revisions are hidden; an entry
//     of which only some are (a first visible revision inside an append)
//     stays, for the visible ones: readers start at the first visible
//     revision and never ask for the missing ones;
//   - the category (0x07) and type (0x08) entries of the hidden events:
//     copies of hidden records, and range or run entries whose events are
//     all hidden. A range or run that reaches a visible event stays; a
//     read through it skips its missing positions (scanRuns), which are
//     hidden anyway: those below ScavengeJob.RemovedBelow, the bound of
//     what scavenges removed, above which a missing event is corruption.
//
// Kept: the stream's name, state and 0x06 entry (they say the stream
// exists and what is hidden), its "$deleted" events (visible), and its id
// index entries (0x05) for as long as opts.ForgetIDsBefore says: while an
// id stays, a retry of an append whose events were scavenged still
// answers as the original append did (its positions and revisions,
// without the commit time, which was in the record) instead of writing
// the events again. An id entry is about 29 bytes on disk, compressed,
// against about 88 for a small event (BenchmarkScavengeUnderLoad's
// tables by key space), so ids are a quarter of a store of small
// events; kept forever, those of removed events would grow without
// bound under retention limits. So the job ends with a sweep of the id
// index (forgetIDs) that removes the ids of events hidden for good and
// older than ForgetIDsBefore (the engine's idempotency window): a retry
// of such an append is a new append, which its expected revision then
// decides on.
//
// Never removed: the event at or above the published position. The last
// event key is where Open finds the next position (invariant 5), so the
// newest event is kept even if it is hidden.
//
// The job's progress (ScavengeJob, with its cursor, the next stream id)
// is stored in the scavenge namespace of the aux space, in the same
// batch as the deletions it counts, so that after a crash the job goes
// on from the stream it was at: an entry already done is gone, and the
// counts include exactly the batches that survived. The batches are
// Pebble batches applied beside the commit path, not through it (and
// without a sync: see flush): they take no position, and delete only
// keys no commit writes again (positions and revisions are never reused;
// an append writes its own entries, never extends another's), so they
// need no order with commits. An id is the exception: once the sweep
// removed it, an append may store it again; but the writer writes an id
// only when its lookup does not find it, after the sweep's delete.
// The job record is written only by the job, so it needs no order with
// other aux writes.
//
// The job throttles itself (KeysPerSecond, batches of at most a tenth of
// a second's keys), waits while Pebble is behind, so that appends come
// first, and at the end compacts what it deleted from, a table at a time
// (compact), so that the space comes back.
//
// Readers hold a consistent view: the iterators of one read are clones
// of one (readRevisions, scanRuns), so an index entry they see has its
// events, unless those are hidden.

// DeletedBefore is the first revision of stream s that its deletions
// (and truncates) leave: the events below it are hidden for good, and a
// scavenge may remove them. Every event of a tombstoned stream is.
func DeletedBefore(s *StreamState) uint64 {
	if s.Tombstoned {
		return math.MaxUint64
	}
	return s.TruncateBefore
}

// ScavengeState is a scavenge's state.
type ScavengeState string

const (
	ScavengeRunning ScavengeState = "running"
	ScavengeDone    ScavengeState = "done"
	ScavengeStopped ScavengeState = "stopped"
	ScavengeFailed  ScavengeState = "failed"
)

// ScavengeJob is a scavenge's durable record: its progress and what it
// removed.
type ScavengeJob struct {
	ID       string        `json:"id"`
	State    ScavengeState `json:"state"`
	Started  int64         `json:"started"`  // unix nanoseconds
	Finished int64         `json:"finished"` // unix nanoseconds; 0 while running
	// KeysPerSecond is the throttle: keys deleted per second (0: none).
	KeysPerSecond int `json:"keys_per_second"`
	// NextStream is the cursor: streams with smaller ids are done.
	NextStream   uint64 `json:"next_stream"`
	StreamsDone  uint64 `json:"streams_done"`
	StreamsTotal uint64 `json:"streams_total"`
	// StreamsTruncated counts the streams whose retention limits the job
	// made durable (ScavengeOptions.EnforceLimits).
	StreamsTruncated uint64 `json:"streams_truncated,omitempty"`
	// IDsRemoved counts the id index entries the job removed
	// (ScavengeOptions.ForgetIDsBefore).
	IDsRemoved uint64 `json:"ids_removed,omitempty"`
	// IDsAfter is the id sweep's cursor, the hex of the last id visited:
	// the ids up to it are done ("" before the sweep starts).
	IDsAfter      string `json:"ids_after,omitempty"`
	EventsRemoved uint64 `json:"events_removed"`
	KeysRemoved   uint64 `json:"keys_removed"`
	// BytesRemoved is the sum of the sizes of the keys and values deleted.
	BytesRemoved uint64 `json:"bytes_removed"`
	// DiskBefore is the store's size on disk when the job started;
	// DiskAfter once it is done and the ranges it touched are compacted.
	DiskBefore uint64 `json:"disk_before"`
	DiskAfter  uint64 `json:"disk_after"`
	// RemovedBelow bounds every position a scavenge of the store removed,
	// this job's and the earlier ones': a read that finds no event at a
	// position an index names below it meets a scavenged event, above it
	// corruption (Log.removedBelow).
	RemovedBelow uint64 `json:"removed_below"`
	// bounded: the record has RemovedBelow (records of stores written
	// before it was kept do not).
	bounded bool
	// MinPosition and MaxPosition bound the events removed, for the
	// compaction at the end (0: none yet).
	MinPosition uint64 `json:"min_position"`
	MaxPosition uint64 `json:"max_position"`
	Error       string `json:"error,omitempty"`
}

// Fraction is the share of the streams done, 0 to 1.
func (j *ScavengeJob) Fraction() float64 {
	if j.State == ScavengeDone {
		return 1
	}
	if j.StreamsTotal == 0 {
		return 0
	}
	return min(1, float64(j.StreamsDone)/float64(j.StreamsTotal))
}

// ScavengeOptions configure a scavenge.
type ScavengeOptions struct {
	// KeysPerSecond throttles the deletions; 0 means no limit.
	KeysPerSecond int
	// BatchKeys is the keys deleted per batch, about (whole index entries
	// go in one batch); 0 means 1024.
	BatchKeys int
	// FirstVisible says below which revision a stream's events are
	// hidden for good; nil means DeletedBefore. Reads must hide at least
	// as much, and must never show them again: a scavenge removes them.
	FirstVisible func(*StreamState) uint64
	// EnforceLimits, when set, is called as the job starts or resumes,
	// before it lists the streams to visit: it truncates the streams
	// whose retention limits hide events (DeleteTruncate), so that what
	// they hide is deleted, for good, and removed by this job (by the
	// next one in streams a resumed job has passed). It returns the
	// streams it truncated.
	EnforceLimits func(ctx context.Context) (int, error)
	// ForgetIDsBefore, when not 0, is a commit time (unix nanoseconds):
	// after the streams, the job sweeps the id index and removes the
	// entries of events hidden for good (DeletedBefore) and committed
	// before it, scavenged or not. An idempotent retry of their append is
	// then a new append. 0 keeps every id, so that such a retry is always
	// answered as the original append was.
	ForgetIDsBefore int64
	// StopAfterBatches, when positive, stops the job (state stopped)
	// after that many batches: tests interrupt a run with it.
	StopAfterBatches int
	// StreamDone is called, with the stream's state, once a stream's
	// events are removed (the engine removes its snapshots of hidden
	// revisions). An error fails the job.
	StreamDone func(ctx context.Context, s *StreamState) error
	// Progress, when set, is called after every batch with the job.
	Progress func(ScavengeJob)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var scavengeJobKey = []byte("job")

// scavengeKey is the job record's full key.
func scavengeKey() []byte {
	return append(append([]byte{kAux}, NSScavenge.Prefix()...), scavengeJobKey...)
}

// ScavengeJob returns the stored job record: the running, or the last, scavenge.
func (l *Log) ScavengeJob() (ScavengeJob, bool, error) {
	v, ok, err := l.get(scavengeKey())
	if err != nil || !ok {
		return ScavengeJob{}, false, err
	}
	var (
		j     ScavengeJob
		bound struct {
			RemovedBelow *uint64 `json:"removed_below"`
		}
	)
	if err := errors.Join(json.Unmarshal(v, &j), json.Unmarshal(v, &bound)); err != nil {
		return ScavengeJob{}, false, fmt.Errorf("%w: scavenge record: %w", ErrCorrupt, err)
	}
	j.bounded = bound.RemovedBelow != nil
	return j, true, nil
}

// NewScavengeJob makes the record of a new scavenge, which Scavenge runs.
func (l *Log) NewScavengeJob(id string, now time.Time, keysPerSecond int) ScavengeJob {
	return ScavengeJob{
		ID: id, State: ScavengeRunning, Started: now.UnixNano(), KeysPerSecond: keysPerSecond,
		NextStream: 0, DiskBefore: l.DiskBytes(), RemovedBelow: l.removedBelow.Load(),
	}
}

// putScavengeJob writes j, durably.
func (l *Log) putScavengeJob(b *pebble.Batch, j *ScavengeJob) error {
	v, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return b.Set(scavengeKey(), v, nil)
}

// SaveScavengeJob stores j durably (a new job, or one ended).
func (l *Log) SaveScavengeJob(j *ScavengeJob) error {
	if err := l.Failed(); err != nil {
		return err
	}
	b := l.db.NewBatch()
	defer func() { _ = b.Close() }()
	if err := l.putScavengeJob(b, j); err != nil {
		return err
	}
	return l.db.Apply(b, pebble.Sync)
}

// Scavenge runs job j (a new one from NewScavengeJob, or one a restart
// interrupted: it goes on from its cursor) until it is done, ctx ends
// (stopped) or it fails, and returns the job as stored last. The caller
// runs one at a time.
func (l *Log) Scavenge(ctx context.Context, j ScavengeJob, opts ScavengeOptions) (ScavengeJob, error) {
	if opts.BatchKeys <= 0 {
		opts.BatchKeys = 1024
	}
	if r := opts.KeysPerSecond; r > 0 {
		// A batch is deleted before the throttle waits: at most a tenth
		// of a second's worth, so that a low rate is kept from the start.
		opts.BatchKeys = max(1, min(opts.BatchKeys, r/10))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FirstVisible == nil {
		opts.FirstVisible = DeletedBefore
	}
	j.State, j.Finished, j.Error = ScavengeRunning, 0, ""
	sc := &scavenger{l: l, opts: opts, j: j, start: time.Now()}
	err := sc.run(ctx)
	switch {
	case err == nil:
		sc.j.State = ScavengeDone
	case errors.Is(err, errStopAfter) || (ctx.Err() != nil && errors.Is(err, ctx.Err())):
		sc.j.State = ScavengeStopped
	default:
		sc.j.State, sc.j.Error = ScavengeFailed, err.Error()
	}
	if sc.j.State == ScavengeDone {
		// Deleted keys take space until a compaction drops them: compact
		// what the job touched, so that the space comes back now.
		if cerr := sc.compact(context.WithoutCancel(ctx)); cerr != nil {
			sc.j.State, sc.j.Error = ScavengeFailed, "compact: "+cerr.Error()
		}
		sc.j.DiskAfter = l.settledDiskBytes(ctx)
	}
	sc.j.Finished = opts.Now().UnixNano()
	if serr := l.SaveScavengeJob(&sc.j); serr != nil {
		return sc.j, errors.Join(err, serr)
	}
	if sc.j.State == ScavengeStopped {
		err = nil
	}
	if opts.Progress != nil {
		opts.Progress(sc.j)
	}
	return sc.j, err
}

var errStopAfter = errors.New("scavenge: stopped after the batches asked for")

type scavenger struct {
	l       *Log
	opts    ScavengeOptions
	j       ScavengeJob
	b       *pebble.Batch
	keys    int // keys deleted in b
	batches int
	moved   bool      // a cursor moved since the job record was last stored
	start   time.Time // of the throttle's window
	deleted uint64    // keys deleted since start
}

func (sc *scavenger) run(ctx context.Context) error {
	sc.b = sc.l.db.NewBatch()
	defer func() { _ = sc.b.Close() }()
	if sc.opts.EnforceLimits != nil {
		n, err := sc.opts.EnforceLimits(ctx)
		sc.j.StreamsTruncated += uint64(n)
		if n > 0 {
			// Stored now, and synced as the truncates were: a job resumed
			// after a crash finds them done and would not count them.
			err = errors.Join(err, sc.l.SaveScavengeJob(&sc.j))
		}
		if err != nil {
			return fmt.Errorf("enforce retention limits: %w", err)
		}
	}
	// The streams to visit: those with deleted events, from the cursor on,
	// as the job finds them now. Streams deleted later wait for the next
	// job.
	all := *sc.l.deleted.Load()
	sids := make([]uint64, 0, len(all))
	for sid := range all {
		if sid >= sc.j.NextStream {
			sids = append(sids, sid)
		}
	}
	slices.Sort(sids)
	sc.j.StreamsTotal = sc.j.StreamsDone + uint64(len(sids))
	for _, sid := range sids {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, ok, err := sc.l.state(sid)
		if err != nil {
			return err
		}
		if ok {
			if err := sc.stream(ctx, &s); err != nil {
				return err
			}
		}
		// StreamDone goes before the cursor moves past the stream, so that
		// a crash before it is durable has the next run call it again; what
		// it removes (snapshots of hidden revisions) no read can use, so it
		// may as well go before the events.
		if ok && sc.opts.StreamDone != nil {
			if err := sc.opts.StreamDone(ctx, &s); err != nil {
				return fmt.Errorf("stream %q: %w", s.Name, err)
			}
		}
		// The cursor moves with the next batch, or the final flush.
		sc.j.NextStream = sid + 1
		sc.j.StreamsDone++
		sc.moved = true
	}
	if err := sc.forgetIDs(ctx); err != nil {
		return err
	}
	return sc.flush(ctx)
}

// idSweepSave is how many id entries the sweep visits between two
// stores of its cursor when it deletes none.
const idSweepSave = 1 << 16

// forgetIDs removes the id index entries of events hidden for good
// (DeletedBefore, as the deleted streams' map has it) and committed
// before opts.ForgetIDsBefore: those of events removed by this job, by
// an earlier one, or not removed yet (they are hidden for good, and a
// later job removes them). It visits the whole id index, from the
// job's cursor: an id entry holds the event's stream, revision and
// position, not its commit time, so the age is decided by position.
func (sc *scavenger) forgetIDs(ctx context.Context) error {
	if sc.opts.ForgetIDsBefore == 0 {
		return nil
	}
	deleted := *sc.l.deleted.Load()
	if len(deleted) == 0 {
		return nil
	}
	posCut, err := sc.l.committedBefore(ctx, sc.opts.ForgetIDsBefore)
	if err != nil || posCut <= 1 {
		return err
	}
	for {
		done, err := sc.sweepIDs(ctx, deleted, posCut)
		if err != nil {
			return err
		}
		if done {
			sc.j.IDsAfter, sc.moved = strings.Repeat("ff", 16), true
			return nil
		}
		// The iterator is closed: it pins no tables through the throttle.
		if err := sc.flush(ctx); err != nil {
			return err
		}
	}
}

// sweepIDs goes on with the id sweep from its cursor until a batch is
// due (false) or the index ends (true).
func (sc *scavenger) sweepIDs(ctx context.Context, deleted map[uint64]deletion, posCut uint64) (done bool, err error) {
	lower := []byte{kID}
	if sc.j.IDsAfter != "" {
		after, err := hex.DecodeString(sc.j.IDsAfter)
		if err != nil || len(after) != 16 {
			return false, fmt.Errorf("%w: scavenge id cursor %q", ErrCorrupt, sc.j.IDsAfter)
		}
		lower = append(appendIDKey(nil, [16]byte(after)), 0) // the least key after it
	}
	it, err := sc.l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: []byte{kID + 1}})
	if err != nil {
		return false, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for valid, visited := it.First(), 1; valid; valid, visited = it.Next(), visited+1 {
		k := it.Key()
		loc, err := decodeIDValue(it.Value())
		if err != nil || len(k) != 17 {
			return false, fmt.Errorf("id index key %x: %w", k, errors.Join(err, ErrCorrupt))
		}
		if d, ok := deleted[loc.sid]; ok && loc.pos < posCut && (d.tombstoned || loc.rev < d.truncateBefore) {
			sc.del(k, len(it.Value()))
			sc.j.IDsRemoved++
		}
		if sc.keys >= sc.opts.BatchKeys || visited%idSweepSave == 0 {
			sc.j.IDsAfter, sc.moved = hex.EncodeToString(k[1:]), true
			return false, nil
		}
	}
	return true, it.Error()
}

// committedBefore returns a position below which every event was
// committed before t (unix nanoseconds): one past the last stored event
// committed before t, found by a binary search (commit times never go
// backwards in position order), 1 when there is none. Positions a
// scavenge removed after that event may have been committed at t or
// later, so it stops at a stored one.
func (l *Log) committedBefore(ctx context.Context, t int64) (uint64, error) {
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{kEvent}, UpperBound: []byte{kEvent + 1}})
	if err != nil {
		return 0, err
	}
	defer func() { _ = it.Close() }()
	var view recordView
	// before reports whether the first stored event at or after pos was
	// committed before t: true, then false, as pos grows.
	before := func(pos uint64) (bool, error) {
		var kb [9]byte
		if !it.SeekGE(appendEventKey(kb[:0], pos)) {
			return false, it.Error()
		}
		if err := decodeRecord(it.Value(), &view); err != nil {
			return false, fmt.Errorf("event key %x: %w", it.Key(), err)
		}
		return view.created < t, nil
	}
	lo, hi := uint64(1), l.published.Load() // the last pos with before(pos) is in [lo-1, hi]
	if ok, err := before(lo); err != nil || !ok {
		return 1, err
	}
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		ok, err := before(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	// lo is the last position whose first stored event at or after it was
	// committed before t: that event is at lo itself (else lo+1 would
	// qualify too).
	return lo + 1, nil
}

// stream removes the hidden events of s and the entries that cover only
// them.
func (sc *scavenger) stream(ctx context.Context, s *StreamState) error {
	first := sc.opts.FirstVisible(s)
	if first == 0 {
		return nil
	}
	lo, hi := streamIndexBounds(s.ID)
	if first != math.MaxUint64 {
		hi = appendIndexKey(nil, s.ID, first)
	}
	idx, err := sc.l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer func() { _ = idx.Close() }()
	it, err := sc.l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{kEvent}, UpperBound: []byte{kEvent + 1}})
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	category := Category(s.Name)
	for valid := idx.First(); valid; valid = idx.Next() {
		_, r, err := decodeIndexEntry(idx.Key(), idx.Value())
		if err != nil {
			return fmt.Errorf("stream %q: %w", s.Name, err)
		}
		if err := sc.entry(it, s, category, r, first, idx.Key(), idx.Value()); err != nil {
			return err
		}
		if sc.keys >= sc.opts.BatchKeys {
			if err := sc.flush(ctx); err != nil {
				return err
			}
		}
	}
	return idx.Error()
}

// entry adds to the batch the deletions of index entry r of s (key k,
// value v), whose revisions below first are hidden. it is an iterator
// over the whole store, positioned at will.
func (sc *scavenger) entry(it *pebble.Iterator, s *StreamState, category string, r revRange, first uint64, k, v []byte) error {
	lastHidden := r.lastRev()
	full := lastHidden < first
	if !full {
		lastHidden = first - 1
	}
	loPos, hiPos := r.firstPos, r.pos(lastHidden)
	if pub := sc.l.published.Load(); hiPos >= pub { // see the newest event, above
		if loPos >= pub {
			return nil
		}
		hiPos, full = pub-1, false
	}
	// The records, and the types of those still stored: an entry's hidden
	// events are all stored or all gone (one batch), unless the first
	// visible revision moved into the entry since a scavenge went by.
	var types []string
	it.SetBounds(appendEventKey(nil, loPos), appendEventKey(nil, hiPos+1))
	var view recordView
	found := false
	for valid := it.First(); valid; valid = it.Next() {
		found = true
		pos, err := decodeEventKey(it.Key())
		if err != nil {
			return err
		}
		if err := decodeRecord(it.Value(), &view); err != nil {
			return fmt.Errorf("position %d: %w", pos, err)
		}
		if view.sid != s.ID || view.rev != r.firstRev+(pos-r.firstPos) {
			return fmt.Errorf("%w: stream %q index names position %d, which holds stream %d revision %d", ErrCorrupt, s.Name, pos, view.sid, view.rev)
		}
		if !slices.Contains(types, string(view.typ)) {
			types = append(types, string(view.typ))
		}
		sc.counted(len(it.Key()), len(it.Value()))
		sc.j.EventsRemoved++
		sc.j.MinPosition = minNonZero(sc.j.MinPosition, pos)
		sc.j.MaxPosition = max(sc.j.MaxPosition, pos)
		sc.j.RemovedBelow = max(sc.j.RemovedBelow, pos+1)
	}
	if err := it.Error(); err != nil {
		return err
	}
	// One range deletion for the records: the positions loPos..hiPos are
	// this append's alone, and one tombstone instead of one a record is
	// less for the appends' memtables and compactions to carry.
	if found {
		_ = sc.b.DeleteRange(appendEventKey(nil, loPos), appendEventKey(nil, hiPos+1), nil)
	}
	// Category entries of the append (all at its positions, as one
	// append is of one stream): copies of hidden events, ranges all
	// hidden.
	if err := sc.runs(it, append(append([]byte{kCategory}, category...), 0), true, loPos, hiPos); err != nil {
		return err
	}
	for _, t := range types {
		if err := sc.runs(it, append(append([]byte{kType}, t...), 0), false, loPos, hiPos); err != nil {
			return err
		}
	}
	if full {
		sc.del(k, len(v))
	}
	return nil
}

// runs deletes the entries of the index run prefix (category or type)
// that start at positions lo..hi and end by hi.
func (sc *scavenger) runs(it *pebble.Iterator, prefix []byte, category bool, lo, hi uint64) error {
	lower := binary.BigEndian.AppendUint64(bytes.Clone(prefix), lo)
	upper := binary.BigEndian.AppendUint64(bytes.Clone(prefix), hi+1)
	it.SetBounds(lower, upper)
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		pos := binary.BigEndian.Uint64(k[len(k)-8:])
		var (
			count uint64
			err   error
		)
		if category {
			_, count, err = decodeCategoryValue(pos, it.Value())
		} else {
			count, err = decodeRunCount(pos, it.Value())
		}
		if err != nil {
			return fmt.Errorf("index key %x: %w", k, err)
		}
		if pos+count-1 <= hi {
			sc.del(k, len(it.Value()))
		}
	}
	return it.Error()
}

func (sc *scavenger) del(k []byte, vlen int) {
	_ = sc.b.Delete(k, nil)
	sc.counted(len(k), vlen)
}

// counted counts a key deleted (by del, or by a range deletion).
func (sc *scavenger) counted(klen, vlen int) {
	sc.keys++
	sc.j.KeysRemoved++
	sc.j.BytesRemoved += uint64(klen + vlen)
}

// flush writes the batch with the job record, durably, then waits as the
// throttle says, and while Pebble is behind (appends come first).
func (sc *scavenger) flush(ctx context.Context) error {
	if sc.keys == 0 && !sc.moved {
		return nil
	}
	if err := sc.l.Failed(); err != nil {
		return err
	}
	if err := sc.l.putScavengeJob(sc.b, &sc.j); err != nil {
		return err
	}
	// Before the deletions are visible: a read that misses one of the
	// events must know it was scavenged. One job runs at a time.
	if sc.j.RemovedBelow > sc.l.removedBelow.Load() {
		sc.l.removedBelow.Store(sc.j.RemovedBelow)
	}
	// Without a sync: a batch lost in a crash takes its cursor with it
	// (one batch, and Pebble's WAL keeps batches in order), so the job
	// redoes it. A sync of its own would cost the appends an fsync in
	// the WAL's queue each time; the next commit's, or the job's last
	// record (SaveScavengeJob), makes it durable.
	if err := sc.l.db.Apply(sc.b, pebble.NoSync); err != nil {
		return err
	}
	sc.moved = false
	n := sc.keys
	sc.b.Reset()
	sc.keys = 0
	sc.batches++
	if sc.opts.Progress != nil {
		sc.opts.Progress(sc.j)
	}
	if sc.opts.StopAfterBatches > 0 && sc.batches >= sc.opts.StopAfterBatches {
		return errStopAfter
	}
	return sc.throttle(ctx, n)
}

// throttle sleeps until the keys deleted since the window started are
// within the rate, then while Pebble is behind.
func (sc *scavenger) throttle(ctx context.Context, n int) error {
	sc.deleted += uint64(n)
	if rate := sc.opts.KeysPerSecond; rate > 0 {
		due := sc.start.Add(time.Duration(float64(sc.deleted) / float64(rate) * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		} else if wait < -time.Second {
			// Idle time (Pebble behind, a slow stream) earns no burst.
			sc.start, sc.deleted = time.Now(), 0
		}
	}
	for sc.l.Behind() {
		if err := sleep(ctx, backlogSampleEvery); err != nil {
			return err
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// compact compacts the key ranges the job deleted from: the events it
// removed and the index spaces. A manual compaction rewrites every table
// it touches, the visible events' too, so it goes one table of the
// bottom level at a time (compacting smaller chunks would rewrite a
// table once a chunk: a 64 MiB table for every few MiB of positions),
// each followed by a pause twice as long as it took: Pebble's own
// compactions, which the appends need, run in between.
func (sc *scavenger) compact(ctx context.Context) error {
	if sc.j.KeysRemoved == 0 {
		return nil
	}
	// Pebble flushes the memtable before a manual compaction of a range
	// it overlaps: once here, after which the memtable holds only events
	// past the range (new appends), not once a compaction (a flush of a
	// few keys each time, which piles tables up in L0 and stalls appends).
	if err := sc.l.db.Flush(); err != nil {
		return err
	}
	var spans [][2][]byte
	if sc.j.MaxPosition > 0 {
		spans = sc.l.bottomSpans(appendEventKey(nil, sc.j.MinPosition), appendEventKey(nil, sc.j.MaxPosition+1))
	}
	spans = append(spans, [2][]byte{{kIndex}, {kIndex + 1}}, [2][]byte{{kCategory}, {kType + 1}})
	if sc.j.IDsRemoved > 0 { // a table at a time, as the events
		spans = append(spans, sc.l.bottomSpans([]byte{kID}, []byte{kID + 1})...)
	}
	for _, sp := range spans {
		start := time.Now()
		if err := sc.l.db.Compact(ctx, sp[0], sp[1], false); err != nil {
			return err
		}
		if err := sleep(ctx, 2*time.Since(start)); err != nil {
			return err
		}
	}
	return nil
}

// bottomSpans splits [lo, hi) at the bounds of the tables of the
// bottom level that hold keys in it (the whole of it when there are
// none, or Pebble cannot say).
func (l *Log) bottomSpans(lo, hi []byte) [][2][]byte {
	whole := [][2][]byte{{lo, hi}}
	levels, err := l.db.SSTables()
	if err != nil || len(levels) == 0 {
		return whole
	}
	var spans [][2][]byte
	next := lo
	for _, t := range levels[len(levels)-1] {
		end := append(bytes.Clone(t.Largest.UserKey), 0) // the least key after the table
		if bytes.Compare(end, next) <= 0 || bytes.Compare(t.Smallest.UserKey, hi) >= 0 {
			continue
		}
		if bytes.Compare(end, hi) >= 0 {
			break
		}
		spans = append(spans, [2][]byte{next, end})
		next = end
	}
	if len(spans) == 0 {
		return whole
	}
	return append(spans, [2][]byte{next, hi})
}

// settledDiskBytes is DiskBytes once Pebble has deleted the tables a
// compaction made obsolete (it does so in the background), waiting at
// most 10 s: tables a reader still holds stay until it lets go.
func (l *Log) settledDiskBytes(ctx context.Context) uint64 {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && l.db.Metrics().Table.ObsoleteCount > 0 {
		if sleep(ctx, 50*time.Millisecond) != nil {
			break
		}
	}
	return l.DiskBytes()
}

func minNonZero(a, b uint64) uint64 {
	if a == 0 {
		return b
	}
	return min(a, b)
}
