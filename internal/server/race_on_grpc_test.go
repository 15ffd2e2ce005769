//go:build race

package server

// raceEnabled: the race detector slows every RPC several times, so the
// heavy tests shrink their sizes.
const raceEnabled = true
