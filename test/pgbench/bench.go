package main

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/esdhq/esd/internal/benchstat"
)

const (
	// connectTimeout bounds each connection attempt when the DSN sets none.
	connectTimeout = 10 * time.Second
	// grace is how long past the end of the run a stuck call may take
	// before the run is cancelled.
	grace = time.Minute

	sqlstateUniqueViolation = "23505"
	// reasonWrongExpectedRevision is esd's name for a conflict, used as
	// the error key of a conflict in the append workload, as in esctl.
	reasonWrongExpectedRevision = "WRONG_EXPECTED_REVISION"
)

// versionKey is the name of the table's UNIQUE (stream_id, version)
// constraint, whose violation is a conflict (PostgreSQL's default name for
// it, spelt out by setup).
func versionKey(table string) string { return table + "_stream_id_version_key" }

func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, usagef("bad --dsn: %v", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// setup creates the table if it is missing, empties it and checkpoints,
// so that a run starts on an empty table with no dirty pages of the last.
func setup(ctx context.Context, o options) error {
	if o.table == "" {
		return usagef("--table must not be empty")
	}
	conn, err := connect(ctx, o.dsn)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	t := pgx.Identifier{o.table}.Sanitize()
	for _, q := range []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	position bigserial PRIMARY KEY,
	stream_id text NOT NULL,
	version bigint NOT NULL,
	event_id uuid NOT NULL UNIQUE,
	type text NOT NULL,
	data bytea NOT NULL,
	metadata bytea,
	created timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT %s UNIQUE (stream_id, version)
)`, t, pgx.Identifier{versionKey(o.table)}.Sanitize()),
		"TRUNCATE " + t + " RESTART IDENTITY",
		"CHECKPOINT",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(q)[0], err)
		}
	}
	return nil
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx) // nothing useful to do about a failed close
}

// bench is one run: its connections, its payload and what it reports.
type bench struct {
	o        options
	workload string
	conns    []*pgx.Conn
	payload  []byte // random, made once, shared read-only by every insert
	insert   string // the INSERT of one append
	head     string // the SELECT of a stream's head
	report   benchstat.Report
}

func runBench(ctx context.Context, workload string, o options, stdout, stderr io.Writer) error {
	if err := o.check(); err != nil {
		return err
	}
	t := pgx.Identifier{o.table}.Sanitize()
	b := &bench{
		o: o, workload: workload, payload: make([]byte, o.size),
		insert: insertSQL(t, o.batch, !o.noIDs),
		head:   "SELECT max(version) FROM " + t + " WHERE stream_id = $1",
	}
	_, _ = crand.Read(b.payload) // never fails (crypto/rand panics instead)
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.warmup+o.duration+grace)
		defer cancel()
	}
	defer b.close()
	if err := b.connect(ctx, stderr); err != nil {
		return err
	}
	workers := b.setup()
	stats, elapsed, err := b.run(ctx, workers)
	if err != nil {
		return err
	}
	b.report.Fill(stats, elapsed)
	if err := b.report.Print(stdout, o.output); err != nil {
		return err
	}
	if b.report.Errors > 0 {
		return fmt.Errorf("bench: %d errors in %d calls", b.report.Errors, b.report.Ops)
	}
	return nil
}

// connect opens one connection per client, and warns when the server's
// commits are not durable, which would make the comparison with esd
// meaningless.
func (b *bench) connect(ctx context.Context, stderr io.Writer) error {
	for range b.o.clients {
		c, err := connect(ctx, b.o.dsn)
		if err != nil {
			return err
		}
		b.conns = append(b.conns, c)
	}
	for _, s := range []string{"fsync", "synchronous_commit"} {
		var v string
		if err := b.conns[0].QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
			return err
		}
		if v != "on" {
			fmt.Fprintf(stderr, "pgbench: warning: %s is %s: commits are not durable when acknowledged\n", s, v)
		}
	}
	return nil
}

func (b *bench) close() {
	for _, c := range b.conns {
		closeConn(c)
	}
}

// setup fills the report's parameters and builds one worker per client.
func (b *bench) setup() []worker {
	o := &b.o
	cfg := b.conns[0].Config()
	b.report = benchstat.Report{
		ServerName: "PostgreSQL", Workload: b.workload,
		Addr:          cfg.Host + ":" + strconv.Itoa(int(cfg.Port)) + "/" + cfg.Database,
		ServerVersion: b.conns[0].PgConn().ParameterStatus("server_version"),
		Clients:       o.clients, Conns: o.clients, Batch: o.batch, Size: o.size, ClientIDs: !o.noIDs,
		StreamPrefix: o.prefix, Count: o.count,
		DurationSec: o.duration.Seconds(), WarmupSec: o.warmup.Seconds(),
	}
	workers := make([]worker, o.clients)
	for i := range workers {
		if b.workload == benchstat.WorkloadContention {
			b.report.Keys = o.keys
			workers[i] = b.newContentionWorker(i)
		} else {
			b.report.Streams = o.streams
			workers[i] = b.newAppendWorker(i)
		}
	}
	return workers
}

// run runs the warmup, whose numbers are dropped, then the measured phase.
// State (known heads) carries over.
func (b *bench) run(ctx context.Context, workers []worker) (*benchstat.Stats, time.Duration, error) {
	if b.o.warmup > 0 {
		if _, _, err := runPhase(ctx, workers, time.Now().Add(b.o.warmup), nil); err != nil {
			return nil, 0, err
		}
	}
	var until time.Time
	if b.o.duration > 0 {
		until = time.Now().Add(b.o.duration)
	}
	var budget *atomic.Int64
	if b.o.count > 0 {
		budget = new(atomic.Int64)
		budget.Store(b.o.count)
	}
	stats, elapsed, err := runPhase(ctx, workers, until, budget)
	if err != nil {
		return nil, 0, err
	}
	total := &benchstat.Stats{}
	for _, s := range stats {
		total.Merge(s)
	}
	return total, elapsed, nil
}

// worker is one simulated client, used by one goroutine at a time.
type worker interface {
	// op makes one append (with, after a conflict, the read of the head)
	// and records it in st. It returns an error only when the run must
	// stop.
	op(ctx context.Context, st *benchstat.Stats) error
}

// runPhase runs every worker in its own goroutine until the deadline
// (zero: none) or the shared call budget (nil: none) runs out. A worker's
// fatal error stops them all.
func runPhase(ctx context.Context, workers []worker, until time.Time, budget *atomic.Int64) ([]*benchstat.Stats, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stats := make([]*benchstat.Stats, len(workers))
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	start := time.Now()
	for i, w := range workers {
		st := &benchstat.Stats{}
		stats[i] = st
		wg.Go(func() {
			for {
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
	return stats, elapsed, benchstat.FirstCause(errs, nil)
}

// insertSQL is the INSERT of one append of n events into table (quoted):
// $1 the stream, $2 the first version, $3 the type, then each event's data
// and, with ids, its id.
func insertSQL(table string, n int, ids bool) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s (stream_id, version, type, data, event_id) VALUES ", table)
	p := 4
	for k := range n {
		if k > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "($1, $2::bigint + %d, $3, $%d, ", k, p)
		p++
		if ids {
			fmt.Fprintf(&sb, "$%d)", p)
			p++
		} else {
			sb.WriteString("gen_random_uuid())")
		}
	}
	return sb.String()
}

// appender makes one client's appends: it owns the INSERT's arguments and
// the event ids, reused from call to call.
type appender struct {
	b    *bench
	conn *pgx.Conn
	args []any
	ids  [][16]byte // nil: the server makes ids
	gen  *idGen
}

func (b *bench) newAppender(i int) *appender {
	a := &appender{b: b, conn: b.conns[i], args: make([]any, 3, 3+2*b.o.batch)}
	a.args[2] = eventType
	if !b.o.noIDs {
		a.ids = make([][16]byte, b.o.batch)
		a.gen = newIDGen()
	}
	for k := range b.o.batch {
		a.args = append(a.args, b.payload)
		if a.ids != nil {
			a.args = append(a.args, &a.ids[k])
		}
	}
	return a
}

// outcome is how an append ended.
type outcome int

const (
	appended outcome = iota
	conflicted
	failed // counted under an error key
)

// appendAt inserts the batch into stream at versions first..first+n-1,
// with fresh ids unless retry. It records the call's latency, including
// the read of the head after a conflict (esd reports the head with the
// conflict). After a conflict head is the stream's head (-1: no stream),
// when known. A non-nil error stops the run.
func (a *appender) appendAt(ctx context.Context, st *benchstat.Stats, stream string, first int64, retry bool) (out outcome, head int64, err error) {
	a.args[0], a.args[1] = stream, first
	if !retry && a.gen != nil {
		a.gen.fill(a.ids)
	}
	t0 := time.Now()
	defer func() { st.Lat.Record(time.Since(t0)) }()
	st.Ops++
	tag, err := a.conn.Exec(ctx, a.b.insert, a.args...)
	if err == nil {
		n := int64(a.b.o.batch)
		st.Events += n
		if tag.RowsAffected() != n {
			st.AddError(benchstat.ErrRevisionMismatch)
		}
		return appended, 0, nil
	}
	if ctx.Err() != nil {
		return failed, 0, ctx.Err()
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return failed, 0, err // the connection failed, not the statement
	}
	if pe.Code != sqlstateUniqueViolation || pe.ConstraintName != versionKey(a.b.o.table) {
		st.AddError("SQLSTATE_" + pe.Code)
		return failed, 0, nil
	}
	var h *int64
	if err := a.conn.QueryRow(ctx, a.b.head, stream).Scan(&h); err != nil {
		if ctx.Err() != nil || !errors.As(err, &pe) {
			return failed, 0, err
		}
		st.AddError("SQLSTATE_" + pe.Code)
		return failed, 0, nil
	}
	head = -1
	if h != nil {
		head = *h
	}
	return conflicted, head, nil
}

// appendWorker appends to its own streams (index ≡ client mod clients),
// round-robin, expecting the exact version it tracks for each.
type appendWorker struct {
	*appender
	names []string
	next  []int64 // per stream: the version of its next event; 0 = a new stream
	cur   int
}

func (b *bench) newAppendWorker(i int) *appendWorker {
	w := &appendWorker{appender: b.newAppender(i)}
	for n := i; n < b.o.streams; n += b.o.clients {
		w.names = append(w.names, b.o.prefix+"-"+strconv.Itoa(n))
	}
	if len(w.names) == 0 { // more clients than streams: share by wrapping around
		w.names = []string{b.o.prefix + "-" + strconv.Itoa(i%b.o.streams)}
	}
	w.next = make([]int64, len(w.names))
	return w
}

func (w *appendWorker) op(ctx context.Context, st *benchstat.Stats) error {
	k := w.cur
	w.cur = (w.cur + 1) % len(w.names)
	out, head, err := w.appendAt(ctx, st, w.names[k], w.next[k], false)
	switch {
	case err != nil:
		return err
	case out == appended:
		w.next[k] += int64(w.b.o.batch)
	case out == conflicted:
		// As esctl: a conflict is an error here, and the client goes on
		// from the head. A statement that failed otherwise wrote nothing.
		st.AddError(reasonWrongExpectedRevision)
		w.next[k] = head + 1
	}
	return nil
}

// contentionWorker appends to a few shared streams. Each append expects
// the head the worker last knew; after a conflict it reads the new head and
// retries the same events (same ids) at once.
type contentionWorker struct {
	*appender
	names    []string
	head     []int64 // per key: the head last seen; -1 = no stream
	cur      int
	retrying bool // the current events failed and are being sent again
}

func (b *bench) newContentionWorker(i int) *contentionWorker {
	w := &contentionWorker{
		appender: b.newAppender(i),
		names:    make([]string, b.o.keys),
		head:     make([]int64, b.o.keys),
		cur:      i % b.o.keys, // spread the clients' first writes over the keys
	}
	for k := range w.names {
		w.names[k] = b.o.prefix + "-" + strconv.Itoa(k)
		w.head[k] = -1
	}
	return w
}

func (w *contentionWorker) op(ctx context.Context, st *benchstat.Stats) error {
	k := w.cur
	out, head, err := w.appendAt(ctx, st, w.names[k], w.head[k]+1, w.retrying)
	switch {
	case err != nil:
		return err
	case out == appended:
		st.Successes++
		w.head[k] += int64(w.b.o.batch)
		w.retrying = false
		w.cur = (w.cur + 1) % len(w.names)
	case out == conflicted:
		st.Conflicts++
		st.Retries++
		w.head[k] = head
		w.retrying = true
	default:
		// The statement failed and wrote nothing (a lost connection
		// stops the run): try again with fresh ids.
		w.retrying = false
	}
	return nil
}
