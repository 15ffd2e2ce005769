package group

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	"go.uber.org/zap"
)

// Tunables; tests change them.
var (
	// memberQueue is how many deliveries wait for one member's stream.
	memberQueue = 64
	// saveEvery is how often a moved checkpoint is stored.
	saveEvery = 100 * time.Millisecond
	// resubscribeAfter is the pause before the source subscribes again
	// after its subscription ended (its stream was deleted).
	resubscribeAfter = time.Second
)

// Delivery is an event handed to a member.
type Delivery struct {
	Event *eslog.RecordedEvent // shared: do not modify
	Count int                  // 1 for the first delivery
}

// NackAction says what to do with a nacked event.
type NackAction uint8

const (
	NackRetry NackAction = iota
	NackRetryLater
	NackPark
)

// Member is a member of a group. Deliveries come on Deliveries until Done
// is closed (Err says why); Ack and Nack answer them.
type Member struct {
	ID   uint64
	Name string
	run  *dispatcher
	out  chan Delivery // the dispatcher sends without blocking
	done chan struct{}
	err  error // set before done is closed
	// Owned by the dispatcher.
	inflight int
	removed  bool
}

// Deliveries are the events for this member.
func (m *Member) Deliveries() <-chan Delivery { return m.out }

// Done is closed when the member is out of the group.
func (m *Member) Done() <-chan struct{} { return m.done }

// Err says why the member is out (nil after Leave).
func (m *Member) Err() error { return m.err }

// Ack acknowledges events by id.
func (m *Member) Ack(ids [][16]byte) {
	m.run.do(func(d *dispatcher) { d.ack(ids) })
}

// Nack refuses events by id.
func (m *Member) Nack(ids [][16]byte, action NackAction, reason string) {
	m.run.do(func(d *dispatcher) { d.nack(ids, action, reason) })
}

// Sent tells the dispatcher the member took a delivery off its queue, so
// it has room again.
func (m *Member) Sent() {
	select {
	case m.run.kick <- struct{}{}:
	default:
	}
}

// Leave takes the member out; its unacknowledged events go to the others.
func (m *Member) Leave() {
	m.run.do(func(d *dispatcher) { d.leave(m, nil) })
}

// entry is an event the group has taken from its source (or from the
// parked list) and not finished.
type entry struct {
	ev       *eslog.RecordedEvent
	count    int       // deliveries so far
	member   uint64    // the member holding it; 0 when waiting for one
	deadline time.Time // delivered: when it comes back; waiting: not before
	waiting  bool      // nacked RETRY_LATER, not due yet
	replay   bool      // from the parked list: not in order, its parked key goes on ack
	done     bool      // acked or parked (a source entry stays until the checkpoint passes it)
}

// srcMsg is an event from the source, or (ev nil) a position every event
// up to which the source has handed over.
type srcMsg struct {
	ev  *eslog.RecordedEvent
	pos uint64
}

// dispatcher runs a group while it has members: one goroutine owns all of
// its state; members, the source and the manager talk to it through
// channels. Its source is a subscription from the checkpoint; it reads the
// source only while fewer than MaxInFlight events are unfinished, so a
// group without room makes its subscription fall back to the log instead
// of buffering.
type dispatcher struct {
	m       *Manager
	g       *group
	s       Settings
	ctl     chan func(*dispatcher)
	kick    chan struct{}
	src     chan srcMsg
	quit    chan struct{}
	stopErr error
	once    sync.Once
	exited  chan struct{}
	srcStop context.CancelFunc
	srcDone chan struct{}

	checkpoint, saved uint64
	srcPos            uint64 // every event up to it came from the source
	entries           map[uint64]*entry
	live              int      // entries not done
	order             []uint64 // positions of source entries, ascending, until the checkpoint passes them
	pending           []uint64 // positions waiting for a member, ascending
	byID              map[[16]byte]uint64
	members           map[uint64]*Member
	ring              []*Member // members in join order, for round robin
	next              int
	parkedAhead       map[uint64]bool   // parked positions above the checkpoint the dispatcher started from
	holder            map[string]uint64 // by stream: the position in flight of each stream
	sticky            map[string]uint64 // by stream: the member a stream goes to
	joined            bool
}

