package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/esdhq/esd/client"
	"github.com/esdhq/esd/internal/benchstat"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Workloads of esctl bench.
const (
	workloadAppend     = benchstat.WorkloadAppend
	workloadContention = benchstat.WorkloadContention
	workloadReadStream = benchstat.WorkloadReadStream
	workloadReadAll    = "read-all"
	workloadCatchUp    = "catch-up"
)

var benchWorkloads = []string{workloadAppend, workloadContention, workloadReadStream, workloadReadAll, workloadCatchUp}

// What --prepare writes: batches of prepareBatch events; for read-all over
// prepareStreams streams by prepareClients concurrent clients.
const (
	prepareBatch   = 500
	prepareStreams = 100
	prepareClients = 16
	benchEventType = "BenchEvent"
)

type benchOptions struct {
	duration time.Duration
	warmup   time.Duration
	count    int64
	clients  int
	conns    int
	batch    int
	streams  int
	keys     int
	delta    int // contention: conflict_delta_events; -1 = unset
	size     int
	prefix   string
	noIDs    bool
	stream   string
	prepare  int
	repeat   int
	// append over AppendStream, with up to inflight appends in flight
	// per client
	streaming bool
	inflight  int
}

func (a *app) newBenchCmd() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench WORKLOAD",
		Short: "Load-test the server (append, contention, read-stream, read-all, catch-up)",
		Long: `Load-test the server and report throughput and per-call latency.

Workloads:
  append       each client appends --batch events per call to its own share of
               --streams streams, tracking exact expected revisions
  contention   all clients append to only --keys streams, each expecting the
               head it last saw; a WRONG_EXPECTED_REVISION is a conflict and
               is retried at the head the server reported (the conflict
               lists no events unless --delta-events asks for them)
  read-stream  reads one stream (--stream, or --prepare N fresh events) start
               to end, over and over
  read-all     reads $all start to end (--prepare N fills it first)
  catch-up     subscribes to $all from the start and reads to caught_up, as
               a read model replays the log (--prepare N fills it first)

With --streaming, each append client opens one AppendStream call and keeps
up to --inflight appends in flight on it (at most one per stream), instead of
making one unary Append call at a time; latency is then from an append's
send to its answer.

The bench checks what it can: appends must land at the expected revision,
reads must come in order (and without gaps for read-stream). It exits 1 when
any call failed.`,
		Example: `  esctl bench append -c 64 -b 10 -d 30s
  esctl bench append -c 8 --streaming --inflight 64
  esctl bench contention -c 16 -k 1 -o json
  esctl bench read-stream --prepare 100000 --repeat 5`,
		ValidArgs: benchWorkloads,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runBench(cmd.Context(), args[0], o)
		}),
	}
	f := cmd.Flags()
	f.DurationVarP(&o.duration, "duration", "d", 10*time.Second, "how long to run after the warmup (0 = until --count or --repeat)")
	f.DurationVar(&o.warmup, "warmup", time.Second, "run this long first without counting")
	f.Int64VarP(&o.count, "count", "n", 0, "stop after this many measured calls (reads for read workloads) over all clients (0 = no limit)")
	f.IntVarP(&o.clients, "clients", "c", 0, "concurrent clients (default 64 for append and contention, 1 for reads)")
	f.IntVar(&o.conns, "conns", 4, "gRPC connections, shared round-robin by the clients")
	f.IntVarP(&o.batch, "batch", "b", 1, "events per append (append: 0 sends empty appends, which check the expected revision and write nothing: the request path without the disk)")
	f.IntVarP(&o.streams, "streams", "s", 10000, "append: streams written to")
	f.IntVarP(&o.keys, "keys", "k", 8, "contention: streams contended for")
	f.IntVar(&o.delta, "delta-events", 0, "contention: events a conflict lists (the request's conflict_delta_events; the worker needs only the head); -1 leaves it unset, for the server's default of 16")
	f.IntVar(&o.size, "size", 256, "bytes of data per event")
	f.StringVar(&o.prefix, "stream-prefix", "", "prefix of the bench's stream names (default bench-<random>)")
	f.BoolVar(&o.noIDs, "no-ids", false, "let the server make event ids")
	f.StringVar(&o.stream, "stream", "", "read-stream: the stream to read")
	f.IntVar(&o.prepare, "prepare", 0, "read workloads: first append this many events and read them")
	f.IntVar(&o.repeat, "repeat", 0, "read workloads: reads per client instead of --duration (0 = for the duration)")
	f.BoolVar(&o.streaming, "streaming", false, "append: each client appends over one AppendStream call instead of unary Append calls")
	f.IntVar(&o.inflight, "inflight", 32, "append --streaming: appends each client keeps in flight (at most one per stream)")
	return cmd
}

