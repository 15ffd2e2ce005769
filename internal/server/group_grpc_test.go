package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The consumer group tests over gRPC: at-least-once delivery across member
// failures, restarts and a crash; ack timeouts, nacks, parking and replay;
// strategies and max_in_flight; the group lifecycle and its validation;
// how members' streams end.

// --- helpers ---

func groupsOf(ts *testServer) esdv1.ConsumerGroupServiceClient {
	return esdv1.NewConsumerGroupServiceClient(ts.conn)
}

// catGroup is a group on a category with test-sized settings.
func catGroup(name, category string) *esdv1.Group {
	return &esdv1.Group{Name: name, Target: &esdv1.Group_Category{Category: category},
		AckTimeout: durationpb.New(time.Second), MaxDeliveries: 100}
}

func createGroup(t *testing.T, ts *testServer, g *esdv1.Group) *esdv1.GroupInfo {
	t.Helper()
	resp, err := groupsOf(ts).CreateGroup(testCtx(t), &esdv1.CreateGroupRequest{Group: g})
	if err != nil {
		t.Fatalf("create group %q: %v", g.GetName(), err)
	}
	return resp.GetInfo()
}

func getGroup(t *testing.T, ts *testServer, name string) *esdv1.GroupInfo {
	t.Helper()
	resp, err := groupsOf(ts).GetGroup(testCtx(t), &esdv1.GetGroupRequest{Name: name})
	if err != nil {
		t.Fatalf("get group %q: %v", name, err)
	}
	return resp.GetInfo()
}

// storedCheckpoint is group name's checkpoint as stored in the log (what
// a crash keeps; GetGroup reports the dispatcher's, which runs ahead): key
// c/<name> of the groups' aux namespace, 8 bytes big-endian, as
// internal/group/store.go lays it out. It is 0 while none is stored.
func storedCheckpoint(t *testing.T, ts *testServer, name string) uint64 {
	t.Helper()
	v, ok, err := ts.log.Aux(eslog.NSGroups).Get([]byte("c/" + name))
	switch {
	case err != nil:
		t.Fatalf("stored checkpoint of %q: %v", name, err)
	case !ok:
		return 0
	case len(v) != 8:
		t.Fatalf("stored checkpoint of %q: %d bytes, want 8", name, len(v))
	}
	return binary.BigEndian.Uint64(v)
}

func listParked(t *testing.T, ts *testServer, name string) []*esdv1.ParkedEvent {
	t.Helper()
	resp, err := groupsOf(ts).ListParked(testCtx(t), &esdv1.ListParkedRequest{Group: name, PageSize: 1000})
	if err != nil {
		t.Fatalf("list parked of %q: %v", name, err)
	}
	return resp.GetEvents()
}

func joinMsg(group string) *esdv1.JoinRequest {
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: group, Member: "test"}}}
}

func ackMsg(ids ...string) *esdv1.JoinRequest {
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: ids}}}
}

func nackMsg(action esdv1.NackAction, reason string, ids ...string) *esdv1.JoinRequest {
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Nack{Nack: &esdv1.Nack{EventIds: ids, Action: action, Reason: reason}}}
}

// gmember is a member over a Join stream: a goroutine reads its
// deliveries until the stream ends.
type gmember struct {
	id     string
	stream grpc.BidiStreamingClient[esdv1.JoinRequest, esdv1.JoinResponse]
	cancel context.CancelFunc
	sendMu sync.Mutex
	out    chan *esdv1.Delivery
	done   chan struct{}
	err    error // how the stream ended; read after done
}

// tryJoin joins a group and waits for joined.
func tryJoin(groups esdv1.ConsumerGroupServiceClient, group string) (*gmember, error) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := groups.Join(ctx)
	if err == nil {
		err = st.Send(joinMsg(group))
	}
	var first *esdv1.JoinResponse
	if err == nil {
		first, err = st.Recv()
	}
	if err == nil && first.GetJoined() == nil {
		err = fmt.Errorf("first message %v, want joined", first)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	m := &gmember{id: first.GetJoined().GetMemberId(), stream: st, cancel: cancel,
		out: make(chan *esdv1.Delivery, 1<<14), done: make(chan struct{})}
	go m.read(ctx)
	return m, nil
}

// join joins a group; the member leaves at the end of the test.
func join(t *testing.T, groups esdv1.ConsumerGroupServiceClient, group string) *gmember {
	t.Helper()
	m, err := tryJoin(groups, group)
	if err != nil {
		t.Fatalf("join %q: %v", group, err)
	}
	t.Cleanup(func() { m.cancel(); <-m.done })
	return m
}

func (m *gmember) read(ctx context.Context) {
	defer close(m.done)
	for {
		r, err := m.stream.Recv()
		if err != nil {
			m.err = err
			return
		}
		d := r.GetDelivery()
		if d == nil {
			m.err = fmt.Errorf("unexpected message %v", r)
			return
		}
		select {
		case m.out <- d:
		case <-ctx.Done():
			m.err = ctx.Err()
			return
		}
	}
}

func (m *gmember) send(r *esdv1.JoinRequest) error {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	return m.stream.Send(r)
}

// ack and nack ignore errors: the stream may be ending, which the
// stream's end reports.
func (m *gmember) ack(ids ...string) { _ = m.send(ackMsg(ids...)) }

func (m *gmember) nack(action esdv1.NackAction, reason string, ids ...string) {
	_ = m.send(nackMsg(action, reason, ids...))
}

// recvWithin returns the next delivery, or false after d (or when the
// stream ended).
func (m *gmember) recvWithin(d time.Duration) (*esdv1.Delivery, bool) {
	select {
	case dl := <-m.out:
		return dl, true
	default:
	}
	select {
	case dl := <-m.out:
		return dl, true
	case <-m.done:
		select {
		case dl := <-m.out:
			return dl, true
		default:
			return nil, false
		}
	case <-time.After(d):
		return nil, false
	}
}

func (m *gmember) recv(t *testing.T) *esdv1.Delivery {
	t.Helper()
	d, ok := m.recvWithin(rpcTimeout)
	if !ok {
		select {
		case <-m.done:
			t.Fatalf("member %s: stream ended: %v", m.id, m.err)
		default:
			t.Fatalf("member %s: no delivery", m.id)
		}
	}
	return d
}

func (m *gmember) noDelivery(t *testing.T, d time.Duration) {
	t.Helper()
	if dl, ok := m.recvWithin(d); ok {
		t.Fatalf("member %s got %d (count %d), want nothing", m.id, dl.GetEvent().GetPosition(), dl.GetDeliveryCount())
	}
}

// ended waits for the member's stream to end and returns how.
func (m *gmember) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-m.done:
		return m.err
	case <-time.After(rpcTimeout):
		t.Fatalf("member %s: stream still open", m.id)
		return nil
	}
}

// quiesce ends the members' streams and waits until no group runs a
// dispatcher any more (esd_groups_running 0). Tests whose subject is not
// a shutdown with members connected call it before the server stops, so
// that they do not trip over the race of a dispatcher stopping on its own
// while Close stops it (see internal/group TestCloseWhileLastMemberLeaves);
// the tests of shutdowns with members connected do trip over it.
func quiesce(t *testing.T, reg prometheus.Gatherer, ms ...*gmember) {
	t.Helper()
	for _, m := range ms {
		m.cancel()
		<-m.done
	}
	eventually(t, "no group running", func() bool { return testutil.MetricValue(t, reg, "esd_groups_running", nil) == 0 })
}

