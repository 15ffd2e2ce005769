package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// target is what subscribe and group create follow: one stream, a
// category, or $all with an optional filter.
type target struct {
	stream         string
	hasStream      bool // an empty name is still a stream, for the server to refuse
	category       string
	hasCategory    bool
	all            bool
	streamPrefixes []string
	typePrefixes   []string
}

// addTargetFlags adds --category, --all and the filter flags; a group
// takes its stream from --stream too (subscribe from its argument).
func addTargetFlags(cmd *cobra.Command, t *target, streamFlag bool) {
	f := cmd.Flags()
	if streamFlag {
		f.StringVar(&t.stream, "stream", "", "follow this stream")
	}
	f.StringVar(&t.category, "category", "", `follow every stream of this category ("product" follows product-42 and product)`)
	f.BoolVar(&t.all, "all", false, "follow the global log ($all)")
	f.StringArrayVar(&t.streamPrefixes, "stream-prefix", nil, "with --all: only streams starting with this (repeatable)")
	f.StringArrayVar(&t.typePrefixes, "type-prefix", nil, "with --all: only event types starting with this (repeatable)")
}

// check makes sure exactly one target is given and the filter goes with
// --all, the only target the server filters; streamName says how the
// command takes a stream (STREAM or --stream), for the message.
func (t *target) check(cmd *cobra.Command, streamName string) error {
	if cmd.Flags().Changed("stream") {
		t.hasStream = true
	}
	t.hasCategory = cmd.Flags().Changed("category")
	n := 0
	for _, given := range []bool{t.hasStream, t.hasCategory, t.all} {
		if given {
			n++
		}
	}
	if n != 1 {
		return usagef("give exactly one of %s, --category or --all", streamName)
	}
	if !t.all && (len(t.streamPrefixes) > 0 || len(t.typePrefixes) > 0) {
		return usagef("--stream-prefix and --type-prefix filter --all only")
	}
	return nil
}

func (t *target) filter() *esdv1.Filter {
	if len(t.streamPrefixes) == 0 && len(t.typePrefixes) == 0 {
		return nil
	}
	return &esdv1.Filter{StreamPrefixes: t.streamPrefixes, EventTypePrefixes: t.typePrefixes}
}

type startKind int

const (
	fromStart startKind = iota
	fromEnd
	fromAfter
)

// startPoint is the --from flag (a pflag.Value) of subscribe and group
// create: start, end, or a number to start after (a revision or a
// position, depending on the target). A bad value fails flag parsing, a
// usage error.
type startPoint struct {
	kind  startKind
	after uint64
}

func (s *startPoint) Set(v string) error {
	switch v {
	case "start":
		*s = startPoint{kind: fromStart}
		return nil
	case "end":
		*s = startPoint{kind: fromEnd}
		return nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return fmt.Errorf("want start, end or a number to start after, not %q", v)
	}
	*s = startPoint{kind: fromAfter, after: n}
	return nil
}

func (s *startPoint) String() string {
	switch s.kind {
	case fromEnd:
		return "end"
	case fromAfter:
		return strconv.FormatUint(s.after, 10)
	}
	return "start"
}

func (s *startPoint) Type() string { return "start|end|N" }

func addFromFlag(cmd *cobra.Command, s *startPoint, usage string) {
	cmd.Flags().Var(s, "from", usage)
	_ = cmd.RegisterFlagCompletionFunc("from", cobra.FixedCompletions(
		[]string{"start", "end"}, cobra.ShellCompDirectiveNoFileComp))
}

type subscribeOptions struct {
	target        target
	from          startPoint
	limit         uint64
	untilCaughtUp bool
	markers       bool
}