// check validates the options for the workload and fills in defaults.
func (o *benchOptions) check(workload string) error {
	reads := workload == workloadReadStream || workload == workloadReadAll || workload == workloadCatchUp
	if o.clients == 0 {
		o.clients = 64
		if reads {
			o.clients = 1
		}
	}
	if o.prefix == "" {
		o.prefix = benchstat.StreamPrefix()
	}
	switch {
	case o.clients < 1:
		return usagef("--clients must be at least 1")
	case o.conns < 1:
		return usagef("--conns must be at least 1")
	case o.batch < 0, o.batch == 0 && workload != workloadAppend:
		return usagef("--batch must be at least 1 (0, empty appends, only for the append workload)")
	case o.streams < 1:
		return usagef("--streams must be at least 1")
	case o.keys < 1:
		return usagef("--keys must be at least 1")
	case o.delta < -1:
		return usagef("--delta-events must be -1 (unset) or more")
	case o.size < 0, o.count < 0, o.prepare < 0, o.repeat < 0, o.duration < 0, o.warmup < 0:
		return usagef("--size, --count, --prepare, --repeat, --duration and --warmup must not be negative")
	case o.duration == 0 && o.count == 0 && (o.repeat == 0 || !reads):
		return usagef("--duration 0 needs --count (or --repeat for reads) to end the run")
	case workload == workloadReadStream && o.stream == "" && o.prepare == 0:
		return usagef("read-stream needs --stream NAME or --prepare N")
	case workload == workloadReadStream && o.stream != "" && o.prepare > 0:
		return usagef("--stream and --prepare exclude each other (--prepare writes a fresh stream)")
	case !reads && (o.stream != "" || o.prepare > 0 || o.repeat > 0):
		return usagef("--stream, --prepare and --repeat are for the read workloads")
	case o.streaming && workload != workloadAppend:
		return usagef("--streaming is for the append workload")
	case o.streaming && o.inflight < 1:
		return usagef("--inflight must be at least 1")
	}
	return nil
}

// bench is one run: its connections, its payload and what it reports.
type bench struct {
	app      *app
	workload string
	o        benchOptions
	clis     []*client.Client   // closed by close
	conns    []*grpc.ClientConn // of clis, for the stubs
	payload  []byte             // random, made once, shared read-only by every request
	report   benchReport
	closers  []func() // end the workers' calls (AppendStream), before the connections close
}

func (a *app) runBench(ctx context.Context, workload string, o benchOptions) error {
	if err := o.check(workload); err != nil {
		return err
	}
	b := &bench{app: a, workload: workload, o: o, payload: make([]byte, o.size)}
	_, _ = crand.Read(b.payload) // never fails (crypto/rand panics instead)
	defer b.close()
	if err := b.connect(ctx); err != nil {
		return err
	}
	workers, err := b.setup(ctx)
	if err != nil {
		return err
	}
	stats, elapsed, err := b.run(ctx, workers)
	if err != nil {
		return err
	}
	b.report.Fill(stats, elapsed)
	if err := a.printBenchReport(&b.report); err != nil {
		return err
	}
	if b.report.Errors > 0 {
		return fmt.Errorf("bench: %d errors in %d calls", b.report.Errors, b.report.Ops)
	}
	return nil
}

