package subscription

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"unsafe"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSlowSubscriberFallsBehindAndCatchesUp: a subscriber that stops
// reading while far more than the hub's buffer is written falls back to
// the log and then gets everything, exactly once, in order; the buffer
// stays within its bounds the whole time, and the fallback is counted.
func TestSlowSubscriberFallsBehindAndCatchesUp(t *testing.T) {
	tests := []struct {
		name   string
		req    Request
		events int // buffer bounds
		bytes  int
	}{
		{"all, bounded by events", Request{Target: TargetAll}, 32, 1 << 20},
		{"category, bounded by bytes", Request{Target: TargetCategory, Name: "slow"}, 1 << 16, 2 << 10},
		{"stream, bounded by events", Request{Target: TargetStream, Name: "slow-1"}, 16, 1 << 20},
		{"filtered all, bounded by events", Request{Target: TargetAll, StreamPrefixes: []string{"slow-"}, CheckpointEvery: 8}, 24, 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := openLog(t)
			reg := prometheus.NewRegistry()
			var maxEvents, maxBytes atomic.Int64
			h := newHub(l, Options{BufferEvents: tc.events, BufferBytes: tc.bytes, Registerer: reg}, func(h *Hub) {
				n, b := h.buffered()
				if int64(n) > maxEvents.Load() {
					maxEvents.Store(int64(n))
				}
				if int64(b) > maxBytes.Load() {
					maxBytes.Store(int64(b))
				}
			})
			write(t, l, "slow-1", 5, "Early")
			write(t, l, "other-1", 5, "Early")
			write(t, l, "slow-2", 3, "Early")

			sink := &testSink{}
			sub := startSub(t, h, tc.req, sink)
			waitUntil(t, "caught_up", func() bool { return sink.has('c') })

			// The subscriber takes one live event and stops reading.
			sink.arm()
			write(t, l, "slow-1", 1, "Live")
			waitUntil(t, "the sink to block", func() bool { return sink.blockedNow() == 1 })
			before := testutil.MetricValue(t, reg, "esd_subscription_fallbacks_total", nil)

			n := 20 * tc.events
			if tc.events > 1<<10 {
				n = 400
			}
			writeMany(t, l, n/8, 8, "Late", "slow-1", "other-1", "slow-2", "other-2", "slow")
			if got := maxEvents.Load(); got > int64(tc.events) {
				t.Errorf("buffer held %d events, bound %d", got, tc.events)
			}
			if got := maxBytes.Load(); got > int64(tc.bytes) {
				t.Errorf("buffer held %d bytes, bound %d", got, tc.bytes)
			}
			if got := testutil.MetricValue(t, reg, "esd_subscription_buffer_events", nil); got > float64(tc.events) || got == 0 {
				t.Errorf("esd_subscription_buffer_events %v, want 1..%d", got, tc.events)
			}

			sink.release()
			final := readAll(t, l, eslog.AllQuery{})
			tg := target{req: tc.req}
			var wantLast uint64
			for _, e := range final {
				if tg.matches(e.Stream, e.Type) {
					wantLast = e.Position
				}
			}
			waitUntil(t, "the last event", func() bool { return sink.lastEventPos() >= wantLast })
			got := sink.snapshot()
			if msg := checkDelivery(tg, got, final, nil); msg != "" {
				t.Fatalf("%s\ngot: %s", msg, describe(got))
			}
			if fb := testutil.MetricValue(t, reg, "esd_subscription_fallbacks_total", nil) - before; fb < 1 {
				t.Errorf("%v fallbacks to the log, want at least 1 (the buffer was overrun)", fb)
			}
			delivered := 0
			for _, it := range got {
				if it.kind == 'e' {
					delivered++
				}
			}
			if m := testutil.MetricValue(t, reg, "esd_subscription_events_delivered_total", nil); m != float64(delivered) {
				t.Errorf("esd_subscription_events_delivered_total %v, want %d", m, delivered)
			}

			// Live again: one more event comes straight from the buffer.
			fbBefore := testutil.MetricValue(t, reg, "esd_subscription_fallbacks_total", nil)
			w := write(t, l, "slow-1", 1, "AfterCatchUp")
			waitUntil(t, "a live event after catching up", func() bool { return sink.lastEventPos() == w.LastPosition })
			if fb := testutil.MetricValue(t, reg, "esd_subscription_fallbacks_total", nil); fb != fbBefore {
				t.Errorf("fallbacks %v -> %v for a subscriber that was caught up", fbBefore, fb)
			}

			if err := sub.stop(); !errors.Is(err, context.Canceled) {
				t.Fatalf("Subscribe returned %v, want context.Canceled", err)
			}
			if g := testutil.MetricValue(t, reg, "esd_subscriptions", nil); g != 0 {
				t.Errorf("esd_subscriptions %v after the subscription ended", g)
			}
		})
	}
}

