package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Completion of names asks the server: it must answer at once or not at
// all (a shell waiting on a Tab is worse than no completion), and a
// failure completes nothing, without a word: the shell has no place for
// an error.
const (
	completionTimeout = 2 * time.Second
	maxCompletions    = 1000
)

// completeStreams completes the first argument with the names of the
// streams that start with what was typed.
func (a *app) completeStreams(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return a.streamNames(cmd, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// completeStreamFlag completes a flag that takes a stream name.
func (a *app) completeStreamFlag(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.streamNames(cmd, toComplete), cobra.ShellCompDirectiveNoFileComp
}

// completeGroups completes the first argument with the names of the
// consumer groups that start with what was typed.
func (a *app) completeGroups(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel, ok := a.completionCtx(cmd)
	if !ok {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer cancel()
	cli, err := a.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	groups, err := cli.ListGroups(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for _, g := range groups {
		if name := g.GetGroup().GetName(); strings.HasPrefix(name, toComplete) && len(names) < maxCompletions {
			names = append(names, name)
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (a *app) streamNames(cmd *cobra.Command, prefix string) []cobra.Completion {
	ctx, cancel, ok := a.completionCtx(cmd)
	if !ok {
		return nil
	}
	defer cancel()
	cli, err := a.connect()
	if err != nil {
		return nil
	}
	var names []cobra.Completion
	for info, err := range cli.ListStreams(ctx, prefix, 0) {
		if err != nil {
			return nil
		}
		names = append(names, info.GetStream())
		if len(names) == maxCompletions {
			break
		}
	}
	return names
}

// completionCtx applies the global flags' environment variables (cobra
// runs no PersistentPreRun for a completion) and bounds the completion's
// calls; ok is false when the flags are bad.
func (a *app) completionCtx(cmd *cobra.Command) (ctx context.Context, cancel context.CancelFunc, ok bool) {
	if err := a.prepare(cmd, nil); err != nil {
		return nil, nil, false
	}
	ctx = cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel = context.WithTimeout(ctx, completionTimeout)
	return ctx, cancel, true
}
