package server

import (
	"context"
	"math"
	"time"

	"github.com/esdhq/esd/internal/engine"
	eslog "github.com/esdhq/esd/internal/log"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// adminService implements esd.v1.AdminService.
type adminService struct {
	esdv1.UnimplementedAdminServiceServer
	eng     *engine.Engine
	cfg     Config
	started time.Time
}

func (a *adminService) GetServerInfo(ctx context.Context, _ *esdv1.GetServerInfoRequest) (*esdv1.GetServerInfoResponse, error) {
	st := a.eng.Stats()
	return &esdv1.GetServerInfoResponse{
		Version:      a.cfg.Version,
		Commit:       a.cfg.Commit,
		Uptime:       durationpb.New(time.Since(a.started)),
		Started:      timestamppb.New(a.started),
		DataDir:      a.cfg.DataDir,
		LastPosition: st.LastPosition,
		StreamCount:  st.Streams,
		EventCount:   st.Events,
		DiskBytes:    a.eng.DiskBytes(),
		Shards:       uint32(a.eng.Shards()),
		// Clients check their input against these before sending it.
		MaxEventBytes:   uint64(a.cfg.Limits.MaxEventBytes),
		MaxAppendBytes:  uint64(a.cfg.Limits.MaxAppendBytes),
		MaxAppendEvents: uint64(a.cfg.Limits.MaxAppendEvents),
	}, nil
}

// StartScavenge starts a scavenge; FAILED_PRECONDITION while one runs.
func (a *adminService) StartScavenge(ctx context.Context, req *esdv1.StartScavengeRequest) (*esdv1.StartScavengeResponse, error) {
	j, err := a.eng.StartScavenge(int(req.GetKeysPerSecond()))
	if err != nil {
		return nil, err
	}
	return &esdv1.StartScavengeResponse{Scavenge: scavengeProto(&j)}, nil
}

// GetScavenge describes the running or last scavenge.
func (a *adminService) GetScavenge(ctx context.Context, _ *esdv1.GetScavengeRequest) (*esdv1.GetScavengeResponse, error) {
	j, err := a.eng.Scavenge()
	if err != nil {
		return nil, err
	}
	return &esdv1.GetScavengeResponse{Scavenge: scavengeProto(&j)}, nil
}

// StopScavenge stops the running scavenge once its progress is stored.
func (a *adminService) StopScavenge(ctx context.Context, _ *esdv1.StopScavengeRequest) (*esdv1.StopScavengeResponse, error) {
	j, err := a.eng.StopScavenge(ctx)
	if err != nil {
		return nil, err
	}
	return &esdv1.StopScavengeResponse{Scavenge: scavengeProto(&j)}, nil
}

var scavengeStates = map[eslog.ScavengeState]esdv1.ScavengeState{
	eslog.ScavengeRunning: esdv1.ScavengeState_SCAVENGE_STATE_RUNNING,
	eslog.ScavengeDone:    esdv1.ScavengeState_SCAVENGE_STATE_DONE,
	eslog.ScavengeStopped: esdv1.ScavengeState_SCAVENGE_STATE_STOPPED,
	eslog.ScavengeFailed:  esdv1.ScavengeState_SCAVENGE_STATE_FAILED,
}

func scavengeProto(j *eslog.ScavengeJob) *esdv1.Scavenge {
	out := &esdv1.Scavenge{
		Id:               j.ID,
		State:            scavengeStates[j.State],
		Started:          timestamppb.New(time.Unix(0, j.Started)),
		StreamsDone:      j.StreamsDone,
		StreamsTotal:     j.StreamsTotal,
		StreamsTruncated: j.StreamsTruncated,
		IdsRemoved:       j.IDsRemoved,
		Progress:         j.Fraction(),
		EventsRemoved:    j.EventsRemoved,
		KeysRemoved:      j.KeysRemoved,
		BytesReclaimed:   j.BytesRemoved,
		DiskBytesBefore:  j.DiskBefore,
		DiskBytesAfter:   j.DiskAfter,
		KeysPerSecond:    uint32(min(j.KeysPerSecond, math.MaxUint32)), //nolint:gosec // bounded just before
		Error:            j.Error,
	}
	if j.Finished != 0 {
		out.Finished = timestamppb.New(time.Unix(0, j.Finished))
	}
	return out
}
