package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func (a *app) newSnapshotCmd() *cobra.Command {
	cmd := a.groupCmd("snapshot", "Manage snapshots of streams and the snapshot policies")
	cmd.Long = `A snapshot is an aggregate's state as of a revision of its stream, in the
client's own encoding (type, schema version, data). esd keeps the newest
--snapshot-retention snapshots of each stream beside the log; esctl load
reads a stream from its latest snapshot. esd advises when to snapshot, by
the policy of the stream's category: see esctl snapshot policy.`
	cmd.AddCommand(
		a.newSnapshotLsCmd(),
		a.newSnapshotGetCmd(),
		a.newSnapshotSaveCmd(),
		a.newSnapshotRmCmd(),
		a.newSnapshotPolicyCmd(),
	)
	return cmd
}

func (a *app) newSnapshotLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "ls STREAM",
		ValidArgsFunction: a.completeStreams,
		Short:             "List a stream's snapshots, oldest first",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			snaps, err := cli.ListSnapshots(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := newRecordWriter(a, []string{"REVISION", "SCHEMA", "TYPE", "SIZE", "CREATED", "USABLE"},
				func(s *esdv1.SnapshotInfo) []string {
					return []string{strconv.FormatUint(s.GetRevision(), 10), strconv.FormatUint(uint64(s.GetSchemaVersion()), 10),
						s.GetType(), strconv.FormatUint(s.GetSize(), 10), formatTime(s.GetCreated()), strconv.FormatBool(s.GetUsable())}
				})
			for _, s := range snaps {
				if err := out.add(s); err != nil {
					return err
				}
			}
			return out.close()
		}),
	}
}

func (a *app) newSnapshotGetCmd() *cobra.Command {
	var (
		revision uint64
		schema   uint32
		raw      bool
	)
	cmd := &cobra.Command{
		Use:               "get STREAM [--revision N] [--schema V]",
		ValidArgsFunction: a.completeStreams,
		Short:             "Show a stream's latest usable snapshot (at or below --revision)",
		Example: `  esctl snapshot get order-7
  esctl snapshot get order-7 --revision 100 --schema 2 --raw > state.bin`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			sn, err := cli.GetSnapshot(cmd.Context(), args[0], schema, revision)
			if err != nil {
				return err
			}
			if raw {
				_, err := a.stdout.Write(sn.GetData())
				return err
			}
			return a.printKV(sn, snapshotRows(sn, 0))
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&revision, "revision", 0, "the latest snapshot at or below this revision (0 = the latest)")
	f.Uint32Var(&schema, "schema", 0, "schema version of the snapshot")
	f.BoolVar(&raw, "raw", false, "print the data alone, as stored")
	return cmd
}

// snapshotRows are a snapshot's table rows; width > 0 cuts its data.
func snapshotRows(sn *esdv1.Snapshot, width int) [][2]string {
	return [][2]string{
		{"STREAM", sn.GetStream()},
		{"REVISION", strconv.FormatUint(sn.GetRevision(), 10)},
		{"TYPE", sn.GetType()},
		{"SCHEMA", strconv.FormatUint(uint64(sn.GetSchemaVersion()), 10)},
		{"CREATED", formatTime(sn.GetCreated())},
		{"SIZE", strconv.Itoa(len(sn.GetData()))},
		{"DATA", displayData(sn.GetData(), width)},
	}
}

type snapshotSaveOptions struct {
	revision uint64
	typ      string
	schema   uint32
	data     string
	file     string
}

