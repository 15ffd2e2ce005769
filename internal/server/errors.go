package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/group"
	"github.com/esdhq/esd/internal/lease"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/streammeta"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Reasons, the ErrorInfo.Reason values of docs/api.md.
const (
	reasonWrongExpectedRevision = "WRONG_EXPECTED_REVISION"
	reasonStreamNotFound        = "STREAM_NOT_FOUND"
	reasonStreamDeleted         = "STREAM_DELETED"
	reasonStreamTombstoned      = "STREAM_TOMBSTONED"
	reasonEventIDConflict       = "EVENT_ID_CONFLICT"
	reasonInvalidArgument       = "INVALID_ARGUMENT"
	reasonEventTooLarge         = "EVENT_TOO_LARGE"
	reasonRequestTooLarge       = "REQUEST_TOO_LARGE"
	reasonOverloaded            = "OVERLOADED"
	reasonShuttingDown          = "SHUTTING_DOWN"
	reasonStorageFailed         = "STORAGE_FAILED"
	reasonGroupNotFound         = "GROUP_NOT_FOUND"
	reasonGroupExists           = "GROUP_EXISTS"
	reasonSnapshotNotFound      = "SNAPSHOT_NOT_FOUND"
	reasonSnapshotRevision      = "SNAPSHOT_REVISION_INVALID"
	reasonSnapshotTooLarge      = "SNAPSHOT_TOO_LARGE"
	reasonStreamLeased          = "STREAM_LEASED"
	reasonStaleFencingToken     = "STALE_FENCING_TOKEN"
	reasonLeaseNotHeld          = "LEASE_NOT_HELD"
	reasonScavengeRunning       = "SCAVENGE_RUNNING"
	reasonScavengeNotFound      = "SCAVENGE_NOT_FOUND"
)

// invalidError is a bad request: reason INVALID_ARGUMENT, EVENT_TOO_LARGE
// or REQUEST_TOO_LARGE, with a violation per bad field.
type invalidError struct {
	reason     string
	stream     string
	violations []*errdetails.BadRequest_FieldViolation
}

func (e *invalidError) Error() string {
	msg := "invalid request"
	for i, v := range e.violations {
		if i == 0 {
			msg += ": "
		} else {
			msg += "; "
		}
		msg += v.Field + ": " + v.Description
	}
	return msg
}

// toStatus maps an error to its gRPC status with an ErrorInfo. It is the
// one place that knows the mapping; errors_test.go has a row per case.
func toStatus(err error) error {
	var (
		wr       *eslog.WrongRevisionError
		conflict *engine.ConflictError
		se       *eslog.StreamError
		idc      *eslog.IDConflictError
		inv      *invalidError
		snf      *snapshot.NotFoundError
		srev     *snapshot.RevisionError
		lim      *limitError
		leased   *lease.LeasedError
		stale    *lease.StaleTokenError
		notHeld  *lease.NotHeldError
		wmr      *streammeta.WrongRevisionError
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.As(err, &conflict):
		return withReason(codes.Aborted, wrongRevisionMessage(conflict.WrongRevisionError), reasonWrongExpectedRevision, conflict.Stream, deltaDetail(conflict))
	case errors.As(err, &wr):
		return withReason(codes.Aborted, wrongRevisionMessage(wr), reasonWrongExpectedRevision, wr.Stream, wrongRevisionDetail(wr))
	case errors.As(err, &wmr):
		return wrongMetadataRevision(wmr)
	case errors.Is(err, streammeta.ErrInvalid): // the request was validated: a caller other than the API's
		return withReason(codes.InvalidArgument, err.Error(), reasonInvalidArgument, "")
	case errors.As(err, &se) && errors.Is(se.Err, eslog.ErrStreamTombstoned):
		code := codes.NotFound
		if errors.Is(err, engine.ErrRefused) {
			code = codes.FailedPrecondition
		}
		return withReason(code, fmt.Sprintf("stream %q is tombstoned (deleted for good)", se.Stream), reasonStreamTombstoned, se.Stream)
	case errors.As(err, &se) && errors.Is(se.Err, eslog.ErrStreamDeleted):
		return withReason(codes.NotFound, fmt.Sprintf("stream %q is deleted", se.Stream), reasonStreamDeleted, se.Stream)
	case errors.As(err, &se) && errors.Is(se.Err, eslog.ErrStreamNotFound):
		return withReason(codes.NotFound, fmt.Sprintf("stream %q not found", se.Stream), reasonStreamNotFound, se.Stream)
	case errors.As(err, &idc):
		return withReason(codes.AlreadyExists, fmt.Sprintf("stream %q: event id %s is already stored", idc.Stream, eslog.FormatID(idc.ID)),
			reasonEventIDConflict, idc.Stream)
	case errors.As(err, &lim):
		return lim.status()
	case errors.As(err, &leased):
		return withInfo(codes.FailedPrecondition, leased.Error(), reasonStreamLeased, map[string]string{
			"stream": leased.Stream, "owner": leased.Owner, "expires": leased.Expires.UTC().Format(time.RFC3339Nano)})
	case errors.As(err, &stale):
		return withInfo(codes.FailedPrecondition, stale.Error(), reasonStaleFencingToken, map[string]string{
			"stream": stale.Stream, "fencing_token": strconv.FormatUint(stale.Given, 10), "current_fencing_token": strconv.FormatUint(stale.Current, 10)})
	case errors.As(err, &notHeld):
		return withInfo(codes.FailedPrecondition, notHeld.Error(), reasonLeaseNotHeld, map[string]string{
			"stream": notHeld.Stream, "fencing_token": strconv.FormatUint(notHeld.Token, 10)})
	case errors.Is(err, lease.ErrLeased): // a wait that ended without a holder to name
		return withReason(codes.FailedPrecondition, "the stream is leased", reasonStreamLeased, "")
	case errors.As(err, &inv):
		return withReason(codes.InvalidArgument, inv.Error(), inv.reason, inv.stream,
			&errdetails.BadRequest{FieldViolations: inv.violations})
	case errors.As(err, &snf):
		return withReason(codes.NotFound, snf.Error(), reasonSnapshotNotFound, snf.Stream)
	case errors.As(err, &srev):
		return withReason(codes.FailedPrecondition, srev.Error(), reasonSnapshotRevision, srev.Stream)
	case errors.Is(err, group.ErrNotFound):
		return withReason(codes.NotFound, groupMessage(err, group.ErrNotFound, "group not found"), reasonGroupNotFound, "")
	case errors.Is(err, group.ErrExists):
		return withReason(codes.AlreadyExists, groupMessage(err, group.ErrExists, "group exists"), reasonGroupExists, "")
	case errors.Is(err, group.ErrImmutable):
		return withReason(codes.InvalidArgument, "a group's target, filter and strategy cannot change", reasonInvalidArgument, "")
	case errors.Is(err, engine.ErrScavengeRunning):
		return withReason(codes.FailedPrecondition, err.Error(), reasonScavengeRunning, "")
	case errors.Is(err, engine.ErrNoScavenge):
		return withReason(codes.NotFound, err.Error(), reasonScavengeNotFound, "")
	case errors.Is(err, engine.ErrOverloaded):
		return withReason(codes.ResourceExhausted, "writer queue full: retry with backoff", reasonOverloaded, "")
	case shuttingDown(err):
		return withReason(codes.Unavailable, "server shutting down", reasonShuttingDown, "")
	case errors.Is(err, eslog.ErrStorageFailed):
		return withReason(codes.Unavailable, "storage failed (a full or failing disk): writes are refused until esd has reopened the store; reads go on", reasonStorageFailed, "")
	case isStatus(err): // already mapped (by gRPC itself, or the recovery interceptor)
		return err
	default: // the interceptor logs the real error with the method name
		return status.Error(codes.Internal, "internal error")
	}
}

