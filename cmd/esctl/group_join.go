package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// nackAction is the --nack flag (a pflag.Value).
type nackAction struct{ v esdv1.NackAction }

func (n *nackAction) Set(v string) error {
	switch v {
	case "retry":
		n.v = esdv1.NackAction_NACK_ACTION_RETRY
	case "retry-later", "retry_later":
		n.v = esdv1.NackAction_NACK_ACTION_RETRY_LATER
	case "park":
		n.v = esdv1.NackAction_NACK_ACTION_PARK
	default:
		return fmt.Errorf("want retry, retry-later or park, not %q", v)
	}
	return nil
}

func (n *nackAction) String() string {
	switch n.v {
	case esdv1.NackAction_NACK_ACTION_RETRY:
		return "retry"
	case esdv1.NackAction_NACK_ACTION_RETRY_LATER:
		return "retry-later"
	case esdv1.NackAction_NACK_ACTION_PARK:
		return "park"
	}
	return ""
}

func (n *nackAction) Type() string { return "retry|retry-later|park" }

type joinOptions struct {
	ack    bool
	nack   nackAction
	nacks  bool // --nack was given
	reason string
	member string
	limit  uint64
}

func (a *app) newGroupJoinCmd() *cobra.Command {
	var o joinOptions
	cmd := &cobra.Command{
		Use:               "join NAME",
		ValidArgsFunction: a.completeGroups,
		Short:             "Join a consumer group as a member: print each delivery and ack (or nack) it",
		Long: `Join the group as a member and print each event delivered to it, with its
delivery count, acknowledging it (or, with --nack, refusing it) once printed.

--limit N leaves the group after N deliveries; Ctrl-C leaves it too. On the
way out esctl closes its side of the stream and waits, up to --timeout, for
the server to end it, so that every ack sent counts. The server sends a
member events ahead of its acks; those not printed are left unanswered, and
the server hands them to the other members (their delivery counts may go
up). Both ways out exit 0; a server that does not end the stream within
--timeout makes esctl exit 1, saying the last acks may be lost.

esctl joins once: a server that ends the membership (it stops, the group
is deleted, the connection is lost) ends esctl with its error, without
joining again.

The joined member id goes to stderr. -o json prints one Delivery a line, as
jsonl.`,
		Example: `  esctl group join billing --limit 10
  esctl group join billing --nack park --reason "bad data" --limit 1
  esctl group join billing -o jsonl | jq -c '{count: .deliveryCount, id: .event.id}'`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			o.nacks = cmd.Flags().Changed("nack")
			switch {
			case o.nacks && cmd.Flags().Changed("ack"):
				return usagef("--ack and --nack exclude each other")
			case !o.ack && !o.nacks:
				return usagef("--ack=false needs --nack ACTION: each delivery gets an answer")
			case cmd.Flags().Changed("reason") && !o.nacks:
				return usagef("--reason goes with --nack")
			}
			return a.runJoin(cmd.Context(), args[0], o)
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&o.ack, "ack", true, "acknowledge each delivery")
	f.Var(&o.nack, "nack", "refuse each delivery instead: retry (deliver again now), retry-later (after the ack timeout) or park")
	_ = cmd.RegisterFlagCompletionFunc("nack", cobra.FixedCompletions(
		[]string{"retry", "retry-later", "park"}, cobra.ShellCompDirectiveNoFileComp))
	f.StringVar(&o.reason, "reason", "nacked by esctl", "with --nack: why, kept with a parked event")
	f.StringVar(&o.member, "member", "esctl", "member name, shown in the server's logs")
	f.Uint64Var(&o.limit, "limit", 0, "leave after this many deliveries (0 = until Ctrl-C)")
	return cmd
}

// answer is the handler's answer to a printed delivery: nil acknowledges
// it; with --nack, an error whose text is --reason, marked with the
// action.
func (o *joinOptions) answer() error {
	if !o.nacks {
		return nil
	}
	err := errors.New(o.reason)
	switch o.nack.v {
	case esdv1.NackAction_NACK_ACTION_RETRY_LATER:
		return client.RetryLater(err)
	case esdv1.NackAction_NACK_ACTION_PARK:
		return client.Park(err)
	}
	return err // a plain error: retry now
}

// deliveryColumns are subscribe's columns with the delivery count before
// DATA, which stays last: it is the one of no fixed width.
var deliveryColumns = func() []liveColumn {
	data := eventColumns[len(eventColumns)-1]
	cols := append([]liveColumn(nil), eventColumns[:len(eventColumns)-1]...)
	return append(cols, liveColumn{"DELIVERY-COUNT", 0}, data)
}()

func deliveryRow(d *esdv1.Delivery) []string {
	row := eventRow(d.GetEvent())
	data := row[len(row)-1]
	return append(row[:len(row)-1], strconv.FormatUint(uint64(d.GetDeliveryCount()), 10), data)
}

// runJoin is a member's life: one membership (JoinOnce), ended by
// Ctrl-C (ctx), --limit, or the server ending the call. Leaving, the
// member lets the server confirm it, so that every ack sent counts;
// --timeout bounds that wait (DrainTimeout). Like subscribe, membership
// is not bounded by --timeout; leaving is.
func (a *app) runJoin(ctx context.Context, group string, o joinOptions) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	out := newLiveWriter(a, deliveryColumns, deliveryRow, false)
	// mu keeps out and printErr to one caller at a time, and to none
	// once RunMember returned (a handler cut short by the drain timeout
	// may still be running then).
	var (
		mu       sync.Mutex
		finished bool
		printErr error
		n        uint64
	)
	handler := func(hctx context.Context, ev *esdv1.RecordedEvent) error {
		mu.Lock()
		defer mu.Unlock()
		if finished || printErr != nil {
			return errors.New("esctl stopped before printing it")
		}
		if err := out.add(&esdv1.Delivery{Event: ev, DeliveryCount: client.DeliveryCount(hctx)}); err != nil {
			// stdout failed: nothing more can be printed. The delivery
			// not printed is nacked, for another member to handle.
			printErr = err
			stop()
			return err
		}
		if n++; n == o.limit {
			stop() // the member takes no more deliveries, and leaves
		}
		return o.answer()
	}
	joined := func(id string) {
		mu.Lock()
		defer mu.Unlock()
		m := &esdv1.JoinResponse{Content: &esdv1.JoinResponse_Joined{Joined: &esdv1.Joined{MemberId: id}}}
		if err := out.note(m, fmt.Sprintf("joined group %s as member %s", group, id)); err != nil {
			printErr = err
			stop()
		}
	}
	drain := a.timeout
	if drain <= 0 {
		drain = math.MaxInt64 // --timeout 0: wait for the server as long as it takes
	}
	err = cli.RunMember(mctx, group, handler, client.JoinOnce(), client.MemberName(o.member),
		client.OnJoined(joined), client.DrainTimeout(drain))
	mu.Lock()
	defer mu.Unlock()
	finished = true
	switch {
	case printErr != nil:
		return printErr
	case errors.Is(err, client.ErrDrainTimeout):
		return fmt.Errorf("leaving group %s: %w; the last acks may be lost", group, err)
	case err != nil:
		return err
	}
	return out.close()
}
