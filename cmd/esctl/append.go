package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// maxDataBytes bounds what esctl reads for one event's data, far above the
// server's limit, so a mistaken `--file /dev/zero` fails instead of eating
// memory.
const maxDataBytes = 64 << 20

// expectedRevision is the --expected flag (a pflag.Value): the condition a
// write puts on the stream, spelled as the flag takes it. A bad value
// fails flag parsing, a usage error.
type expectedRevision struct{ client.Expected }

func (e *expectedRevision) Set(s string) error {
	v, err := parseExpected(s)
	if err != nil {
		return err
	}
	*e = v
	return nil
}

func (e *expectedRevision) String() string {
	switch e.Expected {
	case client.NoStream():
		return "no-stream"
	case client.StreamExists():
		return "exists"
	}
	if r, ok := e.Revision(); ok {
		return strconv.FormatUint(r, 10)
	}
	return "any"
}

func (e *expectedRevision) Type() string { return "any|no-stream|exists|N" }

// parseExpected reads any, no-stream, exists or a revision number (the
// proto spellings no_stream and stream_exists are accepted too).
func parseExpected(s string) (expectedRevision, error) {
	switch s {
	case "any":
		return expectedRevision{client.Any()}, nil
	case "no-stream", "no_stream":
		return expectedRevision{client.NoStream()}, nil
	case "exists", "stream-exists", "stream_exists":
		return expectedRevision{client.StreamExists()}, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return expectedRevision{}, fmt.Errorf("want any, no-stream, exists or a revision number, not %q", s)
	}
	return expectedRevision{client.Exact(n)}, nil
}

func addExpectedFlag(cmd *cobra.Command, e *expectedRevision) {
	cmd.Flags().Var(e, "expected", "expected revision: any, no-stream, exists or the head revision N")
	_ = cmd.RegisterFlagCompletionFunc("expected", cobra.FixedCompletions(
		[]string{"any", "no-stream", "exists"}, cobra.ShellCompDirectiveNoFileComp))
}

type appendOptions struct {
	eventType   string
	id          string
	contentType string
	metadata    string
	file        string
	tags        []string
	expected    expectedRevision
	token       uint64
}

func (a *app) newAppendCmd() *cobra.Command {
	var o appendOptions
	cmd := &cobra.Command{
		Use:               "append STREAM [DATA]",
		ValidArgsFunction: a.completeStreams,
		Short:             "Append one event to a stream",
		Long: `Append one event to STREAM.

The data comes from the DATA argument, from --file (- for stdin), or from
stdin when neither is given and stdin is not a terminal. With --expected the
append only happens if the stream is where you expect it; otherwise esctl
prints what it found (and the events since) and exits with 4.`,
		Example: `  esctl append product-42 '{"name":"Lamp"}' --type ProductCreated --expected no-stream
  jq -c . event.json | esctl append product-42 --type ProductRenamed --expected 0`,
		Args: cobra.RangeArgs(1, 2),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runAppend(cmd.Context(), &o, args)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&o.eventType, "type", "", "event type (required)")
	_ = cmd.MarkFlagRequired("type")
	f.StringVar(&o.id, "id", "", "event id, a UUID (default: a new UUIDv7, the same for each retry, so that a retried append is written once)")
	f.StringVar(&o.contentType, "content-type", "", "media type of the data (default application/json when the data is JSON, else application/octet-stream)")
	f.StringVar(&o.metadata, "metadata", "", "event metadata")
	f.StringArrayVar(&o.tags, "tag", nil, "tag to store with the event (repeatable)")
	f.StringVar(&o.file, "file", "", "read the data from this file (- for stdin)")
	addExpectedFlag(cmd, &o.expected)
	addFencingTokenFlag(cmd, &o.token)
	return cmd
}

// addFencingTokenFlag adds --fencing-token: the token of a lease on the
// stream (esctl lease acquire), without which a leased stream refuses
// writes.
func addFencingTokenFlag(cmd *cobra.Command, token *uint64) {
	cmd.Flags().Uint64Var(token, "fencing-token", 0, "the fencing token of your lease on the stream (esctl lease acquire); a leased stream refuses writes without it")
}

func (a *app) runAppend(ctx context.Context, o *appendOptions, args []string) error {
	data, err := a.appendData(args, o.file)
	if err != nil {
		return err
	}
	ct := o.contentType
	if ct == "" && len(data) > 0 && json.Valid(data) {
		ct = "application/json" // so that readers, and esctl's -o json, know it as JSON
	}
	ev := &esdv1.ProposedEvent{
		Id:          o.id,
		Type:        o.eventType,
		Data:        data,
		ContentType: ct,
		Tags:        o.tags,
	}
	if o.metadata != "" {
		ev.Metadata = []byte(o.metadata)
	}
	if err := a.checkSize(ctx, "event data", client.ReasonEventTooLarge, ev.Data, ev.Metadata); err != nil {
		return err
	}
	cli, err := a.connect()
	if err != nil {
		return err
	}
	stream := args[0]
	resp, err := cli.LeaseOf(stream, o.token).Append(ctx, o.expected.Expected, ev)
	if err != nil {
		return err
	}
	rows := [][2]string{
		{"STREAM", stream},
		{"FIRST REVISION", strconv.FormatUint(resp.GetFirstRevision(), 10)},
		{"LAST REVISION", strconv.FormatUint(resp.GetLastRevision(), 10)},
		{"FIRST POSITION", strconv.FormatUint(resp.GetFirstPosition(), 10)},
		{"LAST POSITION", strconv.FormatUint(resp.GetLastPosition(), 10)},
		{"COMMIT TIME", formatTime(resp.GetCommitTime())},
	}
	if resp.GetEventsSinceSnapshot() > 0 { // a snapshot policy applies
		rows = append(rows,
			[2]string{"EVENTS SINCE SNAPSHOT", strconv.FormatUint(resp.GetEventsSinceSnapshot(), 10)},
			[2]string{"SNAPSHOT ADVISED", strconv.FormatBool(resp.GetSnapshotAdvised())})
	}
	return a.printKV(resp, rows)
}

// appendData finds the event's data: the argument, --file, or a piped stdin.
func (a *app) appendData(args []string, file string) ([]byte, error) {
	switch {
	case len(args) == 2 && file != "":
		return nil, usagef("give the data as an argument or with --file, not both")
	case len(args) == 2:
		return []byte(args[1]), nil
	case file == "-":
		return readData(a.stdin, "stdin")
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close() //nolint:errcheck // read-only: a close error loses nothing
		return readData(f, file)
	case a.stdin != nil && !isTerminal(a.stdin):
		return readData(a.stdin, "stdin")
	}
	return nil, nil // an event may have no data
}

func readData(r io.Reader, name string) ([]byte, error) {
	if r == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxDataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > maxDataBytes {
		return nil, fmt.Errorf("read %s: more than %d bytes", name, maxDataBytes)
	}
	return b, nil
}

// isTerminal reports whether r is a character device (a terminal, or
// /dev/null): then nobody is piping data in and esctl must not wait for it.
// A reader that is not a file (tests) counts as piped.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
