package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// scavengePoll is how often scavenge start --wait asks for progress.
var scavengePoll = 500 * time.Millisecond

func (a *app) newScavengeCmd() *cobra.Command {
	cmd := a.groupCmd("scavenge", "Remove from disk the events that deletions and retention limits hide")
	var (
		rate uint32
		wait bool
	)
	start := &cobra.Command{
		Use:   "start",
		Short: "Start a scavenge (one runs at a time)",
		Long: `Start a scavenge: the server removes from disk, in the background, the
events of deleted and tombstoned streams, those that retention limits
(max count, max age, truncate before) hide, making the limits' cut
durable first, and the index entries and snapshots that served only
them, while it goes on serving. The ids of removed events older than the
server's --idempotency-window go too. With --wait,
esctl follows it to its end: a progress bar on a terminal, a line per
change otherwise; it exits 1 unless the scavenge is done.`,
		Args: cobra.NoArgs,
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			return a.runScavengeStart(cmd.Context(), rate, wait)
		}),
	}
	start.Flags().Uint32Var(&rate, "rate", 0, "keys deleted per second (0: the server's default)")
	start.Flags().BoolVar(&wait, "wait", false, "follow the scavenge until it ends")
	cmd.AddCommand(start,
		&cobra.Command{
			Use:   "status",
			Short: "Show the running or last scavenge",
			Args:  cobra.NoArgs,
			RunE: a.action(func(cmd *cobra.Command, _ []string) error {
				return a.scavengeCall(cmd.Context(), (*client.Client).Scavenge)
			}),
		},
		&cobra.Command{
			Use:   "stop",
			Short: "Stop the running scavenge (what it removed stays removed)",
			Args:  cobra.NoArgs,
			RunE: a.action(func(cmd *cobra.Command, _ []string) error {
				return a.scavengeCall(cmd.Context(), (*client.Client).StopScavenge)
			}),
		})
	return cmd
}

// scavengeCall makes one call and prints the scavenge it returns.
func (a *app) scavengeCall(ctx context.Context, call func(*client.Client, context.Context) (*esdv1.Scavenge, error)) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	s, err := call(cli, ctx)
	if err != nil {
		return err
	}
	return a.printScavenge(s)
}

func (a *app) runScavengeStart(ctx context.Context, rate uint32, wait bool) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	s, err := cli.StartScavenge(ctx, rate)
	if err != nil {
		return err
	}
	if wait {
		if s, err = a.followScavenge(ctx, cli, s); err != nil {
			return err
		}
	}
	if err := a.printScavenge(s); err != nil {
		return err
	}
	if wait && s.GetState() != esdv1.ScavengeState_SCAVENGE_STATE_DONE {
		return fmt.Errorf("scavenge %s ended %s", s.GetId(), scavengeStateName(s.GetState()))
	}
	return nil
}

// followScavenge polls the scavenge s until it ends, drawing its
// progress on stderr (a bar on a terminal, else a line per change), and
// returns it as it ended.
func (a *app) followScavenge(ctx context.Context, cli *client.Client, s *esdv1.Scavenge) (*esdv1.Scavenge, error) {
	bar := isTerminalWriter(a.stderr)
	last := ""
	for {
		line := scavengeProgress(s, bar)
		switch {
		case bar:
			fmt.Fprintf(a.stderr, "\r%s\x1b[K", line)
		case line != last:
			fmt.Fprintln(a.stderr, line)
		}
		last = line
		if s.GetState() != esdv1.ScavengeState_SCAVENGE_STATE_RUNNING {
			if bar {
				fmt.Fprintln(a.stderr)
			}
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(scavengePoll):
		}
		next, err := cli.Scavenge(ctx)
		if err != nil {
			return nil, err
		}
		if next.GetId() != s.GetId() {
			return nil, errors.New("another scavenge replaced the one followed")
		}
		s = next
	}
}

// scavengeProgress describes s in one line: with a bar of 30 cells, or
// plain.
func scavengeProgress(s *esdv1.Scavenge, bar bool) string {
	p := min(max(s.GetProgress(), 0), 1)
	text := fmt.Sprintf("%5.1f%%  %d/%d streams  %d events removed  %s reclaimed  %s",
		100*p, s.GetStreamsDone(), s.GetStreamsTotal(), s.GetEventsRemoved(),
		shortBytes(s.GetBytesReclaimed()), scavengeStateName(s.GetState()))
	if !bar {
		return "scavenge " + s.GetId() + ": " + text
	}
	const cells = 30
	n := int(p * cells)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", cells-n) + "] " + text
}

// shortBytes is formatBytes without the exact count.
func shortBytes(n uint64) string {
	f := formatBytes(n)
	if i := strings.IndexByte(f, '('); i >= 0 {
		return strings.TrimSuffix(f[i+1:], ")")
	}
	return f
}

func scavengeStateName(s esdv1.ScavengeState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SCAVENGE_STATE_"))
}

func (a *app) printScavenge(s *esdv1.Scavenge) error {
	rows := [][2]string{
		{"ID", s.GetId()},
		{"STATE", scavengeStateName(s.GetState())},
		{"STARTED", formatTime(s.GetStarted())},
		{"FINISHED", formatTime(s.GetFinished())},
		{"STREAMS", fmt.Sprintf("%d/%d", s.GetStreamsDone(), s.GetStreamsTotal())},
		{"TRUNCATED", fmt.Sprintf("%d streams (retention limits made durable)", s.GetStreamsTruncated())},
		{"PROGRESS", fmt.Sprintf("%.1f%%", 100*s.GetProgress())},
		{"EVENTS REMOVED", strconv.FormatUint(s.GetEventsRemoved(), 10)},
		{"KEYS REMOVED", strconv.FormatUint(s.GetKeysRemoved(), 10)},
		{"IDS REMOVED", strconv.FormatUint(s.GetIdsRemoved(), 10) + " (hidden events older than the idempotency window)"},
		{"RECLAIMED", formatBytes(s.GetBytesReclaimed())},
		{"DISK BEFORE", formatBytes(s.GetDiskBytesBefore())},
		{"DISK AFTER", formatBytes(s.GetDiskBytesAfter())},
		{"RATE", strconv.FormatUint(uint64(s.GetKeysPerSecond()), 10) + " keys/s"},
	}
	if s.GetError() != "" {
		rows = append(rows, [2]string{"ERROR", s.GetError()})
	}
	return a.printKV(s, rows)
}

// isTerminalWriter reports whether w is a terminal: a progress bar
// redraws itself there; elsewhere (a file, a pipe, a test) it would be
// noise.
func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
