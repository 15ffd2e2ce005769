//go:build e2e && race

package e2e

// raceEnabled: the tests run under -race, so the binaries are built with
// -race too and a data race inside esd fails the test that ran it.
const raceEnabled = true
