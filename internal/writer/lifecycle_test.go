package writer

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
)

// queueAppends starts an append per op on its own goroutine, in order,
// each once the one before is queued at shard (which must be held);
// wait returns their outcomes once all are answered.
func queueAppends(t *testing.T, w *Writer, shard int, ops ...AppendOp) (wait func() []outcome) {
	t.Helper()
	ctx := testCtx(t)
	out := make([]outcome, len(ops))
	var wg sync.WaitGroup
	depth := w.QueueDepth(shard)
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].res, out[i].err = w.Append(ctx, op)
		}()
		eventually(t, fmt.Sprintf("op %d queued", i), func() bool { return w.QueueDepth(shard) == depth+i+1 })
	}
	return func() []outcome {
		wg.Wait()
		return out
	}
}

// TestOverloaded: a full shard queue (Config.QueueLen) and a full
// in-flight byte budget answer ErrOverloaded at once, for every kind of
// request; what was queued is committed once the shard goes on, and the
// budget is whole again afterwards.
func TestOverloaded(t *testing.T) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 2, QueueLen: 2})
	ctx := testCtx(t)
	names := streamsOnShards(t, w, "s")
	release, err := w.Hold(1)
	if err != nil {
		t.Fatal(err)
	}
	wait := queueAppends(t, w, 1, appendOf(names[1], xAny, id(1)), appendOf(names[1], xAny, id(2)))

	isOverloaded := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrOverloaded) || Reason(err) != ReasonOverloaded {
			t.Fatalf("%s with a full queue: %v, want ErrOverloaded", what, err)
		}
	}
	_, err = w.Append(ctx, appendOf(names[1], xAny, id(3)))
	isOverloaded("append", err)
	_, err = w.Delete(ctx, DeleteOp{Stream: names[1], Expect: xAny, Mode: eslog.DeleteSoft})
	isOverloaded("delete", err)
	_, err = w.Hold(1)
	isOverloaded("hold", err)
	// An AppendMulti locks shard 0, then finds shard 1 full: it lets shard
	// 0 go again.
	_, err = w.AppendMulti(ctx, []AppendOp{appendOf(names[0], xAny, id(4)), appendOf(names[1], xAny, id(5))})
	isOverloaded("AppendMulti", err)
	mustAppend(t, w, appendOf(names[0], xAny, id(6)))

	release()
	for i, o := range wait() {
		if o.err != nil || o.res.FirstRevision != uint64(i) {
			t.Fatalf("queued append %d: %+v, %v", i, o.res, o.err)
		}
	}
	mustAppend(t, w, appendOf(names[1], xAny, id(3)))
	if n := w.inflight.Load(); n != 0 {
		t.Fatalf("%d bytes in flight after every answer", n)
	}

	// The byte budget.
	old := maxInflightBytes
	maxInflightBytes = 100
	t.Cleanup(func() { maxInflightBytes = old })
	big := AppendOp{Stream: names[1], Events: []eslog.Event{{ID: id(7), Type: "T", Data: make([]byte, 101)}}, ClientIDs: 1}
	_, err = w.Append(ctx, big)
	isOverloaded("append over the byte budget", err)
	_, err = w.AppendMulti(ctx, []AppendOp{big})
	isOverloaded("AppendMulti over the byte budget", err)
	big.Events[0].Data = big.Events[0].Data[:100]
	mustAppend(t, w, big)
	if n := w.inflight.Load(); n != 0 {
		t.Fatalf("%d bytes in flight after every answer", n)
	}
}

// TestShuttingDown: Close commits what is queued and answers it; after
// it, every request is ErrShuttingDown. Closing twice is harmless.
func TestShuttingDown(t *testing.T) {
	f := newFakeLog(t)
	w := newTestWriter(t, f, Config{Shards: 2})
	ctx := testCtx(t)
	names := streamsOnShards(t, w, "s")
	release, err := w.Hold(0)
	if err != nil {
		t.Fatal(err)
	}
	wait := queueAppends(t, w, 0, appendOf(names[0], xAny, id(1)), appendOf(names[0], xAny, id(2)))
	closed := make(chan struct{})
	go func() {
		w.Close()
		close(closed)
	}()
	eventually(t, "Close refusing requests", func() bool {
		w.mu.RLock()
		defer w.mu.RUnlock()
		return w.closing
	})
	release()
	<-closed
	for i, o := range wait() {
		if o.err != nil || o.res.FirstRevision != uint64(i) {
			t.Fatalf("append queued before Close: %+v, %v", o.res, o.err)
		}
	}
	isShuttingDown := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrShuttingDown) || Reason(err) != ReasonShuttingDown {
			t.Fatalf("%s after Close: %v, want ErrShuttingDown", what, err)
		}
	}
	_, err = w.Append(ctx, appendOf(names[0], xAny, id(3)))
	isShuttingDown("append", err)
	_, err = w.Delete(ctx, DeleteOp{Stream: names[1], Expect: xAny, Mode: eslog.DeleteTombstone})
	isShuttingDown("delete", err)
	_, err = w.AppendMulti(ctx, []AppendOp{appendOf(names[0], xAny, id(4)), appendOf(names[1], xAny, id(5))})
	isShuttingDown("AppendMulti", err)
	_, err = w.Hold(1)
	isShuttingDown("hold", err)
	w.Close()
	if n := len(f.stored()); n != 2 {
		t.Fatalf("%d events stored, want the 2 queued before Close", n)
	}
}

