package log

import (
	"math/rand/v2"
	"testing"
)

func randomIDs(rng *rand.Rand, n int) [][16]byte {
	ids := make([][16]byte, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(rng.Uint32())
		}
	}
	return ids
}

// TestIDSet: an idSet holds exactly what was added (the filter's false
// positives are confirmed in the list), also past the size it was made
// for, and truncate forgets the ids added last.
func TestIDSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ sized, added int }{{0, 0}, {1, 1}, {10, 10}, {1000, 1000}, {10, 5000}} {
		s := newIDSet(tc.sized)
		in := randomIDs(rng, tc.added)
		out := randomIDs(rng, 5000)
		for _, id := range in {
			s.add(id)
		}
		for _, id := range in {
			if !s.has(id) {
				t.Fatalf("sized %d, %d added: an added id is missing", tc.sized, tc.added)
			}
		}
		for _, id := range out {
			if s.has(id) {
				t.Fatalf("sized %d, %d added: an id never added is found", tc.sized, tc.added)
			}
		}
		half := tc.added / 2
		s.truncate(half)
		for i, id := range in {
			if got := s.has(id); got != (i < half) {
				t.Fatalf("after truncate(%d): id %d found %t", half, i, got)
			}
		}
	}
	// Time-ordered ids (UUIDv7: equal leading bytes) hash as well.
	s := newIDSet(100)
	var ids [][16]byte
	for range 100 {
		ids = append(ids, newEventID())
	}
	for _, id := range ids[:50] {
		s.add(id)
	}
	for i, id := range ids {
		if s.has(id) != (i < 50) {
			t.Fatalf("UUIDv7 %d: found %t", i, s.has(id))
		}
	}
}

func setOf(ids [][16]byte) idSet {
	s := newIDSet(len(ids))
	for _, id := range ids {
		s.add(id)
	}
	return s
}

// TestRecentIDs: an id is found in the commits after the given epoch
// only; covers says when the commits since an epoch are all remembered
// and few enough to scan; old commits are forgotten by count.
func TestRecentIDs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	r := recentIDs{limit: 250}
	var commits [][][16]byte
	for e := uint64(1); e <= 5; e++ {
		ids := randomIDs(rng, 50)
		commits = append(commits, ids)
		r.add(e, setOf(ids))
	}
	for e, ids := range commits { // commit e+1
		for since := uint64(0); since <= 5; since++ {
			if got, want := r.has(since, ids[7]), uint64(e+1) > since; got != want {
				t.Fatalf("id of commit %d, since %d: found %t", e+1, since, got)
			}
		}
	}
	if !r.covers(0, 5) || !r.covers(3, 5) || !r.covers(5, 5) {
		t.Fatal("covers false for remembered commits")
	}
	r.add(6, setOf(randomIDs(rng, 50))) // 300 ids: commit 1 is forgotten
	if r.covers(0, 6) || !r.covers(1, 6) {
		t.Fatalf("after forgetting commit 1: covers(0) %t, covers(1) %t", r.covers(0, 6), r.covers(1, 6))
	}
	if r.has(0, commits[0][7]) {
		t.Fatal("a forgotten commit's id is found")
	}
	if r.covers(1, 1+maxRecentScan+1) {
		t.Fatal("covers true for more commits than maxRecentScan")
	}
}
