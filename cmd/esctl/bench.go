package main

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Workloads of esctl bench.
const (
	workloadAppend     = "append"
	workloadContention = "contention"
	workloadReadStream = "read-stream"
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
	size     int
	prefix   string
	noIDs    bool
	stream   string
	prepare  int
	repeat   int
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
               is retried at the head the server reported
  read-stream  reads one stream (--stream, or --prepare N fresh events) start
               to end, over and over
  read-all     reads $all start to end (--prepare N fills it first)
  catch-up     subscribes to $all from the start and reads to caught_up, as
               a read model replays the log (--prepare N fills it first)

The bench checks what it can: appends must land at the expected revision,
reads must come in order (and without gaps for read-stream). It exits 1 when
any call failed.`,
		Example: `  esctl bench append -c 64 -b 10 -d 30s
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
	f.IntVar(&o.size, "size", 256, "bytes of data per event")
	f.StringVar(&o.prefix, "stream-prefix", "", "prefix of the bench's stream names (default bench-<random>)")
	f.BoolVar(&o.noIDs, "no-ids", false, "let the server make event ids")
	f.StringVar(&o.stream, "stream", "", "read-stream: the stream to read")
	f.IntVar(&o.prepare, "prepare", 0, "read workloads: first append this many events and read them")
	f.IntVar(&o.repeat, "repeat", 0, "read workloads: reads per client instead of --duration (0 = for the duration)")
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
		o.prefix = "bench-" + randomSuffix(6)
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
	}
	return nil
}

func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// bench is one run: its connections, its payload and what it reports.
type bench struct {
	app      *app
	workload string
	o        benchOptions
	conns    []*grpc.ClientConn
	payload  []byte // random, made once, shared read-only by every request
	report   benchReport
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
	b.report.fill(stats, elapsed)
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
		conn, err := grpc.NewClient(b.app.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Large flow-control windows and buffers: a read streams many
			// MiB, which default 64 KiB windows cut into small writes and
			// wake-ups on both sides.
			grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(16<<20),
			grpc.WithReadBufferSize(256<<10),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			return usagef("bad --addr %q: %v", b.app.addr, err)
		}
		b.conns = append(b.conns, conn)
		cctx, cancel := b.app.callCtx(ctx)
		info, err := esdv1.NewAdminServiceClient(conn).GetServerInfo(cctx, &esdv1.GetServerInfoRequest{})
		cancel()
		switch {
		case status.Code(err) == codes.Unimplemented:
			// Answered, so connected; the version stays unknown.
		case err != nil:
			return err
		default:
			b.report.ServerVersion = info.GetVersion()
		}
	}
	return nil
}

func (b *bench) close() {
	for _, c := range b.conns {
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
		Workload: b.workload, Addr: b.app.addr, ServerVersion: b.report.ServerVersion,
		Clients: o.clients, Conns: o.conns, Size: o.size, ClientIDs: !o.noIDs,
		StreamPrefix: o.prefix, Count: o.count, Repeat: o.repeat,
		DurationSec: o.duration.Seconds(), WarmupSec: o.warmup.Seconds(),
	}
	workers := make([]benchWorker, o.clients)
	switch b.workload {
	case workloadAppend:
		b.report.Batch, b.report.Streams = o.batch, o.streams
		for i := range workers {
			workers[i] = b.newAppendWorker(i)
		}
	case workloadContention:
		b.report.Batch, b.report.Keys = o.batch, o.keys
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
		total.merge(s)
	}
	return total, elapsed, nil
}

// benchWorker is one simulated client. It is used by one goroutine at a
// time and owns its request messages, reused from call to call.
type benchWorker interface {
	// op makes one call (for reads: one whole read) and records it in st.
	// It returns an error only when the run must stop.
	op(ctx context.Context, st *benchStats) error
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
			for n := 0; repeat == 0 || n < repeat; n++ {
				if !until.IsZero() && !time.Now().Before(until) {
					return
				}
				if budget != nil && budget.Add(-1) < 0 {
					return
				}
				if err := w.op(ctx, st); err != nil {
					errs[i] = err
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	return stats, elapsed, firstCause(errs)
}

// firstCause picks the error that stopped a phase over the cancellations
// it caused in the other workers.
func firstCause(errs []error) error {
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled:
			canceled = err
		default:
			return err
		}
	}
	return canceled
}

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

