package log

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/esdhq/esd/internal/testutil"
)

// TestNamespaceRegistry: every namespace has a unique name and a prefix
// that is not a prefix of another's (nor equal to it), so that no
// namespace's keys can fall in another's.
func TestNamespaceRegistry(t *testing.T) {
	all := Namespaces()
	if len(all) != len(namespaces)-1 {
		t.Fatalf("Namespaces() has %d, the table %d", len(all), len(namespaces)-1)
	}
	names := make(map[string]Namespace)
	for _, ns := range all {
		if ns.Name() == "" || ns.Prefix() == "" {
			t.Errorf("namespace %d: name %q, prefix %q: both must be set", uint8(ns), ns.Name(), ns.Prefix())
		}
		if other, dup := names[ns.Name()]; dup {
			t.Errorf("namespaces %d and %d are both named %q", uint8(other), uint8(ns), ns.Name())
		}
		names[ns.Name()] = ns
		for _, other := range all {
			if other != ns && strings.HasPrefix(other.Prefix(), ns.Prefix()) {
				t.Errorf("prefix %q of %s is a prefix of %q of %s", ns.Prefix(), ns, other.Prefix(), other)
			}
		}
	}
	// The groups' keys predate the registry: their prefix is on disk.
	if NSGroups.Prefix() != "grp/" {
		t.Errorf("groups' prefix %q; stores have grp/", NSGroups.Prefix())
	}
	for _, bad := range []Namespace{0, Namespace(len(namespaces))} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Aux(%d) did not panic", uint8(bad))
				}
			}()
			(&Log{}).Aux(bad)
		}()
	}
}

// rawAux reads an aux key as Pebble has it: 0x09, then full.
func rawAux(t *testing.T, l *Log, full string) (string, bool) {
	t.Helper()
	v, ok, err := l.get(append([]byte{kAux}, full...))
	if err != nil {
		t.Fatal(err)
	}
	return string(v), ok
}

func auxGet(t *testing.T, a *Aux, key string) AuxValue {
	t.Helper()
	v, ok, err := a.Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return AuxValue{Value: v, Exists: ok}
}

func auxApply(t *testing.T, a *Aux, w *AuxWrite) {
	t.Helper()
	if err := a.Apply(w); err != nil {
		t.Fatal(err)
	}
}

