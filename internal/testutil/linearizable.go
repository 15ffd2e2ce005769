package testutil

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// CheckLinearizable fails t unless history is linearizable under model
// (porcupine, given a minute). On failure it logs where a visualization
// of the history was written and, through unexpected, the outputs that
// carried an answer the model does not know (nil for the others).
func CheckLinearizable(t *testing.T, model porcupine.Model, history []porcupine.Operation, unexpected func(output any) error) {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(model, history, time.Minute)
	if res == porcupine.Ok {
		return
	}
	path := t.TempDir() + "/history.html"
	if err := porcupine.VisualizePath(model, info, path); err == nil {
		t.Logf("history: %s", path)
	}
	for _, op := range history {
		if err := unexpected(op.Output); err != nil {
			t.Logf("unexpected answer: %v", err)
		}
	}
	t.Fatalf("history of %d operations: %s", len(history), res)
}
