package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Resource limits (docs/api.md "Limits and defaults"). Each refusal is
// RESOURCE_EXHAUSTED with the ErrorInfo reason of its limit, and counted
// in esd_limit_refusals_total{limit}.
const (
	reasonTooManyEvents        = "TOO_MANY_EVENTS"
	reasonTooManyConnections   = "TOO_MANY_CONNECTIONS"
	reasonTooManySubscriptions = "TOO_MANY_SUBSCRIPTIONS"
	reasonSubscriberTooSlow    = "SUBSCRIBER_TOO_SLOW"
	reasonInflightBytes        = "INFLIGHT_BYTES"
	reasonStoreBehind          = "STORE_BEHIND"
)

// Defaults of the resource limits (Limits' zero fields).
const (
	defaultMaxAppendEvents               = 10_000
	defaultMaxRequestDecodedBytes        = 64 << 20
	defaultMaxConnections                = 4096
	defaultMaxSubscriptions              = 10_000
	defaultMaxSubscriptionsPerConnection = 1000
	defaultSubscriptionMemoryBytes       = 64 << 20
	defaultSubscriberStallTimeout        = 10 * time.Second
	defaultMaxInflightBytes              = 64 << 20
	defaultMaxInflightBytesPerConnection = 16 << 20
	// defaultLargeAppendRate: on a 2-core machine, with 24 clients
	// appending 4 MiB again and again, a 1-byte append's p99 was 0.9-2.4ms
	// at 16 MiB/s (and a 4 MiB lane), 6-16ms at 32 MiB/s, 52ms at 64
	// MiB/s (test/e2e/limits_test.go TestHostileLargeAppends): the CPU,
	// not the disk, was short.
	defaultLargeAppendRate = 16 << 20
	// largeLaneBytes: the most event bytes of large appends in the engine
	// at once (but one larger append, alone).
	largeLaneBytes = 4 << 20
	// smallAppendBytes: appends of at most this many event bytes may use
	// the whole in-flight budget; larger ones only its part above
	// inflightReserve, so that a flood of large appends leaves room for
	// small ones.
	smallAppendBytes = 64 << 10
	// largeRefusalPause: a large append refused before it is decoded is
	// answered after this pause (its bytes freed), so that clients
	// retrying at once do not take the CPU copying requests refused.
	largeRefusalPause = time.Second
	// behindHold: the longest a large append, admitted, waits for the
	// store to catch up before it is refused STORE_BEHIND.
	behindHold = 5 * time.Second
	behindPoll = 20 * time.Millisecond
)

// decodedEventBytes is what a decoded ProposedEvent costs besides its
// strings and bytes: the message, its pointer, the validated eslog.Event
// and the writer's record, measured at about 1.4 KB for empty events
// (BenchmarkDecodeAppendEvents). The pre-scan charges it per event when it
// estimates a request's decoded size.
const decodedEventBytes = 1400

// withDefaults fills the zero resource limits with their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	l.MaxEventBytes = cmp.Or(l.MaxEventBytes, d.MaxEventBytes)
	l.MaxAppendBytes = cmp.Or(l.MaxAppendBytes, d.MaxAppendBytes)
	l.MaxAppendEvents = cmp.Or(l.MaxAppendEvents, d.MaxAppendEvents)
	l.MaxRequestDecodedBytes = cmp.Or(l.MaxRequestDecodedBytes, d.MaxRequestDecodedBytes)
	l.MaxConnections = cmp.Or(l.MaxConnections, d.MaxConnections)
	l.MaxSubscriptions = cmp.Or(l.MaxSubscriptions, d.MaxSubscriptions)
	l.MaxSubscriptionsPerConnection = cmp.Or(l.MaxSubscriptionsPerConnection, d.MaxSubscriptionsPerConnection)
	l.SubscriptionMemoryBytes = cmp.Or(l.SubscriptionMemoryBytes, d.SubscriptionMemoryBytes)
	l.SubscriberStallTimeout = cmp.Or(l.SubscriberStallTimeout, d.SubscriberStallTimeout)
	l.MaxInflightBytes = cmp.Or(l.MaxInflightBytes, d.MaxInflightBytes)
	l.MaxInflightBytesPerConnection = cmp.Or(l.MaxInflightBytesPerConnection, d.MaxInflightBytesPerConnection)
	l.LargeAppendRate = cmp.Or(l.LargeAppendRate, d.LargeAppendRate)
	return l
}

