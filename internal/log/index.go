package log

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// The category and event-type indexes, written in the same batch as the
// events they index:
//
//	0x07 category 0x00 pos(8) -> the event record (a copy), or
//	                             'r' count(uvarint): events pos.. of the category
//	0x08 type     0x00 pos(8) -> count(uvarint): events pos.. of the type
//
// Names hold no 0x00 (no control characters), so the 0x00 ends the name
// and each name's entries form one run sorted by position. A filtered
// read of $all walks the runs it needs, merged by position, instead of
// every event: its cost grows with what it returns, not with the log.
//
// An entry covers the positions pos..pos+count-1 (a copy: count 1). The
// events of one append are at contiguous positions, of one stream and so
// of one category: an append of categoryRangeMin events or more gets one
// category entry, a range, whose events a read takes from $all (0x01)
// with one seek and then steps; a smaller append gets a copy of each
// record. A type entry covers a run of consecutive events of one append
// with the same type, read from $all the same way.
//
// The two kinds of category value cannot be confused: a record is at
// least recordHeaderLen (48) bytes, a range value at most 11.
//
// Why copies for small appends: a category of 1% of the log made of
// one-event appends would otherwise cost one seek into $all per event,
// each loading a 32 KiB block (about a hundred events) for one of them,
// no faster than a scan. Why not for large ones: a copy doubles the bytes
// an append writes, flushes and compacts, and the events of a large
// append already sit side by side in $all, where one seek and steps read
// them nearly as cheaply as copies (see categoryRangeMin).

// categoryRangeMin is the smallest append whose category entry is a range
// rather than a copy of each record. Reading a category through copies
// costs about 0.2 µs an event whatever the appends' size; through ranges
// the seek into $all (about 1.5 µs) is spread over the append: 1.8 to
// 2.2 µs an event at 1 event per append, 0.6 at 4, 0.42 at 8, 0.2 to 0.3
// from 16 on (BenchmarkCategoryAppendSizes, a category of 10% of a
// 100k-event log, on a 2-vCPU VM). Writing appends of 8 events of 256
// bytes costs esd 21.4 µs of CPU an event with a range, 24.7 with copies
// (test/ab.sh append -c 16 -b 8 against a build writing copies for every
// append). So at 8 events a copy costs its writer more than a category
// reader would save unless the category is read through the index more
// than about 14 times over; below 8 a reader's cost climbs fast, and
// small appends are the usual shape of a command's events, which
// category readers replay. A var so that tests and benchmarks can move
// it.
var categoryRangeMin = 8

// catRangeTag starts a category value that is a range.
const catRangeTag byte = 'r'

func appendCategoryRange(dst []byte, count uint64) []byte {
	return binary.AppendUvarint(append(dst, catRangeTag), count)
}

// decodeCategoryValue decodes the value of the category entry at
// position pos: a copy of the record (rec, count 1) or a range of count
// events (rec nil). A record's own checksums are checked when it is
// decoded.
func decodeCategoryValue(pos uint64, v []byte) (rec []byte, count uint64, err error) {
	if len(v) >= recordHeaderLen {
		return v, 1, nil
	}
	if len(v) < 2 || v[0] != catRangeTag {
		return nil, 0, fmt.Errorf("%w: category value %x", ErrCorrupt, v)
	}
	if count, err = decodeRunCount(pos, v[1:]); err != nil {
		return nil, 0, fmt.Errorf("category value: %w", err)
	}
	return nil, count, nil
}

// decodeRunCount decodes the count of events of an index entry at
// position pos (a type entry's value, the end of a category range's):
// the positions pos..pos+count-1 must not wrap, and position 0 is never
// used.
func decodeRunCount(pos uint64, v []byte) (uint64, error) {
	count, err := decodeCount(v)
	if err != nil {
		return 0, err
	}
	if pos == 0 || count-1 > math.MaxUint64-pos {
		return 0, fmt.Errorf("%w: %d events at position %d", ErrCorrupt, count, pos)
	}
	return count, nil
}

// maxIndexRuns bounds the runs one read merges; a filter matching more
// event types than this scans instead.
const maxIndexRuns = 64

// Category is the category of a stream: the part of its name before the
// first '-', or the whole name when it has none.
func Category(stream string) string {
	if i := strings.IndexByte(stream, '-'); i >= 0 {
		return stream[:i]
	}
	return stream
}

func appendCategoryKey(dst []byte, category string, pos uint64) []byte {
	dst = append(dst, kCategory)
	dst = append(dst, category...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, pos)
}

func appendTypeKey[T string | []byte](dst []byte, typ T, pos uint64) []byte {
	dst = append(dst, kType)
	dst = append(dst, typ...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, pos)
}

