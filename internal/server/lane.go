package server

import (
	"context"
	"sync"
	"time"
)

// lane bounds the event bytes of large appends the engine holds at once,
// and a second: commits are serialized, and a small append queued behind
// many large ones waits for all their WAL writes and memtable inserts,
// and for the CPU their decoding, inserts and flushes take. An append
// larger than the lane runs alone. Past the rate, appends start in turn,
// each n/rate after the one before.
type lane struct {
	max  int64
	mu   sync.Mutex
	held int64
	wake chan struct{} // closed and replaced at each release

	rate int64     // bytes a second admitted; 0: no bound
	next time.Time // when the next append may start (guarded by mu)
}

// newLane bounds large appends to maxBytes at once and rate bytes a
// second (0: no rate bound).
func newLane(maxBytes, rate int64) *lane {
	return &lane{max: maxBytes, rate: rate, wake: make(chan struct{})}
}

// acquire waits until n bytes fit in the lane, or ctx ends.
func (l *lane) acquire(ctx context.Context, n int64) error {
	for {
		l.mu.Lock()
		if l.held == 0 || l.held+n <= l.max {
			l.held += n
			var wait time.Duration
			if l.rate > 0 {
				now := time.Now()
				start := l.next
				if l.next.Before(now) {
					start = now
				}
				l.next = start.Add(time.Duration(n * int64(time.Second) / l.rate))
				wait = start.Sub(now)
			}
			l.mu.Unlock()
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					l.release(n)
					return ctx.Err()
				}
			}
			return nil
		}
		ch := l.wake
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *lane) release(n int64) {
	l.mu.Lock()
	l.held -= n
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}
