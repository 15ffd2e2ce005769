package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

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
up). Both ways out exit 0.

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

// reply answers the delivery of event id.
func (o *joinOptions) reply(id string) *esdv1.JoinRequest {
	if o.nacks {
		return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Nack{Nack: &esdv1.Nack{
			EventIds: []string{id}, Action: o.nack.v, Reason: o.reason}}}
	}
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: []string{id}}}}
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

// joinStream is one membership: the bidirectional stream, with a
// goroutine receiving from it so that esctl can wait for a message and
// for Ctrl-C at once. Only runJoin's goroutine sends.
type joinStream struct {
	group  string
	stream grpc.BidiStreamingClient[esdv1.JoinRequest, esdv1.JoinResponse]
	cancel context.CancelFunc // ends the stream
	msgs   chan *esdv1.JoinResponse
	err    error // why the stream ended (io.EOF: cleanly); read once msgs is closed
}

// receive passes the stream's messages on until it ends, then closes
// msgs. Once the stream is cancelled nobody may be listening: messages
// are dropped, and the next Recv fails.
func (j *joinStream) receive(ctx context.Context) {
	defer close(j.msgs)
	for {
		resp, err := j.stream.Recv()
		if err != nil {
			j.err = err
			return
		}
		select {
		case j.msgs <- resp:
		case <-ctx.Done():
		}
	}
}

// end waits for the end of the stream, skipping messages, and returns
// why it ended: nil when the server ended it cleanly.
func (j *joinStream) end() error {
	for range j.msgs {
		// Deliveries after esctl stopped listening are not its to answer:
		// unanswered, they go to the other members when this one leaves.
	}
	if errors.Is(j.err, io.EOF) {
		return nil
	}
	return j.err
}

// runJoin is a member's life. The stream does not end with ctx: on Ctrl-C
// esctl still leaves properly (see leave), so the acks it sent count.
// Like subscribe, membership is not bounded by --timeout; leaving is.
func (a *app) runJoin(ctx context.Context, group string, o joinOptions) error {
	cli, err := a.groups()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stream, err := cli.Join(sctx)
	if err != nil {
		return err
	}
	j := &joinStream{group: group, stream: stream, cancel: cancel, msgs: make(chan *esdv1.JoinResponse)}
	go j.receive(sctx)
	defer func() {
		cancel()
		_ = j.end() // wait for receive to return; the error that made us stop is reported
	}()
	join := &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: group, Member: o.member}}}
	if err := stream.Send(join); err != nil {
		return j.end() // Send only says the stream is over; Recv says why
	}
	out := newLiveWriter(a, deliveryColumns, deliveryRow, false)
	var n uint64
	for {
		select {
		case <-ctx.Done():
			return a.leave(j, out)
		case resp, ok := <-j.msgs:
			if !ok {
				if err := j.end(); err != nil {
					return err
				}
				return out.close()
			}
			done, err := o.handle(j, resp, out, &n)
			switch {
			case err != nil:
				return err
			case done:
				return a.leave(j, out)
			}
		}
	}
}

// handle prints one message and answers a delivery; done says --limit is
// reached.
func (o *joinOptions) handle(j *joinStream, resp *esdv1.JoinResponse, out *liveWriter[*esdv1.Delivery], n *uint64) (done bool, err error) {
	switch c := resp.GetContent().(type) {
	case *esdv1.JoinResponse_Joined:
		return false, out.note(resp, fmt.Sprintf("joined group %s as member %s", j.group, c.Joined.GetMemberId()))
	case *esdv1.JoinResponse_Delivery:
		if err := out.add(c.Delivery); err != nil {
			return false, err // stdout failed: leaving unanswered hands the event to the others
		}
		if err := j.stream.Send(o.reply(c.Delivery.GetEvent().GetId())); err != nil {
			return false, j.end()
		}
		*n++
		return *n == o.limit, nil
	}
	return false, nil // content newer than esctl: nothing to answer
}

// leave closes esctl's side of the stream and waits for the server to end
// it. The server handles a member's messages in order, so once it has
// seen the close every ack sent before counts; cancelling the stream
// instead could drop acks not yet on the wire. --timeout bounds the wait.
func (a *app) leave(j *joinStream, out *liveWriter[*esdv1.Delivery]) error {
	if err := j.stream.CloseSend(); err != nil {
		return err
	}
	var late atomic.Bool
	if a.timeout > 0 {
		t := time.AfterFunc(a.timeout, func() {
			late.Store(true)
			j.cancel()
		})
		defer t.Stop()
	}
	err := j.end()
	switch {
	case err == nil:
		return out.close()
	case late.Load():
		return fmt.Errorf("leaving group %s: the server did not end the stream within %v; the last acks may be lost", j.group, a.timeout)
	}
	return err
}