// indexRuns returns the key prefixes (space, name, 0x00) of the runs that
// hold every event q can match, or nil when q is better served by a scan.
func (l *Log) indexRuns(ctx context.Context, q AllQuery) (runs [][]byte, err error) {
	if q.NoIndex {
		return nil, nil
	}
	var cats []string
	if len(q.Categories) > 0 {
		cats = q.Categories
	} else if len(q.StreamPrefixes) > 0 {
		for _, p := range q.StreamPrefixes {
			i := strings.IndexByte(p, '-')
			if i < 0 { // streams with this prefix may be of many categories
				cats = nil
				break
			}
			cats = append(cats, p[:i])
		}
	}
	if len(cats) > 0 {
		seen := make(map[string]bool)
		for _, c := range cats {
			if !seen[c] {
				seen[c] = true
				runs = append(runs, append(append([]byte{kCategory}, c...), 0))
			}
		}
		return runs, nil
	}
	if len(q.TypePrefixes) == 0 {
		return nil, nil
	}
	// The distinct types under each prefix, by skipping from one type's run
	// to the next.
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{kType}, UpperBound: []byte{kType + 1}})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	seen := make(map[string]bool)
	for _, p := range q.TypePrefixes {
		start := append([]byte{kType}, p...)
		for valid := it.SeekGE(start); valid && bytes.HasPrefix(it.Key(), start); {
			k := it.Key()
			if len(k) < 10 {
				return nil, fmt.Errorf("%w: type index key %x", ErrCorrupt, k)
			}
			run := k[:len(k)-8] // kType, type, 0x00
			if !seen[string(run)] {
				seen[string(run)] = true
				runs = append(runs, append([]byte(nil), run...))
				if len(runs) > maxIndexRuns {
					return nil, nil
				}
			}
			next := append(append([]byte(nil), run[:len(run)-1]...), 1) // the least key after this type's run
			valid = it.SeekGE(next)
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return [][]byte{}, nil // no type matches: nothing to read
	}
	return runs, nil
}

// runCursor walks one index run over the positions [lo, up], one
// position at a time: its entry covers positions first..last, of which
// it is at pos.
type runCursor struct {
	it          *pebble.Iterator
	category    bool // category entries (copies or ranges), else type entries
	lo, up      uint64
	first, last uint64
	rec         []byte // the entry's record when it is a copy, else nil
	pos         uint64
	ok          bool
}

// load decodes the entry the iterator is at, if c.ok.
func (c *runCursor) load() error {
	if !c.ok {
		return c.it.Error()
	}
	k := c.it.Key()
	if len(k) < 10 {
		return fmt.Errorf("%w: index key %x", ErrCorrupt, k)
	}
	c.first = binary.BigEndian.Uint64(k[len(k)-8:])
	var (
		count uint64
		err   error
	)
	if c.category {
		c.rec, count, err = decodeCategoryValue(c.first, c.it.Value())
	} else {
		count, err = decodeRunCount(c.first, c.it.Value())
	}
	if err != nil {
		return fmt.Errorf("index key %x: %w", k, err)
	}
	c.last = c.first + count - 1
	return nil
}

// start puts c at its first position: forward, lo or the first after it
// (the entry holding lo may start before lo); backward, up or the last
// before it. prefix is the run's (space, name, 0x00); the iterator is
// bounded by prefix and prefix+(up+1).
func (c *runCursor) start(prefix []byte, backward bool) error {
	if backward {
		c.ok = c.it.Last()
		if err := c.load(); err != nil {
			return err
		}
		c.ok = c.ok && c.last >= c.lo
		c.pos = min(c.last, c.up)
		return nil
	}
	// The last entry starting at or before lo, if it reaches lo; else
	// the next one.
	c.ok = c.it.SeekLT(binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), c.lo+1))
	if err := c.load(); err != nil {
		return err
	}
	if !c.ok {
		c.ok = c.it.First()
	} else if c.last < c.lo {
		c.ok = c.it.Next()
	} else {
		c.pos = c.lo
		return nil
	}
	if err := c.load(); err != nil {
		return err
	}
	c.pos = c.first
	return nil
}

// step moves c to its next position (backward: previous).
func (c *runCursor) step(backward bool) error {
	was := c.pos
	if backward {
		if c.pos > max(c.first, c.lo) {
			c.pos--
			return nil
		}
		c.ok = c.it.Prev()
		if err := c.load(); err != nil {
			return err
		}
		if c.ok && c.last >= was {
			return fmt.Errorf("%w: index entries overlap at position %d", ErrCorrupt, c.last)
		}
		c.ok = c.ok && c.last >= c.lo
		c.pos = min(c.last, c.up)
		return nil
	}
	if c.pos < min(c.last, c.up) {
		c.pos++
		return nil
	}
	c.ok = c.it.Next()
	if err := c.load(); err != nil {
		return err
	}
	if c.ok && c.first <= was {
		return fmt.Errorf("%w: index entries overlap at position %d", ErrCorrupt, c.first)
	}
	c.pos = c.first
	return nil
}

