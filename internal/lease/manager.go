package lease

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
)

const (
	// DefaultMaxTTL bounds every TTL when Config.MaxTTL is 0: long enough
	// for a critical operation, short enough that a crashed holder is
	// soon forgotten.
	DefaultMaxTTL = 5 * time.Minute
	// pollInterval is how often a waiter looks at the clock again even
	// if nothing woke it, so that an injected or stepped clock is
	// followed (doc.go).
	pollInterval = 100 * time.Millisecond
)

// Config configures Open. The zero value is usable.
type Config struct {
	// MaxTTL bounds every TTL; 0 means DefaultMaxTTL.
	MaxTTL time.Duration
	// Clock is the server's clock, which measures TTLs; nil means
	// time.Now. Its values are stored (as expiries), so it must be a
	// wall clock in production.
	Clock func() time.Time
}

// Lease is a granted lease.
type Lease struct {
	Stream string
	Owner  string
	// Token is the fencing token: greater than every earlier lease's on
	// the stream.
	Token   uint64
	Expires time.Time
}

var (
	// ErrLeased: the stream is leased by someone else (a *LeasedError
	// when the holder is known).
	ErrLeased = errors.New("lease: stream is leased")
	// ErrStaleToken: the token is not the live lease's (a
	// *StaleTokenError).
	ErrStaleToken = errors.New("lease: stale fencing token")
	// ErrNotHeld: the token's lease expired or was released, and no
	// newer one is live (a *NotHeldError).
	ErrNotHeld = errors.New("lease: not held")
	// ErrTTL: a TTL is not in (0, MaxTTL].
	ErrTTL = errors.New("lease: ttl out of range")
	// ErrClosed: the manager is closed.
	ErrClosed = errors.New("lease: closed")
)

// LeasedError says who holds the stream, and until when.
type LeasedError struct {
	Stream  string
	Owner   string
	Expires time.Time
}

func (e *LeasedError) Error() string {
	return fmt.Sprintf("stream %q is leased by %q until %s", e.Stream, e.Owner, e.Expires.UTC().Format(time.RFC3339Nano))
}

func (e *LeasedError) Unwrap() error { return ErrLeased }

// Reason is the API's reason for the error (the writer's metrics use it).
func (e *LeasedError) Reason() string { return "STREAM_LEASED" }

// StaleTokenError refuses a token that is not the stream's newest:
// Given is older (a newer lease was granted since) or was never granted.
// Current is the newest token (0: the stream was never leased).
type StaleTokenError struct {
	Stream  string
	Given   uint64
	Current uint64
}

func (e *StaleTokenError) Error() string {
	if e.Current == 0 {
		return fmt.Sprintf("stream %q: fencing token %d was never granted: the stream was never leased", e.Stream, e.Given)
	}
	return fmt.Sprintf("stream %q: fencing token %d is stale, the newest lease's is %d", e.Stream, e.Given, e.Current)
}

func (e *StaleTokenError) Unwrap() error { return ErrStaleToken }

// Reason is the API's reason for the error (the writer's metrics use it).
func (e *StaleTokenError) Reason() string { return "STALE_FENCING_TOKEN" }

// NotHeldError says the token's lease is gone (expired or released) and
// no other is live.
type NotHeldError struct {
	Stream string
	Token  uint64
}

func (e *NotHeldError) Error() string {
	return fmt.Sprintf("stream %q: the lease of token %d is not held (expired or released)", e.Stream, e.Token)
}

func (e *NotHeldError) Unwrap() error { return ErrNotHeld }

// record is a stream's durable state: its newest lease. expires is unix
// nanoseconds of the server's clock, 0 once released; token is the
// stream's high-water mark.
type record struct {
	token   uint64
	expires int64
	owner   string
}

const recordVersion = 1

// encode: version byte, token and expires as 8 bytes big-endian, owner.
func (r record) encode() []byte {
	b := make([]byte, 17, 17+len(r.owner))
	b[0] = recordVersion
	binary.BigEndian.PutUint64(b[1:], r.token)
	binary.BigEndian.PutUint64(b[9:], uint64(r.expires))
	return append(b, r.owner...)
}