// joinError sends msgs on a new Join stream and returns how it ends.
func joinError(t *testing.T, groups esdv1.ConsumerGroupServiceClient, msgs ...*esdv1.JoinRequest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := groups.Join(ctx)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			break // the server ended the stream: Recv says how
		}
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		if r.GetDelivery() != nil {
			t.Fatalf("delivery on a stream that should fail: %v", r)
		}
	}
}

func groupTestSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ESD_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ESD_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (ESD_TEST_SEED=%d repeats it)", seed, seed)
	return seed
}

// wantShuttingDown checks that a member's stream ended because the server
// shut down.
func wantShuttingDown(t *testing.T, err error) {
	t.Helper()
	if msg := errorMismatch(err, codes.Unavailable, reasonShuttingDown, ""); msg != "" {
		t.Errorf("member stream at shutdown: %s", msg)
	}
}

// --- at-least-once ---

// ackTracker is what the members of a randomized run did, by event id.
type ackTracker struct {
	mu         sync.Mutex
	target     map[string]uint64 // events written to the target: id -> position
	acks       map[string]int    // acks sent by the members
	deliveries int
	again      int // deliveries of events acknowledged before
	failures   []string
	checkpoint uint64 // the highest checkpoint seen (since the last crash)
	late       sync.WaitGroup
}

func (tr *ackTracker) fail(format string, args ...any) {
	if len(tr.failures) < 20 {
		tr.failures = append(tr.failures, fmt.Sprintf(format, args...))
	}
}

// sawCheckpoint: the checkpoint never goes back, and every event of the
// target up to it was acknowledged by a member.
func (tr *ackTracker) sawCheckpoint(cp uint64, where string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if cp < tr.checkpoint {
		tr.fail("%s: checkpoint %d went back from %d", where, cp, tr.checkpoint)
	}
	tr.checkpoint = max(tr.checkpoint, cp)
	for id, pos := range tr.target {
		if pos <= cp && tr.acks[id] == 0 {
			tr.fail("%s: checkpoint %d passed position %d (%s), never acknowledged", where, cp, pos, id)
		}
	}
}

func (tr *ackTracker) unacked() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for id := range tr.target {
		if tr.acks[id] == 0 {
			n++
		}
	}
	return n
}

// handle runs a member: most deliveries acknowledged, some nacked, some
// ignored (they time out), some acknowledged late; killAfter > 0 cancels
// its stream at that delivery, with it (and what it ignored) unacked.
func (tr *ackTracker) handle(m *gmember, rng *rand.Rand, killAfter int, ackAll bool, ackTimeout time.Duration) {
	for n := 1; ; n++ {
		var d *esdv1.Delivery
		select {
		case d = <-m.out:
		case <-m.done:
			return
		}
		if killAfter > 0 && n >= killAfter {
			m.cancel()
			<-m.done
			return
		}
		id, pos := d.GetEvent().GetId(), d.GetEvent().GetPosition()
		tr.mu.Lock()
		tr.deliveries++
		if !strings.HasPrefix(d.GetEvent().GetStream(), "acc-") {
			tr.fail("delivered %s of stream %s: not the target", id, d.GetEvent().GetStream())
		}
		if p, ok := tr.target[id]; ok && p != pos {
			tr.fail("%s delivered at position %d, written at %d", id, pos, p)
		}
		if tr.acks[id] > 0 {
			tr.again++
		}
		x := rng.IntN(100)
		if ackAll {
			x = 0
		}
		switch {
		case x < 80:
			tr.acks[id]++
			tr.mu.Unlock()
			m.ack(id)
		case x < 85:
			tr.mu.Unlock()
			m.nack(esdv1.NackAction_NACK_ACTION_RETRY, "", id)
		case x < 88:
			tr.mu.Unlock()
			m.nack(esdv1.NackAction_NACK_ACTION_RETRY_LATER, "", id)
		case x < 96:
			tr.mu.Unlock() // ignored
		default:
			tr.mu.Unlock()
			late := ackTimeout + time.Duration(rng.IntN(50))*time.Millisecond
			tr.late.Add(1)
			go func() {
				defer tr.late.Done()
				time.Sleep(late) // the case under test: an ack after ack_timeout, the event maybe out again
				tr.mu.Lock()
				tr.acks[id]++
				tr.mu.Unlock()
				m.ack(id)
			}()
		}
	}
}

// targetEvents reads the target's events (streams acc-*) from a server.
func targetEvents(t *testing.T, ts *testServer) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, e := range ts.readAll(t) {
		if strings.HasPrefix(e.GetStream(), "acc-") {
			out[e.GetId()] = e.GetPosition()
		}
	}
	return out
}

