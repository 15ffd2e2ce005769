package log

import (
	"hash/maphash"
	"math/bits"
)

// idSet is a set of event ids built by adding: a Bloom filter in front of
// the list of its ids. Adding costs a hash, four bit sets and an append;
// a lookup a hash and four bit tests, confirmed in the list when they all
// pass. The commit path checks every client id against the ids of the
// commit being built and of the commits since its lookup (commit.go);
// with Go maps of 16-byte keys those checks, and forgetting old commits
// id by id, took 13% of esd's CPU under 100-event appends (a CPU profile
// of esd under `esctl bench append -c 16 -b 100`).
type idSet struct {
	bits []uint64
	mask uint64 // the number of bits - 1 (a power of two)
	ids  [][16]byte
}

// idSetBitsPerID keeps false positives (a lookup that scans the list for
// nothing) near 0.2% with four bits an id.
const idSetBitsPerID = 16

var idSetSeed = maphash.MakeSeed()

// newIDSet returns a set sized for about n ids (more only raise the
// false positives).
func newIDSet(n int) idSet {
	nbits := uint64(1) << bits.Len64(uint64(max(n*idSetBitsPerID, 512)-1))
	return idSet{bits: make([]uint64, nbits/64), mask: nbits - 1, ids: make([][16]byte, 0, n)}
}

// idHash returns the two hashes an id's four bit positions derive from.
func idHash(id *[16]byte) (h1, h2 uint64) {
	h := maphash.Comparable(idSetSeed, *id)
	return h, h>>32 | 1
}

func (s *idSet) add(id [16]byte) {
	h1, h2 := idHash(&id)
	for i := range uint64(4) {
		p := (h1 + i*h2) & s.mask
		s.bits[p/64] |= 1 << (p % 64)
	}
	s.ids = append(s.ids, id)
}

func (s *idSet) has(id [16]byte) bool {
	if len(s.ids) == 0 {
		return false
	}
	h1, h2 := idHash(&id)
	for i := range uint64(4) {
		p := (h1 + i*h2) & s.mask
		if s.bits[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	for _, x := range s.ids {
		if x == id {
			return true
		}
	}
	return false
}

// truncate keeps the first n ids added.
func (s *idSet) truncate(n int) {
	if n >= len(s.ids) {
		return
	}
	clear(s.bits)
	ids := s.ids[:n]
	s.ids = s.ids[:0]
	for _, id := range ids {
		s.add(id)
	}
}
