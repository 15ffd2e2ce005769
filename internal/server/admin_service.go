package server

import (
	"context"
	"time"

	"github.com/esdhq/esd/internal/engine"
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