// TestGroupAtLeastOnceAcrossRestartsAndCrash is the central property:
// three members share a category while writers append; in each phase a
// member's stream is cancelled with deliveries unacknowledged and another
// member joins; phases end with a clean restart or a crash (a clone of
// the store as a crash leaves it) with the members connected; members
// join the new server. Throughout, the checkpoint never goes back (but to
// its stored value at a crash: no further than ~100 ms of acks) and never
// passes an event no member acknowledged. In the end every event of the
// target was acknowledged, nothing is in flight or parked, and the
// durable checkpoint is the last position.
func TestGroupAtLeastOnceAcrossRestartsAndCrash(t *testing.T) {
	seed := groupTestSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	fs := vfs.NewCrashableMem()
	ts := newTestServer(t, withShards(2), withDir(fs, "db"))
	g := catGroup("acc", "acc")
	ackTimeout := 200 * time.Millisecond
	g.AckTimeout, g.MaxDeliveries, g.MaxInFlight = durationpb.New(ackTimeout), 1000, uint32(8+rng.IntN(60))
	if rng.IntN(2) == 1 {
		g.Strategy = esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM
	}
	t.Logf("strategy %v, max_in_flight %d", g.Strategy, g.MaxInFlight)
	createGroup(t, ts, g)
	tr := &ackTracker{target: map[string]uint64{}, acks: map[string]int{}}
	const perPhase = 120

	for phase, end := range []string{"restart", "crash", "restart", "final"} {
		final := end == "final"
		groups, streams := groupsOf(ts), ts.streams // this server's clients
		var (
			mwg     sync.WaitGroup
			members []*gmember
			killed  = map[*gmember]bool{}
		)
		startMember := func(killAfter int) {
			m := join(t, groups, "acc")
			members = append(members, m)
			if killAfter > 0 {
				killed[m] = true
			}
			mrng := rand.New(rand.NewPCG(seed, rng.Uint64()))
			mwg.Add(1)
			go func() {
				defer mwg.Done()
				tr.handle(m, mrng, killAfter, final, ackTimeout)
			}()
		}
		for i := range 3 {
			kill := 0
			if i == 0 && !final {
				kill = 5 + rng.IntN(25)
			}
			startMember(kill)
		}
		monStop := make(chan struct{})
		var monWG sync.WaitGroup
		monWG.Add(1)
		go func() {
			defer monWG.Done()
			for {
				select {
				case <-monStop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				resp, err := groups.GetGroup(context.Background(), &esdv1.GetGroupRequest{Name: "acc"})
				if err != nil {
					select {
					case <-monStop:
					default:
						t.Errorf("get group: %v", err)
					}
					return
				}
				tr.sawCheckpoint(resp.GetInfo().GetCheckpoint(), fmt.Sprintf("phase %d", phase))
			}
		}()
		// Writers; in the crash phase they still append when it comes.
		var (
			wwg      sync.WaitGroup
			crashing = make(chan struct{})
		)
		quota := perPhase / 2
		if final {
			quota = 3
		}
		for w := range 2 {
			wwg.Add(1)
			wrng := rand.New(rand.NewPCG(seed, rng.Uint64()))
			go func() {
				defer wwg.Done()
				for written := 0; written < quota || (end == "crash" && !isClosed(crashing)); {
					stream := fmt.Sprintf("acc-%d", wrng.IntN(5))
					if wrng.IntN(5) == 0 && !final {
						stream = fmt.Sprintf("other-%d", w)
					}
					req := appendReq(stream, xAny, events(1+wrng.IntN(3), "Acc")...)
					resp, err := streams.Append(context.Background(), req)
					if err != nil {
						if !isClosed(crashing) {
							t.Errorf("append: %v", err)
						}
						return
					}
					if !strings.HasPrefix(stream, "acc-") {
						continue
					}
					tr.mu.Lock()
					for i, e := range req.GetEvents() {
						tr.target[e.GetId()] = resp.GetFirstPosition() + uint64(i)
					}
					tr.mu.Unlock()
					written += len(req.GetEvents())
					if written >= quota {
						time.Sleep(5 * time.Millisecond) // pacing, not a wait: the crash phase goes on at a slower pace
					}
				}
			}()
		}
		stopMonitor := func() {
			close(monStop)
			monWG.Wait()
		}
		switch end {
		case "restart":
			wwg.Wait()
			startMember(0) // in place of the one killed
			// Picks the restart moment (the members go on meanwhile);
			// nothing waits for a condition here.
			time.Sleep(time.Duration(50+rng.IntN(300)) * time.Millisecond)
			stopMonitor()
			before := getGroup(t, ts, "acc").GetCheckpoint()
			tr.sawCheckpoint(before, fmt.Sprintf("phase %d before restart", phase))
			ts.restart() // with the members connected
			mwg.Wait()
			for _, m := range members {
				if !killed[m] {
					wantShuttingDown(t, m.ended(t))
				}
			}
			after := getGroup(t, ts, "acc")
			if after.GetCheckpoint() < before {
				t.Errorf("phase %d: checkpoint %d after restart, %d before", phase, after.GetCheckpoint(), before)
			}
			tr.sawCheckpoint(after.GetCheckpoint(), fmt.Sprintf("phase %d after restart", phase))

		case "crash":
			startMember(0)
			eventually(t, "some events acknowledged", func() bool {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				return len(tr.target) >= perPhase && tr.deliveries > perPhase
			})
			stopMonitor()
			stored := getGroup(t, ts, "acc").GetCheckpoint()
			// The dispatcher stores its checkpoint (synced) every 100 ms:
			// the crash comes once it has stored this one.
			eventually(t, fmt.Sprintf("checkpoint %d stored", stored), func() bool { return storedCheckpoint(t, ts, "acc") >= stored })
			clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, 7))})
			close(crashing)
			if err := ts.shutdown(); err != nil {
				t.Fatalf("shutdown of the crashed server: %v", err)
			}
			wwg.Wait()
			mwg.Wait()
			ts = newTestServer(t, withShards(2), withDir(clone, "db"))
			info := getGroup(t, ts, "acc")
			if info.GetCheckpoint() < stored {
				t.Errorf("checkpoint after the crash %d, below %d stored before it", info.GetCheckpoint(), stored)
			}
			tr.mu.Lock()
			kept := targetEvents(t, ts) // appends acknowledged after the clone are not in it
			t.Logf("crash: %d of %d events of the target kept, checkpoint %d (%d stored before it)", len(kept), len(tr.target), info.GetCheckpoint(), stored)
			tr.target, tr.checkpoint = kept, 0
			tr.mu.Unlock()
			tr.sawCheckpoint(info.GetCheckpoint(), "after the crash")

		case "final":
			wwg.Wait()
			eventually(t, "every event of the target acknowledged", func() bool { return tr.unacked() == 0 })
			last := ts.lastPosition(t) // the writers wrote to the target last
			eventually(t, "checkpoint at the last position, nothing in flight", func() bool {
				i := getGroup(t, ts, "acc")
				return i.GetCheckpoint() == last && i.GetInFlight() == 0
			})
			stopMonitor()
			ts.restart()
			mwg.Wait()
			info := getGroup(t, ts, "acc")
			if info.GetCheckpoint() != last || info.GetParked() != 0 {
				t.Errorf("after the last restart: checkpoint %d (want %d), parked %d", info.GetCheckpoint(), last, info.GetParked())
			}
		}
	}
	tr.late.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, f := range tr.failures {
		t.Error(f)
	}
	want := targetEvents(t, ts)
	if len(want) != len(tr.target) {
		t.Errorf("%d events of the target in the store, %d tracked", len(want), len(tr.target))
	}
	for id := range want {
		if tr.acks[id] == 0 {
			t.Errorf("event %s (position %d) never acknowledged", id, want[id])
		}
	}
	acks := 0
	for _, n := range tr.acks {
		acks += n
	}
	t.Logf("%d events of the target, %d deliveries, %d acks, %d deliveries of events acknowledged before", len(want), tr.deliveries, acks, tr.again)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// --- delivery rules ---

// TestGroupAckTimeoutAndParkGRPC: an unacknowledged event comes back after
// ack_timeout with delivery_count 2, 3; after max_deliveries it is parked
// (ListParked: the event, its count, the reason, when) and the checkpoint
// moves past it.
func TestGroupAckTimeoutAndParkGRPC(t *testing.T) {
	ts := newTestServer(t)
	ids := ts.fill(t, "order-1", 2, "Placed")
	g := catGroup("g", "order")
	g.AckTimeout, g.MaxDeliveries = durationpb.New(150*time.Millisecond), 3
	createGroup(t, ts, g)
	start := time.Now()
	m := join(t, groupsOf(ts), "g")
	d0, d1 := m.recv(t), m.recv(t)
	if d0.GetEvent().GetId() != ids[0] || d0.GetDeliveryCount() != 1 || d1.GetEvent().GetId() != ids[1] {
		t.Fatalf("first deliveries %v, %v", d0, d1)
	}
	if d0.GetEvent().GetType() != "Placed" || d0.GetEvent().GetStream() != "order-1" || d0.GetEvent().GetPosition() != 1 {
		t.Errorf("delivered event %v", d0.GetEvent())
	}
	m.ack(ids[1])
	for want := uint32(2); want <= 3; want++ {
		d := m.recv(t)
		if d.GetEvent().GetId() != ids[0] || d.GetDeliveryCount() != want {
			t.Fatalf("redelivery: %s count %d, want %s count %d", d.GetEvent().GetId(), d.GetDeliveryCount(), ids[0], want)
		}
		if el := time.Since(start); el < time.Duration(want-1)*150*time.Millisecond {
			t.Fatalf("delivery %d after %v", want, el)
		}
	}
	eventually(t, "parked and checkpoint past it", func() bool {
		i := getGroup(t, ts, "g")
		return i.GetParked() == 1 && i.GetCheckpoint() == 2 && i.GetInFlight() == 0
	})
	ps := listParked(t, ts, "g")
	if len(ps) != 1 || ps[0].GetEvent().GetId() != ids[0] || ps[0].GetEvent().GetPosition() != 1 || ps[0].GetDeliveryCount() != 3 {
		t.Fatalf("parked %v", ps)
	}
	if !strings.Contains(ps[0].GetReason(), "not acknowledged after 3 deliveries") {
		t.Errorf("reason %q", ps[0].GetReason())
	}
	if at := ps[0].GetParkedAt().AsTime(); at.Before(start) || time.Since(at) > time.Minute {
		t.Errorf("parked_at %v", at)
	}
	m.noDelivery(t, 400*time.Millisecond)
	i := getGroup(t, ts, "g")
	if i.GetDelivered() != 4 || i.GetRedelivered() != 2 || i.GetAcked() != 1 || i.GetMembers() != 1 {
		t.Errorf("info %v", i)
	}
	quiesce(t, ts.reg, m)
}