func decodeRecord(b []byte) (record, error) {
	if len(b) < 17 || b[0] != recordVersion {
		return record{}, fmt.Errorf("lease: bad record (%d bytes)", len(b))
	}
	return record{
		token:   binary.BigEndian.Uint64(b[1:]),
		expires: int64(binary.BigEndian.Uint64(b[9:])),
		owner:   string(b[17:]),
	}, nil
}

// entry is a stream's state in memory. Guarded by Manager.mu.
type entry struct {
	rec record // the newest lease, live or not; rec.token is the high-water mark
	// stored is the record as last read or written (nil: absent), the
	// old value of the next compare-and-swap; storedKnown is false after
	// a write whose outcome is unknown, and the next write reads it again.
	stored      []byte
	storedKnown bool
	// pending: a write of this stream's record is in flight, with mu
	// released; others wait for it, so that writes of one stream are in
	// order and what Check sees changes only when a write is durable.
	pending bool
	queue   []*waiter     // Acquires waiting, first come first served
	changed chan struct{} // closed (and replaced) at every change
}

// waiter is one waiting Acquire, known by its address. It must not be
// zero-size: pointers to distinct zero-size variables may be equal, and
// the queue would mistake one waiter for another.
type waiter struct{ owner string }

func (e *entry) live(now time.Time) bool {
	return e.rec.expires != 0 && now.UnixNano() < e.rec.expires
}

func (e *entry) broadcast() {
	close(e.changed)
	e.changed = make(chan struct{})
}

func (e *entry) dequeue(w *waiter) {
	if i := slices.Index(e.queue, w); i >= 0 {
		e.queue = slices.Delete(e.queue, i, i+1)
	}
}

// Manager holds the leases of a log's streams. It is safe for concurrent
// use.
type Manager struct {
	aux *eslog.Aux
	cfg Config

	mu      sync.RWMutex
	streams map[string]*entry
	closed  bool
}

// Open loads the leases of l's namespace NSLeases. A lease that was live
// when the log was closed (or crashed) is live again until its expiry,
// capped at now plus MaxTTL (doc.go).
func Open(l *eslog.Log, cfg Config) (*Manager, error) {
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.MaxTTL < 0 {
		return nil, fmt.Errorf("lease: max ttl %v, want > 0", cfg.MaxTTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	m := &Manager{aux: l.Aux(eslog.NSLeases), cfg: cfg, streams: make(map[string]*entry)}
	limit := cfg.Clock().Add(cfg.MaxTTL).UnixNano()
	err := m.aux.Scan(nil, func(k, v []byte) error {
		r, err := decodeRecord(v)
		if err != nil {
			return fmt.Errorf("stream %q: %w", k, err)
		}
		if r.expires > limit {
			r.expires = limit
		}
		e := m.entry(string(k))
		e.rec, e.stored, e.storedKnown = r, append([]byte(nil), v...), true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lease: load: %w", err)
	}
	return m, nil
}

// MaxTTL is the bound of every TTL.
func (m *Manager) MaxTTL() time.Duration { return m.cfg.MaxTTL }

// Close ends every wait with ErrClosed; later Acquire, Renew and Release
// fail with it. Check, Get and List go on answering from memory. It does
// not close the log.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, e := range m.streams {
		e.broadcast()
	}
}

// entry returns stream's entry, made if new. Called with mu held.
func (m *Manager) entry(stream string) *entry {
	e := m.streams[stream]
	if e == nil {
		e = &entry{changed: make(chan struct{}), storedKnown: true}
		m.streams[stream] = e
	}
	return e
}

func (m *Manager) checkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > m.cfg.MaxTTL {
		return fmt.Errorf("%w: %v, want more than 0 and at most %v", ErrTTL, ttl, m.cfg.MaxTTL)
	}
	return nil
}

func (m *Manager) lease(stream string, r record) Lease {
	return Lease{Stream: stream, Owner: r.owner, Token: r.token, Expires: time.Unix(0, r.expires)}
}

