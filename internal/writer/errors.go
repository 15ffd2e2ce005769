package writer

import (
	"context"
	"errors"
	"fmt"

	eslog "github.com/esdhq/esd/internal/log"
)

var (
	// ErrShuttingDown: the writer takes no more requests.
	ErrShuttingDown = errors.New("writer: shutting down")
	// ErrOverloaded: a shard's queue or the in-flight byte budget is full;
	// the caller should retry with backoff.
	ErrOverloaded = errors.New("writer: queue full")
	// ErrRefused marks a write to a tombstoned stream: it is refused (a
	// precondition), while a read of the stream finds nothing. The error
	// also matches *eslog.StreamError with eslog.ErrStreamTombstoned.
	ErrRefused = errors.New("write refused")
)

// tombstonedWrite is the error of a write to a tombstoned stream: it
// matches ErrRefused and *eslog.StreamError{Err: eslog.ErrStreamTombstoned}.
func tombstonedWrite(stream string) error {
	return fmt.Errorf("%w: %w", ErrRefused, &eslog.StreamError{Stream: stream, Err: eslog.ErrStreamTombstoned})
}

// Outcome labels of Reason: the reasons of the esd.v1 API, so that a
// metric and the status a client got use the same word.
const (
	ReasonOK                    = "ok"
	ReasonWrongExpectedRevision = "WRONG_EXPECTED_REVISION"
	ReasonStreamNotFound        = "STREAM_NOT_FOUND"
	ReasonStreamDeleted         = "STREAM_DELETED"
	ReasonStreamTombstoned      = "STREAM_TOMBSTONED"
	ReasonEventIDConflict       = "EVENT_ID_CONFLICT"
	ReasonOverloaded            = "OVERLOADED"
	ReasonShuttingDown          = "SHUTTING_DOWN"
	ReasonStorageFailed         = "STORAGE_FAILED"
	ReasonCanceled              = "Canceled"
	ReasonDeadlineExceeded      = "DeadlineExceeded"
	ReasonInternal              = "Internal"
)

// Reason classifies an outcome of the writer for metric labels: a bounded
// set, the constants above.
func Reason(err error) string {
	var (
		wr  *eslog.WrongRevisionError
		se  *eslog.StreamError
		idc *eslog.IDConflictError
		// fenced is a Fencer's refusal.
		fenced interface{ Reason() string }
	)
	switch {
	case err == nil:
		return ReasonOK
	case errors.As(err, &wr):
		return ReasonWrongExpectedRevision
	case errors.As(err, &se) && errors.Is(se.Err, eslog.ErrStreamTombstoned):
		return ReasonStreamTombstoned
	case errors.As(err, &se) && errors.Is(se.Err, eslog.ErrStreamDeleted):
		return ReasonStreamDeleted
	case errors.As(err, &se):
		return ReasonStreamNotFound
	case errors.As(err, &idc):
		return ReasonEventIDConflict
	case errors.As(err, &fenced):
		return fenced.Reason()
	case errors.Is(err, ErrOverloaded):
		return ReasonOverloaded
	case errors.Is(err, ErrShuttingDown), errors.Is(err, eslog.ErrClosed):
		return ReasonShuttingDown
	case errors.Is(err, eslog.ErrStorageFailed):
		return ReasonStorageFailed
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return ReasonDeadlineExceeded
	default:
		return ReasonInternal
	}
}
