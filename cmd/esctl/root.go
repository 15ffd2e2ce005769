package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Exit codes are part of esctl's contract: scripts switch on them.
const (
	exitOK            = 0
	exitError         = 1 // any other failure, including server errors with a reason
	exitUsage         = 2 // bad flags or arguments
	exitUnavailable   = 3 // the server could not be reached
	exitWrongRevision = 4 // ABORTED/WRONG_EXPECTED_REVISION
)

const (
	defaultAddr = "127.0.0.1:7400"
	envAddr     = "ESD_ADDR"
	envToken    = "ESD_TOKEN"

	reasonWrongExpectedRevision = "WRONG_EXPECTED_REVISION"
	// A metadata write's expected revision: the same exit code, so that a
	// script retries both the same way.
	reasonWrongExpectedMetadataRevision = "WRONG_EXPECTED_METADATA_REVISION"
)

// app is one esctl invocation: the global flags, its I/O and its connection.
// run makes a fresh one each time, so tests can run esctl concurrently
// in-process.
type app struct {
	addr    string
	token   string // bearer token sent with every call ("": none)
	timeout time.Duration
	output  string
	tls     tlsFlags

	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)

	cli *client.Client // made on first use, closed by run
	// ran is set when a command's own code starts: an error from before
	// (cobra's flag and argument checks) is a usage error.
	ran bool
}

// usageError marks an error as the user's (exit 2), not the server's.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// run executes esctl with args (without the program name) and returns the
// exit code. It writes results to stdout and errors to stderr and never
// calls os.Exit, so tests call it directly.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, lookupEnv: os.LookupEnv}
	root := a.newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	code := exitOK
	if err != nil {
		code = a.report(cmd, err) // before Close: the report looks at the connection's state
	}
	if a.cli != nil {
		_ = a.cli.Close() // nothing useful to do about a failed close at exit
	}
	return code
}

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "esctl",
		Short: "Command-line client for the esd event store",
		Long: `esctl talks to an esd server over gRPC: it appends, reads and subscribes
to events, manages consumer groups, inspects streams and the server, and
benchmarks it (esctl bench).

With -o json and -o jsonl, fields at their zero value are printed (revision
0 is a revision), and the "data" of an event or a snapshot is the data
itself when it is a JSON object or array, else a base64 string (a JSON
string or number too): a string is always base64.

A call that is safe to repeat (appends too: their events carry ids, so a
retried append is written once) is tried again, up to 3 times, when the
server is unreachable or overloaded.

Exit codes: 0 ok, 1 error (a call that took longer than --timeout says so),
2 usage, 3 server unreachable (refused, unresolvable, or no connection
within --timeout), 4 wrong expected revision (of a stream, or of its metadata).`,
		SilenceErrors:     true, // report prints errors in one format
		SilenceUsage:      true, // a server error is no reason to print the usage
		PersistentPreRunE: a.prepare,
	}
	f := root.PersistentFlags()
	f.StringVar(&a.addr, "addr", defaultAddr, "server address host:port (env "+envAddr+")")
	f.StringVar(&a.token, "token", "", "bearer token sent with every call, for an esd with --auth-file (env "+envToken+"; see esctl token)")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "timeout of each call made in one piece, load included (not reads, subscribe, group join or bench); 0 = none")
	f.StringVarP(&a.output, "output", "o", formatTable, "output format: table, json or jsonl (JSON object or array data shown as JSON, other data as base64)")
	a.tls.register(f)
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{formatTable, formatJSON, formatJSONL}, cobra.ShellCompDirectiveNoFileComp))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(
		a.newAppendCmd(),
		a.newReadCmd(),
		a.newReadAllCmd(),
		a.newLoadCmd(),
		a.newSubscribeCmd(),
		a.newInfoCmd(),
		a.newLsCmd(),
		a.newDeleteCmd(),
		a.newStreamCmd(),
		a.newGroupCmd(),
		a.newSnapshotCmd(),
		a.newLeaseCmd(),
		a.newServerCmd(),
		a.newScavengeCmd(),
		a.newBenchCmd(),
		a.newTokenCmd(),
		a.newCertsCmd(),
	)
	return root
}