// TestStreamDeletedWhileLagging: a stream subscriber that lags behind
// the buffer when its stream is deleted learns of the deletion from the
// log and ends with the right reason; Subscribe returns nil.
func TestStreamDeletedWhileLagging(t *testing.T) {
	for _, mode := range []eslog.DeleteMode{eslog.DeleteSoft, eslog.DeleteTombstone} {
		reason := map[eslog.DeleteMode]string{eslog.DeleteSoft: EndedStreamDeleted, eslog.DeleteTombstone: EndedStreamTombstoned}[mode]
		t.Run(reason, func(t *testing.T) {
			l := openLog(t)
			reg := prometheus.NewRegistry()
			h := newHub(l, Options{BufferEvents: 16, Registerer: reg}, nil)
			write(t, l, "lag-1", 3, "Early")
			sink := &testSink{}
			sub := startSub(t, h, Request{Target: TargetStream, Name: "lag-1"}, sink)
			waitUntil(t, "caught_up", func() bool { return sink.has('c') })

			sink.arm()
			write(t, l, "lag-1", 1, "Live") // revision 3: the sink blocks on it
			waitUntil(t, "the sink to block", func() bool { return sink.blockedNow() == 1 })
			writeMany(t, l, 10, 5, "Noise", "noise-1", "noise-2")
			deleteStream(t, l, "lag-1", mode)
			writeMany(t, l, 10, 5, "Noise", "noise-1", "noise-2") // the deletion leaves the buffer too
			sink.release()

			waitUntil(t, "Subscribe to return", sub.ended)
			if sub.err != nil {
				t.Fatalf("Subscribe returned %v, want nil after ended", sub.err)
			}
			got := sink.snapshot()
			var gotKinds []item
			for _, it := range got {
				switch it.kind {
				case 'c', 'x':
					gotKinds = append(gotKinds, item{kind: it.kind, pos: it.pos, reason: it.reason})
				case 'e':
					gotKinds = append(gotKinds, item{kind: 'e', rev: it.rev})
				}
			}
			want := []item{{kind: 'e', rev: 0}, {kind: 'e', rev: 1}, {kind: 'e', rev: 2}, {kind: 'c', pos: 3}, {kind: 'e', rev: 3}, {kind: 'x', reason: reason}}
			if fmt.Sprint(gotKinds) != fmt.Sprint(want) {
				t.Fatalf("got %v\nwant %v", gotKinds, want)
			}
			if fb := testutil.MetricValue(t, reg, "esd_subscription_fallbacks_total", nil); fb < 1 {
				t.Errorf("no fallback to the log: the deletion was not read from the log")
			}
		})
	}
}

// TestStreamDeletedDuringCatchUp: the deletion comes while the subscriber
// is still reading the stream's history (and has left the buffer's
// reach): the history read so far is delivered, then ended.
func TestStreamDeletedDuringCatchUp(t *testing.T) {
	l := openLog(t)
	h := newHub(l, Options{BufferEvents: 8}, nil)
	write(t, l, "cu-1", 5, "Early")
	sink := &testSink{}
	sink.arm() // the first history event blocks
	sub := startSub(t, h, Request{Target: TargetStream, Name: "cu-1"}, sink)
	waitUntil(t, "the sink to block", func() bool { return sink.blockedNow() == 1 })
	deleteStream(t, l, "cu-1", eslog.DeleteSoft)
	writeMany(t, l, 4, 5, "Noise", "noise-1")
	sink.release()
	waitUntil(t, "Subscribe to return", sub.ended)
	if sub.err != nil {
		t.Fatalf("Subscribe returned %v, want nil after ended", sub.err)
	}
	got := sink.snapshot()
	// History up to the deletion: a prefix of revisions 0..4 (the read
	// that began before the deletion may finish), then ended.
	next := uint64(0)
	for i, it := range got {
		switch {
		case it.kind == 'e' && it.rev == next:
			next++
		case it.kind == 'c' && i == len(got)-2:
		case it.kind == 'x' && i == len(got)-1 && it.reason == EndedStreamDeleted:
		default:
			t.Fatalf("item %d: %v unexpected in %s", i, it, describe(got))
		}
	}
	if len(got) == 0 || got[len(got)-1].kind != 'x' || next > 5 {
		t.Fatalf("got %s, want history then ended{STREAM_DELETED}", describe(got))
	}
}

