package group

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	"github.com/esdhq/esd/internal/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// The unit tests of this package run a Manager over a real log on
// t.TempDir(), with a subscription hub installed before anything writes,
// the way the server wires them.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait of a test, so that a deadlock fails it.
const waitFor = 10 * time.Second

// env is a manager over a log, reopenable on the same directory.
type env struct {
	t   *testing.T
	dir string
	l   *eslog.Log
	hub *subscription.Hub
	m   *Manager

	wmu sync.Mutex // serializes appends (the writer's job in the server)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	lg := zaptest.NewLogger(e.t, zaptest.Level(zap.WarnLevel))
	l, err := eslog.Open(e.dir, eslog.Options{Logger: lg.Named("log"), CacheBytes: 8 << 20})
	if err != nil {
		e.t.Fatalf("open log: %v", err)
	}
	e.l = l
	e.hub = subscription.NewHub(l, subscription.Options{})
	l.OnPublish(e.hub.Publish)
	m, err := NewManager(l, e.hub, lg.Named("group"), nil)
	if err != nil {
		_ = l.Close()
		e.t.Fatalf("new manager: %v", err)
	}
	e.m = m
}

// close stops the manager and closes the log; harmless twice.
func (e *env) close() {
	if e.m == nil {
		return
	}
	e.settle()
	e.m.Close()
	if err := e.l.Close(); err != nil {
		e.t.Errorf("close log: %v", err)
	}
	e.m, e.l = nil, nil
}

// settle waits for the dispatchers that are stopping on their own (their
// last member left) to be gone, so that Close does not stop them at the
// same time: that races (see TestCloseWhileLastMemberLeaves), and only
// that test should trip over it.
func (e *env) settle() {
	e.m.mu.Lock()
	var runs []*dispatcher
	for _, g := range e.m.groups {
		g.mu.Lock()
		if g.run != nil {
			runs = append(runs, g.run)
		}
		g.mu.Unlock()
	}
	e.m.mu.Unlock()
	for _, d := range runs {
		if !d.do(func(*dispatcher) {}) {
			<-d.exited
		}
	}
}

// reopen is a clean restart: manager and log closed, then opened again.
func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

// appended is an event the test wrote.
type appended struct {
	id     [16]byte
	stream string
	rev    uint64
	pos    uint64
}

// appendN writes n events to stream (one commit) and waits until they are
// durable and published.
func (e *env) appendN(stream string, n int) []appended {
	e.t.Helper()
	out, err := e.tryAppend(stream, n)
	if err != nil {
		e.t.Fatalf("append to %s: %v", stream, err)
	}
	return out
}

// tryAppend is appendN for goroutines.
func (e *env) tryAppend(stream string, n int) ([]appended, error) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	st, ok, err := e.l.State(stream)
	if err != nil {
		return nil, err
	}
	w := &eslog.Write{State: st}
	if !ok {
		w.State, w.New = eslog.StreamState{ID: e.l.NewStreamID(), Name: stream}, true
	}
	for i := range n {
		w.Events = append(w.Events, eslog.Event{ID: eslog.NewEventID(), Type: "Tested", Data: fmt.Appendf(nil, "%s %d", stream, i)})
	}
	tk, err := e.l.Commit([]*eslog.Write{w}, false)
	if err != nil {
		return nil, err
	}
	if w.Err != nil {
		return nil, w.Err
	}
	if err := tk.Wait(context.Background()); err != nil {
		return nil, err
	}
	out := make([]appended, n)
	for i := range out {
		out[i] = appended{id: w.Events[i].ID, stream: stream, rev: w.After.Head - uint64(n-1-i), pos: w.FirstPosition + uint64(i)}
	}
	return out, nil
}

// settings are quick settings for tests.
func settings(name, category string) Settings {
	return Settings{Name: name, Target: subscription.TargetCategory, TargetName: category,
		AckTimeout: time.Second, MaxDeliveries: 100}
}

func (e *env) create(s Settings) Info {
	e.t.Helper()
	info, err := e.m.Create(s, subscription.FromStart, 0)
	if err != nil {
		e.t.Fatalf("create %s: %v", s.Name, err)
	}
	return info
}

func (e *env) join(name string) *Member {
	e.t.Helper()
	mem, err := e.m.Join(name, "test")
	if err != nil {
		e.t.Fatalf("join %s: %v", name, err)
	}
	return mem
}

func (e *env) info(name string) Info {
	e.t.Helper()
	info, err := e.m.Get(name)
	if err != nil {
		e.t.Fatalf("get %s: %v", name, err)
	}
	return info
}

func (e *env) parked(name string) []Parked {
	e.t.Helper()
	ps, _, err := e.m.ListParked(name, 0, 1000)
	if err != nil {
		e.t.Fatalf("list parked of %s: %v", name, err)
	}
	return ps
}

// recv takes the member's next delivery (telling the dispatcher it has
// room again), failing the test after waitFor.
func recv(t *testing.T, mem *Member) Delivery {
	t.Helper()
	select {
	case d := <-mem.Deliveries():
		mem.Sent()
		return d
	case <-mem.Done():
		t.Fatalf("member %d is out: %v", mem.ID, mem.Err())
	case <-time.After(waitFor):
		t.Fatalf("member %d: no delivery within %v", mem.ID, waitFor)
	}
	return Delivery{}
}

// recvWithin is recv with a shorter bound; ok false when nothing came.
func recvWithin(mem *Member, d time.Duration) (Delivery, bool) {
	select {
	case dl := <-mem.Deliveries():
		mem.Sent()
		return dl, true
	case <-time.After(d):
		return Delivery{}, false
	}
}

// noDelivery fails the test if the member gets a delivery within d.
func noDelivery(t *testing.T, mem *Member, d time.Duration) {
	t.Helper()
	if dl, ok := recvWithin(mem, d); ok {
		t.Fatalf("member %d got position %d (count %d), want nothing", mem.ID, dl.Event.Position, dl.Count)
	}
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, waitFor, what, cond)
}

// aux is the groups' namespace of the log.
func (e *env) aux() *eslog.Aux { return e.l.Aux(eslog.NSGroups) }

// storedCheckpoint reads a group's checkpoint key as stored.
func (e *env) storedCheckpoint(name string) (uint64, bool) {
	e.t.Helper()
	v, ok, err := e.aux().Get(checkpointKey(name))
	if err != nil {
		e.t.Fatal(err)
	}
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

// auxKeys counts the aux keys under prefix.
func (e *env) auxKeys(prefix []byte) int {
	e.t.Helper()
	n := 0
	if err := e.aux().Scan(prefix, func(_, _ []byte) error { n++; return nil }); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// lowerTunables makes dispatchers store checkpoints often and resubscribe
// at once, for the length of the test.
func lowerTunables(t *testing.T) {
	oldSave, oldResub, oldQueue := saveEvery, resubscribeAfter, memberQueue
	saveEvery, resubscribeAfter = 20*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { saveEvery, resubscribeAfter, memberQueue = oldSave, oldResub, oldQueue })
}

func ids(ds ...Delivery) [][16]byte {
	out := make([][16]byte, len(ds))
	for i, d := range ds {
		out[i] = d.Event.ID
	}
	return out
}

// running reports whether the group has a dispatcher now.
func (e *env) running(name string) bool {
	e.m.mu.Lock()
	g := e.m.groups[name]
	e.m.mu.Unlock()
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.run != nil
}