func (a *app) newSubscribeCmd() *cobra.Command {
	var o subscribeOptions
	cmd := &cobra.Command{
		Use:               "subscribe (STREAM | --category C | --all)",
		ValidArgsFunction: a.completeStreams,
		Short:             "Follow a stream, a category or $all: history, then live events",
		Long: `Print the target's events from --from on, then keep printing new ones as
they are committed, until Ctrl-C, --limit or --until-caught-up.

--from N starts after revision N of a stream, or after position N of $all
for --category and --all (a checkpoint, or the last position a reader
handled).

Rows go to stdout as they come. The switch from history to live events
("-- caught up at position N"), checkpoints of filtered --all scans and the
end of the subscription (the stream was deleted, the server stops) go to
stderr; with -o jsonl --markers they go to stdout as JSON lines instead
({"caughtUp":{...}}, {"checkpoint":{...}}, {"ended":{...}}), among the
events. -o json prints one object a line, as jsonl.

Ctrl-C, --limit, --until-caught-up and the end of the subscription exit 0.`,
		Example: `  esctl subscribe product-42
  esctl subscribe --category product --from end
  esctl subscribe --all --type-prefix Order --from 1200 -o jsonl --markers
  esctl subscribe --all --until-caught-up -o jsonl | jq -r .type | sort | uniq -c`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.target.stream, o.target.hasStream = args[0], true
			}
			if err := o.target.check(cmd, "STREAM"); err != nil {
				return err
			}
			if o.markers && a.output == formatTable {
				return usagef("--markers needs -o json or jsonl (a table leaves them on stderr)")
			}
			return a.runSubscribe(cmd.Context(), o)
		}),
	}
	addTargetFlags(cmd, &o.target, false)
	addFromFlag(cmd, &o.from, "start, end (only new events), or N: after revision N (stream) or position N (--category, --all)")
	f := cmd.Flags()
	f.Uint64Var(&o.limit, "limit", 0, "stop after this many events (0 = no limit)")
	f.BoolVar(&o.untilCaughtUp, "until-caught-up", false, "stop when the history is printed, before live events")
	f.BoolVar(&o.markers, "markers", false, "with -o json or jsonl: print caught-up, checkpoint and ended as JSON lines on stdout")
	return cmd
}

// clientOptions are the client's options for the target and --from;
// check has passed. Without --from the client starts at the first event,
// as --from start says.
func (o *subscribeOptions) clientOptions() []client.SubscribeOption {
	t := &o.target
	opts := []client.SubscribeOption{client.SubscribeOnce()}
	switch {
	case t.hasStream:
		opts = append(opts, client.SubscribeStream(t.stream))
	case t.hasCategory:
		opts = append(opts, client.SubscribeCategory(t.category))
	default:
		opts = append(opts, client.SubscribeAll(client.Filter{StreamPrefixes: t.streamPrefixes, TypePrefixes: t.typePrefixes}))
	}
	switch {
	case o.from.kind == fromEnd:
		opts = append(opts, client.FromEnd())
	case o.from.kind == fromAfter && t.hasStream:
		opts = append(opts, client.AfterRevision(o.from.after))
	case o.from.kind == fromAfter:
		opts = append(opts, client.AfterPosition(o.from.after))
	}
	return opts
}

// eventColumns are the columns of subscribed events; group join adds one.
var eventColumns = []liveColumn{
	{"POSITION", 8}, {"STREAM", 16}, {"REVISION", 8}, {"TYPE", 16}, {"ID", 36}, {"DATA", 0},
}

func eventRow(ev *esdv1.RecordedEvent) []string {
	return []string{
		strconv.FormatUint(ev.GetPosition(), 10),
		ev.GetStream(),
		strconv.FormatUint(ev.GetRevision(), 10),
		ev.GetType(),
		ev.GetId(),
		displayData(ev.GetData(), dataWidth),
	}
}

// runSubscribe prints what the subscription sends until it ends. It is
// not bounded by --timeout: waiting is what a subscription does. The
// subscription is one call (SubscribeOnce): esctl shows what the server
// says, its ending included, rather than resuming after it. Ctrl-C (ctx
// ended), --limit, --until-caught-up and the server's ending are
// successes; a failure is the error.
func (a *app) runSubscribe(ctx context.Context, o subscribeOptions) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	out := newLiveWriter(a, eventColumns, eventRow, o.markers)
	var n uint64
	for se, err := range cli.Subscribe(ctx, o.clientOptions()...) {
		if err != nil {
			return err
		}
		done, err := o.handle(se, out, &n)
		if err != nil {
			return err // stdout failed: nothing more can be printed
		}
		if done {
			break
		}
	}
	return out.close()
}

// handle prints one event or marker; done says the subscription is over
// for esctl. A marker goes out as the SubscribeResponse the server sent,
// for --markers.
func (o *subscribeOptions) handle(se client.SubscriptionEvent, out *liveWriter[*esdv1.RecordedEvent], n *uint64) (done bool, err error) {
	switch {
	case se.Event != nil:
		if err := out.add(se.Event); err != nil {
			return false, err
		}
		*n++
		return *n == o.limit, nil
	case se.CaughtUp:
		m := &esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_CaughtUp{CaughtUp: &esdv1.CaughtUp{Position: se.Position}}}
		return o.untilCaughtUp, out.note(m, fmt.Sprintf("caught up at position %d", se.Position))
	case se.Ended != "":
		m := &esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Ended{Ended: &esdv1.Ended{Reason: se.Ended}}}
		return true, out.note(m, "ended: "+se.Ended)
	}
	m := &esdv1.SubscribeResponse{Content: &esdv1.SubscribeResponse_Checkpoint{Checkpoint: &esdv1.Checkpoint{Position: se.Position}}}
	return false, out.note(m, fmt.Sprintf("checkpoint %d", se.Position))
}
