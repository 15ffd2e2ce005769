package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func (a *app) newGroupCmd() *cobra.Command {
	cmd := a.groupCmd("group", "Manage consumer groups (persistent subscriptions shared by members)")
	cmd.Long = `A consumer group follows a stream, a category or $all like a subscription,
but durably and shared: the server remembers its checkpoint, and each event
goes to one of the group's members until one acknowledges it. An event
delivered --max-deliveries times without an ack, or nacked with park, is
parked: see esctl group parked and replay-parked.`
	cmd.AddCommand(
		a.newGroupCreateCmd(),
		a.newGroupUpdateCmd(),
		a.newGroupLsCmd(),
		a.newGroupInfoCmd(),
		a.newGroupRmCmd(),
		a.newGroupParkedCmd(),
		a.newGroupReplayParkedCmd(),
		a.newGroupJoinCmd(),
		a.newGroupWaitCmd(),
	)
	return cmd
}

// groupStrategy is the --strategy flag (a pflag.Value).
type groupStrategy struct{ v esdv1.GroupStrategy }

func (s *groupStrategy) Set(v string) error {
	switch v {
	case "round-robin", "round_robin":
		s.v = esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN
	case "by-stream", "by_stream":
		s.v = esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM
	default:
		return fmt.Errorf("want round-robin or by-stream, not %q", v)
	}
	return nil
}

// String is empty until set, so the help shows no default: unset leaves
// the choice to the server (create) or the group (update).
func (s *groupStrategy) String() string {
	if s.v == esdv1.GroupStrategy_GROUP_STRATEGY_UNSPECIFIED {
		return ""
	}
	return strategyName(s.v)
}

func (s *groupStrategy) Type() string { return "round-robin|by-stream" }

// strategyName names a strategy as --strategy spells it; unspecified
// reads as round robin, as the API says.
func strategyName(s esdv1.GroupStrategy) string {
	switch s {
	case esdv1.GroupStrategy_GROUP_STRATEGY_UNSPECIFIED, esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN:
		return "round-robin"
	case esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM:
		return "by-stream"
	}
	return s.String() // a strategy newer than esctl
}

// groupSettings are the flags of a group's changeable settings. Only the
// flags given are sent: the rest keep the server's defaults (create) or
// the group's values (update).
type groupSettings struct {
	ackTimeout    time.Duration
	maxDeliveries uint32
	maxInFlight   uint32
	strategy      groupStrategy
}

var groupSettingFlags = []string{"ack-timeout", "max-deliveries", "max-in-flight", "strategy"}

func addGroupSettingsFlags(cmd *cobra.Command, s *groupSettings) {
	f := cmd.Flags()
	f.DurationVar(&s.ackTimeout, "ack-timeout", 0, "how long a delivery may go unacknowledged before it is delivered again (0 = the server's default, 30s)")
	f.Uint32Var(&s.maxDeliveries, "max-deliveries", 0, "deliveries of an event before it is parked (0 = the server's default, 10)")
	f.Uint32Var(&s.maxInFlight, "max-in-flight", 0, "events delivered and not acknowledged, over all members (0 = the server's default, 1000)")
	f.Var(&s.strategy, "strategy", "round-robin (each event to the next member with room) or by-stream (a stream's events to one member, in order); default round-robin")
	_ = cmd.RegisterFlagCompletionFunc("strategy", cobra.FixedCompletions(
		[]string{"round-robin", "by-stream"}, cobra.ShellCompDirectiveNoFileComp))
}

// given reports whether any setting flag is on the command line.
func (s *groupSettings) given(cmd *cobra.Command) bool {
	for _, name := range groupSettingFlags {
		if cmd.Flags().Changed(name) {
			return true
		}
	}
	return false
}

// apply puts the settings given on the command line into g. The limits
// (ack timeout 100ms to 1h, ...) are the server's to check: it names
// them in its INVALID_ARGUMENT; only a negative timeout, which no limit
// could allow, is refused here.
func (s *groupSettings) apply(cmd *cobra.Command, g *esdv1.Group) error {
	f := cmd.Flags()
	if f.Changed("ack-timeout") {
		if s.ackTimeout < 0 {
			return usagef("--ack-timeout must not be negative")
		}
		g.AckTimeout = durationpb.New(s.ackTimeout)
	}
	if f.Changed("max-deliveries") {
		g.MaxDeliveries = s.maxDeliveries
	}
	if f.Changed("max-in-flight") {
		g.MaxInFlight = s.maxInFlight
	}
	if f.Changed("strategy") {
		g.Strategy = s.strategy.v
	}
	return nil
}