// prepare checks the global flags once cobra has parsed them.
func (a *app) prepare(cmd *cobra.Command, _ []string) error {
	switch a.output {
	case formatTable, formatJSON, formatJSONL:
	default:
		return usagef("unknown output format %q (want table, json or jsonl)", a.output)
	}
	if !cmd.Flags().Changed("addr") {
		if v, ok := a.lookupEnv(envAddr); ok && v != "" {
			a.addr = v
		}
	}
	if !cmd.Flags().Changed("token") {
		if v, ok := a.lookupEnv(envToken); ok && v != "" {
			a.token = v
		}
	}
	if a.timeout < 0 {
		return usagef("--timeout must not be negative")
	}
	return a.tls.fromEnv(cmd, a.lookupEnv)
}

// action wraps a command's RunE so that errors from it are told apart from
// cobra's usage errors.
func (a *app) action(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return fn(cmd, args)
	}
}

// groupCmd is a noun group (esctl server ...): alone it prints its help,
// with an unknown subcommand it is a usage error.
func (a *app) groupCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
}

// connect returns the client of the server, making it on first use. It
// does not connect: a dead server shows up as UNAVAILABLE on the first
// call.
func (a *app) connect() (*client.Client, error) {
	if a.cli != nil {
		return a.cli, nil
	}
	cli, err := client.Dial(a.addr, a.clientOptions()...)
	if err != nil {
		return nil, &usageError{err} // a bad --addr or TLS file: the user's to fix
	}
	a.cli = cli
	return cli, nil
}

// clientOptions are the client options of the global flags, then extra.
// Appends go unary, not pipelined: esctl makes one, and a unary call
// answers it without opening a stream first.
func (a *app) clientOptions(extra ...client.Option) []client.Option {
	opts := []client.Option{client.WithTimeout(a.timeout), client.WithPipelining(false)}
	if o := a.tls.option(); o != nil {
		opts = append(opts, o)
	}
	if a.token != "" {
		opts = append(opts, client.WithToken(a.token))
	}
	return append(opts, extra...)
}

// callCtx bounds one unary call by --timeout.
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, a.timeout)
}

// statusOf returns the gRPC status of err: a server's refusal, a
// transport failure or a call's deadline, as the client or the stubs
// return them.
func statusOf(err error) (*status.Status, bool) {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.GRPCStatus(), true // the server's status as it came, whatever wraps ce
	}
	return status.FromError(err)
}

// errorReason returns the google.rpc.ErrorInfo reason of a gRPC error, or "".
func errorReason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// wrongRevision returns the WrongExpectedRevision detail of a gRPC error, or nil.
func wrongRevision(st *status.Status) *esdv1.WrongExpectedRevision {
	for _, d := range st.Details() {
		if w, ok := d.(*esdv1.WrongExpectedRevision); ok {
			return w
		}
	}
	return nil
}

// exitCode classifies err. Transport failures carry no ErrorInfo: that is
// how a dead server is told apart from one answering UNAVAILABLE with a
// reason (SHUTTING_DOWN, STORAGE_FAILED), which is an error, not
// unreachability. A deadline is unreachability only when it passed while
// the connection was still being made: a server that took the call and
// answered too late is reachable, and that is an error.
func (a *app) exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || !a.ran {
		return exitUsage
	}
	st, ok := statusOf(err)
	if !ok {
		return exitError
	}
	reason := errorReason(st)
	switch {
	case reason == reasonWrongExpectedRevision, reason == reasonWrongExpectedMetadataRevision:
		return exitWrongRevision
	case reason != "":
		return exitError
	case st.Code() == codes.Unavailable:
		return exitUnavailable
	case st.Code() == codes.DeadlineExceeded && !a.connected():
		return exitUnavailable
	}
	return exitError
}