// connect dials --conns connections (one HTTP/2 connection is served by
// one core at a time, so one is not enough to load a server) and makes a
// first call on each, so connection setup is not measured and a dead
// server is reported at once.
func (b *bench) connect(ctx context.Context) error {
	for range b.o.conns {
		// The connections come from the client, as esctl's others do
		// (address, TLS, token); the workloads call the stubs on them, as
		// they measure the server, not the client.
		cli, err := client.Dial(b.app.addr, b.app.clientOptions(client.WithDialOptions(
			// Large flow-control windows and buffers: a read streams many
			// MiB, which default 64 KiB windows cut into small writes and
			// wake-ups on both sides.
			grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(16<<20),
			grpc.WithReadBufferSize(256<<10),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20))))...)
		if err != nil {
			return &usageError{err}
		}
		b.clis = append(b.clis, cli)
		conn := cli.Conn()
		b.conns = append(b.conns, conn)
		cctx, cancel := b.app.callCtx(ctx)
		info, err := esdv1.NewAdminServiceClient(conn).GetServerInfo(cctx, &esdv1.GetServerInfoRequest{})
		cancel()
		switch {
		case status.Code(err) == codes.Unimplemented, status.Code(err) == codes.PermissionDenied:
			// Answered, so connected (and, refused for want of admin, the
			// caller authenticated: a token that may only append or read
			// runs the workloads); the version stays unknown.
		case err != nil:
			return err
		default:
			b.report.ServerVersion = info.GetVersion()
		}
	}
	return nil
}

func (b *bench) close() {
	for _, c := range b.closers {
		c()
	}
	for _, c := range b.clis {
		_ = c.Close()
	}
}

// client returns the stream client of connection i, round-robin.
func (b *bench) client(i int) esdv1.StreamServiceClient {
	return esdv1.NewStreamServiceClient(b.conns[i%len(b.conns)])
}

// newEvents makes n event templates sharing the payload.
func (b *bench) newEvents(n int) []*esdv1.ProposedEvent {
	evs := make([]*esdv1.ProposedEvent, n)
	for i := range evs {
		evs[i] = &esdv1.ProposedEvent{Type: benchEventType, Data: b.payload}
	}
	return evs
}

func (b *bench) newIDGen() *idGen {
	if b.o.noIDs {
		return nil
	}
	return newIDGen()
}

// setup fills the report's parameters, prepares data for the read
// workloads and builds one worker per client.
func (b *bench) setup(ctx context.Context) ([]benchWorker, error) {
	o := &b.o
	b.report = benchReport{
		ServerName: "esd", Workload: b.workload, Addr: b.app.addr, ServerVersion: b.report.ServerVersion,
		Clients: o.clients, Conns: o.conns, Size: o.size, ClientIDs: !o.noIDs,
		StreamPrefix: o.prefix, Count: o.count, Repeat: o.repeat,
		DurationSec: o.duration.Seconds(), WarmupSec: o.warmup.Seconds(),
	}
	workers := make([]benchWorker, o.clients)
	switch b.workload {
	case workloadAppend:
		b.report.Batch, b.report.Streams = o.batch, o.streams
		if o.streaming {
			b.report.Streaming, b.report.Inflight = true, o.inflight
		}
		for i := range workers {
			if !o.streaming {
				workers[i] = b.newAppendWorker(i)
				continue
			}
			w, err := b.newStreamAppendWorker(ctx, i)
			if err != nil {
				return nil, err
			}
			workers[i] = w
		}
	case workloadContention:
		b.report.Batch, b.report.Keys = o.batch, o.keys
		if o.delta >= 0 {
			b.report.DeltaEvents = &o.delta
		}
		for i := range workers {
			workers[i] = b.newContentionWorker(i)
		}
	case workloadReadStream:
		want, err := b.prepareReadStream(ctx)
		if err != nil {
			return nil, err
		}
		for i := range workers {
			workers[i] = &readStreamWorker{
				cli:  b.client(i),
				req:  &esdv1.ReadStreamRequest{Stream: b.report.Stream},
				want: want,
			}
		}
	case workloadReadAll, workloadCatchUp:
		if err := b.prepareReadAll(ctx); err != nil {
			return nil, err
		}
		b.report.Prepared = o.prepare
		for i := range workers {
			if b.workload == workloadCatchUp {
				workers[i] = &catchUpWorker{cli: b.client(i), atLeast: int64(o.prepare)}
			} else {
				workers[i] = &readAllWorker{cli: b.client(i), req: &esdv1.ReadAllRequest{}, atLeast: int64(o.prepare)}
			}
		}
	}
	return workers, nil
}