// TestGroupNackActionsGRPC: RETRY (and unspecified) redelivers at once,
// RETRY_LATER after ack_timeout, PARK parks at once with the reason.
func TestGroupNackActionsGRPC(t *testing.T) {
	ts := newTestServer(t)
	ids := ts.fill(t, "order-1", 3, "Placed")
	g := catGroup("g", "order")
	g.AckTimeout = durationpb.New(400 * time.Millisecond)
	createGroup(t, ts, g)
	m := join(t, groupsOf(ts), "g")
	for range 3 {
		m.recv(t)
	}

	start := time.Now()
	m.nack(esdv1.NackAction_NACK_ACTION_RETRY, "", ids[0])
	if d := m.recv(t); d.GetEvent().GetId() != ids[0] || d.GetDeliveryCount() != 2 || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("after RETRY: %s count %d after %v", d.GetEvent().GetId(), d.GetDeliveryCount(), time.Since(start))
	}
	start = time.Now()
	m.nack(esdv1.NackAction_NACK_ACTION_UNSPECIFIED, "", ids[0])
	if d := m.recv(t); d.GetEvent().GetId() != ids[0] || d.GetDeliveryCount() != 3 || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("after UNSPECIFIED: %s count %d after %v", d.GetEvent().GetId(), d.GetDeliveryCount(), time.Since(start))
	}
	m.ack(ids[0])
	start = time.Now()
	m.nack(esdv1.NackAction_NACK_ACTION_RETRY_LATER, "busy", ids[1])
	m.nack(esdv1.NackAction_NACK_ACTION_PARK, "malformed", ids[2])
	d := m.recv(t)
	if el := time.Since(start); d.GetEvent().GetId() != ids[1] || d.GetDeliveryCount() != 2 || el < 400*time.Millisecond {
		t.Fatalf("after RETRY_LATER: %s count %d after %v (ack_timeout 400ms)", d.GetEvent().GetId(), d.GetDeliveryCount(), el)
	}
	m.ack(ids[1])
	eventually(t, "parked, checkpoint at the end", func() bool {
		i := getGroup(t, ts, "g")
		return i.GetParked() == 1 && i.GetCheckpoint() == 3
	})
	ps := listParked(t, ts, "g")
	if len(ps) != 1 || ps[0].GetEvent().GetId() != ids[2] || ps[0].GetReason() != "malformed" || ps[0].GetDeliveryCount() != 1 {
		t.Fatalf("parked %v", ps)
	}
	quiesce(t, ts.reg, m)
}

// TestGroupReplayParkedGRPC: replayed events come again with counts from
// 1, leave the parked list when acknowledged, stay parked when not
// acknowledged before a restart; a replay with no members waits for one;
// ListParked pages.
func TestGroupReplayParkedGRPC(t *testing.T) {
	ts := newTestServer(t)
	ids := ts.fill(t, "order-1", 6, "Placed")
	createGroup(t, ts, catGroup("g", "order"))
	m := join(t, groupsOf(ts), "g")
	for range 5 {
		m.nack(esdv1.NackAction_NACK_ACTION_PARK, "bad", m.recv(t).GetEvent().GetId())
	}
	m.ack(m.recv(t).GetEvent().GetId())
	eventually(t, "5 parked", func() bool { i := getGroup(t, ts, "g"); return i.GetParked() == 5 && i.GetCheckpoint() == 6 })

	// Pages of 2.
	var got []string
	for tok := ""; ; {
		resp, err := groupsOf(ts).ListParked(testCtx(t), &esdv1.ListParkedRequest{Group: "g", PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) > 2 {
			t.Fatalf("page of %d", len(resp.GetEvents()))
		}
		for _, p := range resp.GetEvents() {
			got = append(got, p.GetEvent().GetId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if diff := cmp.Diff(ids[:5], got); diff != "" {
		t.Fatalf("parked pages (-want +got):\n%s", diff)
	}

	resp, err := groupsOf(ts).ReplayParked(testCtx(t), &esdv1.ReplayParkedRequest{Group: "g", MaxCount: 3})
	if err != nil || resp.GetReplayed() != 3 {
		t.Fatalf("replay: %v, %v", resp, err)
	}
	for i := range 3 {
		d := m.recv(t)
		if d.GetEvent().GetId() != ids[i] || d.GetDeliveryCount() != 1 {
			t.Fatalf("replayed %d: %s count %d", i, d.GetEvent().GetId(), d.GetDeliveryCount())
		}
	}
	m.ack(ids[0], ids[1]) // ids[2] stays unacknowledged
	eventually(t, "3 parked", func() bool { return getGroup(t, ts, "g").GetParked() == 3 })
	quiesce(t, ts.reg, m) // ids[2] was not acknowledged
	ts.restart()
	if i := getGroup(t, ts, "g"); i.GetParked() != 3 || i.GetCheckpoint() != 6 {
		t.Fatalf("after restart: %v", i)
	}
	ps := listParked(t, ts, "g")
	if len(ps) != 3 || ps[0].GetEvent().GetId() != ids[2] || ps[0].GetReason() != "bad" {
		t.Fatalf("parked after restart %v", ps)
	}
	// No members: the replay waits for one.
	resp, err = groupsOf(ts).ReplayParked(testCtx(t), &esdv1.ReplayParkedRequest{Group: "g"})
	if err != nil || resp.GetReplayed() != 3 {
		t.Fatalf("replay all: %v, %v", resp, err)
	}
	m = join(t, groupsOf(ts), "g")
	for i := 2; i < 5; i++ {
		d := m.recv(t)
		if d.GetEvent().GetId() != ids[i] || d.GetDeliveryCount() != 1 {
			t.Fatalf("replayed after join: %s count %d, want %s", d.GetEvent().GetId(), d.GetDeliveryCount(), ids[i])
		}
		m.ack(d.GetEvent().GetId())
	}
	eventually(t, "nothing parked", func() bool { return getGroup(t, ts, "g").GetParked() == 0 && len(listParked(t, ts, "g")) == 0 })
	quiesce(t, ts.reg, m)
}

// TestGroupByStreamGRPC: by stream over gRPC, members never hold two
// unacknowledged events of one stream and see each stream in revision
// order, across nacks; round robin spreads events over the members.
func TestGroupByStreamGRPC(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	g := catGroup("bs", "order")
	g.Strategy, g.AckTimeout = esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM, durationpb.New(10*time.Second)
	createGroup(t, ts, g)
	createGroup(t, ts, catGroup("rr", "order"))
	const streams, per = 4, 10
	var (
		mu       sync.Mutex
		acked    = map[string]uint64{}
		failures []string
		wg       sync.WaitGroup
	)
	ms := []*gmember{join(t, groupsOf(ts), "bs"), join(t, groupsOf(ts), "bs"), join(t, groupsOf(ts), "bs")}
	rr := []*gmember{join(t, groupsOf(ts), "rr"), join(t, groupsOf(ts), "rr"), join(t, groupsOf(ts), "rr")}
	done := make(chan struct{})
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for {
				var d *esdv1.Delivery
				select {
				case d = <-m.out:
				case <-done:
					return
				}
				ev := d.GetEvent()
				st := ev.GetStream()
				mu.Lock()
				if ev.GetRevision() != acked[st] {
					failures = append(failures, fmt.Sprintf("%s revision %d delivered while %d is next", st, ev.GetRevision(), acked[st]))
				}
				// A later revision before this one is acknowledged would be a
				// second event of the stream in flight.
				retry := rng.IntN(5) == 0
				if !retry {
					acked[st]++
				}
				mu.Unlock()
				// The member's handling time, under test: the other members
				// go on while it holds the stream's event.
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
				if retry {
					m.nack(esdv1.NackAction_NACK_ACTION_RETRY, "", ev.GetId())
				} else {
					m.ack(ev.GetId())
				}
			}
		}()
	}
	for i := range per {
		for s := range streams {
			ts.mustAppend(t, appendReq(fmt.Sprintf("order-%d", s), xAny, event("Placed", strconv.Itoa(i))))
		}
	}
	eventually(t, "every event acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for s := range streams {
			if acked[fmt.Sprintf("order-%d", s)] != per {
				return false
			}
		}
		return true
	})
	close(done)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	// Round robin: the same events spread over three members.
	counts := make([]int, 3)
	for total, deadline := 0, time.Now().Add(rpcTimeout); total < streams*per; {
		if time.Now().After(deadline) {
			t.Fatalf("round robin: %d of %d events delivered", total, streams*per)
		}
		for i, m := range rr {
			if d, ok := m.recvWithin(5 * time.Millisecond); ok {
				counts[i]++
				total++
				m.ack(d.GetEvent().GetId())
			}
		}
	}
	for i, n := range counts {
		if n == 0 {
			t.Errorf("round robin: member %d got none of %d events: %v", i, streams*per, counts)
		}
	}
	quiesce(t, ts.reg, append(ms, rr...)...)
}

