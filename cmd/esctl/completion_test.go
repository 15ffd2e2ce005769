package main

import (
	"slices"
	"strings"
	"testing"
)

// complete runs esctl's __complete (what the shell scripts of esctl
// completion call) and returns the completions and the stderr.
func complete(t *testing.T, addr string, args ...string) ([]string, string) {
	t.Helper()
	out, stderr, code := runCLI(t, "", nil, append([]string{"__complete", "--addr", addr}, args...)...)
	if code != exitOK {
		t.Fatalf("__complete %v: exit %d, %s", args, code, stderr)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, ":") { // the last line is the directive
			names = append(names, line)
		}
	}
	return names, stderr
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	for _, s := range []string{"order-1", "order-2", "user-1"} {
		mustRun(t, addr, "append", s, "x", "--type", "T")
	}
	mustRun(t, addr, "group", "create", "billing", "--category", "order")
	mustRun(t, addr, "group", "create", "audit", "--all")

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"read", "ord"}, []string{"order-1", "order-2"}},
		{[]string{"read", ""}, []string{"order-1", "order-2", "user-1"}},
		{[]string{"append", "u"}, []string{"user-1"}},
		{[]string{"append", "user-1", "u"}, nil}, // DATA is no stream
		{[]string{"delete", "order-2"}, []string{"order-2"}},
		{[]string{"snapshot", "get", "order-"}, []string{"order-1", "order-2"}},
		{[]string{"group", "create", "g", "--stream", "us"}, []string{"user-1"}},
		{[]string{"group", "info", ""}, []string{"audit", "billing"}},
		{[]string{"group", "rm", "b"}, []string{"billing"}},
		{[]string{"read", "nothing"}, nil},
	} {
		got, _ := complete(t, addr, tc.args...)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("__complete %q: %q, want %q", tc.args, got, tc.want)
		}
	}

	// A server that cannot be reached completes nothing, and esctl says
	// nothing of it.
	got, stderr := complete(t, closedAddr(t), "read", "o")
	if len(got) != 0 || strings.Contains(stderr, "esctl:") {
		t.Errorf("completion against no server: %q, stderr %q", got, stderr)
	}
}

func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		if out := mustRun(t, "", "completion", shell); !strings.Contains(out, "__complete") {
			t.Errorf("esctl completion %s: no script calling __complete", shell)
		}
	}
}
