//go:build race

package testutil

// RaceEnabled reports whether the code is built with -race. The race
// detector slows every commit, read and RPC several times, so heavy tests
// shrink their sizes under it; the e2e tests build the binaries they run
// with -race too, so that a data race inside esd fails the test that ran
// it.
const RaceEnabled = true
