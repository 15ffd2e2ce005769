package main

import (
	"context"
	"errors"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
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

// TestRestartAfterFullDisk: esd runs on a disk that fills up: appends
// fail with STORAGE_FAILED, reads go on; once the disk has room, run
// returns errRestart by itself (main then re-executes esd), and the next
// run has every acknowledged event and takes appends.
func TestRestartAfterFullDisk(t *testing.T) {
	fs := testutil.NewFaultFS(nil)
	cfg := testConfig(t, t.TempDir())
	cfg.fs, cfg.StorageProbeInterval = fs, 100*time.Millisecond

	start := func() (esdv1.StreamServiceClient, context.CancelFunc, <-chan error) {
		lg, logs := observed()
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, cfg, lg) }()
		var addr string
		testutil.Eventually(t, 20*time.Second, "gRPC listening", func() bool {
			for _, e := range logs.FilterMessage("listening").All() {
				addr = e.ContextMap()["addr"].(string)
			}
			return addr != ""
		})
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return esdv1.NewStreamServiceClient(conn), cancel, errc
	}
	appendOne := func(c esdv1.StreamServiceClient, stream string) error {
		_, err := c.Append(t.Context(), &esdv1.AppendRequest{Stream: stream,
			Events: []*esdv1.ProposedEvent{{Type: "T", Data: []byte(`{}`), ContentType: "application/json"}}})
		return err
	}
	count := func(c esdv1.StreamServiceClient, stream string) int {
		rs, err := c.ReadStream(t.Context(), &esdv1.ReadStreamRequest{Stream: stream})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			resp, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				return n
			}
			if err != nil {
				t.Fatalf("read %s: %v", stream, err)
			}
			n += len(resp.GetEvents())
		}
	}

	c, cancel, errc := start()
	defer cancel()
	for range 5 {
		if err := appendOne(c, "r-a"); err != nil {
			t.Fatal(err)
		}
	}
	fs.SetFull(true)
	if err := appendOne(c, "r-a"); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "storage failed") {
		t.Fatalf("append on a full disk: %v, want UNAVAILABLE storage failed", err)
	}
	if n := count(c, "r-a"); n != 5 {
		t.Fatalf("read on a full disk: %d events, want 5", n)
	}
	// Still full: no restart.
	select {
	case err := <-errc:
		t.Fatalf("run returned while the disk was full: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	fs.SetFull(false)
	freed := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, errRestart) {
			t.Fatalf("run: %v, want errRestart", err)
		}
		t.Logf("run returned errRestart %v after the disk had room", time.Since(freed))
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return 20 s after the disk had room")
	}

	c, cancel2, errc := start() // what the re-executed esd does
	defer cancel2()
	if n := count(c, "r-a"); n != 5 {
		t.Fatalf("after the restart: %d events, want the 5 acknowledged", n)
	}
	if err := appendOne(c, "r-a"); err != nil {
		t.Fatalf("append after the restart: %v", err)
	}
	cancel2()
	if err := <-errc; err != nil {
		t.Fatalf("run after the restart: %v", err)
	}
}