// TestStorageFailure: a commit that fails (nothing applied) or whose sync
// fails answers its requests with the failure, and so does every later
// one; nothing of them is reported stored.
func TestStorageFailure(t *testing.T) {
	errDisk := errors.New("disk on fire")
	t.Run("commit", func(t *testing.T) {
		f := newFakeLog(t)
		w := newTestWriter(t, f, Config{Shards: 1})
		mustAppend(t, w, appendOf("a", xAny, id(1)))
		f.failNextCommit(errDisk)
		out := appendRound(t, w, f, nil, appendOf("a", xAny, id(2)), appendOf("b", xAny, id(3)))
		for _, o := range out {
			if !errors.Is(o.err, eslog.ErrStorageFailed) || Reason(o.err) != ReasonStorageFailed {
				t.Fatalf("append in a failed commit: %+v, %v", o.res, o.err)
			}
		}
		if _, err := w.Append(testCtx(t), appendOf("a", xAny, id(4))); !errors.Is(err, eslog.ErrStorageFailed) {
			t.Fatalf("append after the failure: %v", err)
		}
		if n := len(f.stored()); n != 1 {
			t.Fatalf("%d events stored", n)
		}
	})
	t.Run("sync", func(t *testing.T) {
		f := newFakeLog(t)
		w := newTestWriter(t, f, Config{Shards: 2})
		f.hold(true)
		done := make(chan error, 1)
		go func() {
			_, err := w.Append(testCtx(t), appendOf("a", xAny, id(1)))
			done <- err
		}()
		f.waitApplied(t, 1)
		f.releaseErr(1, errDisk)
		if err := <-done; !errors.Is(err, eslog.ErrStorageFailed) || !errors.Is(err, errDisk) {
			t.Fatalf("append whose sync failed: %v", err)
		}
		if f.Published() != 0 {
			t.Fatalf("published %d after a failed sync", f.Published())
		}
	})
}

// TestRefusalWaitsForItsState: a refusal judged against a state whose
// write is not durable yet (here a tombstone in the same round) is
// answered once that write is; if the write's sync fails, the answer is
// the storage failure, not a refusal resting on a state that never was
// (concurrent deletes on a filling disk).
func TestRefusalWaitsForItsState(t *testing.T) {
	for _, sync := range []struct {
		name string
		err  error
	}{{"durable", nil}, {"failed", errors.New("disk full")}} {
		t.Run(sync.name, func(t *testing.T) {
			f := newFakeLog(t)
			w := newTestWriter(t, f, Config{Shards: 1})
			f.hold(true)
			release, err := w.Hold(0)
			if err != nil {
				t.Fatal(err)
			}
			answers := make(chan error, 3)
			for i, call := range []func() error{
				func() error {
					_, err := w.Delete(testCtx(t), DeleteOp{Stream: "s", Expect: xAny, Mode: eslog.DeleteTombstone})
					return err
				},
				func() error { _, err := w.Append(testCtx(t), appendOf("s", xAny, id(1))); return err },
				func() error {
					_, err := w.Delete(testCtx(t), DeleteOp{Stream: "s", Expect: xAny, Mode: eslog.DeleteTombstone})
					return err
				},
			} {
				go func() { answers <- call() }()
				eventually(t, fmt.Sprintf("op %d queued", i), func() bool { return w.QueueDepth(0) == i+1 })
			}
			release() // one round: the tombstone, then two writes refused for it
			f.waitApplied(t, 1)
			time.Sleep(50 * time.Millisecond)
			select {
			case err := <-answers:
				t.Fatalf("answered before the tombstone is durable: %v", err)
			default:
			}
			f.releaseErr(1, sync.err)
			for range 3 {
				err := <-answers
				switch {
				case sync.err != nil && !errors.Is(err, eslog.ErrStorageFailed):
					t.Errorf("after the tombstone's sync failed: %v, want the storage failure", err)
				case sync.err == nil && err != nil && !errors.Is(err, eslog.ErrStreamTombstoned):
					t.Errorf("after a durable tombstone: %v, want STREAM_TOMBSTONED (or the tombstone's success)", err)
				}
			}
		})
	}
}
