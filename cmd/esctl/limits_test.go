package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/server"
)

// TestInputOverLimitNotSent: an event or snapshot larger than the
// server's limit is refused before it is sent, with the limit and the
// esd flag that sets it named, and exit 1.
func TestInputOverLimitNotSent(t *testing.T) {
	t.Parallel()
	srv := startESD(t) // the default limits: 1 MiB an event
	big := bytes.Repeat([]byte("x"), 20<<20)

	_, stderr, code := runCLI(t, srv.addr, bytes.NewReader(big), "append", "big-1", "--type", "T")
	if code != exitError || !strings.Contains(stderr, "event data of 20971520 bytes is more than the server's limit of 1048576 bytes (esd --max-event-bytes): not sent (reason: EVENT_TOO_LARGE)") {
		t.Errorf("append of 20 MiB: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCLI(t, srv.addr, bytes.NewReader(big[:2<<20]), "snapshot", "save", "big-1", "--revision", "0", "--type", "S")
	if code != exitError || !strings.Contains(stderr, "snapshot data of 2097152 bytes is more than the server's limit of 1048576 bytes (esd --max-event-bytes): not sent (reason: SNAPSHOT_TOO_LARGE)") {
		t.Errorf("snapshot save of 2 MiB: exit %d, stderr %q", code, stderr)
	}
	if n := len(srv.requests(t, "Append")) + len(srv.requests(t, "SaveSnapshot")); n != 0 {
		t.Errorf("%d requests reached the server, want none", n)
	}
	// At the limit, it is sent.
	if _, stderr, code := runCLI(t, srv.addr, bytes.NewReader(big[:1<<20]), "append", "big-1", "--type", "T"); code != exitOK {
		t.Errorf("append of 1 MiB (the limit): exit %d, %s", code, stderr)
	}
}

// TestInputOverLimitRefused: below the size esctl asks the limits for,
// the server's refusal names the limit; so does it when the server does
// not tell its limits to a caller without admin.
func TestInputOverLimitRefused(t *testing.T) {
	t.Parallel()
	srv := startESDWith(t, func(c *server.Config) { c.Limits.MaxEventBytes = 100 })
	_, stderr, code := runCLI(t, srv.addr, strings.NewReader(strings.Repeat("x", 200)), "append", "small-1", "--type", "T")
	if code != exitError || !strings.Contains(stderr, "(reason: EVENT_TOO_LARGE)") || !strings.Contains(stderr, "esd --max-event-bytes") {
		t.Errorf("append over a small limit: exit %d, stderr %q", code, stderr)
	}

	file := filepath.Join(t.TempDir(), "auth.json")
	mustRun(t, "", "token", "role", "set", "writer", "--file", file, "--grant", "*:read,append")
	tok := strings.TrimSpace(mustRun(t, "", "token", "create", "--file", file, "--identity", "app", "--roles", "writer"))
	a, err := auth.New(file, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	authed := startESDWith(t, func(c *server.Config) { c.Auth = a })
	_, stderr, code = runCLI(t, authed.addr, bytes.NewReader(bytes.Repeat([]byte("x"), 2<<20)), "--token", tok, "append", "big-2", "--type", "T")
	if code != exitError || !strings.Contains(stderr, "esd --max-event-bytes") {
		t.Errorf("append of 2 MiB without admin: exit %d, stderr %q", code, stderr)
	}
}
