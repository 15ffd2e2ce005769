//go:build !race

package subscription

// raceEnabled: see race_on_test.go.
const raceEnabled = false