// ---- append ----

// appendWorker appends to its own streams (index ≡ client mod clients),
// round-robin, expecting the exact revision it tracks for each.
type appendWorker struct {
	cli      esdv1.StreamServiceClient
	req      *esdv1.AppendRequest
	names    []string
	next     []uint64 // per stream: the revision its next event gets; 0 = never written, expect no_stream
	cur      int
	exact    esdv1.AppendRequest_Exact
	noStream esdv1.AppendRequest_NoStream
	ids      *idGen // nil: the server makes ids
}

func (b *bench) newAppendWorker(i int) *appendWorker {
	w := &appendWorker{
		cli:      b.client(i),
		req:      &esdv1.AppendRequest{Events: b.newEvents(b.o.batch)},
		noStream: esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}},
		ids:      b.newIDGen(),
	}
	for n := i; n < b.o.streams; n += b.o.clients {
		w.names = append(w.names, b.o.prefix+"-"+strconv.Itoa(n))
	}
	if len(w.names) == 0 { // more clients than streams: share by wrapping around
		w.names = []string{b.o.prefix + "-" + strconv.Itoa(i%b.o.streams)}
	}
	w.next = make([]uint64, len(w.names))
	return w
}

func (w *appendWorker) op(ctx context.Context, st *benchStats) error {
	k := w.cur
	w.cur = (w.cur + 1) % len(w.names)
	w.req.Stream = w.names[k]
	if w.next[k] == 0 {
		w.req.ExpectedRevision = &w.noStream
	} else {
		w.exact.Exact = w.next[k] - 1
		w.req.ExpectedRevision = &w.exact
	}
	w.ids.fill(w.req.Events)

	t0 := time.Now()
	resp, err := w.cli.Append(ctx, w.req)
	st.lat.record(time.Since(t0))
	st.ops++
	if err != nil {
		if serr := stopError(ctx, err); serr != nil {
			return serr
		}
		st.addError(errorKey(err))
		// After a conflict, go on from the head the server reported. After
		// any other failure the write may or may not have happened: the
		// next call on this stream finds out through a conflict.
		if exists, head, ok := learnHead(ctx, w.cli, st, w.req.Stream, err); ok {
			w.next[k] = 0
			if exists {
				w.next[k] = head + 1
			}
		}
		return nil
	}
	n := uint64(len(w.req.Events))
	if n == 0 { // --batch 0: a pure condition check, nothing written
		return nil
	}
	st.events += int64(n)
	if resp.GetFirstRevision() != w.next[k] || resp.GetLastRevision() != w.next[k]+n-1 {
		st.addError(errRevisionMismatch)
	}
	w.next[k] = resp.GetLastRevision() + 1
	return nil
}

// learnHead finds a stream's head after a failed append: from the
// WrongExpectedRevision detail of a conflict, or, should the detail be
// missing, from GetStream. ok is false for failures that are not conflicts.
func learnHead(ctx context.Context, cli esdv1.StreamServiceClient, st *benchStats, stream string, err error) (exists bool, head uint64, ok bool) {
	s := status.Convert(err)
	if errorReason(s) != reasonWrongExpectedRevision {
		return false, 0, false
	}
	if d := wrongRevision(s); d != nil {
		return d.GetStreamExists(), d.GetActualHead(), true
	}
	st.addError(errMissingDetail)
	resp, gerr := cli.GetStream(ctx, &esdv1.GetStreamRequest{Stream: stream})
	if gerr != nil {
		st.addError(errorKey(gerr))
		return false, 0, false
	}
	return resp.GetInfo().GetExists(), resp.GetInfo().GetHead(), true
}

// ---- contention ----

// contentionWorker appends to a few shared streams. Each append expects the
// head the worker last knew; a conflict teaches it the new head from the
// error detail and it retries the same events (same ids) at once.
type contentionWorker struct {
	cli      esdv1.StreamServiceClient
	req      *esdv1.AppendRequest
	names    []string
	head     []int64 // per key: the head last seen; -1 = no stream
	cur      int
	retrying bool // the current events failed and are being sent again
	exact    esdv1.AppendRequest_Exact
	noStream esdv1.AppendRequest_NoStream
	ids      *idGen
}

