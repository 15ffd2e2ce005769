package log

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
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