func (a *app) newSnapshotSaveCmd() *cobra.Command {
	var o snapshotSaveOptions
	cmd := &cobra.Command{
		Use:               "save STREAM --revision N --type T (--data D | --file F | -)",
		ValidArgsFunction: a.completeStreams,
		Short:             "Save a snapshot of a stream as of a revision",
		Long: `Save a snapshot of STREAM as of --revision, which must be a visible event
of the stream. The data comes from --data, from --file (- for stdin), or
from stdin when neither is given and stdin is not a terminal. A snapshot
older than the stream's newest --snapshot-retention ones is not stored
(SAVED false).`,
		Example: `  esctl snapshot save order-7 --revision 41 --type OrderState --data '{"total":120}'
  esctl snapshot save order-7 --revision 41 --type OrderState --schema 2 --file state.json`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("data") && o.file != "" {
				return usagef("give the data with --data or --file, not both")
			}
			data := []byte(o.data)
			if !cmd.Flags().Changed("data") {
				var err error
				if data, err = a.appendData(args[:1], o.file); err != nil {
					return err
				}
			}
			if err := a.checkSize(cmd.Context(), "snapshot data", reasonSnapshotTooLarge, data, nil); err != nil {
				return err
			}
			cli, err := a.connect()
			if err != nil {
				return err
			}
			resp, err := cli.SaveSnapshot(cmd.Context(), client.Snapshot{Stream: args[0], Revision: o.revision, Type: o.typ, SchemaVersion: o.schema, Data: data})
			if err != nil {
				return err
			}
			return a.printKV(resp, [][2]string{
				{"STREAM", args[0]},
				{"REVISION", strconv.FormatUint(o.revision, 10)},
				{"SAVED", strconv.FormatBool(resp.GetSaved())},
				{"PRUNED", strconv.FormatUint(uint64(resp.GetPruned()), 10)},
			})
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&o.revision, "revision", 0, "the revision the snapshot is of (required)")
	_ = cmd.MarkFlagRequired("revision")
	f.StringVar(&o.typ, "type", "", "snapshot type (required)")
	_ = cmd.MarkFlagRequired("type")
	f.Uint32Var(&o.schema, "schema", 0, "schema version of the data")
	f.StringVar(&o.data, "data", "", "the snapshot's data")
	f.StringVar(&o.file, "file", "", "read the data from this file (- for stdin)")
	return cmd
}

func (a *app) newSnapshotRmCmd() *cobra.Command {
	var before uint64
	cmd := &cobra.Command{
		Use:               "rm STREAM [--before N]",
		ValidArgsFunction: a.completeStreams,
		Short:             "Delete a stream's snapshots (all, or those below --before)",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("before") && before == 0 {
				return usagef("--before 0 deletes nothing; leave it out to delete all")
			}
			cli, err := a.connect()
			if err != nil {
				return err
			}
			n, err := cli.DeleteSnapshots(cmd.Context(), args[0], before)
			if err != nil {
				return err
			}
			return a.printKV(&esdv1.DeleteSnapshotsResponse{Deleted: n}, [][2]string{{"STREAM", args[0]}, {"DELETED", strconv.FormatUint(uint64(n), 10)}})
		}),
	}
	cmd.Flags().Uint64Var(&before, "before", 0, "delete only the snapshots of revisions below this one")
	return cmd
}

func (a *app) newSnapshotPolicyCmd() *cobra.Command {
	cmd := a.groupCmd("policy", "Show or set a category's snapshot policy")
	cmd.Long = `A category's snapshot policy says when esd advises a snapshot of its
streams (in AppendResponse and load): every N events since the latest
snapshot (--every), and/or when events since the latest snapshot times the
stream's load rate (loads per second, a decaying average) reach
--replay-threshold. A category without its own policy has the server's
default (esd --snapshot-every, --snapshot-replay-threshold).`
	cmd.AddCommand(a.newSnapshotPolicyGetCmd(), a.newSnapshotPolicySetCmd(), a.newSnapshotPolicyRmCmd())
	return cmd
}

func (a *app) newSnapshotPolicyGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get CATEGORY",
		Short: "Show the snapshot policy that applies to a category",
		Args:  cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			p, isDefault, err := cli.GetSnapshotPolicy(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printPolicy(args[0], &esdv1.GetSnapshotPolicyResponse{Policy: p, IsDefault: isDefault})
		}),
	}
}