func (b *bench) newContentionWorker(i int) *contentionWorker {
	w := &contentionWorker{
		cli:      b.client(i),
		req:      &esdv1.AppendRequest{Events: b.newEvents(b.o.batch)},
		names:    make([]string, b.o.keys),
		head:     make([]int64, b.o.keys),
		cur:      i % b.o.keys, // spread the clients' first writes over the keys
		noStream: esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}},
		ids:      b.newIDGen(),
	}
	for k := range w.names {
		w.names[k] = b.o.prefix + "-" + strconv.Itoa(k)
		w.head[k] = -1
	}
	return w
}

func (w *contentionWorker) op(ctx context.Context, st *benchStats) error {
	k := w.cur
	w.req.Stream = w.names[k]
	if w.head[k] < 0 {
		w.req.ExpectedRevision = &w.noStream
	} else {
		w.exact.Exact = uint64(w.head[k])
		w.req.ExpectedRevision = &w.exact
	}
	if !w.retrying {
		w.ids.fill(w.req.Events)
	}

	t0 := time.Now()
	resp, err := w.cli.Append(ctx, w.req)
	st.lat.record(time.Since(t0))
	st.ops++
	if err == nil {
		n := uint64(len(w.req.Events))
		st.successes++
		st.events += int64(n)
		if want := uint64(w.head[k] + 1); resp.GetFirstRevision() != want || resp.GetLastRevision() != want+n-1 {
			st.addError(errRevisionMismatch)
		}
		w.head[k] = int64(resp.GetLastRevision())
		w.retrying = false
		w.cur = (w.cur + 1) % len(w.names)
		return nil
	}
	if serr := stopError(ctx, err); serr != nil {
		return serr
	}
	// Retry the same events: after a conflict nothing was written; after
	// another failure the same ids make the retry idempotent.
	w.retrying = true
	if exists, head, ok := learnHead(ctx, w.cli, st, w.req.Stream, err); ok {
		st.conflicts++
		st.retries++
		w.head[k] = -1
		if exists {
			w.head[k] = int64(head)
		}
		return nil
	}
	st.addError(errorKey(err))
	return nil
}

// ---- reads ----

// prepareReadStream returns the number of events every read must return
// (-1 when reading a stream the bench did not write).
func (b *bench) prepareReadStream(ctx context.Context) (int64, error) {
	if b.o.prepare == 0 {
		b.report.Stream = b.o.stream
		cctx, cancel := b.app.callCtx(ctx)
		defer cancel()
		resp, err := b.client(0).GetStream(cctx, &esdv1.GetStreamRequest{Stream: b.o.stream})
		if err != nil {
			return 0, err
		}
		if !resp.GetInfo().GetExists() {
			return 0, fmt.Errorf("stream %q has no events to read", b.o.stream)
		}
		return -1, nil
	}
	b.report.Stream = b.o.prefix + "-read"
	b.report.Prepared = b.o.prepare
	if err := b.fillStream(ctx, b.client(0), b.report.Stream, b.o.prepare); err != nil {
		return 0, err
	}
	return int64(b.o.prepare), nil
}

// fillStream appends n events to a fresh stream in batches, each expecting
// the exact head of the last.
func (b *bench) fillStream(ctx context.Context, cli esdv1.StreamServiceClient, stream string, n int) error {
	req := &esdv1.AppendRequest{Stream: stream}
	evs := b.newEvents(min(n, prepareBatch))
	ids := b.newIDGen()
	var next uint64
	for done := 0; done < n; {
		req.Events = evs[:min(prepareBatch, n-done)]
		ids.fill(req.Events)
		if next == 0 {
			req.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
		} else {
			req.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: next - 1}
		}
		resp, err := b.prepareAppend(ctx, cli, req)
		if err != nil {
			return err
		}
		if resp.GetFirstRevision() != next {
			return fmt.Errorf("prepare %s: append landed at revision %d, want %d", stream, resp.GetFirstRevision(), next)
		}
		next = resp.GetLastRevision() + 1
		done += len(req.Events)
	}
	return nil
}

