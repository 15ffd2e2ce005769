package log

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The aux key space (0x09) holds other packages' small durable state
// (consumer groups' settings, checkpoints and parked events), beside the
// log but apart from it: aux writes take no position. It is divided into
// namespaces (namespaces.go); a feature reaches its own through an *Aux
// (Log.Aux), whose keys are relative to the namespace.
//
// Aux writes go through the same commit machinery as events (commit.go):
// each Apply or CompareAndSwap is a request in Commit's queue, applied
// under the commit lock, possibly in one Pebble batch with event commits,
// and acknowledged by the syncer once its batch is durable. So aux writes
// and event commits are ordered one way on disk and in memory, and a
// compare-and-swap compares with every aux write applied before it.
//
// Visibility: Get and Scan see only aux writes that are durable. Pebble
// makes a batch readable before its fsync, so they read a Pebble snapshot
// and then wait until the newest aux write applied before it is durable
// (at most one fsync). A read therefore never returns a value that a
// crash could take back.

// AuxValue is an aux key's value, or its absence. The zero AuxValue is
// absent (Absent()); Present(v) holds v, and an empty or nil v is an
// empty value, not an absence.
type AuxValue struct {
	Value  []byte
	Exists bool
}

// Present returns the AuxValue holding v.
func Present(v []byte) AuxValue { return AuxValue{Value: v, Exists: true} }

// Absent returns the AuxValue of a key that is not stored: as the old
// value of a swap, "the key must not exist"; as the new value, "delete the
// key".
func Absent() AuxValue { return AuxValue{} }

func (v AuxValue) equal(w AuxValue) bool {
	return v.Exists == w.Exists && (!v.Exists || bytes.Equal(v.Value, w.Value))
}

// A Swap is one key's part of a compare-and-swap: Key must hold Old
// (Absent: must not exist), and then gets New (Absent: is deleted).
type Swap struct {
	Key      []byte
	Old, New AuxValue
}

// AuxWrite is a set of aux changes written atomically, in the order they
// were added (a DeletePrefix removes a key Put before it, not one Put
// after it). Keys are relative to the namespace of the Aux it is applied
// to.
type AuxWrite struct {
	ops []auxOp
}

type auxOpKind uint8

const (
	auxPut auxOpKind = iota
	auxDelete
	auxDeletePrefix
)

// auxOp is one change; key is relative in an AuxWrite and full (0x09,
// namespace prefix, key) in an auxReq.
type auxOp struct {
	kind       auxOpKind
	key, value []byte
}

// Put sets key to value.
func (w *AuxWrite) Put(key, value []byte) *AuxWrite {
	w.ops = append(w.ops, auxOp{kind: auxPut, key: key, value: value})
	return w
}

// Delete removes key.
func (w *AuxWrite) Delete(key []byte) *AuxWrite {
	w.ops = append(w.ops, auxOp{kind: auxDelete, key: key})
	return w
}

// DeletePrefix removes every key starting with prefix (an empty prefix:
// the whole namespace).
func (w *AuxWrite) DeletePrefix(prefix []byte) *AuxWrite {
	w.ops = append(w.ops, auxOp{kind: auxDeletePrefix, key: prefix})
	return w
}

// Aux is one namespace of the aux key space. Its keys are relative to the
// namespace: it cannot reach outside it. It is safe for concurrent use.
type Aux struct {
	l      *Log
	ns     Namespace
	prefix []byte // 0x09, then the namespace's prefix
}

// Aux returns the handle of namespace ns. It panics if ns is not in the
// registry (namespaces.go).
func (l *Log) Aux(ns Namespace) *Aux {
	if !ns.valid() {
		panic(fmt.Sprintf("log: aux namespace %d is not registered", uint8(ns)))
	}
	return &Aux{l: l, ns: ns, prefix: append([]byte{kAux}, ns.Prefix()...)}
}

// Namespace is the handle's namespace.
func (a *Aux) Namespace() Namespace { return a.ns }

// key returns the full key of the relative key k.
func (a *Aux) key(k []byte) []byte {
	out := make([]byte, 0, len(a.prefix)+len(k))
	return append(append(out, a.prefix...), k...)
}

