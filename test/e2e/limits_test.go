//go:build e2e && linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The hostile-client tests: each starts esd with its default limits (but
// where a test says), measures a well-behaved client's append latency
// alone, then again while hostile clients do their worst, and checks that
//   - the well-behaved client's p99 stays under hostileP99Factor times its
//     unloaded p99 (floored at hostileP99Floor: on a noisy machine an
//     unloaded p99 of a few hundred microseconds is not a baseline);
//   - none of its appends fails, and every one acknowledged reads back;
//   - esd's peak resident memory (VmHWM) stays under hostileMaxRSS.
//
// esd is built without -race here: the race detector's shadow memory
// would be most of what is measured.
const (
	hostileBaseline  = 300 // unloaded appends measured
	hostileP99Factor = 3
	hostileP99Floor  = 2 * time.Millisecond
	hostileLoaded    = 300              // appends measured under load
	hostileLoadedFor = 10 * time.Second // or for this long, when fewer
	hostileMaxRSS    = 1 << 30

	hostileManyEventsEvery = 500 * time.Millisecond
)

var (
	plainOnce sync.Once
	plainBin  string
	plainErr  error
)

// plainESD is esd built without -race.
func plainESD(t *testing.T) string {
	t.Helper()
	if !testutil.RaceEnabled {
		return esdBin
	}
	plainOnce.Do(func() {
		// Next to the other binaries: TestMain removes their directory.
		dir := filepath.Join(filepath.Dir(esdBin), "plain")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			plainErr = err
			return
		}
		plainBin, plainErr = filepath.Join(dir, "esd"), goBuild(dir, false, "./cmd/esd")
	})
	if plainErr != nil {
		t.Fatal(plainErr)
	}
	return plainBin
}

// probe is the well-behaved client: one-event appends of 1 byte to its own
// stream, on its own connection, each with a deadline of probeTimeout.
type probe struct {
	c       *client
	acked   []string // ids acknowledged
	refused []error  // RESOURCE_EXHAUSTED answers
	fails   []error  // other failures
}

const probeTimeout = 20 * time.Second

func (p *probe) append(ctx context.Context) time.Duration {
	id := uuid.NewString()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	start := time.Now()
	_, err := p.c.streams.Append(ctx, &esdv1.AppendRequest{Stream: "probe-1",
		Events: []*esdv1.ProposedEvent{{Id: id, Type: "Probe", Data: []byte{1}}}})
	d := time.Since(start)
	switch {
	case status.Code(err) == codes.ResourceExhausted:
		p.refused = append(p.refused, err)
	case err != nil:
		p.fails = append(p.fails, err)
	default:
		p.acked = append(p.acked, id)
	}
	return d
}

// run appends n times, or for at most d; it returns the latencies.
func (p *probe) run(ctx context.Context, n int, d time.Duration) []time.Duration {
	var lat []time.Duration
	end := time.Now().Add(d)
	for len(lat) < n && time.Now().Before(end) && ctx.Err() == nil {
		lat = append(lat, p.append(ctx))
	}
	return lat
}

func p99(lat []time.Duration) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}

// hostileCheck says what a hostile test asserts besides the probe's
// appends never being refused or lost: its p99 under load, esd's peak RSS.
type hostileCheck struct{ p99, rss bool }

// hostile runs a hostile-client test: start esd, measure the probe alone,
// start load (which returns once the load is on, and a stop function),
// measure the probe under load, stop the load, measure the probe alone
// again, check. The unloaded p99 is the larger of the two measured alone:
// on a shared, noisy machine the one before the load alone may be a lucky
// one.
func hostile(t *testing.T, flags []string, check hostileCheck, prepare func(p *esdProc), load func(ctx context.Context, p *esdProc) (stop func())) *esdProc {
	t.Helper()
	p := startESDBin(t, plainESD(t), t.TempDir(), flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if prepare != nil {
		prepare(p)
	}
	pr := &probe{c: dial(t, p.Addr)}
	pr.run(ctx, 20, time.Minute) // warm up
	before := p99(pr.run(ctx, hostileBaseline, time.Minute))
	stop := load(ctx, p)
	lat := pr.run(ctx, hostileLoaded, hostileLoadedFor)
	hwm := procStatusKB(t, p.cmd.Process.Pid, "VmHWM") << 10
	stop()
	after := p99(pr.run(ctx, hostileBaseline, time.Minute))
	base, loaded := max(before, after), p99(lat)
	t.Logf("probe p99: %v alone (%v before the load, %v after), %v under load (%d appends); esd peak RSS %d MiB",
		base, before, after, loaded, len(lat), hwm>>20)
	if limit := hostileP99Factor * max(base, hostileP99Floor); check.p99 && loaded > limit {
		t.Errorf("probe p99 under load %v, more than %d x max(%v, %v)", loaded, hostileP99Factor, base, hostileP99Floor)
	}
	if len(pr.refused) > 0 {
		t.Errorf("%d probe appends refused, first: %v", len(pr.refused), pr.refused[0])
	}
	if len(pr.fails) > 0 {
		t.Errorf("%d probe appends failed, first: %v", len(pr.fails), pr.fails[0])
	}
	if check.rss && hwm > hostileMaxRSS {
		t.Errorf("esd peak RSS %d MiB, want under %d MiB", hwm>>20, hostileMaxRSS>>20)
	}
	evs, err := pr.c.readStream(ctx, "probe-1")
	if err != nil {
		t.Fatal(err)
	}
	stored := make(map[string]bool, len(evs))
	for _, e := range evs {
		stored[e.GetId()] = true
	}
	for _, id := range pr.acked {
		if !stored[id] {
			t.Fatalf("acknowledged event %s not read back", id)
		}
	}
	return p
}

// metric sums the samples of a metric whose line contains match.
func metric(t *testing.T, p *esdProc, name, match string) float64 {
	t.Helper()
	_, body := httpGet(t, p.HTTPAddr, "/metrics")
	var v float64
	for _, l := range metricLines(body, name) {
		if !strings.Contains(l, match) {
			continue
		}
		f := strings.Fields(l)
		x, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatal(err)
		}
		v += x
	}
	return v
}