// TestIdleSubscribersCostNoWakeups: thousands of stream subscribers on
// streams nobody writes are not woken by writes to other streams
// (their wake channels stay empty), a write to one stream wakes only its
// subscriber, and every subscriber goes away on cancel.
func TestIdleSubscribersCostNoWakeups(t *testing.T) {
	n := 2000
	if testutil.RaceEnabled {
		n = 500
	}
	l := openLog(t)
	reg := prometheus.NewRegistry()
	h := newHub(l, Options{Registerer: reg}, nil)
	write(t, l, "busy-1", 3, "Early")

	// Phase 1: every subscriber is registered and stopped in CaughtUp, so
	// any wake-up stays in its channel for the test to see.
	sinks := make([]*testSink, n)
	subs := make([]*runningSub, n)
	for i := range n {
		sinks[i] = &testSink{gateCaught: make(chan struct{})}
		subs[i] = startSub(t, h, Request{Target: TargetStream, Name: fmt.Sprintf("idle-%d", i), Start: FromEnd}, sinks[i])
	}
	waitUntil(t, "every subscriber to be caught up", func() bool {
		for _, s := range sinks {
			if s.blockedNow() != 1 {
				return false
			}
		}
		return true
	})
	waiters := func() map[string]*waiter {
		h.mu.Lock()
		defer h.mu.Unlock()
		out := make(map[string]*waiter, len(h.byStream))
		for name, set := range h.byStream {
			if len(set) != 1 {
				t.Fatalf("%d waiters on %s, want 1", len(set), name)
			}
			for w := range set {
				out[name] = w
			}
		}
		return out
	}()
	if len(waiters) != n {
		t.Fatalf("%d streams with waiters, want %d", len(waiters), n)
	}
	woken := func() (names []string) {
		for name, w := range waiters {
			if len(w.wake) > 0 {
				names = append(names, name)
			}
		}
		return names
	}

	// Writes to other streams, other categories, deletions of other
	// streams: no wake-up.
	writeMany(t, l, 20, 5, "Noise", "busy-1", "busy-2", "idle", "idlex-1")
	write(t, l, "doomed-1", 2, "Noise")
	deleteStream(t, l, "doomed-1", eslog.DeleteSoft)
	if w := woken(); len(w) != 0 {
		t.Fatalf("%d idle subscribers woken by writes to other streams: %v", len(w), w[:min(len(w), 5)])
	}
	// A write to one of the streams wakes its subscriber only.
	write(t, l, "idle-7", 1, "Hello")
	if w := woken(); len(w) != 1 || w[0] != "idle-7" {
		t.Fatalf("woken: %v, want [idle-7]", w)
	}
	// A deletion of one wakes its subscriber only.
	write(t, l, "idle-8", 1, "Hello")
	deleteStream(t, l, "idle-8", eslog.DeleteSoft)
	if w := woken(); len(w) != 2 {
		t.Fatalf("woken: %v, want idle-7 and idle-8", w)
	}

	// Phase 2: live and waiting. Unrelated writes again wake nobody: Publish
	// leaves its list of woken subscribers empty.
	for _, s := range sinks {
		s.release()
	}
	waitUntil(t, "idle-8's subscription to end", subs[8].ended)
	waitUntil(t, "idle-7's event", func() bool { return sinks[7].lastEventPos() > 0 })
	lastWoken := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.woken)
	}
	for i := range 10 {
		write(t, l, fmt.Sprintf("busy-%d", i%3), 3, "Noise")
		if k := lastWoken(); k != 0 {
			t.Fatalf("a write to busy-%d woke %d subscribers", i%3, k)
		}
	}
	write(t, l, "idle-9", 1, "Hello")
	if k := lastWoken(); k != 1 {
		t.Fatalf("a write to idle-9 woke %d subscribers, want 1", k)
	}
	waitUntil(t, "idle-9's event", func() bool { return sinks[9].lastEventPos() > 0 })
	for i, s := range sinks {
		if i == 7 || i == 8 || i == 9 {
			continue
		}
		if got := s.snapshot(); len(got) != 1 {
			t.Fatalf("idle-%d received %s", i, describe(got))
		}
	}
	if g := testutil.MetricValue(t, reg, "esd_subscriptions", nil); g != float64(n-1) {
		t.Errorf("esd_subscriptions %v, want %d", g, n-1)
	}

	// Cancel: every subscription returns, and the hub forgets them.
	for i, s := range subs {
		if err := s.stop(); i != 8 && !errors.Is(err, context.Canceled) {
			t.Fatalf("idle-%d: Subscribe returned %v, want context.Canceled", i, err)
		}
	}
	h.mu.Lock()
	left := len(h.byStream) + len(h.byCategory) + len(h.all)
	h.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d interests left in the hub after every subscription ended", left)
	}
	if g := testutil.MetricValue(t, reg, "esd_subscriptions", nil); g != 0 {
		t.Errorf("esd_subscriptions %v after every subscription ended", g)
	}
}