// closedErrors are the errors of the parts of esd that have stopped:
// each is UNAVAILABLE/SHUTTING_DOWN.
var closedErrors = []error{engine.ErrShuttingDown, eslog.ErrClosed, lease.ErrClosed, snapshot.ErrClosed, group.ErrClosed}

// shuttingDown reports whether err is one of closedErrors.
func shuttingDown(err error) bool {
	for _, c := range closedErrors {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

// The messages of the statuses are written here rather than taken from
// the errors' own text: that text names the package the error comes from
// ("log: stream ..."), which is for esd's logs, not for its clients.

func wrongRevisionMessage(wr *eslog.WrongRevisionError) string {
	if !wr.Exists {
		return fmt.Sprintf("stream %q: wrong expected revision: expected %v, but the stream has no events", wr.Stream, wr.Expected)
	}
	return fmt.Sprintf("stream %q: wrong expected revision: expected %v, but the head is %d", wr.Stream, wr.Expected, wr.Head)
}

// groupMessage says what, followed by what err adds after the sentinel:
// the group package wraps its sentinels with the group's name, as in
// `group: not found: "g"`, which becomes `group not found: "g"`.
func groupMessage(err, sentinel error, what string) string {
	msg := err.Error()
	if i := strings.Index(msg, sentinel.Error()); i >= 0 {
		return what + msg[i+len(sentinel.Error()):]
	}
	return what
}

func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// withReason attaches google.rpc.ErrorInfo{domain "esd", reason, metadata
// stream} plus extra details.
func withReason(c codes.Code, msg, reason, stream string, extra ...protoadapt.MessageV1) error {
	var meta map[string]string
	if stream != "" {
		meta = map[string]string{"stream": stream}
	}
	return withInfo(c, msg, reason, meta, extra...)
}

// withInfo is withReason with any ErrorInfo metadata.
func withInfo(c codes.Code, msg, reason string, meta map[string]string, extra ...protoadapt.MessageV1) error {
	st := status.New(c, msg)
	info := &errdetails.ErrorInfo{Domain: "esd", Reason: reason}
	for k, v := range meta { // a bad name may be bad UTF-8, which a proto string cannot carry
		if info.Metadata == nil {
			info.Metadata = make(map[string]string, len(meta))
		}
		info.Metadata[k] = strings.ToValidUTF8(v, "\uFFFD")
	}
	details := append([]protoadapt.MessageV1{info}, extra...)
	if d, derr := st.WithDetails(details...); derr == nil {
		st = d
	}
	return st.Err() // never drop WithDetails' error: a nil *Status reads as OK
}

func wrongRevisionDetail(wr *eslog.WrongRevisionError) *esdv1.WrongExpectedRevision {
	d := &esdv1.WrongExpectedRevision{
		Stream:       wr.Stream,
		Expected:     expectedProto(wr.Expected),
		StreamExists: wr.Exists,
	}
	if wr.Exists {
		d.ActualHead = wr.Head
	}
	return d
}

func expectedProto(e eslog.Expectation) *esdv1.ExpectedRevision {
	switch e.Kind {
	case eslog.ExpectNoStream:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_NoStream{NoStream: &emptypb.Empty{}}}
	case eslog.ExpectExists:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_StreamExists{StreamExists: &emptypb.Empty{}}}
	case eslog.ExpectExact:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Exact{Exact: e.Revision}}
	default:
		return &esdv1.ExpectedRevision{Kind: &esdv1.ExpectedRevision_Any{Any: &emptypb.Empty{}}}
	}
}