// limitError is a request refused by a resource limit.
type limitError struct {
	reason string // the ErrorInfo reason
	limit  string // the limit's flag, ErrorInfo metadata "limit"
	value  int64  // the limit's value, ErrorInfo metadata "max"
	msg    string
	// count, when set, counts and logs the refusal. The codec refuses
	// requests before gRPC runs the interceptors, and so before the caller
	// is authenticated: it leaves the counting to where the refusal is
	// answered (decodeError, AppendStream), which with security on is
	// after authentication, so that a caller refused there counts nothing
	// against the limits and their once-a-second log lines.
	count func()
	pause time.Duration // answered after this long (decode.go)
}

// counted counts the refusal if it is not counted yet (count).
func (e *limitError) counted() *limitError {
	if e.count != nil {
		e.count()
		e.count = nil
	}
	return e
}

func (e *limitError) Error() string { return e.msg }

// status is RESOURCE_EXHAUSTED with ErrorInfo{reason, metadata limit, max}.
func (e *limitError) status() error {
	st := status.New(codes.ResourceExhausted, e.msg)
	info := &errdetails.ErrorInfo{Domain: "esd", Reason: e.reason,
		Metadata: map[string]string{"limit": e.limit, "max": strconv.FormatInt(e.value, 10)}}
	if d, err := st.WithDetails(info); err == nil {
		st = d
	}
	return st.Err()
}

// limiter holds the resource limits' counters and metrics. Its methods
// are safe for concurrent use.
type limiter struct {
	lim Limits
	lg  *zap.Logger

	refusals *prometheus.CounterVec // {limit}
	conns    prometheus.Gauge
	subsG    prometheus.Gauge
	subMemG  prometheus.Gauge
	inflG    prometheus.Gauge

	connsN   atomic.Int64 // connections open (accepted and not closed)
	subs     atomic.Int64 // subscriptions running
	subMem   atomic.Int64 // bytes subscribers hold in messages not yet sent
	inflight atomic.Int64 // event bytes of appends in flight

	// behind says whether the store is behind (Pebble's flushes and
	// compactions); large appends are then refused. Nil: never.
	behind func() bool
	large  *lane // large appends' event bytes in the engine; nil: no bound

	logMu      sync.Mutex
	lastLog    map[string]time.Time
	suppressed map[string]int
}

// Labels of esd_limit_refusals_total.
const (
	limitAppendEvents       = "append_events"
	limitRequestDecoded     = "request_decoded_bytes"
	limitConnections        = "connections"
	limitSubscriptions      = "subscriptions"
	limitSubscriptionsConn  = "subscriptions_per_connection"
	limitSubscriptionMemory = "subscription_memory"
	limitInflight           = "inflight_bytes"
	limitInflightConn       = "inflight_bytes_per_connection"
	limitStoreBehind        = "store_behind"
)

func newLimiter(lim Limits, lg *zap.Logger, reg prometheus.Registerer) *limiter {
	l := &limiter{
		lim: lim, lg: lg,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_limit_refusals_total",
			Help: "Requests and connections refused by a resource limit, by limit.",
		}, []string{"limit"}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_connections", Help: "gRPC connections open.",
		}),
		subsG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_subscription_calls", Help: "Subscribe and consumer group Join calls running (what --max-subscriptions bounds).",
		}),
		subMemG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_subscription_memory_bytes", Help: "Bytes subscribers hold in messages handed to gRPC and not yet sent.",
		}),
		inflG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "esd_inflight_append_bytes", Help: "Event bytes of appends in flight (admitted and not yet answered).",
		}),
		lastLog:    make(map[string]time.Time),
		suppressed: make(map[string]int),
	}
	for _, n := range []string{limitAppendEvents, limitRequestDecoded, limitConnections, limitSubscriptions,
		limitSubscriptionsConn, limitSubscriptionMemory, limitInflight, limitInflightConn, limitStoreBehind} {
		l.refusals.WithLabelValues(n)
	}
	reg.MustRegister(l.refusals, l.conns, l.subsG, l.subMemG, l.inflG)
	return l
}

// refuse counts a refusal by limit and logs it, at most once a second per
// limit (a hostile client can make thousands a second); the log line says
// how many were not logged since.
func (l *limiter) refuse(limit string, fields ...zap.Field) {
	l.refusals.WithLabelValues(limit).Inc()
	now := time.Now()
	l.logMu.Lock()
	if now.Sub(l.lastLog[limit]) < time.Second {
		l.suppressed[limit]++
		l.logMu.Unlock()
		return
	}
	n := l.suppressed[limit]
	l.lastLog[limit], l.suppressed[limit] = now, 0
	l.logMu.Unlock()
	l.lg.Warn("limit reached: refused", append(fields, zap.String("limit", limit), zap.Int("not_logged_since", n))...)
}

