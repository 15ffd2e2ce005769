package main

import (
	"iter"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

type readOptions struct {
	from     uint64
	backward bool
	limit    uint64
}

func (a *app) newReadCmd() *cobra.Command {
	var o readOptions
	cmd := &cobra.Command{
		Use:               "read STREAM",
		ValidArgsFunction: a.completeStreams,
		Short:             "Read a stream's events",
		Long: `Read a stream's events, oldest first (newest first with --backward).

With -o json (one array) or -o jsonl (one event a line), an event's "data"
is the data itself when it is a JSON object or array, else a base64 string.`,
		Example: `  esctl read product-42
  esctl read product-42 --backward --limit 1 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			opts := o.options()
			if cmd.Flags().Changed("from") {
				opts = append(opts, client.FromRevision(o.from))
			}
			cli, err := a.connect()
			if err != nil {
				return err
			}
			return writeEvents(newEventWriter(a, false), cli.Read(cmd.Context(), args[0], opts...))
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&o.from, "from", 0, "first revision to read (default: 0 forward, the head backward)")
	f.BoolVar(&o.backward, "backward", false, "read newest first")
	f.Uint64Var(&o.limit, "limit", 0, "most events to read (0 = all)")
	return cmd
}

type readAllOptions struct {
	readOptions
	streamPrefixes []string
	typePrefixes   []string
}

func (a *app) newReadAllCmd() *cobra.Command {
	var o readAllOptions
	cmd := &cobra.Command{
		Use:   "read-all",
		Short: "Read the global log ($all)",
		Example: `  esctl read-all --limit 20
  esctl read-all --stream-prefix product- --type-prefix Product -o jsonl`,
		Args: cobra.NoArgs,
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			opts := o.options()
			if cmd.Flags().Changed("from") {
				opts = append(opts, client.FromPosition(o.from))
			}
			if len(o.streamPrefixes) > 0 || len(o.typePrefixes) > 0 {
				opts = append(opts, client.WithFilter(client.Filter{StreamPrefixes: o.streamPrefixes, TypePrefixes: o.typePrefixes}))
			}
			cli, err := a.connect()
			if err != nil {
				return err
			}
			return writeEvents(newEventWriter(a, true), cli.ReadAll(cmd.Context(), opts...))
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&o.from, "from", 0, "first position to read (default: the start forward, the end backward)")
	f.BoolVar(&o.backward, "backward", false, "read newest first")
	f.Uint64Var(&o.limit, "limit", 0, "most events to read (0 = all)")
	f.StringArrayVar(&o.streamPrefixes, "stream-prefix", nil, "only streams starting with this (repeatable)")
	f.StringArrayVar(&o.typePrefixes, "type-prefix", nil, "only event types starting with this (repeatable)")
	return cmd
}

// options are the read's options but --from, whose meaning (a revision
// or a position) is the command's.
func (o *readOptions) options() []client.ReadOption {
	opts := []client.ReadOption{client.MaxCount(o.limit)}
	if o.backward {
		opts = append(opts, client.Backward())
	}
	return opts
}

// writeEvents prints the events of a read as they come. Reads are not
// bounded by --timeout: a long read is fine as long as it moves; Ctrl-C
// ends it. What was printed stays printed (and well-formed) when the
// read fails half-way.
func writeEvents(out *eventWriter, events iter.Seq2[*esdv1.RecordedEvent, error]) error {
	for ev, err := range events {
		if err != nil {
			out.abort()
			return err
		}
		if err := out.add(ev); err != nil {
			return err // stdout failed: nothing more can be printed
		}
	}
	return out.close()
}

type eventWriter struct {
	*recordWriter[*esdv1.RecordedEvent]
}

// newEventWriter prints events; read-all adds the STREAM column.
func newEventWriter(a *app, withStream bool) *eventWriter {
	header := []string{"REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"}
	if withStream {
		header = append([]string{"STREAM"}, header...)
	}
	row := func(ev *esdv1.RecordedEvent) []string {
		cols := []string{
			strconv.FormatUint(ev.GetRevision(), 10),
			strconv.FormatUint(ev.GetPosition(), 10),
			ev.GetType(),
			ev.GetId(),
			formatTime(ev.GetCreated()),
			displayData(ev.GetData(), dataWidth),
		}
		if withStream {
			cols = append([]string{ev.GetStream()}, cols...)
		}
		return cols
	}
	return &eventWriter{newRecordWriter(a, header, row)}
}

func (w *eventWriter) addAll(evs []*esdv1.RecordedEvent) error {
	for _, ev := range evs {
		if err := w.add(ev); err != nil {
			return err
		}
	}
	return nil
}