// run runs the warmup, whose numbers are dropped, then the measured phase.
// The phases are separate so that a call started in the warmup is never
// half counted, and state (known heads) carries over.
func (b *bench) run(ctx context.Context, workers []benchWorker) (*benchStats, time.Duration, error) {
	if b.o.warmup > 0 {
		if _, _, err := runPhase(ctx, workers, time.Now().Add(b.o.warmup), nil, 0); err != nil {
			return nil, 0, err
		}
	}
	var until time.Time
	if b.o.duration > 0 && b.o.repeat == 0 { // --repeat replaces the duration
		until = time.Now().Add(b.o.duration)
	}
	var budget *atomic.Int64
	if b.o.count > 0 {
		budget = new(atomic.Int64)
		budget.Store(b.o.count)
	}
	stats, elapsed, err := runPhase(ctx, workers, until, budget, b.o.repeat)
	if err != nil {
		return nil, 0, err
	}
	total := &benchStats{}
	for _, s := range stats {
		total.Merge(s)
	}
	return total, elapsed, nil
}

// benchWorker is one simulated client. It is used by one goroutine at a
// time and owns its request messages, reused from call to call.
type benchWorker interface {
	// op makes one call (for reads: one whole read; for streamed appends:
	// sends one append) and records it in st. It returns an error only
	// when the run must stop.
	op(ctx context.Context, st *benchStats) error
}

// benchFinisher is a benchWorker that keeps calls in flight across op
// calls (streamed appends): finish waits for their answers at the end of
// a phase, so that each is counted in the phase that started it.
type benchFinisher interface {
	finish(ctx context.Context, st *benchStats) error
}

// runPhase runs every worker in its own goroutine until the deadline
// (zero: none), the shared call budget (nil: none) or repeat calls each
// (0: no limit) runs out. A worker's fatal error stops them all.
func runPhase(ctx context.Context, workers []benchWorker, until time.Time, budget *atomic.Int64, repeat int) ([]*benchStats, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stats := make([]*benchStats, len(workers))
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	start := time.Now()
	for i, w := range workers {
		st := &benchStats{}
		stats[i] = st
		wg.Go(func() {
			err := func() error {
				for n := 0; repeat == 0 || n < repeat; n++ {
					if !until.IsZero() && !time.Now().Before(until) {
						return nil
					}
					if budget != nil && budget.Add(-1) < 0 {
						return nil
					}
					if err := w.op(ctx, st); err != nil {
						return err
					}
				}
				return nil
			}()
			if f, ok := w.(benchFinisher); ok && err == nil {
				err = f.finish(ctx, st)
			}
			if err != nil {
				errs[i] = err
				cancel()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	return stats, elapsed, benchstat.FirstCause(errs, isCanceled)
}

// isCanceled: a call the run's cancellation ended, as gRPC reports it.
func isCanceled(err error) bool { return status.Code(err) == codes.Canceled }

// stopError says whether a failed call must end the run: the run was
// cancelled, or the server is unreachable (UNAVAILABLE without a reason:
// the transport failed, not the server). Everything else is counted.
func stopError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	st := status.Convert(err)
	if st.Code() == codes.Unavailable && errorReason(st) == "" {
		return err
	}
	return nil
}

// ---- ids ----

// idGen makes UUIDv7 event ids (48 bits of Unix milliseconds, then random
// bits): time-ordered like the server's own, and made with a per-client
// ChaCha8 generator, so ids cost no lock (uuid.NewV7 takes a global one)
// and no system call.
type idGen struct {
	rng *rand.ChaCha8
	u   uuid.UUID
}

func newIDGen() *idGen {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand panics instead)
	return &idGen{rng: rand.NewChaCha8(seed)}
}

// fill gives every event a fresh id; a nil generator leaves ids to the
// server.
func (g *idGen) fill(evs []*esdv1.ProposedEvent) {
	if g == nil {
		return
	}
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixMilli()))
	for _, ev := range evs {
		copy(g.u[:6], ts[2:])
		_, _ = g.rng.Read(g.u[6:])  // never fails
		g.u[6] = g.u[6]&0x0f | 0x70 // version 7
		g.u[8] = g.u[8]&0x3f | 0x80 // RFC 9562 variant
		ev.Id = g.u.String()
	}
}
