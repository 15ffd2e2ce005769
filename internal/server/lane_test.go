package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func TestLaneBoundsBytesAtOnce(t *testing.T) {
	l := newLane(8, 0)
	ctx := context.Background()
	if err := l.acquire(ctx, 6); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := l.acquire(short, 6); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second acquire past the lane: %v, want it to wait", err)
	}
	done := make(chan error)
	go func() { done <- l.acquire(ctx, 6) }()
	l.release(6)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l.release(6)
	if err := l.acquire(ctx, 100); err != nil { // larger than the lane: alone
		t.Fatal(err)
	}
	l.release(100)
}

func TestLaneRate(t *testing.T) {
	l := newLane(1<<30, 1000) // 1000 bytes a second
	ctx := context.Background()
	start := time.Now()
	for range 3 {
		if err := l.acquire(ctx, 50); err != nil {
			t.Fatal(err)
		}
		l.release(50)
	}
	// The first starts at once, each next 50 ms after the one before.
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("3 appends of 50 bytes at 1000 bytes/s took %v, want at least 100ms", d)
	}
}

func TestLargeAppendHeldWhileBehind(t *testing.T) {
	lm := newLimiter(Limits{}.withDefaults(), zap.NewNop(), prometheus.NewRegistry())
	lm.large = newLane(largeLaneBytes, 0)
	var behind = true
	lm.behind = func() bool { return behind }
	if le := lm.refuseLarge(smallAppendBytes + 1); le == nil || le.reason != reasonStoreBehind || le.pause == 0 {
		t.Fatalf("refuseLarge while behind: %v, want STORE_BEHIND with a pause", le)
	}
	release, err := lm.admitAppend(context.Background(), smallAppendBytes) // small: never held
	if err != nil {
		t.Fatal(err)
	}
	release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := lm.admitAppend(ctx, smallAppendBytes+1); err == nil {
		t.Fatal("large append admitted while the store is behind")
	}
	if got := lm.inflight.Load(); got != 0 {
		t.Fatalf("in-flight bytes %d after a refusal, want 0", got)
	}
	behind = false
	release, err = lm.admitAppend(context.Background(), smallAppendBytes+1)
	if err != nil {
		t.Fatal(err)
	}
	release()
}
