package writer

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: a writer's
// shards stop on Close, a real log's syncer on its Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
