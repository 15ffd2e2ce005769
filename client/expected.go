package client

import (
	"fmt"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Expected is the revision an append expects its stream to be at: the
// optimistic-concurrency check. Its zero value is Any.
type Expected struct {
	kind     expectedKind
	revision uint64
}

type expectedKind uint8

const (
	expectAny expectedKind = iota
	expectNoStream
	expectStreamExists
	expectExact
)

// Any appends whatever the stream's revision (no check).
func Any() Expected { return Expected{} }

// NoStream appends only if the stream has no events (never written, or
// deleted).
func NoStream() Expected { return Expected{kind: expectNoStream} }

// StreamExists appends only if the stream has at least one event.
func StreamExists() Expected { return Expected{kind: expectStreamExists} }

// Exact appends only if the stream's last event is at revision r (the
// first event of a stream is revision 0).
func Exact(r uint64) Expected { return Expected{kind: expectExact, revision: r} }

// After is the expectation of a writer that has read the stream up to
// its head: NoStream when exists is false, Exact(head) otherwise.
func After(head uint64, exists bool) Expected {
	if !exists {
		return NoStream()
	}
	return Exact(head)
}

// Revision returns the exact revision and true, or false when e is not
// Exact.
func (e Expected) Revision() (uint64, bool) { return e.revision, e.kind == expectExact }

func (e Expected) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectStreamExists:
		return "stream exists"
	case expectExact:
		return fmt.Sprintf("revision %d", e.revision)
	}
	return "any"
}

// setOn writes e into an AppendRequest's expected_revision oneof.
func (e Expected) setOn(r *esdv1.AppendRequest) {
	switch e.kind {
	case expectNoStream:
		r.ExpectedRevision = &esdv1.AppendRequest_NoStream{NoStream: &emptypb.Empty{}}
	case expectStreamExists:
		r.ExpectedRevision = &esdv1.AppendRequest_StreamExists{StreamExists: &emptypb.Empty{}}
	case expectExact:
		r.ExpectedRevision = &esdv1.AppendRequest_Exact{Exact: e.revision}
	default:
		r.ExpectedRevision = &esdv1.AppendRequest_Any{Any: &emptypb.Empty{}}
	}
}

// expectedFromProto reads the expectation a conflict detail echoes.
func expectedFromProto(p *esdv1.ExpectedRevision) Expected {
	switch k := p.GetKind().(type) {
	case *esdv1.ExpectedRevision_NoStream:
		return NoStream()
	case *esdv1.ExpectedRevision_StreamExists:
		return StreamExists()
	case *esdv1.ExpectedRevision_Exact:
		return Exact(k.Exact)
	}
	return Any()
}
