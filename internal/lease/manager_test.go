package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	eslog "github.com/esdhq/esd/internal/log"
)

// fakeClock is a settable server clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openLog(t testing.TB, fs vfs.FS, dir string) *eslog.Log {
	t.Helper()
	l, err := eslog.Open(dir, eslog.Options{FS: fs, CacheBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func openManager(t testing.TB, l *eslog.Log, clock func() time.Time) *Manager {
	t.Helper()
	m, err := Open(l, Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// newTestManager is a manager on a fresh in-memory log.
func newTestManager(t testing.TB, clock func() time.Time) *Manager {
	t.Helper()
	l := openLog(t, vfs.NewMem(), "db")
	t.Cleanup(func() { _ = l.Close() })
	return openManager(t, l, clock)
}

func mustAcquire(t testing.TB, m *Manager, stream, owner string, ttl time.Duration) Lease {
	t.Helper()
	ls, err := m.Acquire(context.Background(), stream, owner, ttl, 0)
	if err != nil {
		t.Fatalf("acquire %s: %v", stream, err)
	}
	return ls
}

// TestCheck: what a write of a stream is told, for every state of the
// stream's lease and every kind of token.
func TestCheck(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, clk.Now)
	old := mustAcquire(t, m, "live", "a", time.Minute)
	if err := m.Release("live", old.Token); err != nil {
		t.Fatal(err)
	}
	cur := mustAcquire(t, m, "live", "b", time.Minute)
	exp := mustAcquire(t, m, "expired", "c", time.Second)
	rel := mustAcquire(t, m, "released", "d", time.Minute)
	if err := m.Release("released", rel.Token); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	now := clk.Now()
	if cur.Token <= old.Token {
		t.Fatalf("tokens %d then %d: not increasing", old.Token, cur.Token)
	}
	for _, tc := range []struct {
		name   string
		stream string
		token  uint64
		at     time.Time
		want   any // nil, *LeasedError or *StaleTokenError
	}{
		{"never leased, no token", "none", 0, now, nil},
		{"never leased, a token", "none", 5, now, &StaleTokenError{Stream: "none", Given: 5, Current: 0}},
		{"live, no token", "live", 0, now, &LeasedError{Stream: "live", Owner: "b", Expires: cur.Expires}},
		{"live, its token", "live", cur.Token, now, nil},
		{"live, the released lease's token", "live", old.Token, now, &StaleTokenError{Stream: "live", Given: old.Token, Current: cur.Token}},
		{"live, an unknown newer token", "live", cur.Token + 7, now, &StaleTokenError{Stream: "live", Given: cur.Token + 7, Current: cur.Token}},
		{"live, just before expiry", "live", 0, cur.Expires.Add(-time.Nanosecond), &LeasedError{Stream: "live", Owner: "b", Expires: cur.Expires}},
		{"live lease at its expiry", "live", 0, cur.Expires, nil},
		{"live lease after expiry, the old token", "live", old.Token, cur.Expires.Add(time.Second), &StaleTokenError{Stream: "live", Given: old.Token, Current: cur.Token}},
		{"live lease after expiry, its token", "live", cur.Token, cur.Expires.Add(time.Second), nil},
		{"expired, no token", "expired", 0, now, nil},
		{"expired, its token", "expired", exp.Token, now, nil},
		{"released, no token", "released", 0, now, nil},
		{"released, its token", "released", rel.Token, now, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := m.Check(tc.stream, tc.token, tc.at)
			switch want := tc.want.(type) {
			case nil:
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
			case *LeasedError:
				var got *LeasedError
				if !errors.As(err, &got) || *got != *want || !errors.Is(err, ErrLeased) {
					t.Fatalf("got %v, want %v", err, want)
				}
			case *StaleTokenError:
				var got *StaleTokenError
				if !errors.As(err, &got) || *got != *want || !errors.Is(err, ErrStaleToken) {
					t.Fatalf("got %v, want %v", err, want)
				}
			}
		})
	}
}

// TestTTLBounds: TTLs outside (0, MaxTTL] are refused.
func TestTTLBounds(t *testing.T) {
	m := newTestManager(t, newFakeClock().Now)
	for _, ttl := range []time.Duration{0, -time.Second, DefaultMaxTTL + time.Nanosecond} {
		if _, err := m.Acquire(context.Background(), "s", "o", ttl, 0); !errors.Is(err, ErrTTL) {
			t.Errorf("ttl %v: got %v, want ErrTTL", ttl, err)
		}
	}
	ls := mustAcquire(t, m, "s", "o", DefaultMaxTTL)
	if _, err := m.Renew("s", ls.Token, DefaultMaxTTL+1); !errors.Is(err, ErrTTL) {
		t.Errorf("renew: got %v, want ErrTTL", err)
	}
}

// TestRacingClients: many clients acquire one stream with a wait, each
// holds it briefly: never two holders at once, every client gets it, and
// each holder's token is greater than the one before.
func TestRacingClients(t *testing.T) {
	m := newTestManager(t, time.Now)
	const clients, rounds = 8, 6
	var holders atomic.Int32
	var last atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, clients*rounds)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				ls, err := m.Acquire(context.Background(), "hot", "client", time.Minute, 30*time.Second)
				if err != nil {
					errs <- err
					return
				}
				if n := holders.Add(1); n != 1 {
					errs <- errors.New("two holders at once")
				}
				if prev := last.Swap(ls.Token); ls.Token <= prev {
					errs <- errors.New("token did not increase")
				}
				if err := m.Check("hot", ls.Token, time.Now()); err != nil {
					errs <- err
				}
				time.Sleep(time.Millisecond)
				holders.Add(-1)
				if err := m.Release("hot", ls.Token); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := last.Load(); got != clients*rounds {
		t.Fatalf("last token %d, want %d (one per lease)", got, clients*rounds)
	}
}

// queueLen is the number of Acquires waiting for stream.
func queueLen(m *Manager, stream string) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if e := m.streams[stream]; e != nil {
		return len(e.queue)
	}
	return 0
}

