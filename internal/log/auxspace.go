package log

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The aux key space (0x09) holds other packages' small durable state
// (consumer groups' settings, checkpoints and parked events), beside the
// log but apart from it: aux writes take no position, and Pebble orders
// them with the log's commits on its own. Keys are the caller's, below
// the prefix.

// AuxWrite is a set of aux changes written atomically.
type AuxWrite struct {
	puts    [][2][]byte
	deletes [][]byte
	ranges  [][2][]byte
}

// Put sets key to value.
func (w *AuxWrite) Put(key, value []byte) *AuxWrite {
	w.puts = append(w.puts, [2][]byte{key, value})
	return w
}

// Delete removes key.
func (w *AuxWrite) Delete(key []byte) *AuxWrite {
	w.deletes = append(w.deletes, key)
	return w
}

// DeletePrefix removes every key starting with prefix.
func (w *AuxWrite) DeletePrefix(prefix []byte) *AuxWrite {
	w.ranges = append(w.ranges, [2][]byte{prefix, nil})
	return w
}

func auxKey(k []byte) []byte { return append([]byte{kAux}, k...) }

// ApplyAux writes w atomically and durably (fsync).
func (l *Log) ApplyAux(w *AuxWrite) (err error) {
	if err := l.Failed(); err != nil {
		return err
	}
	b := l.db.NewBatch()
	defer func() { err = errors.Join(err, b.Close()) }()
	for _, kv := range w.puts {
		_ = b.Set(auxKey(kv[0]), kv[1], nil)
	}
	for _, k := range w.deletes {
		_ = b.Delete(auxKey(k), nil)
	}
	for _, r := range w.ranges {
		lo := auxKey(r[0])
		hi := prefixEnd(lo)
		if hi == nil {
			return fmt.Errorf("log: aux prefix %x has no end", r[0])
		}
		_ = b.DeleteRange(lo, hi, nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("aux write: %w", err)
	}
	return nil
}

// AuxGet returns a copy of key's value.
func (l *Log) AuxGet(key []byte) ([]byte, bool, error) {
	return l.get(auxKey(key))
}

// AuxScan calls fn for every key starting with prefix, in key order, with
// the key (prefix included) and value; both are valid only during the call.
func (l *Log) AuxScan(prefix []byte, fn func(key, value []byte) error) (err error) {
	lo := auxKey(prefix)
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for valid := it.First(); valid; valid = it.Next() {
		if err := fn(it.Key()[1:], it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// EventAt returns the event at pos, if it is published and visible.
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
	ev.Position = pos
	return ev.Materialize(), true, nil
}