// connected reports whether the connection to the server is up.
func (a *app) connected() bool {
	return a.cli != nil && a.cli.Conn().GetState() == connectivity.Ready
}

// report prints err to stderr as "esctl: <message> (reason: <reason>)",
// with the WrongExpectedRevision detail when there is one, and returns the
// exit code.
func (a *app) report(cmd *cobra.Command, err error) int {
	code := a.exitCode(err)
	st, isStatus := statusOf(err)
	switch {
	case code == exitUsage:
		fmt.Fprintf(a.stderr, "esctl: %v\n", err)
		if cmd != nil {
			fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
	case !isStatus:
		fmt.Fprintf(a.stderr, "esctl: %v\n", err)
	case code == exitUnavailable && st.Code() == codes.DeadlineExceeded:
		// No TLS hint: a TLS mismatch fails the handshake at once, it
		// does not leave the connection hanging.
		fmt.Fprintf(a.stderr, "esctl: cannot reach esd at %s: no connection within %s (--timeout)\n", a.addr, a.timeout)
	case code == exitUnavailable:
		fmt.Fprintf(a.stderr, "esctl: cannot reach esd at %s: %s (code: %s)\n", a.addr, st.Message(), st.Code())
		if hint := a.tls.hint(st.Message()); hint != "" {
			fmt.Fprintf(a.stderr, "hint: %s\n", hint)
		}
	case st.Code() == codes.DeadlineExceeded && a.timeout > 0:
		// The server took the call and did not answer in time.
		fmt.Fprintf(a.stderr, "esctl: deadline exceeded after %s (--timeout): esd at %s did not answer in time\n", a.timeout, a.addr)
	default:
		if reason := errorReason(st); reason != "" {
			fmt.Fprintf(a.stderr, "esctl: %s (reason: %s)\n", st.Message(), reason)
		} else {
			fmt.Fprintf(a.stderr, "esctl: %s (code: %s)\n", st.Message(), st.Code())
		}
		if w := wrongRevision(st); w != nil {
			printWrongRevision(a.stderr, w)
		}
		if hint := limitHint(st); hint != "" {
			fmt.Fprintf(a.stderr, "hint: %s\n", hint)
		}
	}
	return code
}

// printWrongRevision shows what a failed condition found, one fact a line.
func printWrongRevision(w io.Writer, d *esdv1.WrongExpectedRevision) {
	fmt.Fprintf(w, "  stream:       %s\n", d.GetStream())
	fmt.Fprintf(w, "  expected:     %s\n", formatExpected(d.GetExpected()))
	if d.GetStreamExists() {
		fmt.Fprintf(w, "  actual head:  %d\n", d.GetActualHead())
	} else {
		fmt.Fprintf(w, "  actual head:  none\n")
	}
	fmt.Fprintf(w, "  exists:       %t\n", d.GetStreamExists())
	evs := d.GetEventsSince()
	if len(evs) == 0 {
		return
	}
	fmt.Fprintf(w, "  events since: %d\n", len(evs))
	for _, ev := range evs {
		fmt.Fprintf(w, "    revision %d  position %d  %s  %s  %s\n",
			ev.GetRevision(), ev.GetPosition(), ev.GetType(), ev.GetId(), displayData(ev.GetData(), dataWidth))
	}
	if d.GetTruncated() {
		fmt.Fprintf(w, "    ... more events follow\n")
	}
}

func formatExpected(e *esdv1.ExpectedRevision) string {
	switch k := e.GetKind().(type) {
	case *esdv1.ExpectedRevision_NoStream:
		return "no-stream"
	case *esdv1.ExpectedRevision_StreamExists:
		return "exists"
	case *esdv1.ExpectedRevision_Exact:
		return fmt.Sprintf("%d", k.Exact)
	default:
		return "any"
	}
}