func (b *bench) prepareAppend(ctx context.Context, cli esdv1.StreamServiceClient, req *esdv1.AppendRequest) (*esdv1.AppendResponse, error) {
	cctx, cancel := b.app.callCtx(ctx)
	defer cancel()
	return cli.Append(cctx, req)
}

// prepareReadAll writes --prepare events over prepareStreams streams with
// prepareClients concurrent clients, batch i going to stream i mod
// prepareStreams. Expected revisions are not checked: several clients
// write to one stream.
func (b *bench) prepareReadAll(ctx context.Context) error {
	n := b.o.prepare
	if n == 0 {
		return nil
	}
	batches := (n + prepareBatch - 1) / prepareBatch
	var nextBatch atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, prepareClients)
	var wg sync.WaitGroup
	for c := range prepareClients {
		wg.Go(func() {
			cli := b.client(c)
			evs := b.newEvents(min(n, prepareBatch))
			ids := b.newIDGen()
			req := &esdv1.AppendRequest{}
			for {
				i := int(nextBatch.Add(1) - 1)
				if i >= batches || ctx.Err() != nil {
					return
				}
				req.Stream = b.o.prefix + "-" + strconv.Itoa(i%prepareStreams)
				req.Events = evs[:min(prepareBatch, n-i*prepareBatch)]
				ids.fill(req.Events)
				if _, err := b.prepareAppend(ctx, cli, req); err != nil {
					errs[c] = err
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstCause(errs)
}

// readStreamWorker reads the stream start to end; revisions must follow
// each other without a gap.
type readStreamWorker struct {
	cli  esdv1.StreamServiceClient
	req  *esdv1.ReadStreamRequest
	want int64 // events each read must return; -1 = unknown
}

func (w *readStreamWorker) op(ctx context.Context, st *benchStats) error {
	t0 := time.Now()
	var n int64
	inOrder := true
	rs, err := w.cli.ReadStream(ctx, w.req)
	if err == nil {
		n, inOrder, err = drain(rs, revisionFollows)
	}
	return recordRead(ctx, st, t0, n, inOrder, w.want >= 0 && n != w.want, err)
}

// readAllWorker reads $all start to end; positions must increase (gaps are
// allowed: deleted streams' events are skipped).
type readAllWorker struct {
	cli     esdv1.StreamServiceClient
	req     *esdv1.ReadAllRequest
	atLeast int64 // events each read must return at least (what --prepare wrote)
}

func (w *readAllWorker) op(ctx context.Context, st *benchStats) error {
	t0 := time.Now()
	var n int64
	inOrder := true
	rs, err := w.cli.ReadAll(ctx, w.req)
	if err == nil {
		n, inOrder, err = drain(rs, positionIncreases)
	}
	return recordRead(ctx, st, t0, n, inOrder, n < w.atLeast, err)
}

// catchUpWorker subscribes to $all from the start and reads up to the
// caught_up marker; positions must increase.
type catchUpWorker struct {
	cli     esdv1.StreamServiceClient
	atLeast int64 // events each catch-up must deliver at least (what --prepare wrote)
}

var subscribeAllFromStart = &esdv1.SubscribeRequest{
	Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}},
	From:   &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}},
}

func (w *catchUpWorker) op(ctx context.Context, st *benchStats) error {
	t0 := time.Now()
	sctx, cancel := context.WithCancel(ctx) // ends the subscription after caught_up
	defer cancel()
	var n int64
	inOrder := true
	ss, err := w.cli.Subscribe(sctx, subscribeAllFromStart)
	for prev := uint64(0); err == nil; {
		var m *esdv1.SubscribeResponse
		if m, err = ss.Recv(); err != nil {
			break
		}
		if m.GetCaughtUp() != nil {
			break
		}
		for _, ev := range m.GetEvents().GetEvents() {
			if n > 0 && ev.GetPosition() <= prev {
				inOrder = false
			}
			prev = ev.GetPosition()
			n++
		}
	}
	return recordRead(ctx, st, t0, n, inOrder, n < w.atLeast, err)
}

