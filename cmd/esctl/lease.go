package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func (a *app) newLeaseCmd() *cobra.Command {
	cmd := a.groupCmd("lease", "Take, renew and release leases on streams (exclusive writes with a fencing token)")
	cmd.Long = `A lease gives one holder a stream's writes for a TTL: while it is live,
appends and deletes of the stream without its fencing token fail with
STREAM_LEASED (give the token with --fencing-token). Tokens grow with every
lease on a stream, and a write with an older one fails with
STALE_FENCING_TOKEN, so a holder that was paused past its TTL can never write
after someone else got the stream. Prefer expected revisions (--expected) for
everything else: a lease makes every other writer wait.`
	cmd.AddCommand(a.newLeaseAcquireCmd(), a.newLeaseRenewCmd(), a.newLeaseReleaseCmd(), a.newLeaseShowCmd(), a.newLeaseLsCmd())
	return cmd
}

func (a *app) newLeaseAcquireCmd() *cobra.Command {
	var (
		owner     string
		ttl, wait time.Duration
		quiet     bool
	)
	cmd := &cobra.Command{
		Use:               "acquire STREAM --owner NAME --ttl DURATION",
		ValidArgsFunction: a.completeStreams,
		Short:             "Take a lease on a stream and print its fencing token",
		Example: `  tok=$(esctl lease acquire account-42 --owner refunds --ttl 30s --wait 5s -q)
  esctl append account-42 '{"amount":-40}' --type Refunded --fencing-token "$tok"
  esctl lease release account-42 --fencing-token "$tok"`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			l, err := cli.AcquireLease(cmd.Context(), args[0], owner, ttl, wait)
			if err != nil {
				return err
			}
			if quiet {
				_, err := fmt.Fprintln(a.stdout, l.Token)
				return err
			}
			return a.printLease(l)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&owner, "owner", "", "who holds the lease (required): shown to the writers it refuses")
	f.DurationVar(&ttl, "ttl", 0, "how long the lease lasts unless renewed (required; at most esd's --max-lease-ttl)")
	f.DurationVar(&wait, "wait", 0, "when the stream is leased, wait this long for it, first come first served (0: fail at once)")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the fencing token")
	_ = cmd.MarkFlagRequired("owner")
	_ = cmd.MarkFlagRequired("ttl")
	return cmd
}

func (a *app) newLeaseRenewCmd() *cobra.Command {
	var (
		token uint64
		ttl   time.Duration
	)
	cmd := &cobra.Command{
		Use:               "renew STREAM --fencing-token N --ttl DURATION",
		ValidArgsFunction: a.completeStreams,
		Short:             "Extend a live lease to a TTL from now",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			l := cli.LeaseOf(args[0], token)
			if err := l.Renew(cmd.Context(), ttl); err != nil {
				return err
			}
			return a.printLease(l)
		}),
	}
	cmd.Flags().Uint64Var(&token, "fencing-token", 0, "the lease's fencing token (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "the new TTL, from now (required)")
	_ = cmd.MarkFlagRequired("fencing-token")
	_ = cmd.MarkFlagRequired("ttl")
	return cmd
}

func (a *app) newLeaseReleaseCmd() *cobra.Command {
	var token uint64
	cmd := &cobra.Command{
		Use:               "release STREAM --fencing-token N",
		ValidArgsFunction: a.completeStreams,
		Short:             "End a live lease now",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			if err := cli.LeaseOf(args[0], token).Release(cmd.Context()); err != nil {
				return err
			}
			return a.printKV(&esdv1.ReleaseLeaseResponse{}, [][2]string{{"STREAM", args[0]}, {"RELEASED", strconv.FormatUint(token, 10)}})
		}),
	}
	cmd.Flags().Uint64Var(&token, "fencing-token", 0, "the lease's fencing token (required)")
	_ = cmd.MarkFlagRequired("fencing-token")
	return cmd
}

func (a *app) newLeaseShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "show STREAM",
		ValidArgsFunction: a.completeStreams,
		Short:             "Show a stream's live lease (exit 1 when it has none)",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			cli, err := a.connect()
			if err != nil {
				return err
			}
			l, err := cli.GetLease(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if l == nil {
				return fmt.Errorf("stream %q has no live lease", args[0])
			}
			return a.printLease(l)
		}),
	}
}

func (a *app) newLeaseLsCmd() *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the live leases",
		Args:  cobra.NoArgs,
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			return a.runLeaseLs(cmd.Context(), prefix)
		}),
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only streams whose names start with it")
	return cmd
}

func (a *app) runLeaseLs(ctx context.Context, prefix string) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	leases, err := cli.ListLeases(ctx, prefix)
	if err != nil {
		return err
	}
	out := newRecordWriter(a, []string{"STREAM", "OWNER", "FENCING TOKEN", "EXPIRES"}, func(l *esdv1.Lease) []string {
		return []string{l.GetStream(), l.GetOwner(), strconv.FormatUint(l.GetFencingToken(), 10), formatTime(l.GetExpires())}
	})
	for _, l := range leases {
		if err := out.add(leaseProto(l)); err != nil {
			out.abort()
			return err
		}
	}
	return out.close()
}

func (a *app) printLease(l *client.Lease) error {
	p := leaseProto(l)
	return a.printKV(p, [][2]string{
		{"STREAM", p.GetStream()},
		{"OWNER", p.GetOwner()},
		{"FENCING TOKEN", strconv.FormatUint(p.GetFencingToken(), 10)},
		{"EXPIRES", formatTime(p.GetExpires())},
	})
}

func leaseProto(l *client.Lease) *esdv1.Lease {
	p := &esdv1.Lease{Stream: l.Stream, Owner: l.Owner, FencingToken: l.Token}
	if !l.Expires.IsZero() {
		p.Expires = timestamppb.New(l.Expires)
	}
	return p
}