// scanRuns is scanAll over index runs: it merges the runs by position and
// reads each event they name, from a copy or from $all.
func (l *Log) scanRuns(ctx context.Context, runs [][]byte, lo, up uint64, q AllQuery, emit func(*EventView) error, checkpoint func(uint64) error) (err error) {
	cursors := make([]*runCursor, 0, len(runs))
	defer func() {
		for _, c := range cursors {
			err = errors.Join(err, c.it.Close())
		}
	}()
	it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendEventKey(nil, lo),
		UpperBound: appendEventKey(nil, up+1),
	})
	if err != nil {
		return err
	}
	evs := eventCursor{it: it}
	defer func() { err = errors.Join(err, it.Close()) }()
	for _, r := range runs {
		// Clones of it: one view of the store, so that a scavenge cannot
		// remove between two iterators the events of an entry one holds.
		c, err := it.CloneWithContext(ctx, pebble.CloneOptions{IterOptions: &pebble.IterOptions{
			LowerBound: r,
			UpperBound: binary.BigEndian.AppendUint64(append([]byte(nil), r...), up+1),
		}})
		if err != nil {
			return err
		}
		rc := &runCursor{it: c, category: r[0] == kCategory, lo: lo, up: up}
		cursors = append(cursors, rc)
		if err := rc.start(r, q.Backward); err != nil {
			return err
		}
	}

	deleted := *l.deleted.Load()
	ret := l.retention()
	var (
		n, steps uint64
		ev       EventView
		lastSID  uint64
	)
	var used *runCursor // the cursor the last view came from: moved once the view is done
	for {
		if used != nil {
			if err := used.step(q.Backward); err != nil {
				return err
			}
			used = nil
		}
		var next *runCursor // the run with the next position
		for _, c := range cursors {
			if c.ok && (next == nil || (c.pos < next.pos) != q.Backward) {
				next = c
			}
		}
		if next == nil {
			break
		}
		pos := next.pos
		rec := next.rec
		if rec == nil {
			if rec, err = evs.read(pos); errors.Is(err, errNoEvent) && pos < l.removedBelow.Load() {
				// A range or run that reaches a visible event outlives the
				// hidden ones a scavenge removed (scavenge.go); the read
				// would skip them anyway.
				used = next
				continue
			} else if errors.Is(err, errNoEvent) {
				return fmt.Errorf("%w: an index names position %d, which no scavenge removed and holds no event", ErrCorrupt, pos)
			} else if err != nil {
				return fmt.Errorf("an index names position %d: %w", pos, err)
			}
		}
		if err := decodeRecord(rec, &ev.v); err != nil {
			return fmt.Errorf("position %d: %w", pos, err)
		}
		used = next
		steps++
		if steps&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			deleted = *l.deleted.Load()
		}
		if d, ok := deleted[ev.v.sid]; ok && (d.tombstoned || ev.v.rev < d.truncateBefore) {
			continue
		}
		if ev.v.sid != lastSID || ev.Stream == "" {
			if ev.Stream, err = l.streamName(ev.v.sid); err != nil {
				return fmt.Errorf("position %d: %w", pos, err)
			}
			lastSID = ev.v.sid
		}
		if !q.matches(ev.Stream, ev.v.typ) {
			continue // before the limits: those of a stream dropped here are not worth looking up
		}
		if ret.t != nil { // no call per event without limits
			if hidden, err := ret.hidden(ev.v.sid, ev.Stream, ev.v.rev, ev.v.created); err != nil || hidden {
				if err != nil {
					return fmt.Errorf("position %d: %w", pos, err)
				}
				continue
			}
		}
		ev.Position = pos
		if done, err := emitCounted(emit, &ev, &n, q.Max); done {
			return err
		}
	}
	if checkpoint != nil { // every position of the range was considered
		if q.Backward {
			return checkpoint(lo)
		}
		return checkpoint(up)
	}
	return nil
}

// filtered reports whether q selects less than everything.
func (q *AllQuery) filtered() bool {
	return len(q.StreamPrefixes) > 0 || len(q.TypePrefixes) > 0 || len(q.Categories) > 0
}

// matches reports whether an event of stream with type typ is selected.
func (q *AllQuery) matches(stream string, typ []byte) bool {
	if len(q.Categories) > 0 {
		c, found := Category(stream), false
		for _, want := range q.Categories {
			if c == want {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return HasAnyPrefix(stream, q.StreamPrefixes) && HasAnyPrefix(typ, q.TypePrefixes)
}
