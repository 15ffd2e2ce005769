package subscription

import (
	"context"
	"sync"
	"unsafe"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/prometheus/client_golang/prometheus"
)

// Reader is what subscriptions need of the log.
type Reader interface {
	LastPosition() uint64
	ReadStreamViews(ctx context.Context, q eslog.StreamQuery, emit func(*eslog.EventView) error) error
	ReadAllViews(ctx context.Context, q eslog.AllQuery, emit func(*eslog.EventView) error, checkpoint func(uint64) error) error
	StreamInfo(ctx context.Context, name string) (eslog.StreamState, bool, error)
	Hidden(sid, rev uint64) bool
}

// Options size the hub's buffer. The zero value is usable.
type Options struct {
	// BufferBytes bounds the memory of the buffer of recent events
	// (default 32 MiB): its ring's slots and its events' records and
	// names. A subscriber further behind reads the log instead.
	// BufferEvents bounds the number of events too; 0 leaves it to
	// BufferBytes.
	BufferBytes  int
	BufferEvents int
	// Registerer gets the subscription metrics; nil means none.
	Registerer prometheus.Registerer
}

// Hub holds the recently committed events and the subscribers waiting for
// more. The log hands it every commit (Publish, from the log's syncer);
// Publish never blocks on a subscriber: it appends to a bounded ring and
// wakes the subscribers that the commit concerns.
type Hub struct {
	log Reader
	met *metrics

	mu         sync.Mutex        // guards everything below
	ring       []eslog.Committed // grows up to maxEvents as it fills
	start, n   int               // the oldest event's index in ring, and how many
	bytes      int               // the ring's events' records and names (eventBytes)
	next       uint64            // the position the next published event will have
	maxBytes   int
	maxEvents  int
	byStream   map[string]map[*waiter]struct{}
	byCategory map[string]map[*waiter]struct{}
	all        map[*waiter]struct{}
	woken      []*waiter // Publish's scratch
}

// waiter is a subscriber's wake-up channel (capacity 1: a wake-up is
// never lost, and never blocks Publish).
type waiter struct {
	wake chan struct{}
}

// NewHub returns a hub for log, whose next published position is
// log.LastPosition()+1: install hub.Publish as the log's publish hook
// before anything else writes.
func NewHub(log Reader, opts Options) *Hub {
	if opts.BufferBytes <= 0 {
		opts.BufferBytes = 32 << 20
	}
	if opts.BufferEvents <= 0 {
		opts.BufferEvents = max(1, opts.BufferBytes/slotSize)
	}
	h := &Hub{
		log:        log,
		ring:       make([]eslog.Committed, max(1, min(opts.BufferEvents, initialRingSlots, opts.BufferBytes/(2*slotSize)))),
		next:       log.LastPosition() + 1,
		maxBytes:   opts.BufferBytes,
		maxEvents:  opts.BufferEvents,
		byStream:   make(map[string]map[*waiter]struct{}),
		byCategory: make(map[string]map[*waiter]struct{}),
		all:        make(map[*waiter]struct{}),
	}
	h.met = newMetrics(opts.Registerer, h)
	return h
}

// Publish adds a commit's events (in position order, following the last
// ones) and wakes the subscribers they concern. It never blocks.
func (h *Hub) Publish(evs []eslog.Committed) {
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	woken := h.woken[:0]
	for i := range evs {
		e := &evs[i]
		h.makeRoom(eventBytes(e))
		h.ring[(h.start+h.n)%len(h.ring)] = *e
		h.n++
		h.bytes += eventBytes(e)
		h.next = e.Position + 1
		woken = appendWaiters(woken, h.byStream[e.Stream])
		woken = appendWaiters(woken, h.byCategory[eslog.Category(e.Stream)])
		if e.Deletes != "" {
			woken = appendWaiters(woken, h.byStream[e.Deletes])
		}
	}
	woken = appendWaiters(woken, h.all)
	h.woken = woken
	h.mu.Unlock()
	for _, w := range woken {
		select {
		case w.wake <- struct{}{}:
		default: // already due to wake
		}
	}
}