func (m *Manager) startDispatcher(g *group, checkpoint uint64) *dispatcher {
	ctx, cancel := context.WithCancel(context.Background())
	d := &dispatcher{
		m: m, g: g, s: g.settings,
		ctl:        make(chan func(*dispatcher)),
		kick:       make(chan struct{}, 1),
		src:        make(chan srcMsg),
		quit:       make(chan struct{}),
		exited:     make(chan struct{}),
		srcStop:    cancel,
		srcDone:    make(chan struct{}),
		checkpoint: checkpoint, saved: checkpoint, srcPos: checkpoint,
		entries: make(map[uint64]*entry),
		byID:    make(map[[16]byte]uint64),
		members: make(map[uint64]*Member),
		holder:  make(map[string]uint64),
		sticky:  make(map[string]uint64),
	}
	d.parkedAhead = make(map[uint64]bool)
	prefix := parkedGroupPrefix(g.settings.Name)
	_ = m.aux.Scan(prefix, func(k, _ []byte) error {
		if pos := binary.BigEndian.Uint64(k[len(prefix):]); pos > checkpoint {
			d.parkedAhead[pos] = true
		}
		return nil
	})
	replay := g.replay
	g.replay = nil
	m.met.running.Inc()
	go d.source(ctx, checkpoint, d.s) // a copy: Update changes d.s, not the target
	go d.loop(replay)
	return d
}

// do runs f in the dispatcher; false if it has stopped.
func (d *dispatcher) do(f func(*dispatcher)) bool {
	select {
	case d.ctl <- f:
		return true
	case <-d.exited:
		return false
	}
}

// stop ends the dispatcher; its members get err.
func (d *dispatcher) stop(err error) {
	d.once.Do(func() {
		d.stopErr = err
		close(d.quit)
	})
	<-d.exited
}

func (d *dispatcher) loop(replay []uint64) {
	defer close(d.exited)
	defer d.shutdown()
	d.replayParked(replay)
	tick := time.NewTicker(min(saveEvery, d.s.AckTimeout/4))
	defer tick.Stop()
	for {
		var src chan srcMsg
		if d.live < d.s.MaxInFlight {
			src = d.src
		}
		select {
		case msg := <-src:
			d.fromSource(msg)
		case f := <-d.ctl:
			f(d)
		case <-d.kick:
		case now := <-tick.C:
			d.expire(now)
			d.save()
		case <-d.quit:
			return
		}
		if d.joined && len(d.members) == 0 {
			return // the last member left: stop until one joins
		}
		d.dispatch(time.Now())
	}
}

// shutdown stops the source, stores the checkpoint and lets the members go.
func (d *dispatcher) shutdown() {
	d.srcStop()
	<-d.srcDone
	d.save()
	err := d.membersErr()
	for _, m := range append([]*Member(nil), d.ring...) {
		d.leave(m, err)
	}
	var replay []uint64
	for pos, e := range d.entries {
		if e.replay && !e.done {
			replay = append(replay, pos)
		}
	}
	sort.Slice(replay, func(i, j int) bool { return replay[i] < replay[j] })
	d.g.mu.Lock()
	if d.g.run == d {
		d.g.run = nil
	}
	d.g.replay = mergePositions(d.g.replay, replay)
	d.g.mu.Unlock()
	d.m.met.running.Dec()
}

func (d *dispatcher) inFlight() int { return d.live }

// membersErr is what the members are told at shutdown: stop's error, or
// ErrClosed. stopErr is read only once quit is closed (stop writes it
// before), since a dispatcher whose last member left stops on its own.
func (d *dispatcher) membersErr() error {
	select {
	case <-d.quit:
		if d.stopErr != nil {
			return d.stopErr
		}
	default:
	}
	return ErrClosed
}

