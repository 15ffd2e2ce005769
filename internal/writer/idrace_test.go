package writer

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	eslog "github.com/esdhq/esd/internal/log"
)

// lookupHookStore is the real log as the writer's Store, with a hook run
// inside LookupIDs after the lookup has read and before it returns: what
// the hook commits is missing from that (now stale) answer, as it would
// be had another shard committed while the lookup ran.
type lookupHookStore struct {
	*eslog.Log
	mu   sync.Mutex
	hook func(ids [][16]byte)
}

func (s *lookupHookStore) LookupIDs(ids [][16]byte) ([]eslog.IDLocation, error) {
	locs, err := s.Log.LookupIDs(ids)
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		hook(ids)
	}
	return locs, err
}

// onLookupOf sets the hook to run do once, at the first lookup of id.
// do runs on the shard goroutine that looks id up; lookups on other
// goroutines meanwhile pass.
func (s *lookupHookStore) onLookupOf(id [16]byte, do func()) {
	var fired atomic.Bool
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = func(ids [][16]byte) {
		if slices.Contains(ids, id) && fired.CompareAndSwap(false, true) {
			do()
		}
	}
}

// openRealWriter opens a log in memory and a writer on it through
// Local, deciding against a lookupHookStore.
func openRealWriter(t *testing.T, shards int) (*Writer, *lookupHookStore) {
	t.Helper()
	l, err := eslog.Open("db", eslog.Options{FS: vfs.NewMem(), CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s := &lookupHookStore{Log: l}
	w := New(s, Local(l), Config{Shards: shards})
	t.Cleanup(func() {
		w.Close()
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return w, s
}

// appendElsewhere appends events with ids to stream through w from
// another goroutine and waits until it is durable: another shard's
// commit, from inside a hook.
func appendElsewhere(t *testing.T, w *Writer, stream string, ids ...[16]byte) {
	done := make(chan error, 1)
	go func() {
		_, err := w.Append(context.Background(), appendOf(stream, xAny, ids...))
		done <- err
	}()
	if err := <-done; err != nil {
		t.Errorf("append to %s from the hook: %v", stream, err)
	}
}

// allEvents reads $all: stream and id of every event, in position order.
func allEvents(t *testing.T, l *eslog.Log) (streams []string, ids [][16]byte) {
	t.Helper()
	err := l.ReadAll(context.Background(), eslog.AllQuery{}, func(e *eslog.RecordedEvent) error {
		streams = append(streams, e.Stream)
		ids = append(ids, e.ID)
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return streams, ids
}

// TestIDCommittedDuringLookup: an event id is committed through another
// shard while the lookup of an append with the same id runs, so that the
// append's shard finds the id free. The log, checking what was committed
// since the lookup's id epoch (Write.LookupEpoch), refuses the append with
// an id conflict: the id is stored once, on the stream that committed it
// first.
func TestIDCommittedDuringLookup(t *testing.T) {
	w, s := openRealWriter(t, 2)
	names := streamsOnShards(t, w, "race-")
	mine, other := names[0], names[1]
	x := id(1)
	mustAppend(t, w, appendOf(mine, xAny, id(100))) // not a new stream: its state is cached
	s.onLookupOf(x, func() { appendElsewhere(t, w, other, x) })

	_, err := w.Append(testCtx(t), appendOf(mine, xAny, x))
	var idc *eslog.IDConflictError
	if !errors.As(err, &idc) || idc.ID != x || idc.Stream != mine {
		t.Fatalf("append of an id committed during its lookup: %v, want an id conflict", err)
	}
	st, ok, err := s.State(other)
	if err != nil || !ok {
		t.Fatalf("State(%s): %t, %v", other, ok, err)
	}
	locs, err := s.Log.LookupIDs([][16]byte{x})
	if err != nil || !locs[0].Found || locs[0].StreamID != st.ID {
		t.Fatalf("id stored at %+v (%v), want on %s (id %d)", locs, err, other, st.ID)
	}
	streams, ids := allEvents(t, s.Log)
	if !slices.Equal(streams, []string{mine, other}) || ids[1] != x {
		t.Fatalf("$all holds %v, want the first append to %s and the one to %s", streams, mine, other)
	}
	// The shard's state of its stream is still the stored one.
	r := mustAppend(t, w, appendOf(mine, xExact(0), id(2)))
	if r.FirstRevision != 1 {
		t.Fatalf("append after the conflict: %+v", r)
	}
}

// TestAppendMultiIDConflictOnlyLogSees: an id of one AppendMulti entry is
// committed by another shard after the entry's lookup and before the
// AppendMulti's commit; only the log can see it, at the atomic commit.
// Nothing of the AppendMulti is stored: no event of any entry in any
// stream (not even a stream's name), whichever shard's lookup went stale.
func TestAppendMultiIDConflictOnlyLogSees(t *testing.T) {
	for _, staleFirst := range []bool{true, false} {
		name := "stale lookup on the last shard locked"
		if staleFirst {
			name = "stale lookup on the first shard locked"
		}
		t.Run(name, func(t *testing.T) {
			w, s := openRealWriter(t, 4)
			names := streamsOnShards(t, w, "multi-")
			// The AppendMulti spans shards 0 and 2; the other commit goes
			// through shard 1, which the AppendMulti never locks.
			a, c, other := names[0], names[2], names[1]
			x1, x2 := id(1), id(2)
			stale, fresh := x2, x1
			if staleFirst {
				stale, fresh = x1, x2
			}
			s.onLookupOf(stale, func() { appendElsewhere(t, w, other, stale) })

			_, err := w.AppendMulti(testCtx(t), []AppendOp{
				appendOf(c, xNoStream, x2, id(3)),
				appendOf(a, xNoStream, x1, id(4)),
			})
			var idc *eslog.IDConflictError
			if !errors.As(err, &idc) || idc.ID != stale {
				t.Fatalf("AppendMulti: %v, want an id conflict on %s", err, eslog.FormatID(stale))
			}
			streams, _ := allEvents(t, s.Log)
			if !slices.Equal(streams, []string{other}) {
				t.Fatalf("$all holds events of %v, want only the other commit's (%s)", streams, other)
			}
			for _, st := range []string{a, c} {
				if _, ok, err := s.State(st); ok || err != nil {
					t.Fatalf("State(%s) after the failed AppendMulti: %t, %v", st, ok, err)
				}
			}
			locs, err := s.Log.LookupIDs([][16]byte{fresh, id(3), id(4)})
			if err != nil || locs[0].Found || locs[1].Found || locs[2].Found {
				t.Fatalf("ids of the failed AppendMulti stored: %+v, %v", locs, err)
			}
			// Both shards go on, against the stored states.
			res, err := w.AppendMulti(testCtx(t), []AppendOp{
				appendOf(c, xNoStream, id(5)),
				appendOf(a, xNoStream, fresh),
			})
			if err != nil || res[0].FirstRevision != 0 || res[1].FirstRevision != 0 {
				t.Fatalf("AppendMulti after the failed one: %+v, %v", res, err)
			}
		})
	}
}