// TestHubRingGrowsInOrder: the ring starts small and doubles as it fills
// (up to its event bound), also when evictions by bytes have moved its
// start; the buffer holds, in order, the newest events within both bounds,
// its memory (slots, used or not, and events) within the byte bound.
func TestHubRingGrowsInOrder(t *testing.T) {
	l := openLog(t)
	const maxEvents, maxBytes = 4096, 3 << 20
	h := NewHub(l, Options{BufferEvents: maxEvents, BufferBytes: maxBytes})
	rng := rand.New(rand.NewPCG(3, 4))
	var published []eslog.Committed
	next := l.LastPosition() + 1
	wrapGrows := 0 // growths of a ring whose start had moved
	for round := 0; len(published) < 12000; round++ {
		var evs []eslog.Committed
		for range 1 + rng.IntN(40) {
			// Large events first (evictions by bytes move the ring's start
			// while it is small), then mostly small ones (the ring fills and
			// grows, around its end, up to its event bound), now and then a
			// large one.
			size := rng.IntN(64)
			if len(published) < 500 || rng.IntN(50) == 0 {
				size = 32 << 10
			}
			evs = append(evs, eslog.Committed{Position: next, Stream: "s-1", Record: make([]byte, size)})
			next++
		}
		slots, start := len(h.ring), h.start
		h.Publish(evs)
		published = append(published, evs...)
		grew := len(h.ring) != slots
		if grew && start != 0 {
			wrapGrows++
		}
		if !grew && round%8 != 0 {
			continue
		}

		// The buffer: the newest events, contiguous, within both bounds.
		n, bytes := h.buffered()
		oldest := published[len(published)-n].Position
		got, newest, ok := h.since(oldest-1, nil, maxEvents)
		if !ok || newest != next-1 || len(got) != n {
			t.Fatalf("since(%d): %d events, newest %d, ok %v; want %d, %d, true", oldest-1, len(got), newest, ok, n, next-1)
		}
		want := len(h.ring) * int(unsafe.Sizeof(eslog.Committed{}))
		for i, e := range got {
			if p := published[len(published)-n+i]; e.Position != p.Position || len(e.Record) != len(p.Record) {
				t.Fatalf("buffered event %d: position %d (%d bytes), want %d (%d bytes)", i, e.Position, len(e.Record), p.Position, len(p.Record))
			}
			want += len(e.Record) + len(e.Stream)
		}
		if bytes != want || n > maxEvents || (n > 1 && bytes > maxBytes) {
			t.Fatalf("%d events, %d bytes (counted %d); bounds %d, %d", n, bytes, want, maxEvents, maxBytes)
		}
		// Nothing older than the buffer is in it: the caller reads the log.
		if _, _, ok := h.since(oldest-2, nil, 1); ok && oldest > 1 {
			t.Fatalf("since(%d) ok, with the oldest buffered at %d", oldest-2, oldest)
		}
	}
	if len(h.ring) != maxEvents || wrapGrows == 0 {
		t.Fatalf("ring of %d slots after filling, want %d (grown to its bound); %d growths after its start moved, want some",
			len(h.ring), maxEvents, wrapGrows)
	}
}
