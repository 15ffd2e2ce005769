package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestTokensAcrossCrash: clients acquire and release leases of a few
// streams on Pebble's crashable in-memory FS while the test "crashes" it
// again and again (vfs.CrashClone keeps what was synced plus a random
// share of what was not) and opens a manager on each crashed copy. Every
// token returned before the crash is below every token the recovered
// manager gives, so no token is ever given twice; a lease live at the
// crash still blocks others after it.
func TestTokensAcrossCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs, "db")
	defer l.Close()
	clk := newFakeClock()
	m := openManager(t, l, clk.Now)
	held := mustAcquire(t, m, "held", "keeper", DefaultMaxTTL)

	streams := []string{"s0", "s1", "s2"}
	var (
		mu       sync.Mutex
		returned = map[string]uint64{} // stream -> greatest token returned
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				s := streams[(c+i)%len(streams)]
				// The fake clock moves a second per attempt, so that leases
				// left to expire do.
				clk.Advance(time.Second)
				ls, err := m.Acquire(ctx, s, fmt.Sprint("client", c), 5*time.Second, 50*time.Millisecond)
				if errors.Is(err, ErrLeased) || ctx.Err() != nil {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				// Recorded once returned: the crash below sees it or not,
				// and either way it was durable before.
				mu.Lock()
				returned[s] = max(returned[s], ls.Token)
				mu.Unlock()
				// Some leases are left to expire instead of released.
				if i%3 != 0 {
					if err := m.Release(s, ls.Token); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(5, 6))
	crashes, heldChecked := 0, 0
	for k := 0; k < 12; k++ {
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: []int{0, 50, 100}[k%3], RNG: rng})
		seen := make(map[string]uint64, len(returned))
		for s, tk := range returned {
			seen[s] = tk
		}
		at := clk.Now()
		mu.Unlock()
		if at.Before(held.Expires) {
			heldChecked++
		}
		t.Run(fmt.Sprintf("crash=%d", k), func(t *testing.T) {
			checkRecovered(t, clone, at, held, streams, seen)
		})
		crashes++
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for _, s := range streams {
		if returned[s] == 0 {
			t.Errorf("no lease of %s was granted: the test proved nothing for it", s)
		}
	}
	if heldChecked == 0 {
		t.Error("the fake clock passed the held lease's expiry before the first crash: no crash checked that it survives")
	}
	t.Logf("%d crashes (%d with the held lease live); greatest tokens returned: %v", crashes, heldChecked, returned)
}

// checkRecovered opens a manager on a crashed copy taken at clock time at
// and checks it against the tokens returned before the crash.
func checkRecovered(t *testing.T, fs vfs.FS, at time.Time, held Lease, streams []string, returned map[string]uint64) {
	rl := openLog(t, fs, "db")
	defer rl.Close()
	clk := &fakeClock{t: at}
	rm := openManager(t, rl, clk.Now)
	// The lease live at the crash is still live and still its holder's.
	if at.Before(held.Expires) {
		if err := rm.Check("held", held.Token, at); err != nil {
			t.Errorf("the live lease's token after the crash: %v", err)
		}
		if _, err := rm.Acquire(context.Background(), "held", "other", time.Minute, 0); !errors.Is(err, ErrLeased) {
			t.Errorf("acquire of the live lease after the crash: %v, want ErrLeased", err)
		}
	}
	// Past every expiry, each stream's next tokens are new.
	clk.Advance(DefaultMaxTTL + time.Second)
	for _, s := range append([]string{"held"}, streams...) {
		floor := returned[s]
		if s == "held" {
			floor = held.Token
		}
		for range 2 {
			ls, err := rm.Acquire(context.Background(), s, "after", time.Minute, 0)
			if err != nil {
				t.Fatalf("%s: %v", s, err)
			}
			if ls.Token <= floor {
				t.Fatalf("%s: token %d after the crash, but %d was returned before it", s, ls.Token, floor)
			}
			floor = ls.Token
			if err := rm.Release(s, ls.Token); err != nil {
				t.Fatal(err)
			}
		}
	}
}