func (a *app) printPolicy(category string, resp *esdv1.GetSnapshotPolicyResponse) error {
	source := "own"
	if resp.GetIsDefault() {
		source = "default"
	}
	return a.printKV(resp, [][2]string{
		{"CATEGORY", category},
		{"POLICY", source},
		{"EVERY", offOr(resp.GetPolicy().GetEvery())},
		{"REPLAY THRESHOLD", offOr(resp.GetPolicy().GetReplayThreshold())},
	})
}

func offOr(n uint64) string {
	if n == 0 {
		return "off"
	}
	return strconv.FormatUint(n, 10)
}

func (a *app) newSnapshotPolicySetCmd() *cobra.Command {
	var p esdv1.SnapshotPolicy
	cmd := &cobra.Command{
		Use:   "set CATEGORY [--every N] [--replay-threshold N]",
		Short: "Set a category's own snapshot policy (a rule not given is off)",
		Example: `  esctl snapshot policy set order --every 100
  esctl snapshot policy set cart --replay-threshold 5000`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("every") && !cmd.Flags().Changed("replay-threshold") {
				return usagef("give --every, --replay-threshold or both (0 turns a rule off)")
			}
			cli, err := a.connect()
			if err != nil {
				return err
			}
			if err := cli.SetSnapshotPolicy(cmd.Context(), args[0], &p); err != nil {
				return err
			}
			return a.printPolicy(args[0], &esdv1.GetSnapshotPolicyResponse{Policy: &p})
		}),
	}
	f := cmd.Flags()
	f.Uint64Var(&p.Every, "every", 0, "advise a snapshot every N events since the latest (0 = off)")
	f.Uint64Var(&p.ReplayThreshold, "replay-threshold", 0, "advise when events since the latest snapshot x loads per second reach this (0 = off)")
	return cmd
}

func (a *app) newSnapshotPolicyRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm CATEGORY",
		Short: "Remove a category's own snapshot policy (the server's default applies)",
		Args:  cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			if err := cli.DeleteSnapshotPolicy(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.printKV(&esdv1.DeleteSnapshotPolicyResponse{}, [][2]string{{"CATEGORY", args[0]}, {"POLICY", "default"}})
		}),
	}
}

func (a *app) newLoadCmd() *cobra.Command {
	var schema uint32
	cmd := &cobra.Command{
		Use:               "load STREAM [--schema V]",
		ValidArgsFunction: a.completeStreams,
		Short:             "Load a stream: its latest snapshot, then the events after it",
		Long: `Load STREAM as an aggregate does, in one call: its latest usable snapshot
of --schema (if any), then every event after it, then the head and the
server's snapshot advice. With -o json one object {snapshot, events, end};
with -o jsonl one object a line: {"snapshot": ...}, {"event": ...} each,
{"end": ...}. The load is one call under --timeout, retried whole after
a temporary error: what is printed is one consistent load.`,
		Example: `  esctl load order-7
  esctl load order-7 --schema 2 -o jsonl | jq -c .event.type`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runLoad(cmd.Context(), args[0], schema)
		}),
	}
	cmd.Flags().Uint32Var(&schema, "schema", 0, "schema version of the snapshot to start from")
	return cmd
}

// runLoad loads the stream whole, as the client does (retried as one
// call after a temporary error, so that what is printed is one load),
// then prints it. A load is bounded by --timeout, as every call the
// client makes in one piece.
func (a *app) runLoad(ctx context.Context, stream string, schema uint32) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	l, err := cli.Load(ctx, stream, schema)
	if err != nil {
		return err
	}
	out := newLoadWriter(a)
	if l.Snapshot != nil {
		if err := out.snapshot(l.Snapshot); err != nil {
			return err
		}
	}
	if err := out.events(l.Events); err != nil {
		return err
	}
	end := &esdv1.LoadEnd{Head: l.Head, EventsSinceSnapshot: l.EventsSinceSnapshot, SnapshotAdvised: l.SnapshotAdvised}
	if err := out.end(end); err != nil {
		return err
	}
	return out.close()
}

