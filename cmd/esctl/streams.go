package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func (a *app) newInfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "info STREAM",
		ValidArgsFunction: a.completeStreams,
		Short:             "Describe a stream",
		Args:              cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runInfo(cmd.Context(), args[0])
		}),
	}
}

func (a *app) runInfo(ctx context.Context, stream string) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	info, err := cli.GetStream(ctx, stream)
	if err != nil {
		return err
	}
	if info == nil {
		return fmt.Errorf("server sent GetStreamResponse without info")
	}
	// json prints the StreamInfo itself, the same object ls prints.
	return a.printKV(info, [][2]string{
		{"STREAM", info.GetStream()},
		{"STATE", streamState(info)},
		{"EXISTS", strconv.FormatBool(info.GetExists())},
		{"HEAD", formatHead(info)},
		{"EVENTS", strconv.FormatUint(info.GetEventCount(), 10)},
		{"CREATED", formatTime(info.GetCreated())},
		{"UPDATED", formatTime(info.GetUpdated())},
	})
}

// streamState names a stream's state: tombstoned wins over deleted; a
// stream never written (no created time, not reserved by a tombstone) is
// absent.
func streamState(info *esdv1.StreamInfo) string {
	switch {
	case info.GetTombstoned():
		return "tombstoned"
	case info.GetDeleted():
		return "deleted"
	case info.GetCreated() == nil:
		return "absent"
	}
	return "live"
}

// formatHead prints the head, "-" for a stream never written (head is
// meaningless then).
func formatHead(info *esdv1.StreamInfo) string {
	if info.GetCreated() == nil {
		return "-"
	}
	return strconv.FormatUint(info.GetHead(), 10)
}

type lsOptions struct {
	limit    int
	pageSize uint32
}

func (a *app) newLsCmd() *cobra.Command {
	var o lsOptions
	cmd := &cobra.Command{
		Use:               "ls [PREFIX]",
		ValidArgsFunction: a.completeStreams,
		Short:             "List streams (deleted ones too), by name",
		Args:              cobra.MaximumNArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			if o.limit < 0 {
				return usagef("--limit must not be negative")
			}
			return a.runLs(cmd.Context(), prefix, o)
		}),
	}
	f := cmd.Flags()
	f.IntVar(&o.limit, "limit", 0, "most streams to list (0 = all)")
	f.Uint32Var(&o.pageSize, "page-size", 0, "streams per request (0 = the server's default)")
	return cmd
}

// runLs lists every page (the client follows the next-page tokens, each
// page its own call under --timeout) up to --limit.
func (a *app) runLs(ctx context.Context, prefix string, o lsOptions) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	pageSize := o.pageSize
	if o.limit > 0 && o.pageSize == 0 && o.limit < 1000 {
		pageSize = uint32(o.limit) // no point fetching a full page
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing at --limit
	out := newRecordWriter(a, []string{"STREAM", "HEAD", "EVENTS", "STATE", "UPDATED"},
		func(s *esdv1.StreamInfo) []string {
			return []string{s.GetStream(), formatHead(s), strconv.FormatUint(s.GetEventCount(), 10),
				streamState(s), formatTime(s.GetUpdated())}
		})
	return writeAll(out, o.limit, cli.ListStreams(ctx, prefix, pageSize))
}

type deleteOptions struct {
	tombstone bool
	expected  expectedRevision
	token     uint64
}

func (a *app) newDeleteCmd() *cobra.Command {
	var o deleteOptions
	cmd := &cobra.Command{
		Use:               "delete STREAM",
		ValidArgsFunction: a.completeStreams,
		Short:             "Soft-delete a stream, or tombstone it for good",
		Long: `Soft-delete STREAM: it reads as deleted until appended to again, and
revisions then continue after the old head. With --tombstone the stream is
deleted forever and every later append fails.`,
		Args: cobra.ExactArgs(1),
		RunE: a.action(func(cmd *cobra.Command, args []string) error {
			return a.runDelete(cmd.Context(), args[0], o)
		}),
	}
	cmd.Flags().BoolVar(&o.tombstone, "tombstone", false, "delete forever (the name can never be used again)")
	addExpectedFlag(cmd, &o.expected)
	addFencingTokenFlag(cmd, &o.token)
	return cmd
}

func (a *app) runDelete(ctx context.Context, stream string, o deleteOptions) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	resp, err := cli.LeaseOf(stream, o.token).DeleteStream(ctx, o.expected.Expected, o.tombstone)
	if err != nil {
		return err
	}
	return a.printKV(resp, [][2]string{
		{"STREAM", stream},
		{"POSITION", strconv.FormatUint(resp.GetPosition(), 10)},
		{"COMMIT TIME", formatTime(resp.GetCommitTime())},
	})
}
