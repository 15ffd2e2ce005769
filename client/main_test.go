package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: a
// background snapshot save not waited for, a call not ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
