package log

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestFlushFailureFailsLog: a flush that fails (the sstables' writes,
// here; the WAL still takes writes) fails the log at once, so that
// appends are answered STORAGE_FAILED instead of waiting behind the
// memtables that Pebble stops taking once they pile up; reads go on.
func TestFlushFailureFailsLog(t *testing.T) {
	fs := testutil.NewFaultFS(nil)
	fs.Match = func(name string) bool { return strings.HasSuffix(name, ".sst") }
	l, err := Open(t.TempDir(), Options{FS: fs, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		appendTo(t, l, "flush", testEvent(i))
	}
	fs.SetFull(true)
	flushed, err := l.db.AsyncFlush() // Flush would wait: Pebble retries the flush until it succeeds
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the log failed by the flush", func() bool { return l.Failed() != nil })
	if err := l.Failed(); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("Failed() after a failed flush: %v, want ErrStorageFailed", err)
	}
	s, _, _ := l.State("flush")
	w := &Write{State: s, Events: []Event{testEvent(5)}}
	if _, err := l.Commit([]*Write{w}, false); !errors.Is(err, ErrStorageFailed) {
		t.Fatalf("Commit after a failed flush: %v, want ErrStorageFailed", err)
	}
	evs, err := readStream(t, l, StreamQuery{Stream: "flush"})
	if err != nil || len(evs) != 5 {
		t.Fatalf("read after a failed flush: %d events, %v; want 5", len(evs), err)
	}
	fs.SetFull(false)
	<-flushed     // Pebble's retry succeeds once the disk has room
	_ = l.Close() // reports the failure
}

// TestPebbleBackgroundErrorsRateLimited, through Open's event listener:
// while a flush fails again and again (a full disk), Pebble reports each
// attempt as a background error; esd's log shows at most
// pebbleErrorsPerWindow of them a window.
func TestPebbleBackgroundErrorsRateLimited(t *testing.T) {
	fs := testutil.NewFaultFS(nil)
	fs.Match = func(name string) bool { return strings.HasSuffix(name, ".sst") }
	core, logs := observer.New(zapcore.ErrorLevel)
	var attempts atomic.Int64
	l, err := Open(t.TempDir(), Options{FS: fs, CacheBytes: 8 << 20, Logger: zap.New(core),
		BackgroundError: func(error) { attempts.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	appendTo(t, l, "limited", testEvent(0))
	fs.SetFull(true)
	flushed, err := l.db.AsyncFlush()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "many failed flush attempts", func() bool {
		return attempts.Load() > 3*pebbleErrorsPerWindow
	})
	fs.SetFull(false)
	<-flushed
	_ = l.Close() // reports the failure
	pebbleLines := logs.Filter(func(e observer.LoggedEntry) bool { return e.LoggerName == "pebble" }).Len()
	t.Logf("%d failed flush attempts, %d Pebble error lines logged", attempts.Load(), pebbleLines)
	if pebbleLines > pebbleErrorsPerWindow+1 { // +1: a "more were not logged" line
		t.Errorf("%d Pebble error lines for %d failed attempts within a window, want at most %d",
			pebbleLines, attempts.Load(), pebbleErrorsPerWindow+1)
	}
}
