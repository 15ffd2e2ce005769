package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) newServerCmd() *cobra.Command {
	cmd := a.groupCmd("server", "Inspect the server")
	cmd.AddCommand(&cobra.Command{
		Use:   "info",
		Short: "Show the server's version, uptime, store size and append limits",
		Args:  cobra.NoArgs,
		RunE: a.action(func(cmd *cobra.Command, _ []string) error {
			return a.runServerInfo(cmd.Context())
		}),
	})
	return cmd
}

func (a *app) runServerInfo(ctx context.Context) error {
	cli, err := a.connect()
	if err != nil {
		return err
	}
	resp, err := cli.ServerInfo(ctx)
	if err != nil {
		return err
	}
	uptime := "-"
	if resp.GetUptime() != nil {
		uptime = resp.GetUptime().AsDuration().Round(time.Second).String()
	}
	return a.printKV(resp, [][2]string{
		{"VERSION", resp.GetVersion()},
		{"COMMIT", resp.GetCommit()},
		{"STARTED", formatTime(resp.GetStarted())},
		{"UPTIME", uptime},
		{"DATA DIR", resp.GetDataDir()},
		{"SHARDS", strconv.FormatUint(uint64(resp.GetShards()), 10)},
		{"LAST POSITION", strconv.FormatUint(resp.GetLastPosition(), 10)},
		{"STREAMS", strconv.FormatUint(resp.GetStreamCount(), 10)},
		{"EVENTS", strconv.FormatUint(resp.GetEventCount(), 10)},
		{"DISK", formatBytes(resp.GetDiskBytes())},
		{"MAX EVENT BYTES", limitOrDash(resp.GetMaxEventBytes())},
		{"MAX APPEND BYTES", limitOrDash(resp.GetMaxAppendBytes())},
		{"MAX APPEND EVENTS", limitOrDash(resp.GetMaxAppendEvents())},
	})
}

// limitOrDash prints a limit, "-" when the server does not report it (an
// older esd).
func limitOrDash(n uint64) string {
	if n == 0 {
		return "-"
	}
	return strconv.FormatUint(n, 10)
}

// formatBytes prints a byte count exactly and, above 1 KiB, in binary units.
func formatBytes(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v, unit = v/1024, u
		if v < 1024 {
			break
		}
	}
	return fmt.Sprintf("%d B (%.1f %s)", n, v, unit)
}