// TestGroupMaxInFlightGRPC: with max_in_flight 3 and a member that does
// not ack, 3 events are outstanding; an ack lets one more through.
func TestGroupMaxInFlightGRPC(t *testing.T) {
	ts := newTestServer(t)
	ts.fill(t, "order-1", 10, "Placed")
	g := catGroup("g", "order")
	g.MaxInFlight, g.AckTimeout = 3, durationpb.New(10*time.Second)
	createGroup(t, ts, g)
	a, b := join(t, groupsOf(ts), "g"), join(t, groupsOf(ts), "g")
	var got []*esdv1.Delivery
	drain := func() {
		for {
			d, ok := a.recvWithin(150 * time.Millisecond)
			if !ok {
				d, ok = b.recvWithin(150 * time.Millisecond)
			}
			if !ok {
				return
			}
			got = append(got, d)
		}
	}
	drain()
	if len(got) != 3 {
		t.Fatalf("%d outstanding with max_in_flight 3", len(got))
	}
	if i := getGroup(t, ts, "g"); i.GetInFlight() != 3 || i.GetMembers() != 2 {
		t.Fatalf("info %v", i)
	}
	a.ack(got[0].GetEvent().GetId())
	drain()
	if len(got) != 4 {
		t.Fatalf("%d delivered after one ack, want 4", len(got))
	}
	quiesce(t, ts.reg, a, b)
}

// --- lifecycle and API ---