func (d *dispatcher) join(m *Member) {
	d.joined = true
	d.members[m.ID] = m
	d.ring = append(d.ring, m)
	d.m.met.members.Inc()
}

// leave takes m out, handing its events back.
func (d *dispatcher) leave(m *Member, err error) {
	if m.removed {
		return
	}
	m.removed = true
	delete(d.members, m.ID)
	for i, r := range d.ring {
		if r == m {
			d.ring = append(d.ring[:i], d.ring[i+1:]...)
			break
		}
	}
	for pos, e := range d.entries {
		if e.member == m.ID {
			e.member = 0
			d.requeue(pos)
		}
	}
	for s, id := range d.sticky {
		if id == m.ID {
			delete(d.sticky, s)
		}
	}
	m.err = err
	close(m.done)
	d.m.met.members.Dec()
}

func (d *dispatcher) fromSource(msg srcMsg) {
	if msg.ev == nil {
		d.srcPos = max(d.srcPos, msg.pos)
		d.advance()
		return
	}
	pos := msg.ev.Position
	if _, dup := d.entries[pos]; dup || pos <= d.checkpoint {
		return
	}
	if d.parkedAhead[pos] { // parked before: out of delivery until replayed
		delete(d.parkedAhead, pos)
		d.entries[pos] = &entry{ev: msg.ev, done: true}
		d.order = append(d.order, pos)
		d.srcPos = pos
		d.advance()
		return
	}
	d.entries[pos] = &entry{ev: msg.ev}
	d.live++
	d.order = append(d.order, pos)
	d.pending = append(d.pending, pos) // the newest position: pending stays sorted
	d.byID[msg.ev.ID] = pos
	d.srcPos = pos
	d.advance()
}

// advance moves the checkpoint past finished source entries.
func (d *dispatcher) advance() {
	for len(d.order) > 0 {
		e := d.entries[d.order[0]]
		if e != nil && !e.done && !e.replay {
			break
		}
		if e == nil || !e.replay {
			delete(d.entries, d.order[0])
		}
		d.order = d.order[1:]
	}
	cp := d.srcPos
	if len(d.order) > 0 {
		cp = d.order[0] - 1
	}
	if cp > d.checkpoint {
		d.checkpoint = cp
		d.g.raise(cp)
	}
}

// dispatch hands waiting entries to members with room.
func (d *dispatcher) dispatch(now time.Time) {
	if len(d.ring) == 0 || len(d.pending) == 0 {
		return
	}
	kept := d.pending[:0]
	full := false
	for _, pos := range d.pending {
		e := d.entries[pos]
		if e == nil || e.done || e.member != 0 {
			continue // finished or delivered meanwhile
		}
		if full || (e.waiting && now.Before(e.deadline)) {
			kept = append(kept, pos)
			continue
		}
		stream := e.ev.Stream
		if d.s.Strategy == ByStream {
			if h, busy := d.holder[stream]; busy && h != pos {
				kept = append(kept, pos) // an earlier event of its stream is in flight
				continue
			}
		}
		m := d.pick(stream)
		if m == nil {
			kept = append(kept, pos)
			full = d.s.Strategy != ByStream // no member has room for anything
			continue
		}
		e.count++
		e.member, e.waiting = m.ID, false
		e.deadline = now.Add(d.s.AckTimeout)
		m.inflight++
		m.out <- Delivery{Event: e.ev, Count: e.count} // pick checked the room
		if d.s.Strategy == ByStream {
			d.holder[stream] = pos
			d.sticky[stream] = m.ID
		}
		d.g.delivered.Add(1)
		d.m.met.delivered.Inc()
		if e.count > 1 {
			d.g.redelivered.Add(1)
			d.m.met.redelivered.Inc()
		}
	}
	d.pending = kept
}

