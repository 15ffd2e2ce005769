package log

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestPebbleErrorsRateLimited: a storm of Pebble errors logs the first
// pebbleErrorsPerWindow of each window, then, with the next error logged,
// how many were held back.
func TestPebbleErrorsRateLimited(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	now := time.Unix(1000, 0)
	lim := newLogLimiter(pebbleErrorsPerWindow, pebbleErrorWindow)
	lim.now = func() time.Time { return now }
	p := pebbleLogger{s: zap.New(core).Sugar(), errs: lim}

	for i := range 1000 {
		p.Errorf("background error: %d", i)
	}
	if n := logs.Len(); n != pebbleErrorsPerWindow {
		t.Fatalf("%d lines for 1000 errors in one window, want %d", n, pebbleErrorsPerWindow)
	}
	now = now.Add(pebbleErrorWindow)
	p.Errorf("background error: late")
	got := logs.TakeAll()
	if len(got) != pebbleErrorsPerWindow+2 {
		t.Fatalf("%d lines, want %d", len(got), pebbleErrorsPerWindow+2)
	}
	want := []string{fmt.Sprintf("%d more Pebble errors in the last %s were not logged", 1000-pebbleErrorsPerWindow, pebbleErrorWindow), "background error: late"}
	for i, w := range want {
		if e := got[pebbleErrorsPerWindow+i]; e.Message != w || e.Level != zapcore.ErrorLevel {
			t.Fatalf("line %d: %v %q, want ERROR %q", pebbleErrorsPerWindow+i, e.Level, e.Message, w)
		}
	}
	// A quiet window reports nothing held back.
	now = now.Add(pebbleErrorWindow)
	p.Errorf("background error: alone")
	if got := logs.TakeAll(); len(got) != 1 || got[0].Message != "background error: alone" {
		t.Fatalf("after a quiet window: %v", got)
	}
	// Pebble's informational messages go to debug, unlimited.
	for range 100 {
		p.Infof("flushed")
	}
	if n := logs.FilterLevelExact(zapcore.DebugLevel).Len(); n != 100 {
		t.Fatalf("%d debug lines, want 100", n)
	}
}
