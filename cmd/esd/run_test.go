package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// storeWithWAL writes events into a new store in dir, through fs, and
// closes it: the events stay in the WAL (Pebble flushes a memtable when
// it fills, not at Close), which the next open replays and flushes.
func storeWithWAL(t *testing.T, fs *testutil.FaultFS, dir string) {
	t.Helper()
	eng, err := engine.Open(engine.Config{Dir: dir, FS: fs, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		ev := eslog.Event{ID: eslog.NewEventID(), Type: "Seeded", Data: []byte(`{"n":1}`)}
		if _, err := eng.Append(t.Context(), engine.AppendOp{Stream: fmt.Sprintf("s-%d", i), Events: []eslog.Event{ev}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
}

func testConfig(t *testing.T, dir string) config {
	cfg, err := parseConfig([]string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--shards", "1", "--cache-bytes", "8388608"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// observed is a logger whose lines a test reads, and the address of the
// HTTP listener once logged.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(core), logs
}

func httpAddr(t *testing.T, logs *observer.ObservedLogs) string {
	t.Helper()
	var addr string
	testutil.Eventually(t, 10*time.Second, "http listening logged", func() bool {
		for _, e := range logs.FilterMessage("http listening").All() {
			addr = e.ContextMap()["addr"].(string)
		}
		return addr != ""
	})
	return addr
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close() //nolint:errcheck // read to the end below
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStartupOnFullDisk: on a disk with no room, Pebble's open of a
// store with a WAL to replay waits for a flush that fails without end.
// esd answers /healthz and says "starting" on /readyz meanwhile, gives
// up after --startup-timeout with an error that says why, and a signal
// (ctx) during the open stops it at once; with room again it starts.
func TestStartupOnFullDisk(t *testing.T) {
	fs := testutil.NewFaultFS(nil)
	dir, dir2 := t.TempDir(), t.TempDir() // the subtests' abandoned opens each hold one's lock
	storeWithWAL(t, fs, dir)
	storeWithWAL(t, fs, dir2)
	fs.SetFull(true)

	t.Run("timeout", func(t *testing.T) {
		cfg := testConfig(t, dir)
		cfg.fs, cfg.StartupTimeout = fs, 2*time.Second
		lg, logs := observed()
		start := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- run(t.Context(), cfg, lg) }()
		addr := httpAddr(t, logs)
		if code, body := get(t, addr, "/healthz"); code != 200 {
			t.Errorf("/healthz while opening: %d %q, want 200", code, body)
		}
		if code, body := get(t, addr, "/readyz"); code != 503 || !strings.Contains(body, "starting") {
			t.Errorf("/readyz while opening: %d %q, want 503 starting", code, body)
		}
		var err error
		select {
		case err = <-errc:
		case <-time.After(20 * time.Second):
			t.Fatal("run did not return 18 s after its startup timeout")
		}
		took := time.Since(start)
		t.Logf("run returned after %v: %v", took, err)
		if err == nil || !strings.Contains(err.Error(), "not open after 2s") || !strings.Contains(err.Error(), "no space left") {
			t.Fatalf("run: %v, want the startup timeout and the disk's error", err)
		}
		if took > 10*time.Second {
			t.Errorf("run took %v with a startup timeout of 2s", took)
		}
	})

	t.Run("signal", func(t *testing.T) {
		cfg := testConfig(t, dir2)
		cfg.fs = fs // the default startup timeout: the signal comes first
		lg, logs := observed()
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, cfg, lg) }()
		httpAddr(t, logs)
		time.Sleep(500 * time.Millisecond) // into the open
		stopped := time.Now()
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("run after a signal during the open: %v, want nil", err)
			}
			t.Logf("run returned %v after the signal", time.Since(stopped))
		case <-time.After(5 * time.Second):
			t.Fatal("run did not return 5 s after a signal during the open")
		}
	})

	// With room again: the abandoned opens finish (Pebble's flush
	// succeeds) and close, letting go of the directories' locks; then esd
	// starts on the store that could not open.
	fs.SetFull(false)
	cfg := testConfig(t, dir)
	cfg.fs = fs
	testutil.Eventually(t, 30*time.Second, "esd starts once the disk has room", func() bool {
		lg, logs := observed()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, cfg, lg) }()
		for {
			select {
			case <-errc: // the abandoned open still holds the lock
				return false
			case <-time.After(20 * time.Millisecond):
			}
			if logs.FilterMessage("listening").Len() > 0 {
				cancel()
				if err := <-errc; err != nil {
					t.Errorf("run with room, stopped: %v", err)
				}
				return true
			}
		}
	})
}
