package main

import (
	"context"
	"errors"
	"io"
	"strconv"

	"github.com/spf13/cobra"

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
		Use:   "read STREAM",
		Short: "Read a stream's events",
		Long: `Read a stream's events, oldest first (newest first with --backward).

With -o json (one array) or -o jsonl (one event a line), an event's "data"
is the data itself when it is a JSON object or array, else a base64 string.`,
		Example: `  esctl read product-42
  esctl read product-42 --backward --limit 1 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			req := &esdv1.ReadStreamRequest{
				Stream:    args[0],
				Direction: direction(o.backward),
				MaxCount:  o.limit,
			}
			if cmd.Flags().Changed("from") {
				req.FromRevision = &o.from
			}
			return a.runReadStream(cmd.Context(), req)
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
			req := &esdv1.ReadAllRequest{
				Direction: direction(o.backward),
				MaxCount:  o.limit,
			}
			if cmd.Flags().Changed("from") {
				req.FromPosition = &o.from
			}
			if len(o.streamPrefixes) > 0 || len(o.typePrefixes) > 0 {
				req.Filter = &esdv1.Filter{StreamPrefixes: o.streamPrefixes, EventTypePrefixes: o.typePrefixes}
			}
			return a.runReadAll(cmd.Context(), req)
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

func direction(backward bool) esdv1.ReadDirection {
	if backward {
		return esdv1.ReadDirection_READ_DIRECTION_BACKWARD
	}
	return esdv1.ReadDirection_READ_DIRECTION_FORWARD
}

// Reads are not bounded by --timeout: a long read is fine as long as it
// moves; Ctrl-C ends it.
func (a *app) runReadStream(ctx context.Context, req *esdv1.ReadStreamRequest) error {
	cli, err := a.streams()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx) // ends the stream if printing fails
	defer cancel()
	rs, err := cli.ReadStream(ctx, req)
	if err != nil {
		return err
	}
	out := newEventWriter(a, false)
	for {
		resp, err := rs.Recv()
		if err != nil {
			return finishRead(out, err)
		}
		if err := out.addAll(resp.GetEvents()); err != nil {
			return err // stdout failed: nothing more can be printed
		}
	}
}

func (a *app) runReadAll(ctx context.Context, req *esdv1.ReadAllRequest) error {
	cli, err := a.streams()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rs, err := cli.ReadAll(ctx, req)
	if err != nil {
		return err
	}
	out := newEventWriter(a, true)
	for {
		resp, err := rs.Recv()
		if err != nil {
			return finishRead(out, err)
		}
		// Checkpoints only matter to a program resuming a filtered read;
		// the output lists events only.
		if err := out.addAll(resp.GetEvents()); err != nil {
			return err // stdout failed: nothing more can be printed
		}
	}
}

// finishRead ends the output at the end of a read: what was printed stays
// printed (and well-formed) even when the read failed half-way.
func finishRead(out *eventWriter, recvErr error) error {
	if !errors.Is(recvErr, io.EOF) {
		out.abort()
		return recvErr
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
