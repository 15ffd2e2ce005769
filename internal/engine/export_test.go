package engine

// SetDeletedHook makes Delete call f with the result of the writer's
// Delete and go on with what f returns.
func (e *Engine) SetDeletedHook(f func(err error) error) { e.testDeleted = f }