func auxKeys(t *testing.T, a *Aux, prefix string) []string {
	t.Helper()
	var out []string
	err := a.Scan([]byte(prefix), func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuxNamespaces: a handle's keys are relative to its namespace, on
// disk below 0x09 and the prefix; scans, prefix deletions and reopens
// stay inside it.
func TestAuxNamespaces(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, fs)
	g, s := l.Aux(NSGroups), l.Aux(NSSnapshots)
	auxApply(t, g, new(AuxWrite).Put([]byte("s/x"), []byte("1")).Put([]byte("c/x"), []byte("2")))
	auxApply(t, s, new(AuxWrite).Put([]byte("s/x"), []byte("3")))
	if v, ok := rawAux(t, l, "grp/s/x"); !ok || v != "1" {
		t.Errorf("0x09 grp/s/x: %q, %t", v, ok)
	}
	if v, ok := rawAux(t, l, "snap/s/x"); !ok || v != "3" {
		t.Errorf("0x09 snap/s/x: %q, %t", v, ok)
	}
	if got := auxKeys(t, g, ""); fmt.Sprint(got) != "[c/x=2 s/x=1]" {
		t.Errorf("groups: %v", got)
	}
	if got := auxKeys(t, g, "s/"); fmt.Sprint(got) != "[s/x=1]" {
		t.Errorf("groups s/: %v", got)
	}
	if got := auxKeys(t, s, ""); fmt.Sprint(got) != "[s/x=3]" {
		t.Errorf("snapshots: %v", got)
	}
	auxApply(t, s, new(AuxWrite).DeletePrefix(nil)) // the whole namespace
	if got := auxKeys(t, s, ""); len(got) != 0 {
		t.Errorf("snapshots after DeletePrefix(nil): %v", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, fs)
	defer l.Close()
	if got := auxKeys(t, l.Aux(NSGroups), ""); fmt.Sprint(got) != "[c/x=2 s/x=1]" {
		t.Errorf("groups after reopen: %v", got)
	}
}

// TestAuxWriteOrder: an AuxWrite's changes apply in the order added.
func TestAuxWriteOrder(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	a := l.Aux(NSLeases)
	auxApply(t, a, new(AuxWrite).Put([]byte("p/1"), []byte("a")).DeletePrefix([]byte("p/")).Put([]byte("p/2"), []byte("b")))
	if got := auxKeys(t, a, ""); fmt.Sprint(got) != "[p/2=b]" {
		t.Errorf("put, delete prefix, put: %v", got)
	}
	auxApply(t, a, new(AuxWrite).Delete([]byte("p/2")).Put([]byte("p/2"), []byte("c")))
	if got := auxKeys(t, a, ""); fmt.Sprint(got) != "[p/2=c]" {
		t.Errorf("delete, put: %v", got)
	}
}

func val(s string) AuxValue { return Present([]byte(s)) }

// TestCompareAndSwap: the cases of one- and many-key swaps, from a store
// holding "a" = "1", "e" = "" (an empty value) and no "z".
func TestCompareAndSwap(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	cases := []struct {
		name     string
		swaps    []Swap
		mismatch string   // the key of the *CASError; "" for none
		current  AuxValue // what the *CASError reports
		want     map[string]AuxValue
	}{
		{name: "set absent", swaps: []Swap{{Key: []byte("z"), Old: Absent(), New: val("9")}},
			want: map[string]AuxValue{"z": val("9"), "a": val("1")}},
		{name: "absent expected, present", swaps: []Swap{{Key: []byte("a"), Old: Absent(), New: val("9")}},
			mismatch: "a", current: val("1"), want: map[string]AuxValue{"a": val("1")}},
		{name: "value expected, absent", swaps: []Swap{{Key: []byte("z"), Old: val("1"), New: val("9")}},
			mismatch: "z", current: Absent(), want: map[string]AuxValue{"z": Absent()}},
		{name: "swap", swaps: []Swap{{Key: []byte("a"), Old: val("1"), New: val("2")}},
			want: map[string]AuxValue{"a": val("2")}},
		{name: "other value", swaps: []Swap{{Key: []byte("a"), Old: val("2"), New: val("3")}},
			mismatch: "a", current: val("1"), want: map[string]AuxValue{"a": val("1")}},
		{name: "same value again", swaps: []Swap{{Key: []byte("a"), Old: val("1"), New: val("1")}},
			want: map[string]AuxValue{"a": val("1")}},
		{name: "delete", swaps: []Swap{{Key: []byte("a"), Old: val("1"), New: Absent()}},
			want: map[string]AuxValue{"a": Absent()}},
		{name: "delete absent", swaps: []Swap{{Key: []byte("z"), Old: Absent(), New: Absent()}},
			want: map[string]AuxValue{"z": Absent()}},
		{name: "empty value is a value", swaps: []Swap{{Key: []byte("e"), Old: Present(nil), New: val("x")}},
			want: map[string]AuxValue{"e": val("x")}},
		{name: "empty value is not absent", swaps: []Swap{{Key: []byte("e"), Old: Absent(), New: val("x")}},
			mismatch: "e", current: Present(nil), want: map[string]AuxValue{"e": Present(nil)}},
		{name: "absent is not an empty value", swaps: []Swap{{Key: []byte("z"), Old: Present([]byte{}), New: val("x")}},
			mismatch: "z", current: Absent(), want: map[string]AuxValue{"z": Absent()}},
		{name: "set an empty value", swaps: []Swap{{Key: []byte("z"), Old: Absent(), New: Present(nil)}},
			want: map[string]AuxValue{"z": Present(nil)}},
		{name: "many", swaps: []Swap{
			{Key: []byte("a"), Old: val("1"), New: val("2")},
			{Key: []byte("z"), Old: Absent(), New: val("3")},
			{Key: []byte("e"), Old: Present(nil), New: Absent()}},
			want: map[string]AuxValue{"a": val("2"), "z": val("3"), "e": Absent()}},
		{name: "many, one differs: none written", swaps: []Swap{
			{Key: []byte("a"), Old: val("1"), New: val("2")},
			{Key: []byte("z"), Old: val("0"), New: val("3")},
			{Key: []byte("e"), Old: Present(nil), New: Absent()}},
			mismatch: "z", current: Absent(), want: map[string]AuxValue{"a": val("1"), "z": Absent(), "e": Present(nil)}},
		{name: "many, the first that differs is named", swaps: []Swap{
			{Key: []byte("a"), Old: val("7"), New: val("2")},
			{Key: []byte("z"), Old: val("0"), New: val("3")}},
			mismatch: "a", current: val("1"), want: map[string]AuxValue{"a": val("1"), "z": Absent()}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := l.Aux(NSLeases)
			auxApply(t, a, new(AuxWrite).DeletePrefix(nil).Put([]byte("a"), []byte("1")).Put([]byte("e"), nil))
			err := a.CompareAndSwapMany(context.Background(), tc.swaps)
			var ce *CASError
			switch {
			case tc.mismatch == "" && err != nil:
				t.Fatalf("case %d: %v", i, err)
			case tc.mismatch != "" && (!errors.Is(err, ErrCASMismatch) || !errors.As(err, &ce)):
				t.Fatalf("case %d: error %v, want a *CASError", i, err)
			case ce != nil:
				if string(ce.Key) != tc.mismatch || !(AuxValue{Value: ce.Current, Exists: ce.Exists}).equal(tc.current) || ce.Namespace != NSLeases {
					t.Errorf("CASError %s %q: current %q (exists %t); want key %q, current %+v", ce.Namespace, ce.Key, ce.Current, ce.Exists, tc.mismatch, tc.current)
				}
			}
			for k, want := range tc.want {
				if got := auxGet(t, a, k); !got.equal(want) {
					t.Errorf("%s: %q (exists %t), want %q (exists %t)", k, got.Value, got.Exists, want.Value, want.Exists)
				}
			}
			if len(tc.swaps) == 1 { // the one-key form agrees
				auxApply(t, a, new(AuxWrite).DeletePrefix(nil).Put([]byte("a"), []byte("1")).Put([]byte("e"), nil))
				s := tc.swaps[0]
				err2 := a.CompareAndSwap(context.Background(), s.Key, s.Old, s.New)
				if (err == nil) != (err2 == nil) {
					t.Errorf("CompareAndSwap: %v; CompareAndSwapMany: %v", err2, err)
				}
			}
		})
	}
	a := l.Aux(NSLeases)
	if err := a.CompareAndSwapMany(context.Background(), []Swap{{Key: []byte("a"), New: val("1")}, {Key: []byte("a"), New: val("2")}}); err == nil || errors.Is(err, ErrCASMismatch) {
		t.Errorf("a key twice: %v", err)
	}
	if err := a.CompareAndSwapMany(context.Background(), nil); err != nil {
		t.Errorf("no swap: %v", err)
	}
}

// TestCompareAndSwapsInOneBatch: requests combined in one batch (as
// concurrent callers are) see each other in order: a swap compares with
// the writes of the requests before it, range deletions included.
func TestCompareAndSwapsInOneBatch(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	a := l.Aux(NSLeases)
	swap := func(sw ...Swap) *commitReq {
		r, err := a.swapReq(sw)
		if err != nil {
			t.Fatal(err)
		}
		return &commitReq{aux: r}
	}
	w := &Write{State: StreamState{ID: l.NewStreamID(), Name: "s"}, New: true, Events: []Event{testEvent(1)}, CheckIDs: true}
	w.Prepare()
	reqs := []*commitReq{
		{aux: a.writeReq(new(AuxWrite).Put([]byte("p/1"), []byte("v")).Put([]byte("p/2"), []byte("v")))},
		{writes: []*Write{w}},
		swap(Swap{Key: []byte("c"), Old: Absent(), New: val("1")}),
		swap(Swap{Key: []byte("c"), Old: val("1"), New: val("2")}),
		swap(Swap{Key: []byte("c"), Old: val("1"), New: val("3")}), // c is 2 by now
		{aux: a.writeReq(new(AuxWrite).DeletePrefix([]byte("p/")))},
		swap(Swap{Key: []byte("p/1"), Old: Absent(), New: val("back")}),
		swap(Swap{Key: []byte("c"), Old: val("2"), New: Absent()}, Swap{Key: []byte("d"), Old: val("x"), New: val("y")}),
	}
	failing := map[int]string{4: "c", 7: "d"}
	l.commitMu.Lock()
	l.commitLocked(reqs)
	l.commitMu.Unlock()
	tk := reqs[0].ticket
	if tk == nil {
		t.Fatalf("first request: no ticket (%v)", reqs[0].err)
	}
	for i, r := range reqs {
		var ce *CASError
		if key, fails := failing[i]; fails {
			if !errors.As(r.err, &ce) || string(ce.Key) != key || r.ticket != nil {
				t.Errorf("request %d: %v, ticket %v; want a *CASError of %q", i, r.err, r.ticket, key)
			}
			continue
		}
		if r.err != nil || r.ticket != tk {
			t.Errorf("request %d: %v; ticket %p, want the batch's %p", i, r.err, r.ticket, tk)
		}
	}
	if ce := (*CASError)(nil); !errors.As(reqs[4].err, &ce) || string(ce.Current) != "2" {
		t.Errorf("the third swap of c: %v; want it to find 2", reqs[4].err)
	}
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w.Err != nil || w.FirstPosition != 1 || l.LastPosition() != 1 {
		t.Errorf("the write: %v at %d; last position %d", w.Err, w.FirstPosition, l.LastPosition())
	}
	if got := auxKeys(t, a, ""); fmt.Sprint(got) != "[c=2 p/1=back]" {
		t.Errorf("after the batch: %v", got)
	}
}

// TestCompareAndSwapCounter: goroutines increment one counter by
// compare-and-swap, retrying on mismatch; the final value is the number of
// swaps that succeeded, and no two succeeded from the same value.
func TestCompareAndSwapCounter(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	a := l.Aux(NSLeases)
	key := []byte("counter")
	const workers, each = 8, 40
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		successes int
		retries   int
		from      = make(map[int]bool) // values incremented from
		errs      = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur := Absent()
			for done := 0; done < each; {
				n := 0
				if cur.Exists {
					n, _ = strconv.Atoi(string(cur.Value))
				}
				next := val(strconv.Itoa(n + 1))
				err := a.CompareAndSwap(context.Background(), key, cur, next)
				var ce *CASError
				switch {
				case err == nil:
					done++
					mu.Lock()
					successes++
					if from[n] {
						errs <- fmt.Errorf("two swaps from %d", n)
					}
					from[n] = true
					mu.Unlock()
					cur = next
				case errors.As(err, &ce):
					mu.Lock()
					retries++
					mu.Unlock()
					if w%2 == 0 { // retry from what the error says
						cur = AuxValue{Value: ce.Current, Exists: ce.Exists}
					} else { // or from a read
						v, ok, err := a.Get(key)
						if err != nil {
							errs <- err
							return
						}
						cur = AuxValue{Value: v, Exists: ok}
					}
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d swaps, %d retries", successes, retries)
	got := auxGet(t, a, "counter")
	if successes != workers*each || string(got.Value) != strconv.Itoa(successes) {
		t.Errorf("counter %q after %d successful swaps (want %d)", got.Value, successes, workers*each)
	}
}

// TestCompareAndSwapWithEventCommits: swaps committed among concurrent
// appends (and in their batches) take no position: positions stay
// gap-free and the counts right.
func TestCompareAndSwapWithEventCommits(t *testing.T) {
	l := openTest(t, nil)
	defer l.Close()
	a := l.Aux(NSLeases)
	const writers, appends, swappers, swaps = 4, 60, 4, 60
	var wg sync.WaitGroup
	errs := make(chan error, writers+swappers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := StreamState{ID: l.NewStreamID(), Name: fmt.Sprintf("s-%d", w)}
			for i := range appends {
				wr := &Write{State: st, New: i == 0, Events: []Event{testEvent(w*1000 + i)}, CheckIDs: true}
				tk, err := l.Commit([]*Write{wr}, false)
				if err == nil {
					err = wr.Err
				}
				if err == nil {
					err = tk.Wait(context.Background())
				}
				if err != nil {
					errs <- err
					return
				}
				st = wr.After
			}
		}()
	}
	for s := range swappers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprintf("k/%d", s))
			cur := Absent()
			for i := range swaps {
				next := val(strconv.Itoa(i))
				if err := a.CompareAndSwap(context.Background(), key, cur, next); err != nil {
					errs <- err
					return
				}
				cur = next
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	evs := readAll(t, l, AllQuery{})
	if len(evs) != writers*appends || l.LastPosition() != uint64(writers*appends) {
		t.Fatalf("%d events, last position %d; want %d", len(evs), l.LastPosition(), writers*appends)
	}
	for i, e := range evs {
		if e.Position != uint64(i+1) {
			t.Fatalf("event %d at position %d", i, e.Position)
		}
	}
	if st := l.Stats(); st.Events != writers*appends || st.Streams != writers {
		t.Errorf("stats %+v", st)
	}
	for s := range swappers {
		if got := auxGet(t, a, fmt.Sprintf("k/%d", s)); string(got.Value) != strconv.Itoa(swaps-1) {
			t.Errorf("k/%d: %q", s, got.Value)
		}
	}
}

// failingSyncs fails every WAL sync once on is set: a disk that broke.
type failingSyncs struct{ on atomic.Bool }

func (f *failingSyncs) String() string { return "failing WAL syncs" }

func (f *failingSyncs) MaybeError(op errorfs.Op) error {
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		if f.on.Load() && strings.HasSuffix(op.Path, ".log") {
			return errors.New("injected sync failure")
		}
	}
	return nil
}

// TestAuxReadsAfterStorageFailure: once a sync fails the log takes no
// more writes, aux writes included, but aux reads go on, like event reads.
func TestAuxReadsAfterStorageFailure(t *testing.T) {
	inj := &failingSyncs{}
	l := openTest(t, errorfs.Wrap(vfs.NewMem(), inj))
	defer l.Close()
	a := l.Aux(NSGroups)
	auxApply(t, a, new(AuxWrite).Put([]byte("c/g"), []byte("7")))
	inj.on.Store(true)
	if err := a.CompareAndSwap(context.Background(), []byte("c/g"), val("7"), val("8")); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("swap whose sync fails: %v, want ErrStorageFailed", err)
	}
	if err := a.Apply(new(AuxWrite).Put([]byte("c/h"), []byte("1"))); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("aux write after the failure: %v, want ErrStorageFailed", err)
	}
	if _, _, err := a.Get([]byte("c/g")); err != nil {
		t.Errorf("get after the failure: %v", err)
	}
	if err := a.Scan(nil, func(_, _ []byte) error { return nil }); err != nil {
		t.Errorf("scan after the failure: %v", err)
	}
}

