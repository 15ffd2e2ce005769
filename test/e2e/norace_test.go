//go:build e2e && !race

package e2e

// raceEnabled: the tests run without -race; so are the binaries built.
const raceEnabled = false
