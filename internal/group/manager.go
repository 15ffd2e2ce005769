package group

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/subscription"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

var (
	// ErrNotFound: no group of that name.
	ErrNotFound = errors.New("group: not found")
	// ErrExists: a group of that name exists.
	ErrExists = errors.New("group: exists")
	// ErrClosed: the manager is shutting down.
	ErrClosed = errors.New("group: shutting down")
	// ErrImmutable: an update changes a group's target, filter or strategy.
	ErrImmutable = errors.New("group: a group's target, filter and strategy cannot change")
)

// Info is a group and its progress.
type Info struct {
	Settings    Settings
	Checkpoint  uint64
	Members     int
	InFlight    int
	Parked      int
	Delivered   uint64
	Redelivered uint64
	Acked       uint64
}

// Manager owns the consumer groups: their durable settings, checkpoints
// and parked events, and a dispatcher per group that has members. It is
// safe for concurrent use.
type Manager struct {
	store Store
	aux   *eslog.Aux // the groups' namespace of store
	hub   *subscription.Hub
	lg    *zap.Logger
	met   *metrics
	ids   atomic.Uint64 // member ids

	mu      sync.Mutex // guards groups, closed
	groups  map[string]*group
	closed  bool
	closing atomic.Bool // closed, for Join under a group's lock
}

// group is one group's state outside its dispatcher.
type group struct {
	mu       sync.Mutex // guards everything below
	settings Settings
	parked   int         // parked events
	run      *dispatcher // nil while the group has no members
	deleted  bool
	// replay holds parked positions to hand back when a dispatcher runs.
	replay []uint64
	// frontier is the highest checkpoint the group has reached in this
	// server's life: the stored one at start, then every checkpoint a
	// dispatcher computes. Unlike a dispatcher's, it never goes back: a
	// new dispatcher starts from the stored checkpoint, which is behind
	// when a save failed, but the events up to frontier were finished all
	// the same. WaitCheckpoint waits on it.
	frontier uint64
	waiters  waiters // WaitCheckpoint calls, by position
	// Counters since the server started.
	delivered, redelivered, acked atomic.Uint64
}