// TestGroupLifecycleGRPC: create (and GROUP_EXISTS), defaults, get and
// list with their counts, update (target immutable, ack_timeout takes
// effect), delete (members end with GROUP_NOT_FOUND, nothing of the group
// is left: a new group of the name starts from its own start), start
// options, and groups surviving a restart.
func TestGroupLifecycleGRPC(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	ids := ts.fill(t, "order-1", 3, "Placed")
	g := catGroup("g", "order")
	g.MaxDeliveries, g.MaxInFlight, g.Strategy = 5, 10, esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM
	info := createGroup(t, ts, g)
	if diff := cmp.Diff(g, info.GetGroup(), cmpProto); diff != "" {
		t.Errorf("created group (-want +got):\n%s", diff)
	}
	if info.GetCheckpoint() != 0 || info.GetMembers() != 0 || info.GetInFlight() != 0 {
		t.Errorf("new group info %v", info)
	}
	_, err := groupsOf(ts).CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: catGroup("g", "invoice")})
	wantError(t, err, codes.AlreadyExists, reasonGroupExists, "")

	// Defaults.
	d := createGroup(t, ts, &esdv1.Group{Name: "d", Target: &esdv1.Group_All{All: &emptypb.Empty{}}})
	wantD := &esdv1.Group{Name: "d", Target: &esdv1.Group_All{All: &emptypb.Empty{}}, AckTimeout: durationpb.New(30 * time.Second),
		MaxDeliveries: 10, MaxInFlight: 1000, Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN}
	if diff := cmp.Diff(wantD, d.GetGroup(), cmpProto); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}

	// Counts: by stream, one event in a member's hands, one waiting.
	m := join(t, groupsOf(ts), "g")
	m.ack(m.recv(t).GetEvent().GetId())
	d1 := m.recv(t)
	eventually(t, "counts", func() bool {
		i := getGroup(t, ts, "g")
		return i.GetMembers() == 1 && i.GetInFlight() == 2 && i.GetDelivered() == 2 && i.GetAcked() == 1 && i.GetCheckpoint() == 1
	})
	m.nack(esdv1.NackAction_NACK_ACTION_PARK, "x", d1.GetEvent().GetId())
	m.ack(m.recv(t).GetEvent().GetId())
	eventually(t, "done", func() bool {
		i := getGroup(t, ts, "g")
		return i.GetParked() == 1 && i.GetCheckpoint() == 3 && i.GetInFlight() == 0 && i.GetAcked() == 2
	})
	list, err := groupsOf(ts).ListGroups(ctx, &esdv1.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetGroups()) != 2 || list.GetGroups()[0].GetGroup().GetName() != "d" || list.GetGroups()[1].GetGroup().GetName() != "g" ||
		list.GetGroups()[1].GetParked() != 1 || list.GetGroups()[1].GetMembers() != 1 {
		t.Errorf("list %v", list)
	}

	// Update.
	bad := catGroup("g", "invoice")
	_, err = groupsOf(ts).UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: bad})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	bad = catGroup("g", "order")
	bad.Start = &esdv1.Group_FromEnd{FromEnd: &emptypb.Empty{}}
	_, err = groupsOf(ts).UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: bad})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = groupsOf(ts).UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: catGroup("nope", "order")})
	wantError(t, err, codes.NotFound, reasonGroupNotFound, "")
	// The strategy orders events in flight: it cannot change.
	_, err = groupsOf(ts).UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: catGroup("g", "order")})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	up := catGroup("g", "order")
	up.Strategy = esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM
	up.AckTimeout, up.MaxDeliveries = durationpb.New(150*time.Millisecond), 5
	uresp, err := groupsOf(ts).UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: up})
	if err != nil {
		t.Fatal(err)
	}
	up.MaxInFlight = 1000 // the default of what the update left out
	if diff := cmp.Diff(up, uresp.GetInfo().GetGroup(), cmpProto); diff != "" {
		t.Errorf("updated group (-want +got):\n%s", diff)
	}
	newID := ts.fill(t, "order-2", 1, "Placed")[0]
	start := time.Now()
	if d := m.recv(t); d.GetEvent().GetId() != newID {
		t.Fatalf("got %s", d.GetEvent().GetId())
	}
	if d := m.recv(t); d.GetEvent().GetId() != newID || d.GetDeliveryCount() != 2 || time.Since(start) > 5*time.Second {
		t.Fatalf("under the new ack_timeout: %s count %d after %v", d.GetEvent().GetId(), d.GetDeliveryCount(), time.Since(start))
	}
	m.ack(newID)

	// Delete ends the members and removes everything of the group.
	if _, err := groupsOf(ts).DeleteGroup(ctx, &esdv1.DeleteGroupRequest{Name: "g"}); err != nil {
		t.Fatal(err)
	}
	if msg := errorMismatch(m.ended(t), codes.NotFound, reasonGroupNotFound, ""); msg != "" {
		t.Errorf("member of a deleted group: %s", msg)
	}
	_, err = groupsOf(ts).GetGroup(ctx, &esdv1.GetGroupRequest{Name: "g"})
	wantError(t, err, codes.NotFound, reasonGroupNotFound, "")
	_, err = groupsOf(ts).ListParked(ctx, &esdv1.ListParkedRequest{Group: "g"})
	wantError(t, err, codes.NotFound, reasonGroupNotFound, "")
	_, err = groupsOf(ts).ReplayParked(ctx, &esdv1.ReplayParkedRequest{Group: "g"})
	wantError(t, err, codes.NotFound, reasonGroupNotFound, "")
	_, err = groupsOf(ts).DeleteGroup(ctx, &esdv1.DeleteGroupRequest{Name: "g"})
	wantError(t, err, codes.NotFound, reasonGroupNotFound, "")
	wantError(t, joinError(t, groupsOf(ts), joinMsg("g")), codes.NotFound, reasonGroupNotFound, "")
	info = createGroup(t, ts, catGroup("g", "order"))
	if info.GetCheckpoint() != 0 || info.GetParked() != 0 || info.GetDelivered() != 0 || len(listParked(t, ts, "g")) != 0 {
		t.Fatalf("new group g: %v", info)
	}
	m = join(t, groupsOf(ts), "g")
	if d := m.recv(t); d.GetEvent().GetId() != ids[0] || d.GetDeliveryCount() != 1 {
		t.Fatalf("new group g starts with %v", d)
	}

	// Start options.
	last := ts.lastPosition(t)
	fe := catGroup("fe", "order")
	fe.Start = &esdv1.Group_FromEnd{FromEnd: &emptypb.Empty{}}
	if i := createGroup(t, ts, fe); i.GetCheckpoint() != last {
		t.Errorf("from_end: checkpoint %d, want %d", i.GetCheckpoint(), last)
	}
	ap := catGroup("ap", "order")
	ap.Start = &esdv1.Group_AfterPosition{AfterPosition: 2}
	if i := createGroup(t, ts, ap); i.GetCheckpoint() != 2 {
		t.Errorf("after_position: checkpoint %d", i.GetCheckpoint())
	}
	fs := catGroup("fs", "order")
	fs.Start = &esdv1.Group_FromStart{FromStart: &emptypb.Empty{}}
	createGroup(t, ts, fs)
	mfe, map_, mfs := join(t, groupsOf(ts), "fe"), join(t, groupsOf(ts), "ap"), join(t, groupsOf(ts), "fs")
	if d := map_.recv(t); d.GetEvent().GetPosition() != 3 {
		t.Errorf("after_position 2 starts at %d", d.GetEvent().GetPosition())
	}
	if d := mfs.recv(t); d.GetEvent().GetPosition() != 1 {
		t.Errorf("from_start starts at %d", d.GetEvent().GetPosition())
	}
	mfe.noDelivery(t, 200*time.Millisecond)
	nid := ts.fill(t, "order-9", 1, "Placed")[0]
	if d := mfe.recv(t); d.GetEvent().GetId() != nid {
		t.Errorf("from_end delivered %v", d)
	}

	// Groups survive a restart: settings, checkpoint, parked list.
	quiesce(t, ts.reg, m, mfe, map_, mfs)
	before, err := groupsOf(ts).ListGroups(ctx, &esdv1.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ts.restart()
	after, err := groupsOf(ts).ListGroups(testCtx(t), &esdv1.ListGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.GetGroups()) != len(before.GetGroups()) {
		t.Fatalf("%d groups after restart, %d before", len(after.GetGroups()), len(before.GetGroups()))
	}
	for i, b := range before.GetGroups() {
		a := after.GetGroups()[i]
		if diff := cmp.Diff(b.GetGroup(), a.GetGroup(), cmpProto); diff != "" {
			t.Errorf("group %s after restart (-before +after):\n%s", b.GetGroup().GetName(), diff)
		}
		if a.GetParked() != b.GetParked() || a.GetCheckpoint() < b.GetCheckpoint() {
			t.Errorf("group %s: parked %d checkpoint %d after restart, %d and %d before", b.GetGroup().GetName(),
				a.GetParked(), a.GetCheckpoint(), b.GetParked(), b.GetCheckpoint())
		}
	}
}

