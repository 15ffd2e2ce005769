package server

import (
	"context"
	"strings"
	"time"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/lease"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxOwnerBytes bounds a lease's owner name: it is stored with the lease
// and sent in every STREAM_LEASED error.
const maxOwnerBytes = 128

// lockService implements esd.v1.LockService over the engine's leases.
type lockService struct {
	esdv1.UnimplementedLockServiceServer
	leases *lease.Manager
}

func (s *lockService) AcquireLease(ctx context.Context, req *esdv1.AcquireLeaseRequest) (*esdv1.AcquireLeaseResponse, error) {
	v := streamValidator(req.GetStream(), true)
	v.newName("stream", "stream name", req.GetStream())
	switch owner := req.GetOwner(); {
	case owner == "":
		v.bad(reasonInvalidArgument, "owner", "owner is required: a name for the holder, shown to writers the lease refuses")
	case len(owner) > maxOwnerBytes:
		v.bad(reasonInvalidArgument, "owner", "owner of %d bytes, at most %d", len(owner), maxOwnerBytes)
	case !printableUTF8(owner):
		v.bad(reasonInvalidArgument, "owner", "owner must be UTF-8 without control characters")
	}
	ttl := s.ttl(&v, req.GetTtl())
	wait, _ := v.duration("wait", req.GetWait(), func(d time.Duration) bool { return d >= 0 }, "wait must be a duration of 0 or more")
	if err := v.err(); err != nil {
		return nil, err
	}
	l, err := s.leases.Acquire(ctx, req.GetStream(), req.GetOwner(), ttl, wait)
	if err != nil {
		return nil, err
	}
	return &esdv1.AcquireLeaseResponse{Lease: leaseProto(l)}, nil
}

func (s *lockService) RenewLease(_ context.Context, req *esdv1.RenewLeaseRequest) (*esdv1.RenewLeaseResponse, error) {
	v := streamValidator(req.GetStream(), true)
	tokenRequired(&v, req.GetFencingToken())
	ttl := s.ttl(&v, req.GetTtl())
	if err := v.err(); err != nil {
		return nil, err
	}
	l, err := s.leases.Renew(req.GetStream(), req.GetFencingToken(), ttl)
	if err != nil {
		return nil, err
	}
	return &esdv1.RenewLeaseResponse{Lease: leaseProto(l)}, nil
}

func (s *lockService) ReleaseLease(_ context.Context, req *esdv1.ReleaseLeaseRequest) (*esdv1.ReleaseLeaseResponse, error) {
	v := streamValidator(req.GetStream(), true)
	tokenRequired(&v, req.GetFencingToken())
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.leases.Release(req.GetStream(), req.GetFencingToken()); err != nil {
		return nil, err
	}
	return &esdv1.ReleaseLeaseResponse{}, nil
}

func (s *lockService) GetLease(_ context.Context, req *esdv1.GetLeaseRequest) (*esdv1.GetLeaseResponse, error) {
	if err := validateStream(req.GetStream()); err != nil {
		return nil, err
	}
	resp := &esdv1.GetLeaseResponse{}
	if l, ok := s.leases.Get(req.GetStream()); ok {
		resp.Lease = leaseProto(l)
	}
	return resp, nil
}

// ListLeases answers, with security on, only the leases of streams the
// caller may read, as ListStreams does.
func (s *lockService) ListLeases(ctx context.Context, req *esdv1.ListLeasesRequest) (*esdv1.ListLeasesResponse, error) {
	if !printableUTF8(req.GetPrefix()) {
		var v validator
		v.bad(reasonInvalidArgument, "prefix", "prefix must be UTF-8 without control characters")
		return nil, v.err()
	}
	who := principalFrom(ctx)
	resp := &esdv1.ListLeasesResponse{}
	for _, l := range s.leases.List() {
		if strings.HasPrefix(l.Stream, req.GetPrefix()) && (who == nil || who.Allowed(auth.Read, l.Stream)) {
			resp.Leases = append(resp.Leases, leaseProto(l))
		}
	}
	return resp, nil
}

// ttl checks a lease's TTL against --max-lease-ttl.
func (s *lockService) ttl(v *validator, d *durationpb.Duration) time.Duration {
	if d == nil {
		v.bad(reasonInvalidArgument, "ttl", "ttl is required: more than 0 and at most %v (--max-lease-ttl)", s.leases.MaxTTL())
		return 0
	}
	maxTTL := s.leases.MaxTTL()
	ttl, _ := v.duration("ttl", d, func(ttl time.Duration) bool { return ttl > 0 && ttl <= maxTTL },
		"ttl %v: must be more than 0 and at most %v (--max-lease-ttl)", d.AsDuration(), maxTTL)
	return ttl
}

func tokenRequired(v *validator, token uint64) {
	if token == 0 {
		v.bad(reasonInvalidArgument, "fencing_token", "fencing_token is required: the token AcquireLease returned")
	}
}

func leaseProto(l lease.Lease) *esdv1.Lease {
	return &esdv1.Lease{Stream: l.Stream, Owner: l.Owner, FencingToken: l.Token, Expires: timestamppb.New(l.Expires)}
}
