//go:build race

package subscription

// raceEnabled: the race detector slows every commit and read several
// times, so the heavy tests shrink their sizes.
const raceEnabled = true
