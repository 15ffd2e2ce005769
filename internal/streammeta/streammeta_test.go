package streammeta

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/writer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, fs vfs.FS) (*eslog.Log, *Store) {
	t.Helper()
	l, err := eslog.Open("db", eslog.Options{FS: fs, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(l)
	if err != nil {
		t.Fatal(errors.Join(err, l.Close()))
	}
	return l, s
}

var stream = Target{Name: "order-1"}

func TestSetWithExpectedRevisions(t *testing.T) {
	l, s := open(t, vfs.NewMem())
	defer l.Close()
	ctx := context.Background()
	md := Metadata{Limits: eslog.Limits{MaxCount: 10}, CustomJSON: `{"owner":"billing"}`}

	_, err := s.Set(ctx, stream, Expected{Kind: ExpectExact, Revision: 0}, md)
	var wr *WrongRevisionError
	if !errors.As(err, &wr) || wr.Exists {
		t.Fatalf("exact 0 with no metadata: %v", err)
	}
	rev, err := s.Set(ctx, stream, Expected{Kind: ExpectNone}, md)
	if err != nil || rev != 0 {
		t.Fatalf("first write: %d %v", rev, err)
	}
	if _, err := s.Set(ctx, stream, Expected{Kind: ExpectNone}, md); !errors.As(err, &wr) || !wr.Exists || wr.Actual != 0 {
		t.Fatalf("no metadata, when there is: %v", err)
	}
	if _, err := s.Set(ctx, stream, Expected{Kind: ExpectExact, Revision: 5}, md); !errors.As(err, &wr) || wr.Actual != 0 ||
		err.Error() != `stream "order-1": expected metadata revision 5, found revision 0` {
		t.Fatalf("exact 5 at 0: %v", err)
	}
	if rev, err = s.Set(ctx, stream, Expected{Kind: ExpectExact, Revision: 0}, Metadata{Limits: eslog.Limits{MaxAge: time.Hour}}); err != nil || rev != 1 {
		t.Fatalf("exact 0: %d %v", rev, err)
	}
	if rev, err = s.Set(ctx, stream, Expected{}, Metadata{}); err != nil || rev != 2 {
		t.Fatalf("any: %d %v", rev, err)
	}
	if e, ok := s.Get(stream); !ok || e.Revision != 2 || e.Metadata != (Metadata{}) {
		t.Fatalf("Get: %+v %v", e, ok)
	}
	if _, ok := l.LimitsOf(stream.Name); ok {
		t.Fatal("empty metadata left limits in the log")
	}
}

func TestConcurrentWritersOneWins(t *testing.T) {
	l, s := open(t, vfs.NewMem())
	defer l.Close()
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []uint64
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Set(context.Background(), stream, Expected{Kind: ExpectNone}, Metadata{Limits: eslog.Limits{MaxCount: uint64(i + 1)}})
			var wr *WrongRevisionError
			switch {
			case err == nil:
				mu.Lock()
				wins = append(wins, uint64(i+1))
				mu.Unlock()
			case !errors.As(err, &wr):
				t.Errorf("writer %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if len(wins) != 1 {
		t.Fatalf("%d writers won: %v", len(wins), wins)
	}
	if lim, _ := l.LimitsOf(stream.Name); lim.MaxCount != wins[0] {
		t.Fatalf("the log applies max count %d, the winner wrote %d", lim.MaxCount, wins[0])
	}
}

func TestSurvivesReopen(t *testing.T) {
	fs := vfs.NewMem()
	l, s := open(t, fs)
	ctx := context.Background()
	md := Metadata{Limits: eslog.Limits{MaxCount: 3, MaxAge: time.Minute, TruncateBefore: 2}, CustomJSON: `[1,2]`}
	if _, err := s.Set(ctx, stream, Expected{}, md); err != nil {
		t.Fatal(err)
	}
	cat := Target{Name: "order", Category: true}
	if _, err := s.Set(ctx, cat, Expected{}, Metadata{Limits: eslog.Limits{MaxAge: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(ctx, cat, Expected{Kind: ExpectExact}, Metadata{Limits: eslog.Limits{MaxCount: 100}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, s = open(t, fs)
	defer l.Close()
	if e, ok := s.Get(stream); !ok || e.Revision != 0 || e.Metadata != md {
		t.Fatalf("stream after reopen: %+v %v", e, ok)
	}
	if e, ok := s.Get(cat); !ok || e.Revision != 1 || e.Metadata.Limits.MaxCount != 100 {
		t.Fatalf("category after reopen: %+v %v", e, ok)
	}
	if lim, _ := l.LimitsOf("order-2"); lim != (eslog.Limits{MaxCount: 100}) {
		t.Fatalf("order-2 follows its category after reopen: %+v", lim)
	}
	if lim, _ := l.LimitsOf("order-1"); lim != md.Limits {
		t.Fatalf("order-1 after reopen: %+v", lim)
	}
}

func TestRefusals(t *testing.T) {
	l, s := open(t, vfs.NewMem())
	defer l.Close()
	ctx := context.Background()
	cat := Target{Name: "order", Category: true}
	for _, md := range []Metadata{{Limits: eslog.Limits{TruncateBefore: 3}}, {CustomJSON: `{}`}} {
		if _, err := s.Set(ctx, cat, Expected{}, md); !errors.Is(err, ErrInvalid) {
			t.Fatalf("category %+v: %v", md, err)
		}
	}
	if _, err := s.Set(ctx, stream, Expected{}, Metadata{CustomJSON: `{"a":`}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad JSON: %v", err)
	}
	// A tombstoned stream's metadata cannot change.
	w := &eslog.Write{State: eslog.StreamState{ID: l.NewStreamID(), Name: stream.Name}, New: true, Delete: eslog.DeleteTombstone}
	tk, err := l.Commit([]*eslog.Write{w}, false)
	if err == nil {
		err = tk.Wait(ctx)
	}
	if err != nil || w.Err != nil {
		t.Fatal(err, w.Err)
	}
	_, err = s.Set(ctx, stream, Expected{}, Metadata{})
	var se *eslog.StreamError
	if !errors.As(err, &se) || !errors.Is(se.Err, eslog.ErrStreamTombstoned) || !errors.Is(err, writer.ErrRefused) {
		t.Fatalf("tombstoned: %v", err)
	}
}