func appendWaiters(dst []*waiter, set map[*waiter]struct{}) []*waiter {
	for w := range set {
		dst = append(dst, w)
	}
	return dst
}

// initialRingSlots is the ring's size until it fills (a variable: tests
// lower it to make the ring grow under load).
var initialRingSlots = 1024

// slotSize is the memory of one slot of the ring, used or not.
const slotSize = int(unsafe.Sizeof(eslog.Committed{}))

// eventBytes is the memory of an event in the ring besides its slot.
func eventBytes(e *eslog.Committed) int { return len(e.Record) + len(e.Stream) + len(e.Deletes) }

// makeRoom evicts the oldest events, or grows the ring, until an event of
// size more bytes fits: the slots (the ring never shrinks) and the
// events' bytes within maxBytes, the events within maxEvents. An event
// alone in the buffer may exceed maxBytes. Called with mu held.
func (h *Hub) makeRoom(size int) {
	for h.n > 0 {
		slots := len(h.ring)
		if h.n == slots && slots < h.maxEvents && h.bytes+size+min(2*slots, h.maxEvents)*slotSize <= h.maxBytes {
			h.grow()
			slots = len(h.ring)
		}
		if h.n < slots && h.bytes+size+slots*slotSize <= h.maxBytes {
			return
		}
		h.evict()
	}
}

// grow doubles the ring (up to maxEvents), keeping the events in order.
// Called with mu held, when it is full.
func (h *Hub) grow() {
	ring := make([]eslog.Committed, min(2*len(h.ring), h.maxEvents))
	n := copy(ring, h.ring[h.start:])
	copy(ring[n:], h.ring[:h.start])
	h.ring, h.start = ring, 0
}

// evict drops the oldest event. Called with mu held.
func (h *Hub) evict() {
	old := &h.ring[h.start]
	h.bytes -= eventBytes(old)
	*old = eslog.Committed{}
	h.start = (h.start + 1) % len(h.ring)
	h.n--
}

// since appends to dst the buffered events after position cursor, at most
// max of them. ok is false when events after cursor have left the buffer
// already: the caller must read them from the log.
func (h *Hub) since(cursor uint64, dst []eslog.Committed, max int) (_ []eslog.Committed, newest uint64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cursor >= h.next-1 { // nothing after cursor yet (and cursor+1 may overflow)
		return dst, h.next - 1, true
	}
	oldest := h.next - uint64(h.n) // positions in the ring are contiguous
	if cursor+1 < oldest {
		return dst, h.next - 1, false
	}
	for p := cursor + 1; p < h.next && len(dst) < max; p++ {
		dst = append(dst, h.ring[(h.start+int(p-oldest))%len(h.ring)])
	}
	return dst, h.next - 1, true
}

// interest is what a subscriber wants to be woken for.
type interest struct {
	stream, category string
	all              bool
}

func (h *Hub) register(in interest) *waiter {
	w := &waiter{wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case in.all:
		h.all[w] = struct{}{}
	case in.category != "":
		addWaiter(h.byCategory, in.category, w)
	default:
		addWaiter(h.byStream, in.stream, w)
	}
	return w
}

func (h *Hub) unregister(in interest, w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case in.all:
		delete(h.all, w)
	case in.category != "":
		removeWaiter(h.byCategory, in.category, w)
	default:
		removeWaiter(h.byStream, in.stream, w)
	}
}

func addWaiter(m map[string]map[*waiter]struct{}, key string, w *waiter) {
	set := m[key]
	if set == nil {
		set = make(map[*waiter]struct{})
		m[key] = set
	}
	set[w] = struct{}{}
}

func removeWaiter(m map[string]map[*waiter]struct{}, key string, w *waiter) {
	if set := m[key]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(m, key)
		}
	}
}

// buffered reports the events in the ring, and its memory (slots and
// events).
func (h *Hub) buffered() (events, bytes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, h.bytes + len(h.ring)*slotSize
}