// loadWriter prints a load: in a table, the snapshot's rows,
// the events' table (as read prints it), the end's rows; in json, one
// object; in jsonl, one object a line.
type loadWriter struct {
	a      *app
	evs    *eventWriter // table
	nEv    int
	parts  int // json: members written
	closed bool
}

func newLoadWriter(a *app) *loadWriter { return &loadWriter{a: a} }

// member writes one part of the load: a member of the json object, or a
// jsonl line.
func (w *loadWriter) member(key string, m proto.Message) error {
	b, err := marshalJSON(m, false)
	if err != nil {
		return err
	}
	var line string
	switch w.a.output {
	case formatJSONL:
		line = fmt.Sprintf("{%q:%s}\n", key, b)
	default:
		sep := ",\n"
		if w.parts == 0 {
			sep = "{\n"
		}
		line = fmt.Sprintf("%s  %q: %s", sep, key, b)
	}
	w.parts++
	_, err = io.WriteString(w.a.stdout, line)
	return err
}

func (w *loadWriter) snapshot(sn *esdv1.Snapshot) error {
	if w.a.output != formatTable {
		return w.member("snapshot", sn)
	}
	tw := newTabWriter(w.a.stdout)
	for _, r := range snapshotRows(sn, dataWidth) {
		fmt.Fprintf(tw, "SNAPSHOT %s\t%s\n", r[0], r[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w.a.stdout)
	return err
}

func (w *loadWriter) events(evs []*esdv1.RecordedEvent) error {
	switch w.a.output {
	case formatTable:
		if w.evs == nil {
			w.evs = newEventWriter(w.a, false)
		}
		return w.evs.addAll(evs)
	case formatJSONL:
		for _, ev := range evs {
			if err := w.member("event", ev); err != nil {
				return err
			}
		}
		return nil
	}
	for _, ev := range evs {
		b, err := marshalJSON(ev, false)
		if err != nil {
			return err
		}
		var s string
		switch {
		case w.nEv > 0:
			s = ",\n    "
		case w.parts == 0:
			s = "{\n  \"events\": [\n    "
		default:
			s = ",\n  \"events\": [\n    "
		}
		if _, err := fmt.Fprintf(w.a.stdout, "%s%s", s, b); err != nil {
			return err
		}
		w.nEv++
	}
	return nil
}

// endEvents closes the json events array (an empty one when none came).
func (w *loadWriter) endEvents() error {
	if w.a.output != formatJSON {
		return nil
	}
	var s string
	switch {
	case w.nEv > 0:
		s = "\n  ]"
	case w.parts == 0:
		s = "{\n  \"events\": []"
	default:
		s = ",\n  \"events\": []"
	}
	w.parts++
	_, err := io.WriteString(w.a.stdout, s)
	return err
}

func (w *loadWriter) end(e *esdv1.LoadEnd) error {
	switch w.a.output {
	case formatJSONL:
		return w.member("end", e)
	case formatJSON:
		if err := w.endEvents(); err != nil {
			return err
		}
		return w.member("end", e)
	}
	if w.evs == nil {
		w.evs = newEventWriter(w.a, false)
	}
	if err := w.evs.close(); err != nil {
		return err
	}
	w.closed = true
	tw := newTabWriter(w.a.stdout)
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "HEAD\t%d\n", e.GetHead())
	fmt.Fprintf(tw, "EVENTS SINCE SNAPSHOT\t%d\n", e.GetEventsSinceSnapshot())
	fmt.Fprintf(tw, "SNAPSHOT ADVISED\t%t\n", e.GetSnapshotAdvised())
	return tw.Flush()
}

func (w *loadWriter) close() error {
	switch w.a.output {
	case formatJSON:
		if w.parts == 0 {
			return nil
		}
		_, err := io.WriteString(w.a.stdout, "\n}\n")
		return err
	case formatTable:
		if !w.closed && w.evs != nil {
			return w.evs.close()
		}
	}
	return nil
}
