package log

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// The category and event-type indexes: one key per event in each,
//
//	0x07 category 0x00 pos(8) -> the event record (a copy)
//	0x08 type     0x00 pos(8) -> empty
//
// written in the same batch as the event. Names hold no 0x00 (no control
// characters), so the 0x00 ends the name and each name's positions form
// one sorted run. A filtered read of $all walks the runs it needs, merged
// by position, instead of every event: its cost grows with what it
// returns, not with the log.
//
// The category index holds a copy of each record: categories are what
// read models follow, and without the copy a category of 1% of the log
// still reads one block of $all per event (a 32 KiB block holds about a
// hundred events), no faster than a scan. The copy doubles the bytes an
// append writes. Type runs hold positions only; their events are read
// from $all.

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

// runCursor walks one index run within positions [lo, up].
type runCursor struct {
	it       *pebble.Iterator
	pos      uint64
	ok       bool
	covering bool // the values are the records (category runs)
}

func (c *runCursor) load() error {
	if !c.ok {
		return c.it.Error()
	}
	k := c.it.Key()
	if len(k) < 9 {
		return fmt.Errorf("%w: index key %x", ErrCorrupt, k)
	}
	c.pos = binary.BigEndian.Uint64(k[len(k)-8:])
	return nil
}

// scanRuns is scanAll over index runs: it merges the runs by position and
// reads each event they name.
func (l *Log) scanRuns(ctx context.Context, runs [][]byte, lo, up uint64, q AllQuery, emit func(*EventView) error, checkpoint func(uint64) error) (err error) {
	cursors := make([]*runCursor, 0, len(runs))
	defer func() {
		for _, c := range cursors {
			err = errors.Join(err, c.it.Close())
		}
	}()
	for _, r := range runs {
		it, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
			LowerBound: binary.BigEndian.AppendUint64(append([]byte(nil), r...), lo),
			UpperBound: binary.BigEndian.AppendUint64(append([]byte(nil), r...), up+1),
		})
		if err != nil {
			return err
		}
		c := &runCursor{it: it, covering: r[0] == kCategory}
		cursors = append(cursors, c)
		if q.Backward {
			c.ok = it.Last()
		} else {
			c.ok = it.First()
		}
		if err := c.load(); err != nil {
			return err
		}
	}
	evs, err := l.db.NewIterWithContext(ctx, &pebble.IterOptions{
		LowerBound: appendEventKey(nil, lo),
		UpperBound: appendEventKey(nil, up+1),
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, evs.Close()) }()

	deleted := *l.deleted.Load()
	var (
		n, steps uint64
		ev       EventView
		key      [9]byte
		lastSID  uint64
	)
	var used *runCursor // the cursor the last view came from: moved once the view is done
	for {
		if used != nil {
			used.ok = step(used.it, q.Backward)
			if err := used.load(); err != nil {
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
		var rec []byte
		if next.covering {
			rec = next.it.Value()
		} else {
			ek := appendEventKey(key[:0], pos)
			if !evs.SeekGE(ek) || !bytes.Equal(evs.Key(), ek) {
				return fmt.Errorf("%w: an index names missing position %d", ErrCorrupt, pos)
			}
			rec = evs.Value()
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
			continue
		}
		ev.Position = pos
		if err := emit(&ev); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
		n++
		if q.Max > 0 && n >= q.Max {
			return nil
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