type groupCreateOptions struct {
	target   target
	from     startPoint
	settings groupSettings
}

func (a *app) newGroupCreateCmd() *cobra.Command {
	var o groupCreateOptions
	cmd := &cobra.Command{
		Use:   "create NAME (--stream S | --category C | --all)",
		Short: "Create a consumer group",
		Example: `  esctl group create billing --category order
  esctl group create audit --all --type-prefix User --from end --ack-timeout 1m
  esctl group create carts --category cart --strategy by-stream --max-in-flight 100`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if err := o.target.check(cmd, "--stream"); err != nil {
				return err
			}
			g, err := o.group(cmd, args[0])
			if err != nil {
				return err
			}
			return a.runGroupCreate(cmd.Context(), g)
		}),
	}
	addTargetFlags(cmd, &o.target, true)
	_ = cmd.RegisterFlagCompletionFunc("stream", a.completeStreamFlag)
	addFromFlag(cmd, &o.from, "where the group starts: start, end (only events committed from now on), or after position N of $all")
	addGroupSettingsFlags(cmd, &o.settings)
	return cmd
}

// group builds the Group to create; the target is checked.
func (o *groupCreateOptions) group(cmd *cobra.Command, name string) (*esdv1.Group, error) {
	t := &o.target
	g := &esdv1.Group{Name: name, Filter: t.filter()}
	switch {
	case t.hasStream:
		g.Target = &esdv1.Group_Stream{Stream: t.stream}
	case t.hasCategory:
		g.Target = &esdv1.Group_Category{Category: t.category}
	default:
		g.Target = &esdv1.Group_All{All: &emptypb.Empty{}}
	}
	switch o.from.kind {
	case fromEnd:
		g.Start = &esdv1.Group_FromEnd{FromEnd: &emptypb.Empty{}}
	case fromAfter:
		g.Start = &esdv1.Group_AfterPosition{AfterPosition: o.from.after}
	default:
		g.Start = &esdv1.Group_FromStart{FromStart: &emptypb.Empty{}}
	}
	return g, o.settings.apply(cmd, g)
}

func (a *app) runGroupCreate(ctx context.Context, g *esdv1.Group) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	info, err := cli.CreateGroup(ctx, g)
	if err != nil {
		return err
	}
	return a.printGroupInfo(info, "CreateGroupResponse")
}

func (a *app) newGroupUpdateCmd() *cobra.Command {
	var s groupSettings
	cmd := &cobra.Command{
		Use:               "update NAME",
		ValidArgsFunction: a.completeGroups,
		Short:             "Change a consumer group's settings (not its target or start)",
		Long: `Change the settings given; the others stay as they are. Members see the
change at once. A group's target, filter and start are fixed when it is
created.`,
		Example: `  esctl group update billing --ack-timeout 2m --max-deliveries 5`,
		Args:    cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if !s.given(cmd) {
				return usagef("nothing to change: give one or more of --%s", strings.Join(groupSettingFlags, ", --"))
			}
			return a.runGroupUpdate(cmd.Context(), cmd, args[0], &s)
		}),
	}
	addGroupSettingsFlags(cmd, &s)
	return cmd
}

// runGroupUpdate reads the group first: UpdateGroup takes the whole Group,
// target included, and esctl changes only what it was told to. Two updates
// at once may overwrite each other's changes; the API has no version to
// guard against that.
func (a *app) runGroupUpdate(ctx context.Context, cmd *cobra.Command, name string, s *groupSettings) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	cur, err := getGroup(ctx, cli, name)
	if err != nil {
		return err
	}
	g := proto.CloneOf(cur.GetGroup())
	if g == nil {
		return fmt.Errorf("server sent GetGroupResponse without the group")
	}
	g.Start = nil // set at creation; an update that carries it is refused
	if err := s.apply(cmd, g); err != nil {
		return err
	}
	info, err := cli.UpdateGroup(ctx, g)
	if err != nil {
		return err
	}
	return a.printGroupInfo(info, "UpdateGroupResponse")
}

func getGroup(ctx context.Context, cli *client.Client, name string) (*esdv1.GroupInfo, error) {
	info, err := cli.GetGroup(ctx, name)
	if err != nil {
		return nil, err
	}
	if info == nil {
		return nil, fmt.Errorf("server sent GetGroupResponse without info")
	}
	return info, nil
}