// connState is what esd keeps per connection (connAddr carries it).
type connState struct {
	subs     atomic.Int64 // subscriptions running on it
	inflight atomic.Int64 // event bytes of its appends in flight
}

// acquireSubscription counts a subscription of the connection of ctx, or
// refuses it (TOO_MANY_SUBSCRIPTIONS); release undoes it.
func (l *limiter) acquireSubscription(ctx context.Context) (release func(), err error) {
	c := connOf(ctx)
	if c != nil && c.subs.Add(1) > int64(l.lim.MaxSubscriptionsPerConnection) {
		c.subs.Add(-1)
		l.refuse(limitSubscriptionsConn, peerField(ctx))
		return nil, &limitError{reason: reasonTooManySubscriptions, limit: "max-subscriptions-per-connection",
			value: int64(l.lim.MaxSubscriptionsPerConnection),
			msg: fmt.Sprintf("this connection has %d subscriptions, at most %d: use another connection or end one",
				l.lim.MaxSubscriptionsPerConnection, l.lim.MaxSubscriptionsPerConnection)}
	}
	if n := l.subs.Add(1); n > int64(l.lim.MaxSubscriptions) {
		l.subs.Add(-1)
		if c != nil {
			c.subs.Add(-1)
		}
		l.refuse(limitSubscriptions, peerField(ctx))
		return nil, &limitError{reason: reasonTooManySubscriptions, limit: "max-subscriptions",
			value: int64(l.lim.MaxSubscriptions),
			msg:   fmt.Sprintf("the server runs %d subscriptions, at most %d: retry later", l.lim.MaxSubscriptions, l.lim.MaxSubscriptions)}
	}
	l.subsG.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.subs.Add(-1)
			l.subsG.Dec()
			if c != nil {
				c.subs.Add(-1)
			}
		})
	}, nil
}

// subscriberShare is the most a subscriber may hold in messages gRPC has
// not written and the message it gathers: an equal share of the
// subscription memory budget among the subscriptions running, at least
// minSubscriberShare.
func (l *limiter) subscriberShare() int64 {
	n := max(l.subs.Load(), 1)
	return max(l.lim.SubscriptionMemoryBytes/n, minSubscriberShare)
}

const minSubscriberShare = 64 << 10

// largeBudget is the part of the server's in-flight budget appends of more
// than smallAppendBytes may use.
func (l *limiter) largeBudget() int64 { return l.lim.MaxInflightBytes - l.lim.MaxInflightBytes/8 }

func (l *limiter) inflightError(held, n, budget int64) *limitError {
	return &limitError{reason: reasonInflightBytes, limit: "max-inflight-bytes", value: l.lim.MaxInflightBytes,
		msg: fmt.Sprintf("the server has %d bytes of appends in flight, at most %d with an append of %d bytes: retry with backoff",
			held, budget, n)}
}

func (l *limiter) connInflightError(held, n int64) *limitError {
	return &limitError{reason: reasonInflightBytes, limit: "max-inflight-bytes-per-connection",
		value: l.lim.MaxInflightBytesPerConnection,
		msg: fmt.Sprintf("this connection has %d bytes of appends in flight, %d more would pass its %d: retry with backoff, or use fewer concurrent large appends",
			held, n, l.lim.MaxInflightBytesPerConnection)}
}

// refuseLarge is the codec's check, before decoding, of a large append
// request of wire size n (more than its event bytes) against the server's
// budget for large appends: a flood of them is refused without the cost
// of decoding each. The refusal is counted when answered (limitError.count).
func (l *limiter) refuseLarge(n int64) *limitError {
	if n <= smallAppendBytes {
		return nil
	}
	if le := l.refuseBehind(n); le != nil {
		le.pause = largeRefusalPause
		return le
	}
	if held := l.inflight.Load(); held+n > l.largeBudget() {
		le := l.inflightError(held, n, l.largeBudget())
		le.pause = largeRefusalPause
		return le
	}
	return nil
}

// refuseBehind refuses a large append of n bytes while the store is
// behind: Pebble's memtables wait for flush, or L0 for compaction, and
// the next memtable filled would stall every commit, small ones too.
func (l *limiter) refuseBehind(n int64) *limitError {
	if n <= smallAppendBytes || l.behind == nil || !l.behind() {
		return nil
	}
	return &limitError{reason: reasonStoreBehind, limit: "large-append-rate", value: max(l.lim.LargeAppendRate, 0),
		msg: fmt.Sprintf("the store is behind (its memtables wait for flush): appends of more than %d bytes are refused until it catches up; retry with backoff",
			smallAppendBytes)}
}