// Acquire grants a lease of stream to owner for ttl if the stream has no
// live lease and no earlier waiter, and returns it once its token is
// durable. With wait > 0 it waits up to wait, behind earlier waiters, for
// the lease to be released or to expire; ctx ends the wait too. A lease
// it cannot get fails with ErrLeased (a *LeasedError when a lease is
// live), a ctx that ends with ctx.Err().
func (m *Manager) Acquire(ctx context.Context, stream, owner string, ttl, wait time.Duration) (Lease, error) {
	if stream == "" {
		return Lease{}, errors.New("lease: empty stream name")
	}
	if err := m.checkTTL(ttl); err != nil {
		return Lease{}, err
	}
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entry(stream)
	w := &waiter{owner: owner}
	queued := false
	defer func() {
		if queued {
			e.dequeue(w)
			e.broadcast() // the next waiter may be first now
		}
	}()
	for {
		if m.closed {
			return Lease{}, ErrClosed
		}
		now := m.cfg.Clock()
		first := len(e.queue) == 0 || (queued && e.queue[0] == w)
		if !e.pending && !e.live(now) && first {
			return m.grant(stream, owner, ttl, e, now)
		}
		// A write in flight is waited for even without wait: what it
		// changes is not seen yet, and an answer from before it could
		// contradict a Check after this Acquire returns.
		if !e.pending && wait <= 0 {
			if e.live(now) {
				return Lease{}, &LeasedError{Stream: stream, Owner: e.rec.owner, Expires: time.Unix(0, e.rec.expires)}
			}
			return Lease{}, fmt.Errorf("%w: stream %q: %d acquirers are waiting", ErrLeased, stream, len(e.queue))
		}
		if !queued && wait > 0 {
			e.queue = append(e.queue, w)
			queued = true
		}
		d := pollInterval
		if e.live(now) {
			d = min(d, time.Unix(0, e.rec.expires).Sub(now))
		}
		ch := e.changed
		m.mu.Unlock()
		poll := time.NewTimer(d)
		var ctxErr error
		timedOut := false
		select {
		case <-ch:
		case <-poll.C:
		case <-timeout:
			timedOut = true
		case <-ctx.Done():
			ctxErr = ctx.Err()
		}
		poll.Stop()
		m.mu.Lock()
		switch {
		case ctxErr != nil:
			return Lease{}, ctxErr
		case timedOut && e.live(m.cfg.Clock()):
			return Lease{}, &LeasedError{Stream: stream, Owner: e.rec.owner, Expires: time.Unix(0, e.rec.expires)}
		case timedOut:
			return Lease{}, fmt.Errorf("%w: stream %q: waited %v", ErrLeased, stream, wait)
		}
	}
}

// grant writes stream's new lease and returns it. Called with mu held;
// e has no live lease and no write in flight.
func (m *Manager) grant(stream, owner string, ttl time.Duration, e *entry, now time.Time) (Lease, error) {
	r := record{token: e.rec.token + 1, expires: now.Add(ttl).UnixNano(), owner: owner}
	if err := m.write(stream, e, &r); err != nil {
		return Lease{}, err
	}
	return m.lease(stream, r), nil
}