// TestAuxReadsWaitForDurability: a swap applied but not yet synced is
// in Pebble, but Get and Scan return only once it is durable, and then
// with it. A swap whose ctx ends first is not taken back.
func TestAuxReadsWaitForDurability(t *testing.T) {
	gate := newGateFS(vfs.NewMem())
	l := openTest(t, gate)
	defer l.Close()
	defer gate.Release()
	a := l.Aux(NSLeases)
	auxApply(t, a, new(AuxWrite).Put([]byte("k"), []byte("old")))

	gate.Hold()
	swapped := make(chan error, 1)
	go func() { swapped <- a.CompareAndSwap(context.Background(), []byte("k"), val("old"), val("new")) }()
	testutil.Eventually(t, 10*time.Second, "the swap to be applied", func() bool { v, _ := rawAux(t, l, "lease/k"); return v == "new" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if err := a.CompareAndSwap(ctx, []byte("j"), Absent(), val("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("swap with a ctx that ends before the fsync: %v", err)
	}
	cancel()
	got := make(chan string, 2)
	go func() { v, _, _ := a.Get([]byte("k")); got <- "get " + string(v) }()
	go func() {
		var s []string
		_ = a.Scan(nil, func(k, v []byte) error { s = append(s, string(k)+"="+string(v)); return nil })
		got <- fmt.Sprint("scan ", s)
	}()
	select {
	case r := <-got:
		t.Fatalf("%s before the swap was durable", r)
	case err := <-swapped:
		t.Fatalf("swap acknowledged before its fsync: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	gate.Release()
	for range 2 {
		if r := <-got; r != "get new" && r != "scan [j=x k=new]" {
			t.Errorf("read after the fsync: %s", r)
		}
	}
	if err := <-swapped; err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.CompareAndSwap(context.Background(), []byte("k"), val("new"), val("newer")); !errors.Is(err, ErrClosed) {
		t.Errorf("swap on a closed log: %v", err)
	}
	if err := a.Apply(new(AuxWrite).Delete([]byte("k"))); !errors.Is(err, ErrClosed) {
		t.Errorf("aux write on a closed log: %v", err)
	}
}

// TestCompareAndSwapCrash: an acknowledged swap survives a crash; swaps
// applied but not acknowledged survive whole or not at all, in commit
// order with the event commits around them.
//
// Swap i moves "counter" from i-1 to i and creates "a/i" and "b/i". Ten
// are acknowledged and crashed after each; then, with the WAL's fsyncs
// held back, a swap and an append at a time are applied, and the store is
// crashed keeping none, half or all of the unsynced data.
func TestCompareAndSwapCrash(t *testing.T) {
	mem := vfs.NewCrashableMem()
	gate := newGateFS(mem)
	l := openTest(t, gate)
	defer l.Close()
	defer gate.Release()
	a := l.Aux(NSLeases)
	rng := rand.New(rand.NewPCG(7, 8))
	swapsOf := func(i int) []Swap {
		old := Absent()
		if i > 1 {
			old = val(strconv.Itoa(i - 1))
		}
		v := val(strconv.Itoa(i))
		return []Swap{
			{Key: []byte("counter"), Old: old, New: v},
			{Key: []byte(fmt.Sprintf("a/%03d", i)), Old: Absent(), New: v},
			{Key: []byte(fmt.Sprintf("b/%03d", i)), Old: Absent(), New: v},
		}
	}
	// check opens a crash clone and returns the swaps that survived;
	// acked and applied count swaps; events[i] is the position of the
	// append applied right after swap i (phase two).
	check := func(t *testing.T, fs vfs.FS, acked, applied int, events map[int]uint64) int {
		t.Helper()
		rl := crashOpen(t, fs)
		defer rl.Close()
		ra := rl.Aux(NSLeases)
		n := 0
		if c := auxGet(t, ra, "counter"); c.Exists {
			n, _ = strconv.Atoi(string(c.Value))
		}
		if n < acked || n > applied {
			t.Fatalf("counter %d after a crash; %d swaps acknowledged, %d applied", n, acked, applied)
		}
		for i := 1; i <= applied; i++ {
			for _, k := range []string{"a", "b"} {
				got := auxGet(t, ra, fmt.Sprintf("%s/%03d", k, i))
				if got.Exists != (i <= n) || (got.Exists && string(got.Value) != strconv.Itoa(i)) {
					t.Fatalf("counter %d, %s/%03d: %q (exists %t): a swap survived in part", n, k, i, got.Value, got.Exists)
				}
			}
		}
		// Commit order: the append applied before swap n survived with
		// it; the append applied after swap n+1 was lost with it.
		if before, ok := events[n-1]; ok && rl.LastPosition() < before {
			t.Fatalf("swap %d survived but not the append before it: last position %d, want >= %d", n, rl.LastPosition(), before)
		}
		if after, ok := events[n+1]; ok && n+1 <= applied && rl.LastPosition() >= after {
			t.Fatalf("swap %d was lost but not the append after it: last position %d, want < %d", n+1, rl.LastPosition(), after)
		}
		if got := readAll(t, rl, AllQuery{}); uint64(len(got)) != rl.LastPosition() {
			t.Fatalf("%d events up to position %d", len(got), rl.LastPosition())
		}
		return n
	}

	appendTo(t, l, "s", testEvent(0))
	for i := 1; i <= 10; i++ {
		if err := a.CompareAndSwapMany(context.Background(), swapsOf(i)); err != nil {
			t.Fatal(err)
		}
		for _, p := range crashUnsyncedPercents {
			t.Run(fmt.Sprintf("acked=%d/unsynced=%d", i, p), func(t *testing.T) {
				check(t, mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng}), i, i, nil)
			})
		}
	}

	gate.Hold()
	events := make(map[int]uint64)
	var tickets []*Ticket
	var swapped []chan error
	kept, lost := 0, 0
	for i := 11; i <= 16; i++ {
		ch := make(chan error, 1)
		swapped = append(swapped, ch)
		go func() { ch <- a.CompareAndSwapMany(context.Background(), swapsOf(i)) }()
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("swap %d to be applied", i), func() bool { v, _ := rawAux(t, l, "lease/counter"); return v == strconv.Itoa(i) })
		st, _, err := l.State("s")
		if err != nil {
			t.Fatal(err)
		}
		w := &Write{State: st, Events: []Event{testEvent(i)}, CheckIDs: true}
		tk, err := l.Commit([]*Write{w}, false)
		if err != nil || w.Err != nil {
			t.Fatal(err, w.Err)
		}
		tickets = append(tickets, tk)
		events[i] = w.FirstPosition
		for _, p := range crashUnsyncedPercents {
			t.Run(fmt.Sprintf("acked=10/applied=%d/unsynced=%d", i, p), func(t *testing.T) {
				n := check(t, mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p, RNG: rng}), 10, i, events)
				if n > 10 {
					kept++
				}
				if n < i {
					lost++
				}
			})
		}
	}
	t.Logf("crashes that kept an unacknowledged swap: %d; that lost one: %d", kept, lost)
	if kept == 0 || lost == 0 {
		t.Errorf("the crashes did not exercise both outcomes (kept %d, lost %d)", kept, lost)
	}
	gate.Release()
	for _, ch := range swapped {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	for _, tk := range tickets {
		if err := tk.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := check(t, mem.CrashClone(vfs.CrashCloneCfg{}), 16, 16, events); n != 16 {
		t.Fatalf("every swap acknowledged; %d survived", n)
	}
}
