package snapshot

import (
	"fmt"
	"testing"
)

func TestBaseCache(t *testing.T) {
	c := newBaseCache(cacheShards * 2) // two names a shard
	if _, ok, _ := c.get("a"); ok {
		t.Fatal("empty cache has a")
	}
	c.raise("a", 5)
	c.raise("a", 3) // lower: kept at 5
	if b, ok, _ := c.get("a"); !ok || b != 5 {
		t.Fatalf("a: %d %t, want 5", b, ok)
	}
	c.raise("a", 9)
	if b, _, _ := c.get("a"); b != 9 {
		t.Fatalf("a raised to %d, want 9", b)
	}

	// A load that began before a removal does not put back what it read.
	_, _, gen := c.get("b")
	c.remove("b")
	c.putLoaded("b", 7, gen)
	if _, ok, _ := c.get("b"); ok {
		t.Fatal("a load from before a removal was cached")
	}
	_, _, gen = c.get("b")
	c.putLoaded("b", 7, gen)
	if b, ok, _ := c.get("b"); !ok || b != 7 {
		t.Fatalf("b: %d %t, want 7", b, ok)
	}
	c.remove("a")
	if _, ok, _ := c.get("a"); ok {
		t.Fatal("a removed but cached")
	}
}

// TestBaseCacheBound: the cache holds at most its capacity, and evicts the
// least recently used name of a shard.
func TestBaseCacheBound(t *testing.T) {
	c := newBaseCache(cacheShards * 4)
	for i := range 10000 {
		c.raise(fmt.Sprint("s-", i), uint64(i))
		if i%1000 == 0 && c.len() > cacheShards*4 {
			t.Fatalf("%d names cached, capacity %d", c.len(), cacheShards*4)
		}
	}
	if n := c.len(); n != cacheShards*4 {
		t.Fatalf("%d names cached after 10000, want the capacity %d", n, cacheShards*4)
	}
	// Within one shard: touch the oldest, add one more, the second oldest goes.
	s := c.shard("x-0")
	var names []string
	for i := 0; len(names) < 5; i++ {
		if n := fmt.Sprint("x-", i); c.shard(n) == s {
			names = append(names, n)
		}
	}
	for _, n := range names[:4] {
		c.raise(n, 1)
	}
	c.get(names[0])
	c.raise(names[4], 1)
	if _, ok, _ := c.get(names[1]); ok {
		t.Fatal("the least recently used name was kept")
	}
	for _, n := range []string{names[0], names[2], names[3], names[4]} {
		if _, ok, _ := c.get(n); !ok {
			t.Fatalf("%s evicted", n)
		}
	}
}