// write stores r as stream's record, durably, and then makes it e's
// lease. Called with mu held, which it releases during the write. If the
// stored record must be read first (an earlier write's outcome is
// unknown) and holds a greater token than r's predecessor, r's token is
// raised past it, so that no token is ever given twice.
func (m *Manager) write(stream string, e *entry, r *record) error {
	e.pending = true
	known, stored, base := e.storedKnown, e.stored, e.rec.token
	m.mu.Unlock()
	err := func() error {
		key := []byte(stream)
		if !known {
			v, ok, err := m.aux.Get(key)
			if err != nil {
				return err
			}
			stored = nil
			if ok {
				stored = v
				cur, err := decodeRecord(v)
				if err != nil {
					return err
				}
				// A newer lease is stored: a new lease goes past its
				// token; Renew and Release (of base) are stale.
				if cur.token > base {
					if r.token == base {
						return &StaleTokenError{Stream: stream, Given: base, Current: cur.token}
					}
					r.token = cur.token + 1
				}
			}
		}
		old := eslog.Absent()
		if stored != nil {
			old = eslog.Present(stored)
		}
		return m.aux.CompareAndSwap(context.Background(), key, old, eslog.Present(r.encode()))
	}()
	m.mu.Lock()
	e.pending = false
	e.broadcast()
	var cas *eslog.CASError
	switch {
	case err == nil:
		e.rec, e.stored, e.storedKnown = *r, r.encode(), true
	case errors.As(err, &cas):
		// Someone else wrote the record (another manager on this log):
		// refuse, and compare with what is stored next time.
		e.storedKnown = false
		return fmt.Errorf("lease: stream %q: the stored lease changed underneath: %w", stream, err)
	default:
		// The write may or may not be on disk.
		e.storedKnown = false
		if errors.Is(err, eslog.ErrClosed) {
			return fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return fmt.Errorf("lease: stream %q: write: %w", stream, err)
	}
	return nil
}

// awaitIdle waits until no write of e is in flight. Called with mu held.
func (m *Manager) awaitIdle(e *entry) {
	for e.pending {
		ch := e.changed
		m.mu.Unlock()
		<-ch
		m.mu.Lock()
	}
}

// held returns e's live lease of token, or why there is none.
func (m *Manager) held(stream string, e *entry, token uint64, now time.Time) error {
	if e == nil || !e.live(now) {
		return &NotHeldError{Stream: stream, Token: token}
	}
	if token != e.rec.token {
		return &StaleTokenError{Stream: stream, Given: token, Current: e.rec.token}
	}
	return nil
}

// Renew extends the live lease of token to now plus ttl, durably. It
// fails with a *NotHeldError when no lease is live (it expired or was
// released) and a *StaleTokenError when another lease is.
func (m *Manager) Renew(stream string, token uint64, ttl time.Duration) (Lease, error) {
	if err := m.checkTTL(ttl); err != nil {
		return Lease{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Lease{}, ErrClosed
	}
	e := m.streams[stream]
	if e == nil {
		return Lease{}, &NotHeldError{Stream: stream, Token: token}
	}
	m.awaitIdle(e)
	now := m.cfg.Clock()
	if err := m.held(stream, e, token, now); err != nil {
		return Lease{}, err
	}
	r := e.rec
	r.expires = now.Add(ttl).UnixNano()
	if err := m.write(stream, e, &r); err != nil {
		return Lease{}, err
	}
	return m.lease(stream, r), nil
}

// Release ends the live lease of token, durably, and hands the stream to
// the first waiter. Errors: as Renew's.
func (m *Manager) Release(stream string, token uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	e := m.streams[stream]
	if e == nil {
		return &NotHeldError{Stream: stream, Token: token}
	}
	m.awaitIdle(e)
	if err := m.held(stream, e, token, m.cfg.Clock()); err != nil {
		return err
	}
	r := e.rec
	r.expires = 0
	return m.write(stream, e, &r)
}

// Check is what a write of stream (an append, a delete) asks before it
// commits, with the writer's token (0: none) and the server's time.
//
// A write without a token passes unless a lease is live (*LeasedError).
// A write with a token passes only with the stream's newest token: an
// older one (its lease expired or was released, and a newer lease was
// granted since, live or not) or one never granted is a
// *StaleTokenError, so that a holder that was paused past its lease can
// never write after anyone else was given the stream. The newest token
// passes after its lease expired or was released, as a write without a
// token would.
//
// It never waits for a lease write in flight: until that write is
// durable, its lease does not exist.
func (m *Manager) Check(stream string, token uint64, now time.Time) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.streams[stream]
	var cur uint64
	if e != nil {
		cur = e.rec.token
	}
	switch {
	case token != 0 && token != cur:
		return &StaleTokenError{Stream: stream, Given: token, Current: cur}
	case token == 0 && e != nil && e.live(now):
		return &LeasedError{Stream: stream, Owner: e.rec.owner, Expires: time.Unix(0, e.rec.expires)}
	}
	return nil
}

// Get returns stream's live lease.
func (m *Manager) Get(stream string) (Lease, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e := m.streams[stream]
	if e == nil || !e.live(m.cfg.Clock()) {
		return Lease{}, false
	}
	return m.lease(stream, e.rec), true
}

// List returns the live leases, by stream name.
func (m *Manager) List() []Lease {
	m.mu.RLock()
	defer m.mu.RUnlock()
	now := m.cfg.Clock()
	var out []Lease
	for s, e := range m.streams {
		if e.live(now) {
			out = append(out, m.lease(s, e.rec))
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return strings.Compare(a.Stream, b.Stream) })
	return out
}
