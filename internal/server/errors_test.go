package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/esdhq/esd/internal/engine"
	"github.com/esdhq/esd/internal/group"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/streammeta"
	"github.com/esdhq/esd/internal/writer"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestToStatus: a row per error the engine, the log, the groups and the
// validation return: its code, its ErrorInfo reason and stream, and, for
// the writer's errors, that the writer's metric label is the same reason.
func TestToStatus(t *testing.T) {
	wr := &eslog.WrongRevisionError{Stream: "s", StreamID: 16, Expected: eslog.Expectation{Kind: eslog.ExpectExact, Revision: 1},
		Head: 3, Exists: true}
	conflict := &engine.ConflictError{WrongRevisionError: wr,
		EventsSince: []*eslog.RecordedEvent{{Event: eslog.Event{Type: "A"}, Stream: "s", Revision: 2}, {Event: eslog.Event{Type: "B"}, Stream: "s", Revision: 3}}}
	stream := func(err error) error { return &eslog.StreamError{Stream: "s", Err: err} }
	for _, tc := range []struct {
		name        string
		err         error
		code        codes.Code
		reason      string // "" for no ErrorInfo
		stream      string
		writerLabel bool   // writer.Reason(err) must be reason
		msg         string // the status message, when the mapping writes it
	}{
		{"canceled", context.Canceled, codes.Canceled, "", "", false, ""},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", "", false, ""},
		{"conflict with delta", conflict, codes.Aborted, reasonWrongExpectedRevision, "s", true, `stream "s": wrong expected revision: expected revision 1, but the head is 3`},
		{"wrong revision", wr, codes.Aborted, reasonWrongExpectedRevision, "s", true, `stream "s": wrong expected revision: expected revision 1, but the head is 3`},
		{"wrong revision, no stream", &eslog.WrongRevisionError{Stream: "s", Expected: eslog.Expectation{Kind: eslog.ExpectExists}},
			codes.Aborted, reasonWrongExpectedRevision, "s", true, `stream "s": wrong expected revision: expected stream exists, but the stream has no events`},
		{"wrong metadata revision", &streammeta.WrongRevisionError{Target: streammeta.Target{Name: "s"}, Expected: streammeta.Expected{Kind: streammeta.ExpectNone}, Exists: true},
			codes.Aborted, reasonWrongExpectedMetadataRevision, "s", false, ""},
		{"invalid metadata", fmt.Errorf("%w: a category's truncate-before", streammeta.ErrInvalid), codes.InvalidArgument, reasonInvalidArgument, "", false, ""},
		{"write to a tombstone", fmt.Errorf("%w: %w", engine.ErrRefused, stream(eslog.ErrStreamTombstoned)),
			codes.FailedPrecondition, reasonStreamTombstoned, "s", true, `stream "s" is tombstoned (deleted for good)`},
		{"read of a tombstone", stream(eslog.ErrStreamTombstoned), codes.NotFound, reasonStreamTombstoned, "s", true, `stream "s" is tombstoned (deleted for good)`},
		{"deleted", stream(eslog.ErrStreamDeleted), codes.NotFound, reasonStreamDeleted, "s", true, `stream "s" is deleted`},
		{"not found", stream(eslog.ErrStreamNotFound), codes.NotFound, reasonStreamNotFound, "s", true, `stream "s" not found`},
		{"id conflict", &eslog.IDConflictError{Stream: "s"}, codes.AlreadyExists, reasonEventIDConflict, "s", true, `stream "s": event id 00000000-0000-0000-0000-000000000000 is already stored`},
		{"invalid", &invalidError{reason: reasonEventTooLarge, stream: "s",
			violations: []*errdetails.BadRequest_FieldViolation{{Field: "events[0].data", Description: "too large"}}},
			codes.InvalidArgument, reasonEventTooLarge, "s", false, ""},
		{"no snapshot", &snapshot.NotFoundError{Stream: "s", SchemaVersion: 1}, codes.NotFound, reasonSnapshotNotFound, "s", false, ""},
		{"snapshot past the head", &snapshot.RevisionError{Stream: "s", Revision: 9, Head: 3}, codes.FailedPrecondition,
			reasonSnapshotRevision, "s", false, ""},
		{"snapshots closed", snapshot.ErrClosed, codes.Unavailable, reasonShuttingDown, "", false, ""},
		{"group not found", fmt.Errorf("%w: %q", group.ErrNotFound, "g"), codes.NotFound, reasonGroupNotFound, "", false, `group not found: "g"`},
		{"group exists", fmt.Errorf("%w: %q", group.ErrExists, "g"), codes.AlreadyExists, reasonGroupExists, "", false, `group exists: "g"`},
		{"group immutable", group.ErrImmutable, codes.InvalidArgument, reasonInvalidArgument, "", false, "a group's target, filter and strategy cannot change"},
		{"groups closed", group.ErrClosed, codes.Unavailable, reasonShuttingDown, "", false, ""},
		{"scavenge running", fmt.Errorf("%w: %s", engine.ErrScavengeRunning, "id"), codes.FailedPrecondition, reasonScavengeRunning, "", false, ""},
		{"no scavenge", engine.ErrNoScavenge, codes.NotFound, reasonScavengeNotFound, "", false, ""},
		{"overloaded", engine.ErrOverloaded, codes.ResourceExhausted, reasonOverloaded, "", true, ""},
		{"shutting down", engine.ErrShuttingDown, codes.Unavailable, reasonShuttingDown, "", true, ""},
		{"log closed", eslog.ErrClosed, codes.Unavailable, reasonShuttingDown, "", true, ""},
		{"storage failed", fmt.Errorf("%w: disk", eslog.ErrStorageFailed), codes.Unavailable, reasonStorageFailed, "", true, ""},
		{"a status already", status.Error(codes.ResourceExhausted, "message too large"), codes.ResourceExhausted, "", "", false, ""},
		{"a bug", errors.New("boom"), codes.Internal, "", "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(toStatus(tc.err))
			if st.Code() != tc.code {
				t.Fatalf("code %v, want %v", st.Code(), tc.code)
			}
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				if i, ok := d.(*errdetails.ErrorInfo); ok {
					info = i
				}
			}
			switch {
			case tc.reason == "" && info != nil:
				t.Fatalf("ErrorInfo %v, want none", info)
			case tc.reason != "" && (info == nil || info.GetReason() != tc.reason || info.GetDomain() != "esd" ||
				info.GetMetadata()["stream"] != tc.stream):
				t.Fatalf("ErrorInfo %v, want reason %s, stream %q", info, tc.reason, tc.stream)
			}
			if tc.writerLabel && writer.Reason(tc.err) != tc.reason {
				t.Errorf("writer's metric label %q, want the reason %q", writer.Reason(tc.err), tc.reason)
			}
			if tc.msg != "" && st.Message() != tc.msg {
				t.Errorf("message %q, want %q", st.Message(), tc.msg)
			}
			if tc.code == codes.Internal && st.Message() != "internal error" {
				t.Errorf("internal error says %q: it must not leak the error", st.Message())
			}
		})
	}
	// The conflict's detail lists the events since the expected revision.
	var d *esdv1.WrongExpectedRevision
	for _, x := range status.Convert(toStatus(conflict)).Details() {
		if w, ok := x.(*esdv1.WrongExpectedRevision); ok {
			d = w
		}
	}
	if d == nil || d.GetActualHead() != 3 || len(d.GetEventsSince()) != 2 || d.GetEventsSince()[1].GetType() != "B" {
		t.Fatalf("conflict detail %v", d)
	}
}
