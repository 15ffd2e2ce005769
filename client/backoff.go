package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is the wait between the attempts of a retried call, resumed
// read or subscription, rejoining member or conflicting Update: each wait
// is a random time between half the step and the step, so that the
// retries of many clients spread out, and the step doubles up to max.
type backoff struct {
	first, max, step time.Duration
}

func newBackoff(first, max time.Duration) backoff {
	return backoff{first: first, max: max, step: first}
}

// serverBackoff waits out a server that was unreachable or overloaded:
// from 50 ms to 2 s.
func serverBackoff() backoff { return newBackoff(50*time.Millisecond, 2*time.Second) }

// reset starts over from the first step, once the server answered again.
func (b *backoff) reset() { b.step = b.first }

// wait waits, and reports false when ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.step/2 + rand.N(b.step/2+1)
	b.step = min(2*b.step, b.max)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
