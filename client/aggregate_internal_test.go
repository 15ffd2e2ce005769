package client

import (
	"fmt"
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func revs(rs ...uint64) []*esdv1.RecordedEvent {
	out := make([]*esdv1.RecordedEvent, len(rs))
	for i, r := range rs {
		out[i] = &esdv1.RecordedEvent{Revision: r}
	}
	return out
}

// TestSince: a conflict's events are folded onto a state only when they
// are every event after it up to the conflict's head.
func TestSince(t *testing.T) {
	at := func(h uint64) State[int] { return State[int]{Head: h, Exists: true} }
	none := State[int]{}
	cases := []struct {
		name string
		st   State[int]
		c    Conflict
		want bool
	}{
		{"contiguous", at(4), Conflict{ActualHead: 7, StreamExists: true, Events: revs(5, 6, 7)}, true},
		{"one", at(4), Conflict{ActualHead: 5, StreamExists: true, Events: revs(5)}, true},
		{"truncated", at(4), Conflict{ActualHead: 9, StreamExists: true, Events: revs(5, 6, 7), Truncated: true}, false},
		{"short of the head", at(4), Conflict{ActualHead: 9, StreamExists: true, Events: revs(5, 6, 7)}, false},
		{"gap after the state (deleted, written again)", at(4), Conflict{ActualHead: 9, StreamExists: true, Events: revs(8, 9)}, false},
		{"gap inside", at(4), Conflict{ActualHead: 8, StreamExists: true, Events: revs(5, 6, 8)}, false},
		{"no events (delta off)", at(4), Conflict{ActualHead: 8, StreamExists: true}, false},
		{"no stream: from the first visible", none, Conflict{ActualHead: 12, StreamExists: true, Events: revs(10, 11, 12)}, true},
		{"no stream, gap", none, Conflict{ActualHead: 12, StreamExists: true, Events: revs(10, 12)}, false},
	}
	for _, tc := range cases {
		if got := since(tc.st, &tc.c); got != tc.want {
			t.Errorf("%s: since = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStateCache: the least recently used stream is dropped first, and
// a state older than the one held never replaces it, except a deletion.
func TestStateCache(t *testing.T) {
	c := newStateCache[int](3)
	for i := range 3 {
		c.put(fmt.Sprint(i), State[int]{Value: i, Head: 10, Exists: true})
	}
	c.get("0") // 1 is now the least recently used
	c.put("3", State[int]{Value: 3, Exists: true})
	for s, want := range map[string]bool{"0": true, "1": false, "2": true, "3": true} {
		if _, ok := c.get(s); ok != want {
			t.Errorf("after evicting one: %s cached %v, want %v", s, ok, want)
		}
	}
	c.put("0", State[int]{Value: -1, Head: 9, Exists: true})
	if st, _ := c.get("0"); st.Value != 0 {
		t.Errorf("an older state replaced a newer: %+v", st)
	}
	c.put("0", State[int]{Value: 11, Head: 11, Exists: true})
	if st, _ := c.get("0"); st.Value != 11 {
		t.Errorf("a newer state did not replace an older: %+v", st)
	}
	c.put("0", State[int]{Value: 0})
	if st, _ := c.get("0"); st.Value != 11 {
		t.Errorf("put of a state without events replaced one with: %+v", st)
	}
	c.remove("0")
	c.put("0", State[int]{Value: 0})
	if st, ok := c.get("0"); !ok || st.Exists {
		t.Errorf("after remove, put of a deleted stream: %+v %v", st, ok)
	}
	if len(c.items) != 3 {
		t.Errorf("%d items, want at most 3", len(c.items))
	}
	for it := c.head; it != nil; it = it.next {
		if it.next == nil && c.tail != it {
			t.Errorf("the list's last item is not its tail")
		}
	}
}