// NewManager loads the groups from store.
func NewManager(store Store, hub *subscription.Hub, lg *zap.Logger, reg prometheus.Registerer) (*Manager, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	m := &Manager{store: store, aux: store.Aux(eslog.NSGroups), hub: hub, lg: lg, groups: make(map[string]*group)}
	m.met = newMetrics(reg, m)
	err := m.aux.Scan([]byte(settingsPrefix), func(_, v []byte) error {
		s, err := decodeSettings(v)
		if err != nil {
			return err
		}
		m.groups[s.Name] = &group{settings: s}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load groups: %w", err)
	}
	err = m.aux.Scan([]byte(checkpointPrefix), func(k, v []byte) error {
		if g := m.groups[string(k[len(checkpointPrefix):])]; g != nil {
			cp, err := decodeCheckpoint(v)
			if err != nil {
				return err
			}
			g.frontier = cp
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load checkpoints: %w", err)
	}
	err = m.aux.Scan([]byte(parkedPrefix), func(k, _ []byte) error {
		rest := k[len(parkedPrefix):]
		if i := bytes.IndexByte(rest, 0); i >= 0 {
			if g := m.groups[string(rest[:i])]; g != nil {
				g.parked++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load parked events: %w", err)
	}
	return m, nil
}

// Close stops every dispatcher (storing its checkpoint) and refuses new
// work; members' Join streams and WaitCheckpoint calls end with ErrClosed.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.closing.Store(true)
	var runs []*dispatcher
	for _, g := range m.groups {
		g.mu.Lock()
		if g.run != nil {
			runs = append(runs, g.run)
		}
		g.wakeAll()
		g.mu.Unlock()
	}
	m.mu.Unlock()
	for _, d := range runs {
		d.stop(ErrClosed)
	}
}

func (m *Manager) get(name string) (*group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	g := m.groups[name]
	if g == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return g, nil
}

// Create creates a group starting where start says: from the start, from
// the end, or after position after (subscription.AfterRevision is for
// subscriptions to a stream only: a group's checkpoint is a position).
func (m *Manager) Create(s Settings, start subscription.StartKind, after uint64) (Info, error) {
	s = s.withDefaults()
	var checkpoint uint64
	switch start {
	case subscription.FromStart:
	case subscription.FromEnd:
		checkpoint = m.store.LastPosition()
	case subscription.AfterPosition:
		checkpoint = after
	default:
		return Info{}, fmt.Errorf("group: start kind %d: a group starts from the start, from the end or after a position", start)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Info{}, ErrClosed
	}
	if m.groups[s.Name] != nil {
		return Info{}, fmt.Errorf("%w: %q", ErrExists, s.Name)
	}
	w := new(eslog.AuxWrite).Put(settingsKey(s.Name), encodeSettings(s)).
		Put(checkpointKey(s.Name), binary.BigEndian.AppendUint64(nil, checkpoint))
	if err := m.aux.Apply(w); err != nil {
		return Info{}, err
	}
	g := &group{settings: s, frontier: checkpoint}
	m.groups[s.Name] = g
	return Info{Settings: s, Checkpoint: checkpoint}, nil
}

// Update changes a group's settings (not its target).
func (m *Manager) Update(s Settings) (Info, error) {
	s = s.withDefaults()
	g, err := m.get(s.Name)
	if err != nil {
		return Info{}, err
	}
	g.mu.Lock()
	old := g.settings
	// The target and filter feed a running source, and the strategy the
	// order of events in flight: changing them under it would break its
	// guarantees, so they are the group's for good.
	if old.Target != s.Target || old.TargetName != s.TargetName || old.Strategy != s.Strategy ||
		!slices.Equal(old.StreamPrefixes, s.StreamPrefixes) || !slices.Equal(old.TypePrefixes, s.TypePrefixes) {
		g.mu.Unlock()
		return Info{}, ErrImmutable
	}
	if err := m.aux.Apply(new(eslog.AuxWrite).Put(settingsKey(s.Name), encodeSettings(s))); err != nil {
		g.mu.Unlock()
		return Info{}, err
	}
	g.settings = s
	run := g.run
	g.mu.Unlock()
	if run != nil {
		run.do(func(d *dispatcher) { d.s = s })
	}
	return m.Get(s.Name)
}

// Delete deletes a group and everything stored of it.
func (m *Manager) Delete(name string) error {
	m.mu.Lock()
	g := m.groups[name]
	if g == nil || m.closed {
		m.mu.Unlock()
		if m.closed {
			return ErrClosed
		}
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	m.mu.Unlock()
	g.mu.Lock()
	if g.deleted {
		g.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	g.deleted = true
	g.wakeAll()
	run := g.run
	g.mu.Unlock()
	if run != nil {
		run.stop(fmt.Errorf("%w: %q was deleted", ErrNotFound, name))
	}
	m.mu.Lock() // a Create of the name waits until the keys are gone
	defer m.mu.Unlock()
	w := new(eslog.AuxWrite).Delete(settingsKey(name)).Delete(checkpointKey(name)).DeletePrefix(parkedGroupPrefix(name))
	if err := m.aux.Apply(w); err != nil {
		return err
	}
	if m.groups[name] == g {
		delete(m.groups, name)
	}
	return nil
}

// Get describes a group.
func (m *Manager) Get(name string) (Info, error) {
	g, err := m.get(name)
	if err != nil {
		return Info{}, err
	}
	return m.info(g)
}

func (m *Manager) info(g *group) (Info, error) {
	g.mu.Lock()
	info := Info{Settings: g.settings, Parked: g.parked,
		Delivered: g.delivered.Load(), Redelivered: g.redelivered.Load(), Acked: g.acked.Load()}
	run := g.run
	g.mu.Unlock()
	if run != nil {
		ch := make(chan Info, 1)
		if run.do(func(d *dispatcher) {
			ch <- Info{Checkpoint: d.checkpoint, Members: len(d.members), InFlight: d.inFlight()}
		}) {
			live := <-ch
			info.Checkpoint, info.Members, info.InFlight = live.Checkpoint, live.Members, live.InFlight
			return info, nil
		}
	}
	v, ok, err := m.aux.Get(checkpointKey(info.Settings.Name))
	if err != nil {
		return Info{}, err
	}
	if ok {
		if info.Checkpoint, err = decodeCheckpoint(v); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

// List describes every group, by name.
func (m *Manager) List() ([]Info, error) {
	m.mu.Lock()
	groups := make([]*group, 0, len(m.groups))
	for _, g := range m.groups {
		groups = append(groups, g)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(groups))
	for _, g := range groups {
		info, err := m.info(g)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Settings.Name < out[j].Settings.Name })
	return out, nil
}

// ListParked returns up to limit parked events of a group after position
// after, and whether more follow.
func (m *Manager) ListParked(name string, after uint64, limit int) (out []Parked, more bool, err error) {
	if _, err := m.get(name); err != nil {
		return nil, false, err
	}
	prefix := parkedGroupPrefix(name)
	err = m.aux.Scan(prefix, func(k, v []byte) error {
		if len(k) != len(prefix)+8 {
			return fmt.Errorf("parked key %x: malformed", k)
		}
		pos := binary.BigEndian.Uint64(k[len(prefix):])
		if pos <= after {
			return nil
		}
		if len(out) == limit {
			more = true
			return errStopScan
		}
		p, err := decodeParked(pos, v)
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, false, err
	}
	for i := range out {
		if out[i].Event, _, err = m.store.EventAt(out[i].Position); err != nil {
			return nil, false, err
		}
	}
	return out, more, nil
}

var errStopScan = errors.New("stop")

// ReplayParked hands up to max (0: all) parked events back to the group's
// members, oldest first; they leave the parked list when acknowledged. It
// returns how many. Events already being replayed are not counted twice.
func (m *Manager) ReplayParked(name string, max int) (int, error) {
	g, err := m.get(name)
	if err != nil {
		return 0, err
	}
	prefix := parkedGroupPrefix(name)
	var positions []uint64
	err = m.aux.Scan(prefix, func(k, _ []byte) error {
		if max > 0 && len(positions) == max {
			return errStopScan
		}
		positions = append(positions, binary.BigEndian.Uint64(k[len(prefix):]))
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return 0, err
	}
	g.mu.Lock()
	run := g.run
	if run == nil {
		g.replay = mergePositions(g.replay, positions)
	}
	g.mu.Unlock()
	if run != nil {
		run.do(func(d *dispatcher) { d.replayParked(positions) })
	}
	return len(positions), nil
}

// mergePositions adds the positions of b to a, without repeats.
func mergePositions(a, b []uint64) []uint64 {
	seen := make(map[uint64]bool, len(a))
	for _, p := range a {
		seen[p] = true
	}
	for _, p := range b {
		if !seen[p] {
			a = append(a, p)
			seen[p] = true
		}
	}
	return a
}

// Join makes a new member of the group, starting its dispatcher if it is
// the first. The member leaves with Member.Leave.
func (m *Manager) Join(name, memberName string) (*Member, error) {
	g, err := m.get(name)
	if err != nil {
		return nil, err
	}
	mem := &Member{
		ID:   m.ids.Add(1),
		Name: memberName,
		out:  make(chan Delivery, memberQueue),
		done: make(chan struct{}),
	}
	for {
		g.mu.Lock()
		if g.deleted {
			g.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		run := g.run
		if run == nil && m.closing.Load() {
			g.mu.Unlock()
			return nil, ErrClosed
		}
		if run == nil {
			checkpoint, err := m.checkpoint(name)
			if err != nil {
				g.mu.Unlock()
				return nil, err
			}
			run = m.startDispatcher(g, checkpoint)
			g.run = run
		}
		g.mu.Unlock()
		if run.do(func(d *dispatcher) { d.join(mem) }) {
			mem.run = run
			return mem, nil
		}
		// That dispatcher stopped meanwhile (its last member left): wait
		// until it is gone, then start another.
		<-run.exited
	}
}

func (m *Manager) checkpoint(name string) (uint64, error) {
	v, ok, err := m.aux.Get(checkpointKey(name))
	if err != nil || !ok {
		return 0, err
	}
	return decodeCheckpoint(v)
}