func waitQueue(t *testing.T, m *Manager, stream string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for queueLen(m, stream) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters of %s, want %d", queueLen(m, stream), stream, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWaitersFIFO: waiters get the stream in the order they came, a
// waiter that gives up (its wait or its ctx ends) leaves the queue, and a
// caller without wait does not jump the queue.
func TestWaitersFIFO(t *testing.T) {
	m := newTestManager(t, time.Now)
	ctx := context.Background()
	a := mustAcquire(t, m, "s", "a", time.Minute)
	type got struct {
		who string
		ls  Lease
		err error
	}
	order := make(chan got, 4)
	start := func(who string, ctx context.Context, wait time.Duration) {
		go func() {
			ls, err := m.Acquire(ctx, "s", who, time.Minute, wait)
			order <- got{who, ls, err}
		}()
	}
	start("b", ctx, time.Minute)
	waitQueue(t, m, "s", 1)
	cctx, cancel := context.WithCancel(ctx)
	start("quitter", cctx, time.Minute)
	waitQueue(t, m, "s", 2)
	start("c", ctx, time.Minute)
	waitQueue(t, m, "s", 3)
	start("impatient", ctx, 20*time.Millisecond)
	if g := <-order; g.who != "impatient" || !errors.Is(g.err, ErrLeased) {
		t.Fatalf("%s: %v, want the impatient waiter's ErrLeased", g.who, g.err)
	}
	cancel()
	if g := <-order; g.who != "quitter" || !errors.Is(g.err, context.Canceled) {
		t.Fatalf("%s: %v, want the quitter's context.Canceled", g.who, g.err)
	}
	waitQueue(t, m, "s", 2)
	if err := m.Release("s", a.Token); err != nil {
		t.Fatal(err)
	}
	b := <-order
	if b.who != "b" || b.err != nil {
		t.Fatalf("first after release: %s %v, want b", b.who, b.err)
	}
	// c waits; a caller without wait is refused, not served before c.
	waitQueue(t, m, "s", 1)
	if err := m.Release("s", b.ls.Token); err != nil {
		t.Fatal(err)
	}
	c := <-order
	if c.who != "c" || c.err != nil || c.ls.Token <= b.ls.Token {
		t.Fatalf("second after release: %s %v token %d, want c after b's %d", c.who, c.err, c.ls.Token, b.ls.Token)
	}
	if _, err := m.Acquire(ctx, "s", "late", time.Minute, 0); !errors.Is(err, ErrLeased) {
		t.Fatalf("acquire while c holds: %v, want ErrLeased", err)
	}
}

// TestHolderStopsRenewing: a lease renewed lives on; once its holder stops
// renewing, the next client gets the stream after the TTL, both without
// waiting and while waiting, and the old holder's token is refused.
func TestHolderStopsRenewing(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, clk.Now)
	ctx := context.Background()
	a := mustAcquire(t, m, "s", "a", 10*time.Second)
	clk.Advance(8 * time.Second)
	a, err := m.Renew("s", a.Token, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(10 * time.Second); !a.Expires.Equal(want) {
		t.Fatalf("renewed until %v, want %v", a.Expires, want)
	}
	clk.Advance(9 * time.Second) // 17s: past the first TTL, within the renewed one
	var le *LeasedError
	if _, err := m.Acquire(ctx, "s", "b", 10*time.Second, 0); !errors.As(err, &le) || le.Owner != "a" || !le.Expires.Equal(a.Expires) {
		t.Fatalf("acquire during the renewed lease: %v, want a *LeasedError of a", err)
	}
	// a stops renewing; b waits and gets the stream once the fake clock
	// passes the expiry.
	done := make(chan Lease, 1)
	go func() {
		ls, err := m.Acquire(ctx, "s", "b", 10*time.Second, time.Minute)
		if err != nil {
			t.Error(err)
		}
		done <- ls
	}()
	waitQueue(t, m, "s", 1)
	select {
	case <-done:
		t.Fatal("b got the stream before the expiry")
	case <-time.After(3 * pollInterval):
	}
	clk.Advance(time.Second + time.Nanosecond)
	b := <-done
	if b.Token <= a.Token {
		t.Fatalf("b's token %d, a's %d", b.Token, a.Token)
	}
	var nh *StaleTokenError
	if _, err := m.Renew("s", a.Token, 10*time.Second); !errors.As(err, &nh) {
		t.Fatalf("renew by a: %v, want a *StaleTokenError", err)
	}
	clk.Advance(11 * time.Second) // b expires too, without a successor
	var nhe *NotHeldError
	if _, err := m.Renew("s", b.Token, 10*time.Second); !errors.As(err, &nhe) {
		t.Fatalf("renew of an expired lease: %v, want a *NotHeldError", err)
	}
	if err := m.Release("s", b.Token); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release of an expired lease: %v, want ErrNotHeld", err)
	}
	c := mustAcquire(t, m, "s", "c", 10*time.Second)
	if c.Token != b.Token+1 {
		t.Fatalf("c's token %d, want %d", c.Token, b.Token+1)
	}
}

