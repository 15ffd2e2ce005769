package server

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFullDisk runs esd on a file system that fills up (testutil.FaultFS:
// ENOSPC on every write, sync and create): appends fail fast with
// UNAVAILABLE/STORAGE_FAILED; reads of every stream go on with every
// acknowledged event, including the streams whose last append failed
// (whose failed batch Pebble holds in its memtable, readable but never
// durable), and nothing unacknowledged is visible; once there is room
// again, a restart opens the store with every acknowledged event and
// takes appends. The log does not resume writing by itself (docs/api.md,
// STORAGE_FAILED, says why).
func TestFullDisk(t *testing.T) {
	fs := testutil.NewFaultFS(nil)
	ts := newTestServer(t, withDir(fs, t.TempDir()), withShards(2))

	// Acknowledged before the disk fills: a, b (then soft-deleted), c.
	ts.fill(t, "fd-a", 3, "Before")
	ts.fill(t, "fd-b", 2, "Before")
	ts.mustDelete(t, "fd-b", false)
	ts.fill(t, "fd-c", 4, "Before")
	before := ts.readAll(t)
	lastPos := ts.lastPosition(t)

	fs.SetFull(true)
	// Concurrent appends to existing and new streams, and deletes: each
	// must fail with STORAGE_FAILED, and soon. A few may have been
	// applied to Pebble's memtable before the failure.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			var err error
			switch i % 4 {
			case 0:
				_, err = ts.streams.Append(testCtx(t), appendReq("fd-a", xAny, events(2, "Lost")...))
			case 1:
				_, err = ts.streams.Append(testCtx(t), appendReq(fmt.Sprintf("fd-new-%d", i), xAny, events(1, "Lost")...))
			case 2:
				_, err = ts.streams.DeleteStream(testCtx(t), deleteReq("fd-c", xAny, true))
			default:
				_, err = ts.streams.Append(testCtx(t), appendReq("fd-b", xAny, events(1, "Lost")...))
			}
			if d := time.Since(start); d > 5*time.Second {
				errs <- fmt.Errorf("a write on a full disk took %v", d)
			}
			if msg := errorMismatch(err, codes.Unavailable, reasonStorageFailed, ""); msg != "" {
				errs <- errors.New(msg)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ts.srv.Ready() {
		t.Error("Ready() on a failed disk, want not ready")
	}

	// Reads: every acknowledged event, nothing else.
	checkReads := func(t *testing.T) {
		t.Helper()
		if got := ts.readAll(t); len(got) != len(before) {
			t.Fatalf("$all has %d events, want the %d acknowledged", len(got), len(before))
		}
		if got := len(ts.mustReadStream(t, "fd-a")); got != 3 {
			t.Errorf("fd-a: %d events, want 3", got)
		}
		if got := len(ts.mustReadStream(t, "fd-c")); got != 4 {
			t.Errorf("fd-c: %d events, want 4", got)
		}
		if info := ts.getStream(t, "fd-a"); info.GetHead() != 2 || !info.GetExists() {
			t.Errorf("fd-a info: %v, want head 2", info)
		}
		if info := ts.getStream(t, "fd-c"); info.GetTombstoned() || info.GetHead() != 3 {
			t.Errorf("fd-c info: %v, want head 3, not tombstoned", info)
		}
		_, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "fd-b"})
		wantError(t, err, codes.NotFound, reasonStreamDeleted, "fd-b")
		for i := 1; i < 16; i += 4 {
			name := fmt.Sprintf("fd-new-%d", i)
			_, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: name})
			if status.Code(err) != codes.NotFound {
				t.Errorf("read %s (its only append failed): %v, want NOT_FOUND", name, err)
			}
		}
		resp, err := ts.streams.ListStreams(testCtx(t), &esdv1.ListStreamsRequest{Prefix: "fd-"})
		if err != nil {
			t.Fatalf("ListStreams: %v", err)
		}
		var names []string
		for _, s := range resp.GetStreams() {
			names = append(names, s.GetStream())
		}
		if fmt.Sprint(names) != "[fd-a fd-b fd-c]" {
			t.Errorf("ListStreams: %v, want [fd-a fd-b fd-c]", names)
		}
	}
	checkReads(t)
	if got := ts.lastPosition(t); got != lastPos {
		t.Errorf("last position %d on the failed disk, want %d", got, lastPos)
	}

	// Room again: the log stays failed (it does not reopen itself)...
	fs.SetFull(false)
	_, err := ts.streams.Append(testCtx(t), appendReq("fd-a", xAny, events(1, "StillFailed")...))
	wantError(t, err, codes.Unavailable, reasonStorageFailed, "")

	// ...and a restart opens the store as it was acknowledged. Closing
	// the failed store reports the WAL's error: expected.
	ts.running = false
	if err := ts.stopServing(); err != nil {
		t.Fatalf("stop serving: %v", err)
	}
	_ = ts.conn.Close()
	if err := ts.eng.Close(); err == nil {
		t.Log("closing the failed store reported no error")
	}
	ts.start()
	ts.running = true
	checkReads(t)
	resp := ts.mustAppend(t, appendReq("fd-a", xExact(2), events(1, "After")...))
	if resp.GetFirstRevision() != 3 || resp.GetFirstPosition() != lastPos+1 {
		t.Errorf("append after restart: revision %d position %d, want 3 and %d", resp.GetFirstRevision(), resp.GetFirstPosition(), lastPos+1)
	}
}