// pick chooses the member for an event of stream: by stream, the one the
// stream goes to, else the least loaded with room; round robin, the next
// with room.
func (d *dispatcher) pick(stream string) *Member {
	room := func(m *Member) bool { return len(m.out) < cap(m.out) }
	if d.s.Strategy == ByStream {
		if id, ok := d.sticky[stream]; ok {
			if m := d.members[id]; m != nil {
				if room(m) {
					return m
				}
				return nil // keep the stream's order on its member
			}
		}
		var best *Member
		for _, m := range d.ring {
			if room(m) && (best == nil || m.inflight < best.inflight) {
				best = m
			}
		}
		return best
	}
	for i := range d.ring {
		m := d.ring[(d.next+i)%len(d.ring)]
		if room(m) {
			d.next = (d.next + i + 1) % len(d.ring)
			return m
		}
	}
	return nil
}

// requeue puts an entry back among those waiting for a member.
func (d *dispatcher) requeue(pos uint64) {
	i := sort.Search(len(d.pending), func(i int) bool { return d.pending[i] >= pos })
	if i < len(d.pending) && d.pending[i] == pos {
		return
	}
	d.pending = append(d.pending, 0)
	copy(d.pending[i+1:], d.pending[i:])
	d.pending[i] = pos
}

// release takes an entry from the member holding it.
func (d *dispatcher) release(e *entry) {
	if m := d.members[e.member]; m != nil {
		m.inflight--
	}
	e.member = 0
}

// finish marks an entry done (acked or parked).
func (d *dispatcher) finish(pos uint64, e *entry) {
	d.release(e)
	e.done = true
	d.live--
	delete(d.byID, e.ev.ID)
	if h, ok := d.holder[e.ev.Stream]; ok && h == pos {
		delete(d.holder, e.ev.Stream)
	}
	if e.replay {
		delete(d.entries, pos)
		return
	}
	d.advance()
}

func (d *dispatcher) ack(ids [][16]byte) {
	var unpark *eslog.AuxWrite
	unparked := 0
	for _, id := range ids {
		pos, ok := d.byID[id]
		if !ok {
			continue // unknown, or finished already
		}
		e := d.entries[pos]
		if e.replay {
			if unpark == nil {
				unpark = new(eslog.AuxWrite)
			}
			unpark.Delete(parkedKey(d.s.Name, pos))
			unparked++
		}
		d.finish(pos, e)
		d.g.acked.Add(1)
		d.m.met.acked.Inc()
	}
	if unpark != nil {
		if err := d.m.aux.Apply(unpark); err != nil {
			d.m.lg.Warn("unpark acknowledged events", zap.String("group", d.s.Name), zap.Error(err))
		} else {
			d.g.mu.Lock()
			d.g.parked -= unparked
			d.g.mu.Unlock()
		}
	}
}

func (d *dispatcher) nack(ids [][16]byte, action NackAction, reason string) {
	now := time.Now()
	for _, id := range ids {
		pos, ok := d.byID[id]
		if !ok {
			continue
		}
		e := d.entries[pos]
		d.release(e)
		switch {
		case action == NackPark:
			d.park(pos, e, reasonOr(reason, "parked by a member"))
		case e.count >= d.s.MaxDeliveries:
			d.park(pos, e, fmt.Sprintf("nacked after %d deliveries: %s", e.count, reasonOr(reason, "no reason given")))
		case action == NackRetryLater:
			e.waiting, e.deadline = true, now.Add(d.s.AckTimeout)
			d.requeue(pos)
		default:
			d.requeue(pos)
		}
	}
}

func reasonOr(reason, dflt string) string {
	if reason == "" {
		return dflt
	}
	return reason
}

// expire takes back deliveries past their deadline.
func (d *dispatcher) expire(now time.Time) {
	for pos, e := range d.entries {
		if e.member == 0 || e.done || now.Before(e.deadline) {
			continue
		}
		d.release(e)
		if e.count >= d.s.MaxDeliveries {
			d.park(pos, e, fmt.Sprintf("not acknowledged after %d deliveries", e.count))
			continue
		}
		d.requeue(pos)
	}
}