// TestStaleTokenAfterNewerLease: once a newer lease is held, every use of
// an older token is refused as stale: Check, Renew and Release.
func TestStaleTokenAfterNewerLease(t *testing.T) {
	clk := newFakeClock()
	m := newTestManager(t, clk.Now)
	t1 := mustAcquire(t, m, "s", "a", time.Second)
	clk.Advance(2 * time.Second) // t1 expires
	t2 := mustAcquire(t, m, "s", "b", time.Minute)
	if err := m.Release("s", t2.Token); err != nil {
		t.Fatal(err)
	}
	t3 := mustAcquire(t, m, "s", "c", time.Minute)
	for _, old := range []Lease{t1, t2} {
		want := StaleTokenError{Stream: "s", Given: old.Token, Current: t3.Token}
		var got *StaleTokenError
		if err := m.Check("s", old.Token, clk.Now()); !errors.As(err, &got) || *got != want {
			t.Errorf("check %d: %v, want %v", old.Token, err, &want)
		}
		if _, err := m.Renew("s", old.Token, time.Minute); !errors.As(err, &got) || *got != want {
			t.Errorf("renew %d: %v, want %v", old.Token, err, &want)
		}
		if err := m.Release("s", old.Token); !errors.As(err, &got) || *got != want {
			t.Errorf("release %d: %v, want %v", old.Token, err, &want)
		}
	}
	if ls, ok := m.Get("s"); !ok || ls != t3 {
		t.Fatalf("get: %v %v, want %v", ls, ok, t3)
	}
	if l := m.List(); len(l) != 1 || l[0] != t3 {
		t.Fatalf("list: %v, want [%v]", l, t3)
	}
}

