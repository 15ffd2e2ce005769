package subscription

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// TestSubscribeStreamWithoutVisibleEvents: a stream subscription may
// start before its stream has an event ("it need not exist yet"), or
// while it is soft-deleted; it catches up on nothing and then gets the
// stream's events live. Other streams' events in the log must not change
// that.
func TestSubscribeStreamWithoutVisibleEvents(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, l *eslog.Log)
		next  uint64 // the next revision of the stream
	}{
		{"never written, empty log", func(*testing.T, *eslog.Log) {}, 0},
		{"never written", func(t *testing.T, l *eslog.Log) { write(t, l, "other-1", 3, "Noise") }, 0},
		{"soft-deleted", func(t *testing.T, l *eslog.Log) {
			write(t, l, "new-1", 2, "Old")
			deleteStream(t, l, "new-1", eslog.DeleteSoft)
			write(t, l, "other-1", 3, "Noise")
		}, 2},
	} {
		for _, start := range []StartKind{FromStart, FromEnd} {
			t.Run(fmt.Sprintf("%s/start %d", tc.name, start), func(t *testing.T) {
				l := openLog(t)
				h := newHub(l, Options{}, nil)
				tc.setup(t, l)
				sink := &testSink{}
				sub := startSub(t, h, Request{Target: TargetStream, Name: "new-1", Start: start}, sink)
				if !testutil.Poll(waitTimeout, func() bool { return sink.has('c') || sub.ended() }) || sub.ended() {
					t.Fatalf("Subscribe returned %v before caught_up; want caught_up, then live events", sub.err)
				}
				w := write(t, l, "new-1", 1, "New")
				waitUntil(t, "the live event", func() bool { return sink.lastEventPos() == w.LastPosition })
				if got := sink.snapshot(); len(got) != 2 || got[1].rev != tc.next {
					t.Fatalf("got %s, want caught_up then revision %d", describe(got), tc.next)
				}
			})
		}
	}
}

// TestSubscribeAfterLastPossiblePosition: after_position is a client's
// number; the largest one means "after everything": caught_up at it. The
// subscription must not spin, and must end with its ctx.
func TestSubscribeAfterLastPossiblePosition(t *testing.T) {
	l := openLog(t)
	write(t, l, "pos-1", 3, "Early")
	// The subscription reads the log through stopper, which can end its
	// goroutine (runtime.Goexit) should it spin, so that a failure does
	// not leave it burning a CPU for the rest of the tests.
	st := &stopper{Reader: l}
	h := NewHub(st, Options{})
	l.OnPublish(h.Publish)
	for _, after := range []uint64{math.MaxUint64, math.MaxUint64 - 1, 1 << 62} {
		sink := &testSink{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			err := errors.New("the subscription's goroutine was ended: it spun")
			defer func() { done <- err }() // also on runtime.Goexit
			err = h.Subscribe(ctx, Request{Target: TargetAll, Start: AfterPosition, After: after}, sink)
		}()
		ok := testutil.Poll(2*time.Second, func() bool { return sink.has('c') })
		got := sink.snapshot()
		cancel()
		var err error
		select {
		case err = <-done:
		case <-time.After(2 * time.Second):
			st.stop.Store(true) // it spins: end its goroutine
			err = <-done
			st.stop.Store(false)
		}
		switch {
		case !ok:
			t.Errorf("after_position %d: no caught_up within 2s (%v); got %s", after, err, describe(got))
		case len(got) != 1 || got[0].pos != after:
			t.Errorf("after_position %d: got %s, want caught_up{%d} only", after, describe(got), after)
		case !errors.Is(err, context.Canceled):
			t.Errorf("after_position %d: Subscribe returned %v, want context.Canceled", after, err)
		}
	}
}

// stopper is a Reader whose LastPosition ends the calling goroutine once
// stop is set (see TestSubscribeAfterLastPossiblePosition).
type stopper struct {
	Reader
	stop atomic.Bool
}