// holdBehind holds a large append, admitted within the in-flight budget,
// while the store is behind, for at most behindHold; then it is refused
// STORE_BEHIND.
func (l *limiter) holdBehind(ctx context.Context, n int64) error {
	if l.behind == nil || !l.behind() {
		return nil
	}
	deadline := time.Now().Add(behindHold)
	t := time.NewTicker(behindPoll)
	defer t.Stop()
	for l.behind() {
		if time.Now().After(deadline) {
			if le := l.refuseBehind(n); le != nil {
				l.refuse(limitStoreBehind, peerField(ctx)) // after authentication: counted here
				return le
			}
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return nil
}

// tap refuses, before its request is read, an Append or AppendMulti on a
// connection whose appends in flight fill its budget already: the
// request's bytes are then dropped as they arrive, never held (gRPC's
// InTapHandle runs on the connection's reader, so it must not block).
func (l *limiter) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != esdv1.StreamService_Append_FullMethodName && info.FullMethodName != esdv1.StreamService_AppendMulti_FullMethodName {
		return ctx, nil
	}
	if c := connOf(ctx); c != nil {
		if held := c.inflight.Load(); held >= l.lim.MaxInflightBytesPerConnection {
			l.refuse(limitInflightConn, peerField(ctx))
			return ctx, l.connInflightError(held, 0).status()
		}
	}
	return ctx, nil
}

// admitAppend takes n event bytes of the in-flight budgets (the
// connection's, then the server's) for an append, or refuses it; release
// gives them back. Appends of at most smallAppendBytes may use the whole
// server budget, larger ones all but an eighth of it: a flood of large
// appends leaves that eighth to small ones. A larger one then waits for
// its turn in the lane (at most largeLaneBytes at once, LargeAppendRate
// bytes a second) and, while the store is behind, for it to catch up
// (STORE_BEHIND after behindHold).
func (l *limiter) admitAppend(ctx context.Context, n int64) (release func(), err error) {
	c := connOf(ctx)
	if c != nil && c.inflight.Add(n) > l.lim.MaxInflightBytesPerConnection && n > 0 {
		held := c.inflight.Add(-n)
		l.refuse(limitInflightConn, peerField(ctx))
		return nil, l.connInflightError(held, n)
	}
	budget := l.lim.MaxInflightBytes
	if n > smallAppendBytes {
		budget = l.largeBudget()
	}
	if held := l.inflight.Add(n); held > budget && n > 0 {
		l.inflight.Add(-n)
		if c != nil {
			c.inflight.Add(-n)
		}
		l.refuse(limitInflight, peerField(ctx))
		return nil, l.inflightError(held-n, n, budget)
	}
	l.inflG.Add(float64(n))
	inLane := n > smallAppendBytes && l.large != nil
	if n > smallAppendBytes {
		// In the lane first: only the appends about to reach the engine
		// wait for the store, and once it catches up they go one lane
		// at a time, not all together.
		var err error
		if inLane {
			if err = l.large.acquire(ctx, n); err != nil {
				err = status.FromContextError(err).Err()
			}
		}
		if err == nil {
			if err = l.holdBehind(ctx, n); err != nil && inLane {
				l.large.release(n)
			}
		}
		if err != nil {
			l.inflight.Add(-n)
			l.inflG.Sub(float64(n))
			if c != nil {
				c.inflight.Add(-n)
			}
			return nil, err
		}
	}
	return func() {
		if inLane {
			l.large.release(n)
		}
		l.inflight.Add(-n)
		l.inflG.Sub(float64(n))
		if c != nil {
			c.inflight.Add(-n)
		}
	}, nil
}

func peerField(ctx context.Context) zap.Field {
	if a := peerAddr(ctx); a != "" {
		return zap.String("peer", a)
	}
	return zap.Skip()
}

// limitLabel is the esd_limit_refusals_total label of a codec's refusal
// (the pre-scan's, refuseLarge's and refuseBehind's).
func (e *limitError) limitLabel() string {
	switch e.reason {
	case reasonTooManyEvents:
		return limitAppendEvents
	case reasonInflightBytes:
		return limitInflight
	case reasonStoreBehind:
		return limitStoreBehind
	}
	return limitRequestDecoded
}

func isLimitError(err error) bool {
	var le *limitError
	return errors.As(err, &le)
}