// recordRead records a read that began at t0 and delivered n events: its
// latency, and its failure (err), or else whether the events were out of
// order or too few (short).
func recordRead(ctx context.Context, st *benchStats, t0 time.Time, n int64, inOrder, short bool, err error) error {
	st.lat.record(time.Since(t0))
	st.ops++
	st.events += n
	if err != nil {
		if serr := stopError(ctx, err); serr != nil {
			return serr
		}
		st.addError(errorKey(err))
		return nil
	}
	if !inOrder {
		st.addError(errOutOfOrder)
	}
	if short {
		st.addError(errShortRead)
	}
	return nil
}

// eventsResponse is a chunk of ReadStream or ReadAll.
type eventsResponse[T any] interface {
	*T
	GetEvents() []*esdv1.RecordedEvent
}

func revisionFollows(ev, prev *esdv1.RecordedEvent) bool {
	return ev.GetRevision() == prev.GetRevision()+1
}

func positionIncreases(ev, prev *esdv1.RecordedEvent) bool {
	return ev.GetPosition() > prev.GetPosition()
}

// drain reads a server stream to its end, counting events and checking
// each against the one before with follows. It always reads to the end (or
// the first error), so the stream is finished without cancelling.
func drain[T any, P eventsResponse[T]](rs grpc.ServerStreamingClient[T], follows func(ev, prev *esdv1.RecordedEvent) bool) (n int64, inOrder bool, err error) {
	inOrder = true
	var prev *esdv1.RecordedEvent
	for {
		resp, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return n, inOrder, nil
		}
		if err != nil {
			return n, inOrder, err
		}
		for _, ev := range P(resp).GetEvents() {
			if prev != nil && !follows(ev, prev) {
				inOrder = false
			}
			prev = ev
			n++
		}
	}
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

// ---- report ----

func (a *app) printBenchReport(r *benchReport) error {
	switch a.output {
	case formatJSON:
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case formatJSONL:
		return json.NewEncoder(a.stdout).Encode(r)
	}
	tw := newTabWriter(a.stdout)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	server := r.Addr
	if r.ServerVersion != "" {
		server += " (esd " + r.ServerVersion + ")"
	}
	row("workload", "%s", r.Workload)
	row("server", "%s", server)
	row("clients", "%d on %d connections", r.Clients, r.Conns)
	ids := "made by the client"
	if !r.ClientIDs {
		ids = "made by the server"
	}
	switch r.Workload {
	case workloadAppend:
		row("batch", "%d events per call, %d bytes each, ids %s", r.Batch, r.Size, ids)
		row("streams", "%d named %s-N", r.Streams, r.StreamPrefix)
	case workloadContention:
		row("batch", "%d events per call, %d bytes each, ids %s", r.Batch, r.Size, ids)
		row("keys", "%d streams named %s-N", r.Keys, r.StreamPrefix)
	case workloadReadStream:
		row("stream", "%s", r.Stream)
	}
	if r.Prepared > 0 {
		row("prepared", "%d events of %d bytes", r.Prepared, r.Size)
	}
	run := fmt.Sprintf("%gs after %gs warmup, elapsed %.3fs", r.DurationSec, r.WarmupSec, r.ElapsedSec)
	if r.Repeat > 0 {
		run = fmt.Sprintf("%d reads per client after %gs warmup, elapsed %.3fs", r.Repeat, r.WarmupSec, r.ElapsedSec)
	}
	if r.Count > 0 {
		run += fmt.Sprintf(", at most %d calls", r.Count)
	}
	row("run", "%s", run)
	row("ops", "%d (%.1f/s)", r.Ops, r.OpsPerSec)
	row("events", "%d (%.1f/s)", r.Events, r.EventsPerSec)
	if c := r.ContentionReport; c != nil {
		row("successes", "%d (%.1f/s)", c.Successes, c.SuccessesPerSec)
		row("conflicts", "%d (%.1f/s)", c.Conflicts, c.ConflictsPerSec)
		row("retries", "%d (%.3f per success)", c.Retries, c.RetriesPerSuccess)
	}
	row("errors", "%d", r.Errors)
	for _, k := range slices.Sorted(maps.Keys(r.ErrorsByReason)) {
		row("", "%s %d", k, r.ErrorsByReason[k])
	}
	row("latency", "p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms  mean %.3fms",
		r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.MeanMs)
	return tw.Flush()
}