func (a *app) newGroupInfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "info NAME",
		ValidArgsFunction: a.completeGroups,
		Short:             "Describe a consumer group and its progress",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			info, err := getGroup(cmd.Context(), cli, args[0])
			if err != nil {
				return err
			}
			return a.printGroupInfo(info, "GetGroupResponse")
		}),
	}
}

// printGroupInfo prints a group as KEY VALUE lines, or the GroupInfo in
// json: create, update and info print the same object, the one ls lists.
func (a *app) printGroupInfo(info *esdv1.GroupInfo, resp string) error {
	if info == nil {
		return fmt.Errorf("server sent %s without info", resp)
	}
	g := info.GetGroup()
	ackTimeout := "-"
	if g.GetAckTimeout() != nil {
		ackTimeout = g.GetAckTimeout().AsDuration().String()
	}
	return a.printKV(info, [][2]string{
		{"NAME", g.GetName()},
		{"TARGET", groupTarget(g)},
		{"STREAM PREFIXES", listOrDash(g.GetFilter().GetStreamPrefixes())},
		{"TYPE PREFIXES", listOrDash(g.GetFilter().GetEventTypePrefixes())},
		{"STRATEGY", strategyName(g.GetStrategy())},
		{"ACK TIMEOUT", ackTimeout},
		{"MAX DELIVERIES", strconv.FormatUint(uint64(g.GetMaxDeliveries()), 10)},
		{"MAX IN FLIGHT", strconv.FormatUint(uint64(g.GetMaxInFlight()), 10)},
		{"CHECKPOINT", strconv.FormatUint(info.GetCheckpoint(), 10)},
		{"MEMBERS", strconv.FormatUint(uint64(info.GetMembers()), 10)},
		{"IN FLIGHT", strconv.FormatUint(info.GetInFlight(), 10)},
		{"PARKED", strconv.FormatUint(info.GetParked(), 10)},
		{"DELIVERED", strconv.FormatUint(info.GetDelivered(), 10)},
		{"REDELIVERED", strconv.FormatUint(info.GetRedelivered(), 10)},
		{"ACKED", strconv.FormatUint(info.GetAcked(), 10)},
	})
}

// groupTarget names a group's target in one word, so that a row of
// group ls splits on whitespace: stream:NAME, category:NAME, all, or
// all+filter (group info shows the filter).
func groupTarget(g *esdv1.Group) string {
	switch t := g.GetTarget().(type) {
	case *esdv1.Group_Stream:
		return "stream:" + t.Stream
	case *esdv1.Group_Category:
		return "category:" + t.Category
	case *esdv1.Group_All:
		if g.GetFilter() != nil {
			return "all+filter"
		}
		return "all"
	}
	return "-"
}

func listOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

func (a *app) newGroupLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List consumer groups with their progress",
		Args:  cobra.NoArgs,
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			return a.runGroupLs(cmd.Context())
		}),
	}
}

func (a *app) runGroupLs(ctx context.Context) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	groups, err := cli.ListGroups(ctx)
	if err != nil {
		return err
	}
	out := newRecordWriter(a,
		[]string{"NAME", "TARGET", "STRATEGY", "CHECKPOINT", "MEMBERS", "IN-FLIGHT", "PARKED", "DELIVERED", "ACKED"},
		func(info *esdv1.GroupInfo) []string {
			g := info.GetGroup()
			return []string{g.GetName(), groupTarget(g), strategyName(g.GetStrategy()),
				strconv.FormatUint(info.GetCheckpoint(), 10),
				strconv.FormatUint(uint64(info.GetMembers()), 10),
				strconv.FormatUint(info.GetInFlight(), 10),
				strconv.FormatUint(info.GetParked(), 10),
				strconv.FormatUint(info.GetDelivered(), 10),
				strconv.FormatUint(info.GetAcked(), 10)}
		})
	for _, info := range groups {
		if err := out.add(info); err != nil {
			return err
		}
	}
	return out.close()
}

func (a *app) newGroupRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "rm NAME",
		ValidArgsFunction: a.completeGroups,
		Short:             "Delete a consumer group, its checkpoint and its parked events",
		Long: `Delete a consumer group with its checkpoint and parked events. Its members'
streams end with GROUP_NOT_FOUND.`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runGroupRm(cmd.Context(), args[0])
		}),
	}
}

func (a *app) runGroupRm(ctx context.Context, name string) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	if err := cli.DeleteGroup(ctx, name); err != nil {
		return err
	}
	return a.printKV(&esdv1.DeleteGroupResponse{}, [][2]string{{"GROUP", name}, {"DELETED", "true"}})
}

type groupParkedOptions struct {
	limit int
}