// park stores an entry in the parked list and finishes it.
func (d *dispatcher) park(pos uint64, e *entry, reason string) {
	w := new(eslog.AuxWrite).Put(parkedKey(d.s.Name, pos), encodeParked(e.count, reason, time.Now()))
	if err := d.m.aux.Apply(w); err != nil {
		// Not parked: leave it to come back; the log failing stops writes anyway.
		d.m.lg.Warn("park event", zap.String("group", d.s.Name), zap.Uint64("position", pos), zap.Error(err))
		d.requeue(pos)
		return
	}
	if !e.replay {
		d.g.mu.Lock()
		d.g.parked++
		d.g.mu.Unlock()
	}
	d.m.met.parked.Inc()
	d.finish(pos, e)
}

// replayParked takes parked events back into delivery.
func (d *dispatcher) replayParked(positions []uint64) {
	for _, pos := range positions {
		if e, ok := d.entries[pos]; ok && (!e.done || e.replay) {
			continue // being delivered (or replayed) already
		}
		ev, ok, err := d.m.store.EventAt(pos)
		if err != nil || !ok {
			continue // deleted since: it stays listed until the group goes
		}
		e := &entry{ev: ev, replay: true}
		d.entries[pos] = e
		d.live++
		d.byID[ev.ID] = pos
		d.requeue(pos)
	}
}

// save stores the checkpoint if it moved.
func (d *dispatcher) save() {
	if d.checkpoint <= d.saved {
		return
	}
	cp := d.checkpoint
	if err := d.m.aux.Apply(new(eslog.AuxWrite).Put(checkpointKey(d.s.Name), binary.BigEndian.AppendUint64(nil, cp))); err != nil {
		d.m.lg.Warn("store group checkpoint", zap.String("group", d.s.Name), zap.Error(err))
		return
	}
	d.saved = cp
	if last := d.m.store.LastPosition(); last > cp {
		d.m.met.lag.Observe(float64(last - cp))
	}
}

// source feeds the dispatcher from a subscription starting after from,
// subscribing again (after the last position handed over) should the
// subscription end.
func (d *dispatcher) source(ctx context.Context, from uint64, s Settings) {
	defer close(d.srcDone)
	sink := &sourceSink{ctx: ctx, out: d.src, pos: from}
	for ctx.Err() == nil {
		req := subscription.Request{
			Target: s.Target, Name: s.TargetName,
			StreamPrefixes: s.StreamPrefixes, TypePrefixes: s.TypePrefixes,
			Start: subscription.AfterPosition, After: sink.pos,
			CheckpointEvery: 1024,
		}
		err := d.m.hub.Subscribe(ctx, req, sink)
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			d.m.lg.Warn("group source failed; subscribing again", zap.String("group", s.Name), zap.Error(err))
		}
		select {
		case <-time.After(resubscribeAfter):
		case <-ctx.Done():
		}
	}
}

// sourceSink turns a subscription into srcMsgs.
type sourceSink struct {
	ctx context.Context
	out chan<- srcMsg
	pos uint64 // the last position handed over
}

func (s *sourceSink) send(m srcMsg) error {
	select {
	case s.out <- m:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *sourceSink) Event(v *eslog.EventView) error {
	if err := s.send(srcMsg{ev: v.Materialize()}); err != nil {
		return err
	}
	s.pos = v.Position
	return nil
}

func (s *sourceSink) Flush(checkpoint uint64) error {
	if checkpoint == 0 {
		return nil
	}
	if err := s.send(srcMsg{pos: checkpoint}); err != nil {
		return err
	}
	s.pos = max(s.pos, checkpoint)
	return nil
}

func (s *sourceSink) CaughtUp(position uint64) error { return s.Flush(position) }

func (s *sourceSink) Ended(string) error { return nil }
