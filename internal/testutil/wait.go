package testutil

import (
	"errors"
	"testing"
	"time"
)

// The pause between two checks of a condition starts at firstPause and
// doubles up to maxPause: a condition that holds soon is seen at once,
// and one that takes long (an RPC to a process, say) is not checked in a
// busy loop.
const (
	firstPause = time.Millisecond
	maxPause   = 10 * time.Millisecond
)

var (
	errTimedOut = errors.New("timed out")
	errEnded    = errors.New("ended")
)

// Poll checks cond until it holds or d has passed (pausing 1 ms between
// checks at first, 10 ms at most) and reports whether it held. Use it
// where not holding is not a failure by itself; Eventually fails the test.
func Poll(d time.Duration, cond func() bool) bool {
	return poll(nil, d, cond) == nil
}

// Eventually checks cond, as Poll does, until it holds. It fails t with
// "timed out after d waiting for what" when d passes first, and with
// "test ended waiting for what" when t's context ends first.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	switch err := poll(t.Context().Done(), d, cond); {
	case errors.Is(err, errTimedOut):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	case errors.Is(err, errEnded):
		t.Fatalf("test ended waiting for %s", what)
	}
}

// poll checks cond until it holds (nil), d passes (errTimedOut) or ended
// is closed (errEnded; a nil ended never is).
func poll(ended <-chan struct{}, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	pause := firstPause
	for !cond() {
		if time.Now().After(deadline) {
			return errTimedOut
		}
		tm := time.NewTimer(pause)
		select {
		case <-tm.C:
		case <-ended:
			tm.Stop()
			return errEnded
		}
		pause = min(2*pause, maxPause)
	}
	return nil
}
