package server

import (
	"context"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fieldLoadEvents is LoadResponse.events (an EventBatch), for the wire
// encoding of a load's events (wire.go).
const fieldLoadEvents protowire.Number = 2

// snapshotService implements esd.v1.SnapshotService over the engine's
// snapshots.
type snapshotService struct {
	esdv1.UnimplementedSnapshotServiceServer
	eng *engine.Engine
	lim Limits
	met *readMetrics
}

func (s *snapshotService) SaveSnapshot(ctx context.Context, req *esdv1.SaveSnapshotRequest) (*esdv1.SaveSnapshotResponse, error) {
	v := streamValidator(req.GetStream(), true)
	v.typeName("type", "type", req.GetType())
	if n := len(req.GetData()); n > s.lim.MaxEventBytes {
		v.bad(reasonSnapshotTooLarge, "data", "snapshot data of %d bytes, at most %d", n, s.lim.MaxEventBytes)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	res, err := s.eng.Snapshots().Save(ctx, snapshot.Snapshot{
		Stream: req.GetStream(), Revision: req.GetRevision(), Type: req.GetType(),
		SchemaVersion: req.GetSchemaVersion(), Data: req.GetData(),
	})
	if err != nil {
		return nil, err
	}
	return &esdv1.SaveSnapshotResponse{Saved: res.Saved, Pruned: uint32(res.Pruned)}, nil
}

func (s *snapshotService) GetSnapshot(ctx context.Context, req *esdv1.GetSnapshotRequest) (*esdv1.GetSnapshotResponse, error) {
	if err := validateStream(req.GetStream()); err != nil {
		return nil, err
	}
	sn, err := s.eng.Snapshots().Get(ctx, req.GetStream(), req.GetMaxRevision(), req.GetSchemaVersion())
	if err != nil {
		return nil, err
	}
	return &esdv1.GetSnapshotResponse{Snapshot: snapshotProto(sn)}, nil
}

func (s *snapshotService) ListSnapshots(ctx context.Context, req *esdv1.ListSnapshotsRequest) (*esdv1.ListSnapshotsResponse, error) {
	if err := validateStream(req.GetStream()); err != nil {
		return nil, err
	}
	infos, err := s.eng.Snapshots().List(ctx, req.GetStream())
	if err != nil {
		return nil, err
	}
	resp := &esdv1.ListSnapshotsResponse{Snapshots: make([]*esdv1.SnapshotInfo, len(infos))}
	for i, in := range infos {
		resp.Snapshots[i] = &esdv1.SnapshotInfo{
			Stream: in.Stream, Revision: in.Revision, Type: in.Type, SchemaVersion: in.SchemaVersion,
			Size: in.Size, Created: timestamppb.New(time.Unix(0, in.Created)), Usable: in.Usable,
		}
	}
	return resp, nil
}

func (s *snapshotService) DeleteSnapshots(ctx context.Context, req *esdv1.DeleteSnapshotsRequest) (*esdv1.DeleteSnapshotsResponse, error) {
	if err := validateStream(req.GetStream()); err != nil {
		return nil, err
	}
	n, err := s.eng.Snapshots().Delete(ctx, req.GetStream(), req.GetBeforeRevision())
	if err != nil {
		return nil, err
	}
	return &esdv1.DeleteSnapshotsResponse{Deleted: uint32(n)}, nil
}

// Load sends the snapshot as a message of its own, the events encoded
// straight from the store in LoadResponse.events chunks (as ReadStream's),
// then end.
func (s *snapshotService) Load(req *esdv1.LoadRequest, stream grpc.ServerStreamingServer[esdv1.LoadResponse]) error {
	if err := validateStream(req.GetStream()); err != nil {
		return err
	}
	c := wireChunk{wrap: fieldLoadEvents}
	send := func() error {
		s.met.events.WithLabelValues("Load").Add(float64(c.events))
		return stream.SendMsg(c.message(0))
	}
	res, err := s.eng.Load(stream.Context(), req.GetStream(), req.GetSchemaVersion(),
		func(sn *snapshot.Snapshot) error {
			return stream.Send(&esdv1.LoadResponse{Content: &esdv1.LoadResponse_Snapshot{Snapshot: snapshotProto(sn)}})
		},
		func(e *eslog.EventView) error {
			if c.add(e) {
				return send()
			}
			return nil
		})
	if err == nil && c.events > 0 {
		err = send()
	}
	if err != nil {
		return err
	}
	return stream.Send(&esdv1.LoadResponse{Content: &esdv1.LoadResponse_End{End: &esdv1.LoadEnd{
		Head:                res.Head,
		EventsSinceSnapshot: res.Advice.EventsSince,
		SnapshotAdvised:     res.Advice.Advised,
	}}})
}

func (s *snapshotService) SetSnapshotPolicy(_ context.Context, req *esdv1.SetSnapshotPolicyRequest) (*esdv1.SetSnapshotPolicyResponse, error) {
	if err := validateCategory(req.GetCategory()); err != nil {
		return nil, err
	}
	p := req.GetPolicy()
	err := s.eng.Snapshots().SetPolicy(req.GetCategory(), snapshot.Policy{Every: p.GetEvery(), ReplayThreshold: p.GetReplayThreshold()})
	if err != nil {
		return nil, err
	}
	return &esdv1.SetSnapshotPolicyResponse{}, nil
}

func (s *snapshotService) GetSnapshotPolicy(_ context.Context, req *esdv1.GetSnapshotPolicyRequest) (*esdv1.GetSnapshotPolicyResponse, error) {
	if err := validateCategory(req.GetCategory()); err != nil {
		return nil, err
	}
	p, isDefault := s.eng.Snapshots().Policy(req.GetCategory())
	return &esdv1.GetSnapshotPolicyResponse{
		Policy:    &esdv1.SnapshotPolicy{Every: p.Every, ReplayThreshold: p.ReplayThreshold},
		IsDefault: isDefault,
	}, nil
}

func (s *snapshotService) DeleteSnapshotPolicy(_ context.Context, req *esdv1.DeleteSnapshotPolicyRequest) (*esdv1.DeleteSnapshotPolicyResponse, error) {
	if err := validateCategory(req.GetCategory()); err != nil {
		return nil, err
	}
	if err := s.eng.Snapshots().DeletePolicy(req.GetCategory()); err != nil {
		return nil, err
	}
	return &esdv1.DeleteSnapshotPolicyResponse{}, nil
}

func snapshotProto(sn *snapshot.Snapshot) *esdv1.Snapshot {
	return &esdv1.Snapshot{
		Stream: sn.Stream, Revision: sn.Revision, Type: sn.Type, SchemaVersion: sn.SchemaVersion,
		Data: sn.Data, Created: timestamppb.New(time.Unix(0, sn.Created)),
	}
}

// validateStream checks the stream of a read, such as a snapshot read or
// delete (system streams are valid names: they just have no snapshots).
func validateStream(name string) error {
	v := streamValidator(name, false)
	return v.err()
}

// validateCategory checks a category name, as Subscribe does.
func validateCategory(c string) error {
	var v validator
	v.category("category", c, "")
	return v.err()
}
