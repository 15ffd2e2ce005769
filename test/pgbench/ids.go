package main

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"time"
)

// idGen makes UUIDv7 event ids as esctl bench does (48 bits of Unix
// milliseconds, then random bits, from a per-client ChaCha8 generator):
// time-ordered, so they go to the right edge of the event_id index, as
// they would from an application using UUIDv7.
type idGen struct {
	rng *rand.ChaCha8
}

func newIDGen() *idGen {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand panics instead)
	return &idGen{rng: rand.NewChaCha8(seed)}
}

// fill gives every id a fresh value.
func (g *idGen) fill(ids [][16]byte) {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixMilli()))
	for i := range ids {
		u := &ids[i]
		copy(u[:6], ts[2:])
		_, _ = g.rng.Read(u[6:]) // never fails
		u[6] = u[6]&0x0f | 0x70  // version 7
		u[8] = u[8]&0x3f | 0x80  // RFC 9562 variant
	}
}