// TestRestart: after the log is closed and reopened on the same directory,
// tokens go on from where they were, a live lease still blocks others
// until its expiry, a released one blocks no one, and a clock stepped
// back holds a lease no longer than MaxTTL.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newFakeClock()
	l := openLog(t, vfs.Default, dir)
	m, err := Open(l, Config{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var live Lease
	for range 3 {
		live = mustAcquire(t, m, "s", "a", time.Minute)
		if err := m.Release("s", live.Token); err != nil {
			t.Fatal(err)
		}
	}
	live = mustAcquire(t, m, "s", "a", time.Minute)
	rel := mustAcquire(t, m, "r", "b", time.Minute)
	if err := m.Release("r", rel.Token); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, vfs.Default, dir)
	defer l.Close()
	m = openManager(t, l, clk.Now)
	if got, ok := m.Get("s"); !ok || got != live {
		t.Fatalf("after restart: %v %v, want %v", got, ok, live)
	}
	if _, err := m.Acquire(context.Background(), "s", "c", time.Minute, 0); !errors.Is(err, ErrLeased) {
		t.Fatalf("acquire of the live lease after restart: %v, want ErrLeased", err)
	}
	if err := m.Check("s", live.Token, clk.Now()); err != nil {
		t.Fatalf("the holder's token after restart: %v", err)
	}
	r2 := mustAcquire(t, m, "r", "c", time.Minute)
	if r2.Token != rel.Token+1 {
		t.Fatalf("released stream: token %d, want %d", r2.Token, rel.Token+1)
	}
	clk.Advance(time.Minute)
	s2 := mustAcquire(t, m, "s", "c", DefaultMaxTTL)
	if s2.Token != live.Token+1 {
		t.Fatalf("after expiry: token %d, want %d", s2.Token, live.Token+1)
	}
	m.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The clock steps back an hour across a restart: s2's stored expiry is
	// an hour and 5 minutes away, but it blocks for MaxTTL at most.
	back := &fakeClock{t: clk.Now().Add(-time.Hour)}
	l = openLog(t, vfs.Default, dir)
	defer l.Close()
	m2, err := Open(l, Config{Clock: back.Now, MaxTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got, ok := m2.Get("s"); !ok || !got.Expires.Equal(back.Now().Add(time.Minute)) {
		t.Fatalf("after the clock stepped back: %v %v, want expiry at now+MaxTTL", got, ok)
	}
	back.Advance(time.Minute)
	if s3, err := m2.Acquire(context.Background(), "s", "d", time.Minute, 0); err != nil || s3.Token != s2.Token+1 {
		t.Fatalf("after MaxTTL: %v %v, want token %d", s3, err, s2.Token+1)
	}
}

// BenchmarkCheck: what every append and delete pays for leases, on a
// stream without one while 1,000 others are leased, with the writers of
// both shards asking at once.
//
//	go test -run '^$' -bench Check ./internal/lease/
func BenchmarkCheck(b *testing.B) {
	m := newTestManager(b, time.Now)
	for i := range 1000 {
		mustAcquire(b, m, fmt.Sprintf("held-%d", i), "bench", time.Minute)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := m.Check("free-1", 0, time.Now()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