// TestGroupValidationGRPC: what CreateGroup, UpdateGroup and the other
// calls refuse with INVALID_ARGUMENT, and the field they name.
func TestGroupValidationGRPC(t *testing.T) {
	ts := newTestServer(t)
	ctx := testCtx(t)
	gs := groupsOf(ts)
	with := func(f func(g *esdv1.Group)) *esdv1.Group {
		g := catGroup("v", "order")
		f(g)
		return g
	}
	cases := []struct {
		name  string
		group *esdv1.Group
		field string
	}{
		{"no group", nil, "group"},
		{"empty name", with(func(g *esdv1.Group) { g.Name = "" }), "group.name"},
		{"long name", with(func(g *esdv1.Group) { g.Name = strings.Repeat("n", 129) }), "group.name"},
		{"control character", with(func(g *esdv1.Group) { g.Name = "a\x01b" }), "group.name"},
		{"invalid utf-8", with(func(g *esdv1.Group) { g.Name = "a\xffb" }), "group.name"},
		{"no target", with(func(g *esdv1.Group) { g.Target = nil }), "group.target"},
		{"category with dash", with(func(g *esdv1.Group) { g.Target = &esdv1.Group_Category{Category: "a-b"} }), "group.category"},
		{"empty stream", with(func(g *esdv1.Group) { g.Target = &esdv1.Group_Stream{Stream: ""} }), "group.stream"},
		{"filter on a category", with(func(g *esdv1.Group) { g.Filter = &esdv1.Filter{StreamPrefixes: []string{"x"}} }), "group.filter"},
		{"filter on a stream", with(func(g *esdv1.Group) {
			g.Target, g.Filter = &esdv1.Group_Stream{Stream: "s"}, &esdv1.Filter{StreamPrefixes: []string{"x"}}
		}), "group.filter"},
		{"empty filter prefix", with(func(g *esdv1.Group) {
			g.Target, g.Filter = &esdv1.Group_All{All: &emptypb.Empty{}}, &esdv1.Filter{EventTypePrefixes: []string{""}}
		}), "group.filter.event_type_prefixes[0]"},
		{"ack_timeout too short", with(func(g *esdv1.Group) { g.AckTimeout = durationpb.New(99 * time.Millisecond) }), "group.ack_timeout"},
		{"ack_timeout too long", with(func(g *esdv1.Group) { g.AckTimeout = durationpb.New(time.Hour + time.Second) }), "group.ack_timeout"},
		{"ack_timeout negative", with(func(g *esdv1.Group) { g.AckTimeout = durationpb.New(-time.Second) }), "group.ack_timeout"},
		{"ack_timeout malformed", with(func(g *esdv1.Group) { g.AckTimeout = &durationpb.Duration{Seconds: 1, Nanos: -5} }), "group.ack_timeout"},
		{"max_deliveries", with(func(g *esdv1.Group) { g.MaxDeliveries = 1001 }), "group.max_deliveries"},
		{"max_in_flight", with(func(g *esdv1.Group) { g.MaxInFlight = 100_001 }), "group.max_in_flight"},
		{"strategy", with(func(g *esdv1.Group) { g.Strategy = 7 }), "group.strategy"},
	}
	fields := func(err error) []string {
		var out []string
		for _, v := range badRequest(err).GetFieldViolations() {
			out = append(out, v.GetField())
		}
		return out
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := gs.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: c.group})
			wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
			if fs := fields(err); len(fs) == 0 || fs[0] != c.field {
				t.Errorf("create: fields %v, want %s", fs, c.field)
			}
			_, err = gs.UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: c.group})
			wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
		})
	}
	// The edges that are valid.
	for i, g := range []*esdv1.Group{
		with(func(g *esdv1.Group) { g.AckTimeout = durationpb.New(100 * time.Millisecond) }),
		with(func(g *esdv1.Group) { g.AckTimeout = durationpb.New(time.Hour) }),
		with(func(g *esdv1.Group) { g.AckTimeout = durationpb.New(0) }),
		with(func(g *esdv1.Group) { g.Name = strings.Repeat("ü", 64) }), // 128 bytes
		with(func(g *esdv1.Group) { g.MaxDeliveries, g.MaxInFlight = 1000, 100_000 }),
		with(func(g *esdv1.Group) {
			g.Target, g.Filter = &esdv1.Group_All{All: &emptypb.Empty{}}, &esdv1.Filter{StreamPrefixes: []string{"order-"}}
		}),
		with(func(g *esdv1.Group) { g.Target = &esdv1.Group_Stream{Stream: "order-1"} }),
	} {
		if g.GetName() == "v" {
			g.Name = fmt.Sprintf("valid-%d", i)
		}
		if _, err := gs.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: g}); err != nil {
			t.Errorf("valid group %v: %v", g, err)
		}
	}
	// Names elsewhere.
	_, err := gs.GetGroup(ctx, &esdv1.GetGroupRequest{Name: ""})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = gs.DeleteGroup(ctx, &esdv1.DeleteGroupRequest{Name: "a\nb"})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = gs.ListParked(ctx, &esdv1.ListParkedRequest{Group: ""})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = gs.ListParked(ctx, &esdv1.ListParkedRequest{Group: "valid-0", PageToken: "x"})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = gs.ReplayParked(ctx, &esdv1.ReplayParkedRequest{Group: strings.Repeat("n", 129)})
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	_, err = gs.GetGroup(ctx, &esdv1.GetGroupRequest{Name: "missing"})
	wantError(t, err, codes.NotFound, reasonGroupNotFound, "")
}

// TestGroupJoinValidationGRPC: Join refuses a first message that is not
// join, a second join, an empty message, a bad group name, malformed ack
// or nack ids (INVALID_ARGUMENT), an unknown group (GROUP_NOT_FOUND); a
// member refused that way hands its deliveries to the others.
func TestGroupJoinValidationGRPC(t *testing.T) {
	ts := newTestServer(t)
	createGroup(t, ts, catGroup("g", "order"))
	gs := groupsOf(ts)
	inv := func(name string, err error) {
		t.Helper()
		if msg := errorMismatch(err, codes.InvalidArgument, reasonInvalidArgument, ""); msg != "" {
			t.Errorf("%s: %s", name, msg)
		}
	}
	inv("ack first", joinError(t, gs, ackMsg(newID())))
	inv("empty first", joinError(t, gs, &esdv1.JoinRequest{}))
	inv("empty group", joinError(t, gs, joinMsg("")))
	inv("control character", joinError(t, gs, joinMsg("g\x00")))
	if msg := errorMismatch(joinError(t, gs, joinMsg("nope")), codes.NotFound, reasonGroupNotFound, ""); msg != "" {
		t.Errorf("unknown group: %s", msg)
	}

	// A member refused for a malformed ack hands its event to the others.
	ids := ts.fill(t, "order-1", 1, "Placed")
	m0, err := tryJoin(gs, "g")
	if err != nil {
		t.Fatal(err)
	}
	defer m0.cancel()
	if d := m0.recv(t); d.GetEvent().GetId() != ids[0] {
		t.Fatalf("m0 got %v", d)
	}
	other := join(t, gs, "g")
	if err := m0.send(ackMsg("not-a-uuid")); err != nil {
		t.Fatal(err)
	}
	inv("malformed ack id", m0.ended(t))
	d := other.recv(t)
	if d.GetEvent().GetId() != ids[0] || d.GetDeliveryCount() != 2 {
		t.Fatalf("other got %v", d)
	}
	other.ack(ids[0])
	eventually(t, "acknowledged", func() bool { i := getGroup(t, ts, "g"); return i.GetCheckpoint() == 1 && i.GetParked() == 0 })

	for _, c := range []struct {
		name string
		msg  *esdv1.JoinRequest
	}{
		{"second join", joinMsg("g")},
		{"empty message", &esdv1.JoinRequest{}},
		{"ack id without dashes", ackMsg(strings.ReplaceAll(ids[0], "-", "") + "abcd")},
		{"ack id not hex", ackMsg("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz")},
		{"malformed nack id", nackMsg(esdv1.NackAction_NACK_ACTION_PARK, "", newID(), "zz")},
	} {
		m, err := tryJoin(gs, "g")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.send(c.msg); err != nil {
			t.Fatalf("%s: send: %v", c.name, err)
		}
		inv(c.name, m.ended(t))
		m.cancel()
	}
	if i := getGroup(t, ts, "g"); i.GetMembers() != 1 {
		t.Errorf("%d members, want 1", i.GetMembers())
	}
	quiesce(t, ts.reg, other)
}

// --- clean ends ---

// rawServer is a server on its own bufconn listener, so that a test can
// open several client connections and close one abruptly.
type rawServer struct {
	lis    *bufconn.Listener
	log    *eslog.Log
	reg    *prometheus.Registry
	cancel context.CancelFunc
	served chan error
}

