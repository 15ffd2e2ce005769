package client

import (
	"context"
	"errors"
	"fmt"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons esd gives in its errors (the ErrorInfo reason; docs/api.md has
// the whole table). Switch on these, never on a message.
const (
	ReasonWrongExpectedRevision = "WRONG_EXPECTED_REVISION"
	ReasonStreamNotFound        = "STREAM_NOT_FOUND"
	ReasonStreamDeleted         = "STREAM_DELETED"
	ReasonStreamTombstoned      = "STREAM_TOMBSTONED"
	ReasonEventIDConflict       = "EVENT_ID_CONFLICT"
	ReasonInvalidArgument       = "INVALID_ARGUMENT"
	ReasonEventTooLarge         = "EVENT_TOO_LARGE"
	ReasonRequestTooLarge       = "REQUEST_TOO_LARGE"
	ReasonTooManyEvents         = "TOO_MANY_EVENTS"
	ReasonOverloaded            = "OVERLOADED"
	ReasonInflightBytes         = "INFLIGHT_BYTES"
	ReasonStoreBehind           = "STORE_BEHIND"
	ReasonRateLimited           = "RATE_LIMITED"
	ReasonShuttingDown          = "SHUTTING_DOWN"
	ReasonStorageFailed         = "STORAGE_FAILED"
	ReasonGroupNotFound         = "GROUP_NOT_FOUND"
	ReasonGroupExists           = "GROUP_EXISTS"
	ReasonSnapshotNotFound      = "SNAPSHOT_NOT_FOUND"
	ReasonSnapshotRevision      = "SNAPSHOT_REVISION_INVALID"
	ReasonPermissionDenied      = "PERMISSION_DENIED"
)

// Error is a refusal from esd: the gRPC code, esd's reason and what the
// server said about it. Every error a Client method returns for a server
// status is an *Error (use errors.As, or the Is helpers below); transport
// and context errors are *Error too, with an empty Reason.
type Error struct {
	Code    codes.Code
	Reason  string            // esd's ErrorInfo reason; empty when the status has none
	Message string            // the status message, for people
	Meta    map[string]string // ErrorInfo metadata: "stream", "limit", "max", "permission", ...
	// Fields names each bad field of an INVALID_ARGUMENT (e.g.
	// "events[2].type") with its description.
	Fields []FieldViolation
	// Conflict is set for WRONG_EXPECTED_REVISION.
	Conflict *Conflict
	status   *status.Status
}

// FieldViolation is one bad field of a request.
type FieldViolation struct{ Field, Description string }

// Conflict is a wrong expected revision: another writer got there
// first. Nothing of the append was written.
type Conflict struct {
	Stream   string
	Expected Expected
	// ActualHead is the stream's last revision when StreamExists.
	ActualHead   uint64
	StreamExists bool
	// Events are the events appended after the expected revision, as the
	// server sent them (by default up to 16, about 4 KiB); Truncated says
	// there are more. With them a caller can show a user what changed.
	Events    []*esdv1.RecordedEvent
	Truncated bool
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code.String()
	}
	if e.Reason != "" && e.Reason != e.Code.String() {
		return fmt.Sprintf("%s (%s)", msg, e.Reason)
	}
	return msg
}

// GRPCStatus makes status.FromError and status.Code see the original
// status through an *Error; one the client made itself (a subscription
// the server ended, a member that never joined) has its code and message.
func (e *Error) GRPCStatus() *status.Status {
	if e.status == nil {
		return status.New(e.Code, e.Message)
	}
	return e.status
}

// Is makes errors.Is(err, context.Canceled) and
// errors.Is(err, context.DeadlineExceeded) hold for the statuses that
// mean them.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	return false
}

// Temporary reports whether the same call may succeed later with nothing
// changed: the server was unavailable, overloaded or shedding load. A
// write retried after it must carry the same event ids, so that a write
// that did happen is not written twice.
func (e *Error) Temporary() bool {
	switch e.Code {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		switch e.Reason {
		case ReasonOverloaded, ReasonInflightBytes, ReasonStoreBehind, ReasonRateLimited, "":
			return true
		}
	}
	return false
}

// asError turns what a gRPC call returned into an *Error; nil stays nil
// and errors that are no status (an iterator's own) pass unchanged.
func asError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			st = status.FromContextError(err)
		} else {
			return err
		}
	}
	return errorFromStatus(st)
}

func errorFromStatus(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if e.Reason == "" {
				e.Reason, e.Meta = d.GetReason(), d.GetMetadata()
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.Fields = append(e.Fields, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *esdv1.WrongExpectedRevision:
			e.Conflict = &Conflict{
				Stream:       d.GetStream(),
				Expected:     expectedFromProto(d.GetExpected()),
				ActualHead:   d.GetActualHead(),
				StreamExists: d.GetStreamExists(),
				Events:       d.GetEventsSince(),
				Truncated:    d.GetTruncated(),
			}
		}
	}
	return e
}

// ReasonOf returns esd's reason for err, or "" when it has none.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// IsWrongExpectedRevision reports whether err is a conflict, and returns
// it: the actual head and the events appended since the expected
// revision.
func IsWrongExpectedRevision(err error) (*Conflict, bool) {
	var e *Error
	if errors.As(err, &e) && e.Reason == ReasonWrongExpectedRevision {
		c := e.Conflict
		if c == nil { // a server that sent no detail: the reason still holds
			c = &Conflict{Stream: e.Meta["stream"]}
		}
		return c, true
	}
	return nil, false
}

// IsNotFound reports whether err says a stream (never written, deleted
// or tombstoned), group or snapshot does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == codes.NotFound
}

// IsTemporary reports whether err is an *Error that is Temporary.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary()
}