// rawCodec sends pre-encoded requests (a rawRequest) and decodes answers
// as proto, so that the test need not build 3,000,000 event messages.
type rawCodec struct{ encoding.CodecV2 }

type rawRequest []byte

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawRequest); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func rawConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2("proto")}), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestHostileManyEvents: two clients send, again and again, an Append of
// 3,000,000 empty events (a 6 MB message; decoded, about 4 GB). Each is
// refused with TOO_MANY_EVENTS before it is decoded. Each client sends one
// every hostileManyEventsEvery: flat out, the two clients (in this
// process) and esd copying 6 MB messages took this 2-core machine's CPU,
// and the probe's p99 measured that, not esd.
func TestHostileManyEvents(t *testing.T) {
	const n = 3_000_000
	req := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "hostile-1")
	for range n {
		req = protowire.AppendVarint(protowire.AppendTag(req, 6, protowire.BytesType), 0)
	}
	var refused, other atomic.Int64
	var firstRefusal atomic.Int64
	p := hostile(t, nil, hostileCheck{p99: true, rss: true}, nil, func(ctx context.Context, p *esdProc) func() {
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for range 2 {
			conn := rawConn(t, p.Addr)
			wg.Add(1)
			go func() {
				defer wg.Done()
				tick := time.NewTicker(hostileManyEventsEvery)
				defer tick.Stop()
				for ; ctx.Err() == nil; <-tick.C {
					start := time.Now()
					err := conn.Invoke(ctx, esdv1.StreamService_Append_FullMethodName, rawRequest(req), &esdv1.AppendResponse{})
					if status.Code(err) == codes.ResourceExhausted && reasonOf(err) == "TOO_MANY_EVENTS" {
						refused.Add(1)
						firstRefusal.CompareAndSwap(0, int64(time.Since(start)))
					} else if ctx.Err() == nil {
						other.Add(1)
					}
				}
			}()
		}
		testutil.Poll(30*time.Second, func() bool { return refused.Load() >= 2 })
		return func() { cancel(); wg.Wait() }
	})
	t.Logf("%d appends of %d events refused (the first in %v), %d other answers", refused.Load(), n,
		time.Duration(firstRefusal.Load()), other.Load())
	if refused.Load() < 2 || other.Load() > 0 {
		t.Errorf("%d refused, %d other answers: want every one refused with TOO_MANY_EVENTS", refused.Load(), other.Load())
	}
	if got := metric(t, p, "esd_limit_refusals_total", `limit="append_events"`); got < float64(refused.Load()) {
		t.Errorf("esd_limit_refusals_total{limit=append_events} %v, want at least %d", got, refused.Load())
	}
}

