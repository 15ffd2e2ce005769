package group

import (
	"container/heap"
	"context"
	"fmt"
)

// WaitCheckpoint returns once the group's checkpoint has reached position
// (every event of its target up to position acknowledged or parked), with
// the checkpoint then. It fails with ErrNotFound if there is no such group
// or it is deleted meanwhile, with ErrClosed when the manager closes, and
// with ctx's error (and the checkpoint then) when ctx ends first.
//
// It waits on the group's frontier (group.frontier), the highest
// checkpoint its dispatchers reached in memory, not on the stored
// checkpoint: an acknowledged event has been handled, so a waiter need not
// wait up to saveEvery more for it to be stored.
func (m *Manager) WaitCheckpoint(ctx context.Context, name string, position uint64) (uint64, error) {
	g, err := m.get(name)
	if err != nil {
		return 0, err
	}
	g.mu.Lock()
	if cp, done, err := m.waitOver(g, name, position); done {
		g.mu.Unlock()
		return cp, err
	}
	w := &waiter{pos: position, woken: make(chan struct{})}
	heap.Push(&g.waiters, w)
	g.mu.Unlock()

	select {
	case <-w.woken:
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.index >= 0 { // ctx ended: nothing will wake it, nothing may keep it
		heap.Remove(&g.waiters, w.index)
	}
	if cp, done, err := m.waitOver(g, name, position); done {
		return cp, err
	}
	return g.frontier, ctx.Err()
}

// waitOver says whether a wait for position is over, and how; under g.mu.
// Reaching the position wins over a deletion or a shutdown that came
// after: the answer is true either way.
func (m *Manager) waitOver(g *group, name string, position uint64) (cp uint64, done bool, err error) {
	switch {
	case g.frontier >= position:
		return g.frontier, true, nil
	case g.deleted:
		return 0, true, fmt.Errorf("%w: %q was deleted", ErrNotFound, name)
	case m.closing.Load():
		// Close sets closing before it wakes the waiters under each
		// group's lock, so a waiter that missed the wake-up sees it here.
		return g.frontier, true, ErrClosed
	}
	return 0, false, nil
}

// raise moves the group's frontier up to cp (never down) and wakes the
// waiters it passes.
func (g *group) raise(cp uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cp <= g.frontier {
		return
	}
	g.frontier = cp
	for len(g.waiters) > 0 && g.waiters[0].pos <= cp {
		close(heap.Pop(&g.waiters).(*waiter).woken)
	}
}

// wakeAll wakes every waiter (the group is deleted or the manager
// closes); under g.mu.
func (g *group) wakeAll() {
	for _, w := range g.waiters {
		w.index = -1
		close(w.woken)
	}
	g.waiters = nil
}

// waiter is a WaitCheckpoint call waiting for its position.
type waiter struct {
	pos   uint64
	woken chan struct{} // closed when taken out of the heap by raise or wakeAll
	index int           // in the heap; -1 once out of it
}

// waiters is a min-heap by position, so that a move of the frontier wakes
// only the waiters it passes, in O(log n) each, however many wait for
// positions further on.
type waiters []*waiter

func (h waiters) Len() int           { return len(h) }
func (h waiters) Less(i, j int) bool { return h[i].pos < h[j].pos }
func (h waiters) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *waiters) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}

func (h *waiters) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}