func startRaw(t *testing.T) *rawServer {
	t.Helper()
	lg := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	reg := prometheus.NewRegistry()
	eng, err := engine.Open(engine.Config{Dir: t.TempDir(), Logger: lg, Registerer: reg, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	l := eng.Log()
	srv, err := New(eng, Config{Version: "test"}, lg, reg)
	if err != nil {
		_ = eng.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rawServer{lis: bufconn.Listen(1 << 20), log: l, reg: reg, cancel: cancel, served: make(chan error, 1)}
	go func() { r.served <- srv.Serve(ctx, r.lis) }()
	t.Cleanup(func() {
		r.cancel()
		if err := <-r.served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := eng.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	return r
}

func (r *rawServer) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return r.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestGroupJoinClosedBeforeJoinGRPC: a client that closes its side of Join
// before sending join has left: the RPC ends with OK, not INTERNAL, and the
// server logs no error.
func TestGroupJoinClosedBeforeJoinGRPC(t *testing.T) {
	ts := newTestServer(t, withObservedLogs())
	createGroup(t, ts, catGroup("g", "order"))
	st, err := groupsOf(ts).Join(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Join closed before join: got %v, %v; want the end of the stream with OK", r, err)
	}
	// The server logs a failed RPC before it sends the status: the log is
	// complete now.
	errs := ts.logs.Filter(func(e observer.LoggedEntry) bool { return e.Level >= zap.ErrorLevel })
	for _, e := range errs.All() {
		t.Errorf("logged %s: %s %v", e.Level, e.Message, e.ContextMap())
	}
	if i := getGroup(t, ts, "g"); i.GetMembers() != 0 {
		t.Errorf("%d members, want 0", i.GetMembers())
	}
}

// TestGroupAbruptDisconnectGRPC: a member whose connection closes with
// events in hand leaves the group; its events go to the others at once
// (not after ack_timeout).
func TestGroupAbruptDisconnectGRPC(t *testing.T) {
	r := startRaw(t)
	c1, c2 := r.dial(t), r.dial(t)
	defer c2.Close()
	g1, g2 := esdv1.NewConsumerGroupServiceClient(c1), esdv1.NewConsumerGroupServiceClient(c2)
	ctx := testCtx(t)
	g := catGroup("g", "order")
	g.AckTimeout = durationpb.New(time.Hour)
	if _, err := g2.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: g}); err != nil {
		t.Fatal(err)
	}
	a := join(t, g1, "g")
	resp, err := esdv1.NewStreamServiceClient(c2).Append(ctx, appendReq("order-1", xAny, events(4, "Placed")...))
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for range 4 {
		held[a.recv(t).GetEvent().GetId()] = true
	}
	b := join(t, g2, "g")
	if err := c1.Close(); err != nil { // a vanishes
		t.Fatal(err)
	}
	start := time.Now()
	for range 4 {
		d := b.recv(t)
		if !held[d.GetEvent().GetId()] || d.GetDeliveryCount() != 2 {
			t.Fatalf("b got %v", d)
		}
		b.ack(d.GetEvent().GetId())
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("handed over after %v", el)
	}
	if err := a.ended(t); status.Code(err) != codes.Canceled && status.Code(err) != codes.Unavailable {
		t.Errorf("a's stream ended with %v", err)
	}
	eventually(t, "one member, all acknowledged", func() bool {
		i, err := g2.GetGroup(ctx, &esdv1.GetGroupRequest{Name: "g"})
		return err == nil && i.GetInfo().GetMembers() == 1 && i.GetInfo().GetCheckpoint() == resp.GetLastPosition()
	})
	quiesce(t, r.reg, b)
}

// TestGroupShutdownWithMembersGRPC: a server shutting down with members
// connected ends their streams with UNAVAILABLE/SHUTTING_DOWN and stores
// the checkpoints: what was acknowledged is not delivered again.
func TestGroupShutdownWithMembersGRPC(t *testing.T) {
	ts := newTestServer(t)
	ids := ts.fill(t, "order-1", 6, "Placed")
	createGroup(t, ts, catGroup("g", "order"))
	createGroup(t, ts, catGroup("h", "order"))
	gs := groupsOf(ts)
	a, b, h := join(t, gs, "g"), join(t, gs, "g"), join(t, gs, "h")
	// a and b acknowledge positions 1 to 4 and hold 5 and 6.
	for n, deadline := 0, time.Now().Add(rpcTimeout); n < 6; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 6 events delivered", n)
		}
		for _, m := range []*gmember{a, b} {
			if d, ok := m.recvWithin(20 * time.Millisecond); ok {
				n++
				if d.GetEvent().GetPosition() <= 4 {
					m.ack(d.GetEvent().GetId())
				}
			}
		}
	}
	h.recv(t) // h holds one, acks nothing
	eventually(t, "checkpoint 4", func() bool { return getGroup(t, ts, "g").GetCheckpoint() == 4 })
	if err := ts.stopServing(); err != nil { // shutdown with members connected
		t.Fatal(err)
	}
	for _, m := range []*gmember{a, b, h} {
		wantShuttingDown(t, m.ended(t))
	}
	ts.restart()
	if i := getGroup(t, ts, "g"); i.GetCheckpoint() != 4 || i.GetMembers() != 0 {
		t.Errorf("after restart: %v", i)
	}
	m := join(t, groupsOf(ts), "g")
	for _, want := range ids[4:] {
		if d := m.recv(t); d.GetEvent().GetId() != want || d.GetDeliveryCount() != 1 {
			t.Errorf("after restart got %v, want %s", d, want)
		}
	}
	if hi := getGroup(t, ts, "h"); hi.GetCheckpoint() != 0 {
		t.Errorf("h checkpoint %d, want 0", hi.GetCheckpoint())
	}
	mh := join(t, groupsOf(ts), "h")
	if d := mh.recv(t); d.GetEvent().GetId() != ids[0] || d.GetDeliveryCount() != 1 {
		t.Errorf("h after restart: %v", d)
	}
}

// TestGroupParkedEventDeletedGRPC: a parked event whose stream is deleted
// since stays listed with its position only (the proto's choice: it stays
// until the group goes); a replay cannot deliver it.
func TestGroupParkedEventDeletedGRPC(t *testing.T) {
	ts := newTestServer(t)
	ids := ts.fill(t, "order-7", 1, "Placed")
	createGroup(t, ts, catGroup("g", "order"))
	m := join(t, groupsOf(ts), "g")
	m.nack(esdv1.NackAction_NACK_ACTION_PARK, "gone soon", m.recv(t).GetEvent().GetId())
	eventually(t, "parked", func() bool { return getGroup(t, ts, "g").GetParked() == 1 })
	ts.mustDelete(t, "order-7", false)
	ps := listParked(t, ts, "g")
	if len(ps) != 1 || ps[0].GetEvent().GetPosition() != 1 || ps[0].GetEvent().GetId() != "" || ps[0].GetReason() != "gone soon" {
		t.Fatalf("parked event of a deleted stream: %v (id was %s)", ps, ids[0])
	}
	if _, err := groupsOf(ts).ReplayParked(testCtx(t), &esdv1.ReplayParkedRequest{Group: "g"}); err != nil {
		t.Fatal(err)
	}
	m.noDelivery(t, 200*time.Millisecond)
	if i := getGroup(t, ts, "g"); i.GetParked() != 1 {
		t.Errorf("parked %d", i.GetParked())
	}
	quiesce(t, ts.reg, m)
}
