package log

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// walSyncGate holds every sync of a WAL file until the test lets it go:
// while one is held, what it would make durable is not, for as long as
// the test looks. It injects no error.
type walSyncGate struct {
	on      atomic.Bool
	arrived chan chan struct{} // a held sync hands over the channel that lets it go
	off     chan struct{}      // closed: no sync is held any more
}

func newWALSyncGate() *walSyncGate {
	return &walSyncGate{arrived: make(chan chan struct{}), off: make(chan struct{})}
}

func (g *walSyncGate) String() string { return "wal sync gate" }

func (g *walSyncGate) MaybeError(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
	default:
		return nil
	}
	if !g.on.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	release := make(chan struct{})
	select {
	case g.arrived <- release:
		<-release
	case <-g.off:
	}
	return nil
}

// TestCrashKeepsPublishedPositions: every position published to readers
// before a crash survives it. Several goroutines commit concurrently (the
// way writer shards do, each to its own streams, waiting for their
// tickets now and then); each WAL sync is held while the test records the
// published position (LastPosition and what OnPublish reported), giving
// the syncer every chance to publish early, and takes a crash clone;
// then the sync goes on. Each clone, reopened, must hold every position
// published before it was taken, each the event committed there.
func TestCrashKeepsPublishedPositions(t *testing.T) {
	mem := vfs.NewCrashableMem()
	gate := newWALSyncGate()
	l, err := Open("db", Options{FS: errorfs.Wrap(mem, gate), CacheBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// Every advance of the published position, as OnPublish reports it:
	// each commit's events, in position order, right after the last.
	var (
		pubMu     sync.Mutex
		published []uint64
		pubErr    error
	)
	l.OnPublish(func(evs []Committed) {
		pubMu.Lock()
		defer pubMu.Unlock()
		last := lastPublishedLocked(published)
		for i, e := range evs {
			if e.Position != last+1+uint64(i) && pubErr == nil {
				pubErr = fmt.Errorf("published position %d after %d (event %d of its commit)", e.Position, last, i)
			}
		}
		if len(evs) > 0 {
			published = append(published, evs[len(evs)-1].Position)
		}
	})
	lastPublished := func() uint64 {
		pubMu.Lock()
		defer pubMu.Unlock()
		return lastPublishedLocked(published)
	}

	gate.on.Store(true)
	const committers, commits = 4, 30
	var (
		idMu   sync.Mutex
		idAt   = make(map[uint64][16]byte) // the id committed at each position
		nextID atomic.Int64
		wg     sync.WaitGroup
	)
	for g := range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			states := make(map[string]*StreamState)
			var tickets []*Ticket
			waitAll := func() bool {
				for _, tk := range tickets {
					if err := tk.Wait(context.Background()); err != nil {
						t.Errorf("committer %d: %v", g, err)
						return false
					}
				}
				tickets = tickets[:0]
				return true
			}
			for range commits {
				var writes []*Write
				for range 1 + rng.IntN(2) { // one or two streams of this committer
					name := fmt.Sprintf("c%d-%d", g, rng.IntN(3))
					w := &Write{CheckIDs: true, LookupEpoch: l.IDEpoch()}
					if st, ok := states[name]; ok {
						w.State = *st
					} else {
						w.State, w.New = StreamState{ID: l.NewStreamID(), Name: name}, true
					}
					for range 1 + rng.IntN(3) {
						var id [16]byte
						copy(id[:], fmt.Sprintf("pub-%012d", nextID.Add(1)))
						w.Events = append(w.Events, Event{ID: id, Type: "T", Data: []byte(name)})
					}
					next := w.State
					predictState(&next, w)
					states[name] = &next
					writes = append(writes, w)
				}
				tk, err := l.Commit(writes, false)
				if err != nil || tk == nil {
					t.Errorf("committer %d: commit: %v", g, err)
					return
				}
				idMu.Lock()
				for _, w := range writes {
					if w.Err != nil {
						t.Errorf("committer %d: write to %s: %v", g, w.State.Name, w.Err)
					}
					for i := range w.Events {
						idAt[w.FirstPosition+uint64(i)] = w.Events[i].ID
					}
				}
				idMu.Unlock()
				tickets = append(tickets, tk)
				if rng.IntN(3) == 0 && !waitAll() {
					return
				}
			}
			waitAll()
		}()
	}
	committed := make(chan struct{})
	go func() {
		wg.Wait()
		close(committed)
	}()

	type crash struct {
		published uint64
		fs        *vfs.MemFS
	}
	var crashes []crash
	rng := rand.New(rand.NewPCG(8, 9))
	for running := true; running; {
		select {
		case release := <-gate.arrived:
			// A WAL sync is held. Let the syncer run: a position it
			// published now would not be durable.
			before := l.LastPosition()
			for i := 0; i < 1000 && l.LastPosition() == before; i++ {
				runtime.Gosched()
			}
			pub := max(l.LastPosition(), lastPublished())
			cfg := vfs.CrashCloneCfg{}
			if len(crashes)%3 == 2 { // and some of what was not synced
				cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng}
			}
			crashes = append(crashes, crash{published: pub, fs: mem.CrashClone(cfg)})
			close(release)
		case <-committed:
			running = false
		}
	}
	gate.on.Store(false)
	close(gate.off)
	if t.Failed() {
		return
	}

	pubMu.Lock()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	if last := lastPublishedLocked(published); last != uint64(len(idAt)) || l.LastPosition() != last {
		t.Fatalf("published up to %d (last position %d), committed %d positions", last, l.LastPosition(), len(idAt))
	}
	pubMu.Unlock()

	for i, c := range crashes {
		rl := crashOpen(t, c.fs)
		got := rl.LastPosition()
		var n uint64
		var err error
		if c.published > 0 { // To 0 would be the recovered last position
			err = rl.ReadAll(context.Background(), AllQuery{To: c.published}, func(e *RecordedEvent) error {
				n++
				if e.Position != n || e.ID != idAt[e.Position] {
					return fmt.Errorf("position %d holds %s, want %s at position %d", e.Position, FormatID(e.ID), FormatID(idAt[n]), n)
				}
				return nil
			}, nil)
		}
		if cerr := rl.Close(); err == nil {
			err = cerr
		}
		if got < c.published || n != c.published || err != nil {
			t.Fatalf("crash %d of %d: position %d was published before the crash; recovered last position %d, %d events read: %v",
				i+1, len(crashes), c.published, got, n, err)
		}
	}
	t.Logf("%d crashes, at published positions up to %d", len(crashes), len(idAt))
}

func lastPublishedLocked(published []uint64) uint64 {
	if n := len(published); n > 0 {
		return published[n-1]
	}
	return 0
}
