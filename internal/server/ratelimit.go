package server

import (
	"sync"
	"time"

	"github.com/esdhq/esd/internal/auth"
	"google.golang.org/grpc/codes"
)

// reasonRateLimited: an identity started more calls than its rate allows.
const reasonRateLimited = "RATE_LIMITED"

// identityLimits holds a token bucket per rate-limited identity. Buckets
// are kept by name, so that a reload of the auth file (a new Principal)
// neither refills nor forgets them; a changed rate applies from the next
// call.
type identityLimits struct {
	buckets sync.Map // identity name → *bucket
}

type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// allow takes a call from who's bucket at now; false: none is left.
func (l *identityLimits) allow(who *auth.Principal, now time.Time) bool {
	if who.PerSecond <= 0 {
		return true
	}
	v, ok := l.buckets.Load(who.Name)
	if !ok {
		v, _ = l.buckets.LoadOrStore(who.Name, &bucket{tokens: who.Burst, last: now})
	}
	b := v.(*bucket)
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(who.Burst, b.tokens+d.Seconds()*who.PerSecond)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func rateLimited() error {
	return withReason(codes.ResourceExhausted, "call rate over the identity's limit: retry with backoff", reasonRateLimited, "")
}
