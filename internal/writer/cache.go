package writer

import eslog "github.com/esdhq/esd/internal/log"

// stateCache is a shard's bounded cache of stream states. When full it
// forgets a random half (Go's map order): no bookkeeping on hits.
type stateCache struct {
	m     map[string]eslog.StreamState
	limit int
}

func newStateCache(limit int) *stateCache {
	return &stateCache{m: make(map[string]eslog.StreamState), limit: limit}
}

func (c *stateCache) get(name string) (eslog.StreamState, bool) {
	st, ok := c.m[name]
	return st, ok
}

func (c *stateCache) put(st eslog.StreamState) {
	if _, ok := c.m[st.Name]; !ok && len(c.m) >= c.limit {
		n := 0
		for k := range c.m {
			if n >= c.limit/2 {
				break
			}
			delete(c.m, k)
			n++
		}
	}
	c.m[st.Name] = st
}

func (c *stateCache) clear() { clear(c.m) }