// Get returns a copy of key's durable value.
func (a *Aux) Get(key []byte) ([]byte, bool, error) {
	s, err := a.l.auxSnapshot()
	if err != nil {
		return nil, false, err
	}
	v, closer, err := s.Get(a.key(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, s.Close()
	}
	if err != nil {
		return nil, false, errors.Join(err, s.Close())
	}
	out := append([]byte(nil), v...)
	return out, true, errors.Join(closer.Close(), s.Close())
}

// Scan calls fn for every durable key starting with prefix, in key
// order, with the key (relative to the namespace, prefix included) and
// value; both are valid only during the call. An error from fn ends the
// scan and is returned.
func (a *Aux) Scan(prefix []byte, fn func(key, value []byte) error) (err error) {
	s, err := a.l.auxSnapshot()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	lo := a.key(prefix)
	it, err := s.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	n := len(a.prefix)
	for valid := it.First(); valid; valid = it.Next() {
		if err := fn(it.Key()[n:], it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// Apply writes w atomically and durably: it returns once w is synced,
// in the commit sequence of the log (see Commit). It fails with ErrClosed
// or ErrStorageFailed. It must not be called from an OnPublish hook.
func (a *Aux) Apply(w *AuxWrite) error {
	if len(w.ops) == 0 {
		return nil
	}
	return a.l.commitAux(context.Background(), a.writeReq(w))
}

// CompareAndSwap sets key to new (Absent: deletes it) if it holds old
// (Absent: if it does not exist), else fails with a *CASError (matching
// ErrCASMismatch) that says what it holds. The comparison is with every
// aux write applied before, durable or not; the swap is applied under the
// log's commit lock in the same Pebble batch sequence as event commits,
// and CompareAndSwap returns once it is durable, when Get sees it.
//
// A ctx that ends first returns ctx.Err() and leaves the outcome unknown:
// the swap may be applied and become durable. Other errors: ErrClosed,
// ErrStorageFailed (the swap is not acknowledged and may or may not
// survive a crash, whole or not at all). It must not be called from an
// OnPublish hook.
func (a *Aux) CompareAndSwap(ctx context.Context, key []byte, old, new AuxValue) error {
	return a.CompareAndSwapMany(ctx, []Swap{{Key: key, Old: old, New: new}})
}

// CompareAndSwapMany is CompareAndSwap of several keys, all or nothing:
// every key must hold its Old, and then every key gets its New, in one
// batch. The *CASError names the first key (in swaps' order) that does
// not hold its Old. A key must not appear twice.
func (a *Aux) CompareAndSwapMany(ctx context.Context, swaps []Swap) error {
	if len(swaps) == 0 {
		return nil
	}
	r, err := a.swapReq(swaps)
	if err != nil {
		return err
	}
	return a.l.commitAux(ctx, r)
}

// swapReq makes the request of a compare-and-swap.
func (a *Aux) swapReq(swaps []Swap) (*auxReq, error) {
	r := &auxReq{ns: a.ns, conds: make([]auxCond, 0, len(swaps)), ops: make([]auxOp, 0, len(swaps))}
	seen := make(map[string]struct{}, len(swaps))
	for _, s := range swaps {
		if _, dup := seen[string(s.Key)]; dup {
			return nil, fmt.Errorf("log: compare-and-swap: key %q appears twice", s.Key)
		}
		seen[string(s.Key)] = struct{}{}
		full := a.key(s.Key)
		r.conds = append(r.conds, auxCond{key: full, rel: s.Key, old: s.Old})
		if s.New.Exists {
			r.ops = append(r.ops, auxOp{kind: auxPut, key: full, value: s.New.Value})
		} else {
			r.ops = append(r.ops, auxOp{kind: auxDelete, key: full})
		}
	}
	return r, nil
}

// writeReq makes the request of an aux write.
func (a *Aux) writeReq(w *AuxWrite) *auxReq {
	r := &auxReq{ns: a.ns, ops: make([]auxOp, 0, len(w.ops))}
	for _, op := range w.ops {
		op.key = a.key(op.key)
		r.ops = append(r.ops, op)
	}
	return r
}

// auxReq is an aux write (Apply) or a compare-and-swap, as a request of
// the commit queue. Keys are full.
type auxReq struct {
	ns    Namespace
	conds []auxCond // all checked before any op is written
	ops   []auxOp
}

// auxCond is a key's expected value.
type auxCond struct {
	key, rel []byte // full, and relative to the namespace
	old      AuxValue
}

func (r *auxReq) size() int {
	n := 0
	for _, op := range r.ops {
		n += len(op.key) + len(op.value) + 16
	}
	return n
}

// commitAux submits r to the commit queue and waits until it is durable.
func (l *Log) commitAux(ctx context.Context, r *auxReq) error {
	c := &commitReq{aux: r}
	l.submit(c)
	if c.err != nil {
		return c.err
	}
	return c.ticket.Wait(ctx)
}

// applyAux checks r's conditions against the store as of the batch under
// construction (every batch applied before, and the requests before r in
// this one), then writes r's ops into the batch. Called with commitMu
// held; b is indexed if r has conditions.
func applyAux(b *pebble.Batch, r *auxReq) error {
	for _, cd := range r.conds {
		cur, err := batchGet(b, cd.key)
		if err != nil {
			return fmt.Errorf("log: compare-and-swap: read %s key %q: %w", r.ns, cd.rel, err)
		}
		if !cur.equal(cd.old) {
			return &CASError{Namespace: r.ns, Key: cd.rel, Current: cur.Value, Exists: cur.Exists}
		}
	}
	for _, op := range r.ops {
		switch op.kind {
		case auxPut:
			_ = b.Set(op.key, op.value, nil)
		case auxDelete:
			_ = b.Delete(op.key, nil)
		case auxDeletePrefix:
			_ = b.DeleteRange(op.key, prefixEnd(op.key), nil) // op.key starts with 0x09: it has an end
		}
	}
	return nil
}

// batchGet reads key through the indexed batch b: the batch's writes over
// the store's.
func batchGet(b *pebble.Batch, key []byte) (AuxValue, error) {
	v, closer, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return AuxValue{}, nil
	}
	if err != nil {
		return AuxValue{}, err
	}
	out := Present(append([]byte{}, v...))
	return out, closer.Close()
}

// auxSnapshot returns a view of the store in which every aux write is
// durable. The snapshot comes first, then the newest aux ticket: commit
// stores a ticket before applying its batch, so every aux write the
// snapshot holds belongs to that ticket or an earlier one, and tickets
// are done in apply order. If that ticket failed, the log has failed and
// takes no more writes, but reads go on: the view may then hold the last
// aux writes, whose sync failed and which a restart may or may not keep.
func (l *Log) auxSnapshot() (*pebble.Snapshot, error) {
	s := l.db.NewSnapshot()
	if t := l.auxNewest.Load(); t != nil {
		<-t.done
	}
	return s, nil
}