func (s *stopper) LastPosition() uint64 {
	if s.stop.Load() {
		runtime.Goexit() // only the subscription's goroutine calls it once stop is set
	}
	return s.Reader.LastPosition()
}

// TestSubscribeAfterLargestRevision: after_revision is a client's number;
// revisions past 2^63 must not wrap around to "from the start" (history)
// or to "any revision" (live events).
func TestSubscribeAfterLargestRevision(t *testing.T) {
	for _, after := range []uint64{math.MaxUint64, 1 << 63, 1000} {
		t.Run(fmt.Sprint(after), func(t *testing.T) {
			l := openLog(t)
			reg := prometheus.NewRegistry()
			h := newHub(l, Options{Registerer: reg}, nil)
			write(t, l, "rev-1", 3, "Early")
			sink := &testSink{}
			sub := startSub(t, h, Request{Target: TargetStream, Name: "rev-1", Start: AfterRevision, After: after}, sink)
			waitUntil(t, "caught_up", func() bool { return sink.has('c') || sub.ended() })
			// Two live events, each taken from the buffer in its own batch
			// (the lag histogram counts the batches): once the second is
			// taken, the first has been delivered, or not.
			taken := func() float64 { return testutil.MetricValue(t, reg, "esd_subscription_lag_events", nil) }
			for i := range 2 {
				write(t, l, "rev-1", 1, "Late")
				waitUntil(t, "the subscriber to take the event", func() bool { return taken() == float64(i+1) })
			}
			if got := sink.snapshot(); len(got) != 1 || got[0].kind != 'c' {
				t.Errorf("after_revision %d (head 2): got %s, want caught_up only", after, describe(got))
			}
		})
	}
}

// TestSubscribeFromEndRacingTombstone: a stream is tombstoned while a
// subscription to it from the end is starting (after its check of the
// stream, before it takes the end position). The subscription must not
// be left live forever on a stream that can have no more events: it
// either fails (NOT_FOUND/STREAM_TOMBSTONED) or ends with
// STREAM_TOMBSTONED.
func TestSubscribeFromEndRacingTombstone(t *testing.T) {
	for _, mode := range []eslog.DeleteMode{eslog.DeleteTombstone, eslog.DeleteSoft} {
		reason := map[eslog.DeleteMode]string{eslog.DeleteSoft: EndedStreamDeleted, eslog.DeleteTombstone: EndedStreamTombstoned}[mode]
		t.Run(reason, func(t *testing.T) {
			l := openLog(t)
			write(t, l, "race-1", 3, "Early")
			hk := &hookedReader{Reader: l}
			h := NewHub(hk, Options{})
			l.OnPublish(h.Publish)
			// The deletion commits while Subscribe checks the stream.
			hk.afterStreamInfo = func() { deleteStream(t, l, "race-1", mode) }
			sink := &testSink{}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			err := h.Subscribe(ctx, Request{Target: TargetStream, Name: "race-1", Start: FromEnd}, sink)
			got := sink.snapshot()
			var se *eslog.StreamError
			switch {
			case err == nil && len(got) > 0 && got[len(got)-1].kind == 'x' && got[len(got)-1].reason == reason:
			case err != nil && errors.As(err, &se) && mode == eslog.DeleteTombstone && errors.Is(err, eslog.ErrStreamTombstoned):
			default:
				t.Fatalf("Subscribe returned %v with %s; want ended{%s} (the deletion came after the subscription began)", err, describe(got), reason)
			}
		})
	}
}

// hookedReader runs afterStreamInfo (once) when StreamInfo returns.
type hookedReader struct {
	Reader
	once            sync.Once
	afterStreamInfo func()
}

func (r *hookedReader) StreamInfo(ctx context.Context, name string) (eslog.StreamState, bool, error) {
	s, ok, err := r.Reader.StreamInfo(ctx, name)
	if r.afterStreamInfo != nil {
		r.once.Do(r.afterStreamInfo)
	}
	return s, ok, err
}