// TestHostileSubscribers: 400 subscribers to $all from the start over a
// store of about 100 MiB never read. Each holds at most its share of
// --subscription-memory-bytes; after --subscriber-stall-timeout (3s here)
// each is ended with SUBSCRIBER_TOO_SLOW.
func TestHostileSubscribers(t *testing.T) {
	const subs, conns = 400, 8
	fill := func(p *esdProc) {
		c := dial(t, p.Addr)
		data := make([]byte, 8<<10)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for a := range 32 { // 4 x 32 appends of 100 x 8 KiB: 100 MiB
					req := &esdv1.AppendRequest{Stream: fmt.Sprintf("fill-%d-%d", w, a)}
					for range 100 {
						req.Events = append(req.Events, &esdv1.ProposedEvent{Type: "Fill", Data: data})
					}
					if _, err := c.streams.Append(context.Background(), req); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	ctx, cancel := context.WithCancel(context.Background()) // outlives the probe's
	defer cancel()
	p := hostile(t, []string{"--subscriber-stall-timeout", "3s"}, hostileCheck{p99: true, rss: true}, fill, func(_ context.Context, p *esdProc) func() {
		var cs []esdv1.StreamServiceClient
		for range conns {
			// A fixed window: the client's transport takes 64 KiB of each
			// stream and no more, as a client that does not read.
			conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(16<<20))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			cs = append(cs, esdv1.NewStreamServiceClient(conn))
		}
		for i := range subs {
			_, err := cs[i%conns].Subscribe(ctx, &esdv1.SubscribeRequest{
				Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}},
				From:   &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}}})
			if err != nil {
				t.Fatal(err)
			}
		}
		testutil.Poll(30*time.Second, func() bool { return metric(t, p, "esd_subscription_calls", "") == subs })
		return func() {}
	})
	testutil.Poll(60*time.Second, func() bool { return metric(t, p, "esd_subscription_calls", "") == 0 })
	cut := metric(t, p, "esd_limit_refusals_total", `limit="subscription_memory"`)
	t.Logf("%v of %d stalled subscribers ended SUBSCRIBER_TOO_SLOW; esd peak RSS %d MiB", cut, subs,
		procStatusKB(t, p.cmd.Process.Pid, "VmHWM")>>10)
	if cut != subs {
		t.Errorf("%v subscribers ended SUBSCRIBER_TOO_SLOW, want %d", cut, subs)
	}
}

// TestHostileConnections: 600 idle TCP connections to an esd of
// --max-connections 300 (scaled down from 20,000 against the default).
// Those past the limit are closed at once and counted.
func TestHostileConnections(t *testing.T) {
	const maxConns, open = 300, 600
	var held []net.Conn
	p := hostile(t, []string{"--max-connections", strconv.Itoa(maxConns)}, hostileCheck{p99: true, rss: true}, nil, func(ctx context.Context, p *esdProc) func() {
		for range open {
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
		testutil.Poll(30*time.Second, func() bool {
			return metric(t, p, "esd_limit_refusals_total", `limit="connections"`) >= open-maxConns
		})
		return func() {}
	})
	refused := metric(t, p, "esd_limit_refusals_total", `limit="connections"`)
	t.Logf("%d idle connections: %v refused, %v open", open, refused, metric(t, p, "esd_connections", ""))
	if got := metric(t, p, "esd_connections", ""); got > maxConns {
		t.Errorf("esd_connections %v, more than --max-connections %d", got, maxConns)
	}
	for _, c := range held {
		_ = c.Close()
	}
}

// TestHostileLargeAppends: 24 clients (scaled down from 500), each on its
// own connection, append 4 MiB (4 events of 1 MiB) again and again. The
// probe's 1-byte appends are never refused: large appends get all but an
// eighth of --max-inflight-bytes, and the rest are refused, most before
// they are decoded (and answered after a second's pause, so that clients retrying
// at once do not take the CPU).
//
// Those admitted reach the store at most 4 MiB at once and
// --large-append-rate (16 MiB/s) in all, and wait while Pebble is behind
// (STORE_BEHIND after 5s): without these, the flood outran the store,
// every commit, the probe's too, waited behind Pebble's write stalls and
// the CPU the flood took, and the probe's p99 went from about 3ms to
// seconds, esd's peak RSS past 900 MiB.
//
// esd's peak RSS is asserted, the probe's p99 only measured: on a 2-core
// machine shared with other work it was 0.9-2.4ms under load in 5 runs of
// 6 (1.1-5.1ms alone), and 8.0ms in one, past 3 x the 2ms floor: a probe
// append that follows a 4 MiB commit waits for its WAL write and sync.
func TestHostileLargeAppends(t *testing.T) {
	const clients = 24
	var ok, refused, other atomic.Int64
	hostile(t, nil, hostileCheck{rss: true}, nil, func(ctx context.Context, p *esdProc) func() {
		ctx, cancel := context.WithCancel(ctx)
		data := make([]byte, 1<<20)
		var wg sync.WaitGroup
		for i := range clients {
			c := dial(t, p.Addr)
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := &esdv1.AppendRequest{Stream: fmt.Sprintf("large-%d", i)}
				for range 4 {
					req.Events = append(req.Events, &esdv1.ProposedEvent{Type: "Large", Data: data})
				}
				for ctx.Err() == nil {
					_, err := c.streams.Append(ctx, req)
					switch {
					case err == nil:
						ok.Add(1)
					case status.Code(err) == codes.ResourceExhausted:
						refused.Add(1)
					case ctx.Err() == nil:
						other.Add(1)
					}
				}
			}()
		}
		testutil.Poll(30*time.Second, func() bool { return ok.Load() >= clients })
		return func() { cancel(); wg.Wait() }
	})
	t.Logf("large appends: %d written, %d refused (RESOURCE_EXHAUSTED), %d other errors", ok.Load(), refused.Load(), other.Load())
	if other.Load() > 0 {
		t.Errorf("%d large appends failed otherwise than RESOURCE_EXHAUSTED", other.Load())
	}
}
