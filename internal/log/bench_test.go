package log

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
)

// The append benchmarks run on the real file system (b.TempDir) with
// fsync, like esd. They report events/s; compare BenchmarkLogCommit with
// BenchmarkPebbleSyncBaseline of the same run (the same bytes written by
// bare Pebble commits, no esd logic) rather than with figures from
// another run.

const benchPayload = 256

// BenchmarkPebbleSyncBaseline: 64 goroutines each committing one synced
// batch per event with the keys an append writes (event, index, id,
// stream state).
func BenchmarkPebbleSyncBaseline(b *testing.B) {
	db, err := pebble.Open(b.TempDir(), &pebble.Options{Logger: pebbleLogger{s: zap.NewNop().Sugar()}})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	data := make([]byte, benchPayload+64)
	var pos atomic.Uint64
	b.SetParallelism(32) // 64 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var key [32]byte
		for pb.Next() {
			p := pos.Add(1)
			batch := db.NewBatch()
			_ = batch.Set(appendEventKey(key[:0], p), data, nil)
			_ = batch.Set(appendIndexKey(key[:0], p%10000, p), data[:8], nil)
			var id [16]byte
			binary.BigEndian.PutUint64(id[:], p*0x9e3779b97f4a7c15)
			_ = batch.Set(appendIDKey(key[:0], id), data[:24], nil)
			_ = batch.Set(appendStreamKey(key[:0], p%10000), data[:60], nil)
			if err := batch.Commit(pebble.Sync); err != nil {
				b.Error(err)
				return
			}
			_ = batch.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLogCommit: 64 goroutines, each appending one event per commit
// to its own streams through Log.Commit and waiting for durability (what
// a shard does, minus the shard).
func BenchmarkLogCommit(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	data := make([]byte, benchPayload)
	var next atomic.Uint64
	var mu sync.Mutex // guards states
	states := make(map[int]StreamState)
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			stream := int(n % 10000)
			mu.Lock()
			st, ok := states[stream]
			if ok && st.ID == 0 { // another goroutine is writing it: take a fresh one
				stream += 10000 + int(n)
				ok = false
			}
			states[stream] = StreamState{} // claimed
			mu.Unlock()
			w := &Write{State: st}
			if !ok {
				w.State = StreamState{ID: l.NewStreamID(), Name: fmt.Sprintf("bench-%d", stream)}
				w.New = true
			}
			var id [16]byte
			binary.BigEndian.PutUint64(id[:], n*0x9e3779b97f4a7c15)
			w.Events = []Event{{ID: id, Type: "Benchmarked", Data: data}}
			w.CheckIDs, w.LookupEpoch = true, l.IDEpoch()
			tk, err := l.Commit([]*Write{w}, false)
			if err == nil && w.Err != nil {
				err = w.Err
			}
			if err == nil {
				err = tk.Wait(context.Background())
			}
			if err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			states[stream] = w.After
			mu.Unlock()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReadAll reads $all over b.N events (written first, not timed).
func BenchmarkReadAll(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fillLog(b, l, b.N, 100)
	b.ResetTimer()
	n := 0
	err = l.ReadAll(context.Background(), AllQuery{}, func(*RecordedEvent) error { n++; return nil }, nil)
	if err != nil || n != b.N {
		b.Fatalf("read %d of %d: %v", n, b.N, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReadStream reads one stream of b.N events among others.
func BenchmarkReadStream(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fillLog(b, l, b.N, 1)
	b.ResetTimer()
	n := 0
	err = l.ReadStream(context.Background(), StreamQuery{Stream: "fill-0"}, func(*RecordedEvent) error { n++; return nil })
	if err != nil || n != b.N {
		b.Fatalf("read %d of %d: %v", n, b.N, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// fillLog writes n events over the given number of streams, 500 a commit.
func fillLog(b *testing.B, l *Log, n, streams int) {
	b.Helper()
	data := make([]byte, benchPayload)
	states := make([]StreamState, streams)
	for i := range states {
		states[i] = StreamState{ID: l.NewStreamID(), Name: fmt.Sprintf("fill-%d", i)}
	}
	var tk *Ticket
	for done := 0; done < n; {
		k := min(500, n-done)
		s := done / 500 % streams
		evs := make([]Event, k)
		for i := range evs {
			binary.BigEndian.PutUint64(evs[i].ID[:], uint64(done+i+1))
			evs[i].Type, evs[i].Data = "Filled", data
		}
		w := &Write{State: states[s], New: !states[s].Written, Events: evs}
		var err error
		if tk, err = l.Commit([]*Write{w}, false); err != nil || w.Err != nil {
			b.Fatal(err, w.Err)
		}
		states[s] = w.After
		done += k
	}
	if tk != nil {
		if err := tk.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// categoryBench is a log of benchCategoryEvents events of which 1% are in
// category "target" (spread through the log), shared by the category
// benchmarks. ESD_BENCH_EVENTS overrides the size for quick runs.
var categoryBench struct {
	once sync.Once
	l    *Log
	dir  string
	err  error
}

func categoryLog(b *testing.B) *Log {
	categoryBench.once.Do(func() {
		n := 1_000_000
		if v := os.Getenv("ESD_BENCH_EVENTS"); v != "" {
			n, _ = strconv.Atoi(v)
		}
		categoryBench.dir, categoryBench.err = os.MkdirTemp("", "esd-category-bench")
		if categoryBench.err != nil {
			return
		}
		l, err := Open(categoryBench.dir, Options{})
		if err != nil {
			categoryBench.err = err
			return
		}
		categoryBench.l = l
		data := make([]byte, benchPayload)
		states := map[string]StreamState{}
		var tk *Ticket
		for done := 0; done < n; done += 100 { // 99 noise events, then 1 target event
			var ws []*Write
			for _, name := range []string{fmt.Sprintf("noise-%d", done/100%100), fmt.Sprintf("target-%d", done/100%10)} {
				st, ok := states[name]
				w := &Write{State: st}
				if !ok {
					w.State, w.New = StreamState{ID: l.NewStreamID(), Name: name}, true
				}
				k := 99
				if name[0] == 't' {
					k = 1
				}
				for i := range k {
					var id [16]byte
					binary.BigEndian.PutUint64(id[:], uint64(done+i+1))
					if k == 1 {
						id[8] = 1
					}
					w.Events = append(w.Events, Event{ID: id, Type: "Filled", Data: data})
				}
				ws = append(ws, w)
			}
			if tk, err = l.Commit(ws, false); err != nil {
				categoryBench.err = err
				return
			}
			for _, w := range ws {
				states[w.State.Name] = w.After
			}
		}
		if tk != nil {
			categoryBench.err = tk.Wait(context.Background())
		}
	})
	if categoryBench.err != nil {
		b.Fatal(categoryBench.err)
	}
	return categoryBench.l
}

// BenchmarkCategoryRead reads the 1% category through its index and as a
// filtered scan of $all; compare their ns/op.
func BenchmarkCategoryRead(b *testing.B) {
	l := categoryLog(b)
	for _, mode := range []struct {
		name    string
		noIndex bool
	}{{"index", false}, {"scan", true}} {
		b.Run(mode.name, func(b *testing.B) {
			total := 0
			for b.Loop() {
				n := 0
				err := l.ReadAllViews(context.Background(), AllQuery{StreamPrefixes: []string{"target-"}, NoIndex: mode.noIndex},
					func(*EventView) error { n++; return nil }, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += n
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkLookupIDs: the idempotency lookups of an append of 100 events,
// in a log of ESD_BENCH_EVENTS (default 300k) events with random ids, so
// that the id index spans the memtables and several sstables. fresh: ids
// never stored (the common case); stored: ids of stored events.
func BenchmarkLookupIDs(b *testing.B) {
	n := 300_000
	if v, err := strconv.Atoi(os.Getenv("ESD_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	randomID := func(k uint64) (id [16]byte) {
		binary.BigEndian.PutUint64(id[:], k*0x9e3779b97f4a7c15)
		binary.BigEndian.PutUint64(id[8:], (k^0xabcdef)*0xbf58476d1ce4e5b9)
		return id
	}
	data := make([]byte, benchPayload)
	st := StreamState{ID: l.NewStreamID(), Name: "lookup-1"}
	var tk *Ticket
	for done := 0; done < n; done += 500 {
		evs := make([]Event, 500)
		for i := range evs {
			evs[i] = Event{ID: randomID(uint64(done + i)), Type: "Filled", Data: data}
		}
		w := &Write{State: st, New: !st.Written, Events: evs}
		if tk, err = l.Commit([]*Write{w}, false); err != nil || w.Err != nil {
			b.Fatal(err, w.Err)
		}
		st = w.After
	}
	if err := tk.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	// timeID is a UUIDv7-like id (as clients make them, and esctl bench):
	// later than every stored one, increasing within an append.
	timeID := func(k uint64) (id [16]byte) {
		binary.BigEndian.PutUint64(id[:], 0xff00_0000_0000_0000|k)
		binary.BigEndian.PutUint64(id[8:], k*0xbf58476d1ce4e5b9)
		return id
	}
	for _, tc := range []struct {
		name  string
		id    func(k uint64) [16]byte
		found bool
	}{
		{"fresh-random", func(k uint64) [16]byte { return randomID(1<<40 + k%uint64(n)*7919) }, false},
		{"fresh-time-ordered", timeID, false},
		{"stored", func(k uint64) [16]byte { return randomID(k * 7919 % uint64(n)) }, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ids := make([][16]byte, 100)
			k := uint64(0)
			for b.Loop() {
				for i := range ids {
					ids[i] = tc.id(k)
					k++
				}
				locs, err := l.LookupIDs(ids)
				if err != nil {
					b.Fatal(err)
				}
				for _, loc := range locs {
					if loc.Found != tc.found {
						b.Fatalf("found %v, want %v", loc.Found, tc.found)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ids)), "ns/id")
		})
	}
}

// BenchmarkCategoryAppendSizes reads a category of appends of size
// events each, 10% of a log of ESD_BENCH_EVENTS (default 200k) events
// (each commit: an append of 9*size noise events and one of the
// category), flushed and compacted: through copies of its records (what
// appends below categoryRangeMin write) and through one range entry per
// append, read from $all (what larger ones write). Compare the two
// modes' ns/event for each size.
func BenchmarkCategoryAppendSizes(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("ESD_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	for _, size := range []int{1, 4, 8, 16, 32, 100} {
		for _, mode := range []struct {
			name     string
			rangeMin int
		}{{"copies", math.MaxInt}, {"ranges", 1}} {
			b.Run(fmt.Sprintf("size=%d/%s", size, mode.name), func(b *testing.B) {
				old := categoryRangeMin
				categoryRangeMin = mode.rangeMin
				defer func() { categoryRangeMin = old }()
				l := appendSizesLog(b, n, size)
				defer l.Close()
				categoryRangeMin = old
				want := n / 10 / size * size
				for b.Loop() {
					got := 0
					err := l.ReadAllViews(context.Background(), AllQuery{Categories: []string{"target"}},
						func(*EventView) error { got++; return nil }, nil)
					if err != nil || got != want {
						b.Fatalf("read %d of %d: %v", got, want, err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*want), "ns/event")
			})
		}
	}
}

// appendSizesLog makes the log of BenchmarkCategoryAppendSizes.
func appendSizesLog(b *testing.B, n, size int) *Log {
	b.Helper()
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, benchPayload)
	states := map[string]StreamState{}
	id := uint64(0)
	events := func(k int) []Event {
		evs := make([]Event, k)
		for i := range evs {
			id++
			binary.BigEndian.PutUint64(evs[i].ID[:], id)
			evs[i].Type, evs[i].Data = "Filled", data
		}
		return evs
	}
	var tk *Ticket
	for c := 0; (c+1)*10*size <= n; c++ {
		var ws []*Write
		for _, s := range []struct {
			name string
			k    int
		}{{fmt.Sprintf("noise-%d", c%97), 9 * size}, {fmt.Sprintf("target-%d", c%13), size}} {
			st, ok := states[s.name]
			w := &Write{State: st, New: !ok, Events: events(s.k)}
			if !ok {
				w.State = StreamState{ID: l.NewStreamID(), Name: s.name}
			}
			ws = append(ws, w)
		}
		if tk, err = l.Commit(ws, false); err != nil {
			b.Fatal(err)
		}
		for _, w := range ws {
			if w.Err != nil {
				b.Fatal(w.Err)
			}
			states[w.State.Name] = w.After
		}
	}
	if err := tk.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := l.db.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := l.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkOneSyncedCommit: one committer, one synced batch of an
// append's five keys at a time, on bare Pebble's WAL ("pebble") and on the
// zero-filled WAL the log uses ("zero-filled", walfs.go): what one client
// waits for its fsync. Compare the two of one run.
func BenchmarkOneSyncedCommit(b *testing.B) {
	for _, tc := range []struct {
		name string
		fs   vfs.FS
	}{{"pebble", vfs.Default}, {"zero-filled", &walFS{FS: vfs.Default}}} {
		b.Run(tc.name, func(b *testing.B) {
			db, err := pebble.Open(b.TempDir(), &pebble.Options{FS: tc.fs, Logger: pebbleLogger{s: zap.NewNop().Sugar()}})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			val := make([]byte, benchPayload+64)
			var key [16]byte
			b.ResetTimer()
			for i := range b.N {
				batch := db.NewBatch()
				for k := range 5 {
					key[0] = byte(k)
					binary.BigEndian.PutUint64(key[1:], uint64(i))
					_ = batch.Set(key[:9], val, nil)
				}
				if err := db.Apply(batch, pebble.Sync); err != nil {
					b.Fatal(err)
				}
				_ = batch.Close()
			}
		})
	}
}