func (a *app) newGroupParkedCmd() *cobra.Command {
	var o groupParkedOptions
	cmd := &cobra.Command{
		Use:               "parked NAME",
		ValidArgsFunction: a.completeGroups,
		Short:             "List a consumer group's parked events, by position",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			if o.limit < 0 {
				return usagef("--limit must not be negative")
			}
			return a.runGroupParked(cmd.Context(), args[0], o)
		}),
	}
	cmd.Flags().IntVar(&o.limit, "limit", 0, "most events to list (0 = all)")
	return cmd
}

// parkedReasonWidth is how much of a park reason a table shows.
const parkedReasonWidth = 40

// runGroupParked lists every page (each its own call under --timeout) up
// to --limit.
func (a *app) runGroupParked(ctx context.Context, name string, o groupParkedOptions) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	var pageSize uint32
	if o.limit > 0 && o.limit < 1000 {
		pageSize = uint32(o.limit) // no point fetching a full page
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing at --limit
	out := newRecordWriter(a, []string{"POSITION", "STREAM", "REVISION", "TYPE", "DELIVERIES", "REASON", "PARKED-AT"}, parkedRow)
	return writeAll(out, o.limit, cli.ListParked(ctx, name, pageSize))
}

// parkedRow shows a parked event; one deleted since it was parked comes
// back as its position alone.
func parkedRow(p *esdv1.ParkedEvent) []string {
	ev := p.GetEvent()
	stream, revision, typ := ev.GetStream(), strconv.FormatUint(ev.GetRevision(), 10), ev.GetType()
	if stream == "" {
		stream, revision, typ = "(deleted)", "-", "-"
	}
	reason := displayData([]byte(p.GetReason()), parkedReasonWidth)
	if reason == "" {
		reason = "-"
	}
	return []string{strconv.FormatUint(ev.GetPosition(), 10), stream, revision, typ,
		strconv.FormatUint(uint64(p.GetDeliveryCount()), 10), reason, formatTime(p.GetParkedAt())}
}

func (a *app) newGroupReplayParkedCmd() *cobra.Command {
	var limit uint64
	cmd := &cobra.Command{
		Use:               "replay-parked NAME",
		ValidArgsFunction: a.completeGroups,
		Short:             "Hand a consumer group's parked events back to its members",
		Long: `Hand parked events back to the group's members, oldest first; their
delivery counts start again. An event leaves the parked list when it is
acknowledged.`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runReplayParked(cmd.Context(), args[0], limit)
		}),
	}
	cmd.Flags().Uint64Var(&limit, "max", 0, "most events to replay, oldest first (0 = all)")
	return cmd
}

func (a *app) runReplayParked(ctx context.Context, group string, maxCount uint64) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	n, err := cli.ReplayParked(ctx, group, maxCount)
	if err != nil {
		return err
	}
	return a.printKV(&esdv1.ReplayParkedResponse{Replayed: n}, [][2]string{
		{"GROUP", group},
		{"REPLAYED", strconv.FormatUint(n, 10)},
	})
}

func (a *app) newGroupWaitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wait NAME POSITION",
		Short: "Wait until a consumer group has handled every event up to a position",
		Long: `Wait until the group's checkpoint reaches POSITION: every event of the
group's target up to it is acknowledged (or parked). POSITION is a position
of $all, such as the last_position esctl append prints; a position of a
stream the group does not follow is passed once the group reads beyond it.

--timeout is how long to wait (0 = the server's default, 30s; at most 5m).
Exits 1, after printing the checkpoint, when the position is not reached
within it.`,
		Args: cobra.ExactArgs(2),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			pos, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return usagef("POSITION %q is not a position (an unsigned integer)", args[1])
			}
			return a.runGroupWait(cmd.Context(), args[0], pos)
		}),
	}
}

func (a *app) runGroupWait(ctx context.Context, name string, pos uint64) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	checkpoint, reached, err := cli.WaitForCheckpoint(ctx, name, pos, a.timeout)
	if err != nil {
		return err
	}
	resp := &esdv1.WaitForCheckpointResponse{Checkpoint: checkpoint, Reached: reached}
	if err := a.printKV(resp, [][2]string{
		{"GROUP", name},
		{"POSITION", strconv.FormatUint(pos, 10)},
		{"CHECKPOINT", strconv.FormatUint(checkpoint, 10)},
		{"REACHED", strconv.FormatBool(reached)},
	}); err != nil {
		return err
	}
	if !reached {
		return fmt.Errorf("group %s has not reached position %d (checkpoint %d): still being processed", name, pos, checkpoint)
	}
	return nil
}
