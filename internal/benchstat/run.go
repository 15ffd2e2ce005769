package benchstat

import (
	"context"
	"errors"
	"math/rand/v2"
)

// StreamPrefix is a fresh prefix for a run's stream names ("bench-" and
// six random letters and digits), so that runs on one store do not meet.
func StreamPrefix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte("bench-......")
	for i := len("bench-"); i < len(b); i++ {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// FirstCause picks the error that stopped a phase of a run over the
// cancellations it caused in the other workers: the first error that is
// not a cancellation, else a cancellation, else nil. canceled says which
// errors are cancellations beyond context.Canceled (a gRPC CANCELLED
// status, say); nil means none.
func FirstCause(errs []error, canceled func(error) bool) error {
	var c error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled) || (canceled != nil && canceled(err)):
			c = err
		default:
			return err
		}
	}
	return c
}
