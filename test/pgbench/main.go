// Command pgbench runs esctl bench's write workloads against a PostgreSQL
// events table, so that esd can be compared with the usual way of keeping
// events in a relational database (test/bench-compare.sh runs both).
//
// The table is
//
//	events(position bigserial primary key, stream_id text, version bigint,
//	       event_id uuid unique, type text, data bytea, metadata bytea,
//	       created timestamptz default now(), unique(stream_id, version))
//
// and an append of n events expecting revision r is one transaction, a
// single multi-row INSERT of versions r+1..r+n (0..n-1 for a new stream,
// as in esd). A unique violation on (stream_id, version) is a conflict:
// the client then reads max(version), the stream's head, which esd sends
// with the conflict itself. Each client has its own connection, and
// commits wait for the WAL fsync (synchronous_commit on, PostgreSQL's
// default), as esd acknowledges an append after fsync.
//
// Flags and output are esctl bench's (-o json has the same field names);
// "setup" creates the table, or empties it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/internal/benchstat"
)

const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2

	workloadSetup = "setup"
	eventType     = "BenchEvent" // as esctl bench
)

type options struct {
	dsn      string
	table    string
	output   string
	duration time.Duration
	warmup   time.Duration
	count    int64
	clients  int
	batch    int
	streams  int
	keys     int
	size     int
	prefix   string
	noIDs    bool
}

// usageError marks an error as the user's (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes pgbench with args (without the program name) and returns
// the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	cmd := &cobra.Command{
		Use:   "pgbench WORKLOAD",
		Short: "esctl bench's write workloads against a PostgreSQL events table",
		Long: `Run esctl bench's write workloads against a PostgreSQL events table and
report throughput and per-call latency as esctl bench does.

Workloads:
  append       each client appends --batch events per transaction to its own
               share of --streams streams, tracking exact expected versions
  contention   all clients append to only --keys streams, each expecting the
               head it last saw; a unique violation on (stream_id, version)
               is a conflict: the client reads max(version) and retries
  setup        create the table if it is missing, empty it and checkpoint

--dsn is a libpq connection string or URL; empty, the PG* environment
variables apply. It exits 1 when any call failed.`,
		Example: `  pgbench --dsn 'host=/tmp/pg user=postgres' setup
  pgbench --dsn 'host=/tmp/pg user=postgres' append -c 64 -s 10000 -d 10s
  pgbench --dsn 'host=/tmp/pg user=postgres' contention -c 64 -k 8 -o json`,
		ValidArgs:     []string{benchstat.WorkloadAppend, benchstat.WorkloadContention, workloadSetup},
		Args:          cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == workloadSetup {
				return setup(cmd.Context(), o)
			}
			return runBench(cmd.Context(), args[0], o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dsn, "dsn", "", "PostgreSQL connection string or URL (empty: the PG* environment variables)")
	f.StringVar(&o.table, "table", "events", "the events table")
	f.StringVarP(&o.output, "output", "o", benchstat.FormatTable, "output format: table, json or jsonl")
	f.DurationVarP(&o.duration, "duration", "d", 10*time.Second, "how long to run after the warmup (0 = until --count)")
	f.DurationVar(&o.warmup, "warmup", time.Second, "run this long first without counting")
	f.Int64VarP(&o.count, "count", "n", 0, "stop after this many measured calls over all clients (0 = no limit)")
	f.IntVarP(&o.clients, "clients", "c", 64, "concurrent clients, one connection each")
	f.IntVarP(&o.batch, "batch", "b", 1, "events per append")
	f.IntVarP(&o.streams, "streams", "s", 10000, "append: streams written to")
	f.IntVarP(&o.keys, "keys", "k", 8, "contention: streams contended for")
	f.IntVar(&o.size, "size", 256, "bytes of data per event")
	f.StringVar(&o.prefix, "stream-prefix", "", "prefix of the bench's stream names (default bench-<random>)")
	f.BoolVar(&o.noIDs, "no-ids", false, "let the server make event ids (gen_random_uuid())")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "pgbench:", err)
		var ue *usageError
		if errors.As(err, &ue) || isCobraUsage(err) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

// isCobraUsage says whether err is cobra's own complaint about the
// arguments, which it makes before RunE.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"accepts ", "invalid argument ", "unknown command "} {
		if len(msg) >= len(p) && msg[:len(p)] == p {
			return true
		}
	}
	return false
}

// check validates the options and fills in defaults.
func (o *options) check() error {
	if o.prefix == "" {
		o.prefix = benchstat.StreamPrefix()
	}
	switch {
	case o.output != benchstat.FormatTable && o.output != benchstat.FormatJSON && o.output != benchstat.FormatJSONL:
		return usagef("unknown output format %q (want table, json or jsonl)", o.output)
	case o.clients < 1:
		return usagef("--clients must be at least 1")
	case o.batch < 1:
		return usagef("--batch must be at least 1")
	case o.streams < 1:
		return usagef("--streams must be at least 1")
	case o.keys < 1:
		return usagef("--keys must be at least 1")
	case o.size < 0, o.count < 0, o.duration < 0, o.warmup < 0:
		return usagef("--size, --count, --duration and --warmup must not be negative")
	case o.duration == 0 && o.count == 0:
		return usagef("--duration 0 needs --count to end the run")
	case o.table == "":
		return usagef("--table must not be empty")
	}
	return nil
}
