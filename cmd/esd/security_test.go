package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// authWatchRunning reports whether a goroutine watches an auth file.
func authWatchRunning() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "auth.(*Authenticator).Run")
}

// TestRunStopsAuthWatch: security on (development certificates, so a
// development auth file), run has stopped the auth file's watch by the
// time it returns: after a start that fails once the file is loaded and
// the store open (the gRPC address is taken), and after a normal stop.
func TestRunStopsAuthWatch(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close() //nolint:errcheck // test cleanup
	for _, listen := range []string{taken.Addr().String(), "127.0.0.1:0"} {
		cfg, err := parseConfig([]string{"--data-dir", filepath.Join(dir, "data"), "--tls-dev-dir", filepath.Join(dir, "tls"),
			"--listen", listen, "--http-listen", "127.0.0.1:0", "--shards", "1", "--cache-bytes", "8388608"},
			func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		lg, logs := observed()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, cfg, lg) }()
		if listen != taken.Addr().String() {
			testutil.Eventually(t, 20*time.Second, "gRPC listening", func() bool { return logs.FilterMessage("listening").Len() > 0 })
			cancel()
		}
		err = <-done
		cancel()
		if (listen == taken.Addr().String()) != (err != nil) {
			t.Fatalf("run with --listen %s: %v", listen, err)
		}
		if logs.FilterMessage("security on").Len() != 1 {
			t.Fatalf("security not on: %v", logs.All())
		}
		if authWatchRunning() {
			t.Fatalf("run with --listen %s returned (%v) with the auth file still watched", listen, err)
		}
	}
}

// TestStartingMetricsAuth: while the store opens no caller can be checked
// yet, so with --metrics-auth /metrics is not served (404) until the
// server's handler, which asks for admin, takes over; without it /metrics
// answers from the start.
func TestStartingMetricsAuth(t *testing.T) {
	for _, open := range []bool{true, false} {
		rec := httptest.NewRecorder()
		startingHandler(prometheus.NewRegistry(), open).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if want := map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[open]; rec.Code != want {
			t.Errorf("/metrics while starting (served: %v): %d, want %d", open, rec.Code, want)
		}
	}
}
