package snapshot

import (
	"hash/maphash"
	"sync"
)

// baseCache maps stream names to their advice base: the first revision
// that counts as "since the latest snapshot" (the latest usable
// snapshot's revision + 1, or the stream's first visible revision when it
// has none). It is a bounded LRU, split into shards by name hash so that
// concurrent appends rarely share a lock; each shard holds at most
// capacity/shards names.
//
// A name missing from the cache is loaded from the namespace (load). To
// keep a load that read the store before a removal from putting back what
// the removal removed, each shard counts its removals (gen): a load puts
// its result only if no removal happened in its shard since it began.
type baseCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const cacheShards = 64

type cacheShard struct {
	mu    sync.Mutex
	limit int
	gen   uint64 // removals so far
	m     map[string]*cacheItem
	head  cacheItem // sentinel of the LRU list: head.next is the newest
}

type cacheItem struct {
	name       string
	base       uint64
	prev, next *cacheItem
}

func newBaseCache(capacity int) *baseCache {
	c := &baseCache{seed: maphash.MakeSeed()}
	per := max(1, capacity/cacheShards)
	for i := range c.shards {
		s := &c.shards[i]
		s.limit = per
		s.m = make(map[string]*cacheItem)
		s.head.prev, s.head.next = &s.head, &s.head
	}
	return c
}

func (c *baseCache) shard(name string) *cacheShard {
	return &c.shards[maphash.String(c.seed, name)%cacheShards]
}

// get returns name's base and marks it the newest; gen is the shard's
// removal count, for a load's put after a miss.
func (c *baseCache) get(name string) (base uint64, ok bool, gen uint64) {
	s := c.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.m[name]
	if it == nil {
		return 0, false, s.gen
	}
	s.unlink(it)
	s.pushFront(it)
	return it.base, true, s.gen
}

// putLoaded stores what a load after a miss found, unless a removal in
// the shard happened since get returned gen. An entry put meanwhile (by
// raise) is kept if its base is higher.
func (c *baseCache) putLoaded(name string, base, gen uint64) {
	s := c.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	s.raiseLocked(name, base)
}

// raise sets name's base to base if that is higher (snapshots only get
// newer, except by a delete, which removes the name).
func (c *baseCache) raise(name string, base uint64) {
	s := c.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raiseLocked(name, base)
}

// gen returns the removal count of name's shard, without touching the
// LRU order: a save reads it before it reads the stream's state, for
// raiseUnlessRemoved.
func (c *baseCache) gen(name string) uint64 {
	s := c.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// raiseUnlessRemoved raises name's base as raise does after a save,
// unless a removal in the shard happened since gen returned gen: a delete
// of the stream's snapshots, or of the stream, may then have come between
// the save's swap and this call, and the saved snapshot may be gone or
// unusable. It removes the name instead, so that the next advice loads
// its base from the store.
func (c *baseCache) raiseUnlessRemoved(name string, base, gen uint64) {
	s := c.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		s.removeLocked(name)
		return
	}
	s.raiseLocked(name, base)
}

func (c *baseCache) remove(name string) {
	s := c.shard(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(name)
}

func (s *cacheShard) removeLocked(name string) {
	s.gen++
	if it := s.m[name]; it != nil {
		s.unlink(it)
		delete(s.m, name)
	}
}

// len is the number of names cached.
func (c *baseCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (s *cacheShard) raiseLocked(name string, base uint64) {
	if it := s.m[name]; it != nil {
		it.base = max(it.base, base)
		s.unlink(it)
		s.pushFront(it)
		return
	}
	var it *cacheItem
	if len(s.m) >= s.limit { // reuse the oldest
		it = s.head.prev
		s.unlink(it)
		delete(s.m, it.name)
		*it = cacheItem{}
	} else {
		it = new(cacheItem)
	}
	it.name, it.base = name, base
	s.m[name] = it
	s.pushFront(it)
}

func (s *cacheShard) unlink(it *cacheItem) {
	it.prev.next, it.next.prev = it.next, it.prev
}

func (s *cacheShard) pushFront(it *cacheItem) {
	it.prev, it.next = &s.head, s.head.next
	s.head.next.prev = it
	s.head.next = it
}
