package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/group"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits of group settings.
const (
	maxGroupNameBytes = 128
	maxAckTimeout     = time.Hour
	maxMaxDeliveries  = 1000
)

// groupService implements esd.v1.ConsumerGroupService over group.Manager.
type groupService struct {
	esdv1.UnimplementedConsumerGroupServiceServer
	groups *group.Manager
	deny   func(auth.Permission) error // Server.deny: counts the refusal
	lmt    *limiter                    // nil: no subscription limits (tests of parts)
}

func (s *groupService) CreateGroup(_ context.Context, req *esdv1.CreateGroupRequest) (*esdv1.CreateGroupResponse, error) {
	settings, start, after, err := validateGroup(req.GetGroup(), true)
	if err != nil {
		return nil, err
	}
	info, err := s.groups.Create(settings, start, after)
	if err != nil {
		return nil, err
	}
	return &esdv1.CreateGroupResponse{Info: groupInfo(info)}, nil
}

func (s *groupService) UpdateGroup(_ context.Context, req *esdv1.UpdateGroupRequest) (*esdv1.UpdateGroupResponse, error) {
	settings, _, _, err := validateGroup(req.GetGroup(), false)
	if err != nil {
		return nil, err
	}
	info, err := s.groups.Update(settings)
	if err != nil {
		return nil, err
	}
	return &esdv1.UpdateGroupResponse{Info: groupInfo(info)}, nil
}

func (s *groupService) DeleteGroup(_ context.Context, req *esdv1.DeleteGroupRequest) (*esdv1.DeleteGroupResponse, error) {
	if err := validateGroupName("name", req.GetName()); err != nil {
		return nil, err
	}
	return &esdv1.DeleteGroupResponse{}, s.groups.Delete(req.GetName())
}

func (s *groupService) GetGroup(_ context.Context, req *esdv1.GetGroupRequest) (*esdv1.GetGroupResponse, error) {
	if err := validateGroupName("name", req.GetName()); err != nil {
		return nil, err
	}
	info, err := s.groups.Get(req.GetName())
	if err != nil {
		return nil, err
	}
	return &esdv1.GetGroupResponse{Info: groupInfo(info)}, nil
}

func (s *groupService) ListGroups(context.Context, *esdv1.ListGroupsRequest) (*esdv1.ListGroupsResponse, error) {
	infos, err := s.groups.List()
	if err != nil {
		return nil, err
	}
	resp := &esdv1.ListGroupsResponse{Groups: make([]*esdv1.GroupInfo, len(infos))}
	for i, info := range infos {
		resp.Groups[i] = groupInfo(info)
	}
	return resp, nil
}

func (s *groupService) ListParked(_ context.Context, req *esdv1.ListParkedRequest) (*esdv1.ListParkedResponse, error) {
	var v validator
	v.groupName("group", req.GetGroup())
	var after uint64
	if tok := req.GetPageToken(); tok != "" {
		p, err := strconv.ParseUint(tok, 10, 64)
		if err != nil {
			v.bad(reasonInvalidArgument, "page_token", "not a page token from ListParked")
		}
		after = p
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	parked, more, err := s.groups.ListParked(req.GetGroup(), after, size)
	if err != nil {
		return nil, err
	}
	resp := &esdv1.ListParkedResponse{Events: make([]*esdv1.ParkedEvent, len(parked))}
	for i, p := range parked {
		pe := &esdv1.ParkedEvent{DeliveryCount: uint32(p.DeliveryCount), Reason: p.Reason, ParkedAt: timestamppb.New(p.ParkedAt)}
		if p.Event != nil {
			pe.Event = recordedEvent(p.Event)
		} else { // deleted since it was parked
			pe.Event = &esdv1.RecordedEvent{Position: p.Position}
		}
		resp.Events[i] = pe
	}
	if more {
		resp.NextPageToken = strconv.FormatUint(parked[len(parked)-1].Position, 10)
	}
	return resp, nil
}

func (s *groupService) ReplayParked(_ context.Context, req *esdv1.ReplayParkedRequest) (*esdv1.ReplayParkedResponse, error) {
	if err := validateGroupName("group", req.GetGroup()); err != nil {
		return nil, err
	}
	n, err := s.groups.ReplayParked(req.GetGroup(), int(min(req.GetMaxCount(), uint64(group.MaxMaxInFlight))))
	if err != nil {
		return nil, err
	}
	return &esdv1.ReplayParkedResponse{Replayed: uint64(n)}, nil
}

// WaitForCheckpoint timeouts: unset or 0 means defaultWaitTimeout; longer
// than maxWaitTimeout means that, so that a call holds its connection's
// stream slot for a bounded time.
const (
	defaultWaitTimeout = 30 * time.Second
	maxWaitTimeout     = 5 * time.Minute
)

// WaitForCheckpoint answers once the group's checkpoint reaches the
// position, or with reached false once the timeout passes.
func (s *groupService) WaitForCheckpoint(ctx context.Context, req *esdv1.WaitForCheckpointRequest) (*esdv1.WaitForCheckpointResponse, error) {
	var v validator
	v.groupName("group", req.GetGroup())
	timeout := defaultWaitTimeout
	if d, ok := v.duration("timeout", req.GetTimeout(), func(d time.Duration) bool { return d >= 0 },
		"timeout is 0 (%v) or positive; above %v it is %v", defaultWaitTimeout, maxWaitTimeout, maxWaitTimeout); ok && d > 0 {
		timeout = min(d, maxWaitTimeout)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.mayWatch(ctx, req.GetGroup()); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cp, err := s.groups.WaitCheckpoint(wctx, req.GetGroup(), req.GetPosition())
	switch {
	case err == nil:
		return &esdv1.WaitForCheckpointResponse{Checkpoint: cp, Reached: true}, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		// The timeout, not the call's deadline: an answer, not an error,
		// so that the caller can tell "still being processed" from a failure.
		return &esdv1.WaitForCheckpointResponse{Checkpoint: cp}, nil
	default:
		return nil, err
	}
}

// mayWatch checks, with security on, that the caller may see a group's
// progress: it needs subscribe on every stream the group delivers, as a
// member does, since the checkpoint tells how far the group has read
// them. A caller with subscribe on nothing is refused before the group is
// looked up.
func (s *groupService) mayWatch(ctx context.Context, name string) error {
	who := principalFrom(ctx)
	if who == nil {
		return nil
	}
	if !who.Any(auth.Subscribe) {
		return s.deny(auth.Subscribe)
	}
	info, err := s.groups.Get(name)
	if err != nil {
		return err
	}
	st := info.Settings
	if !mayDeliver(who, auth.Subscribe, st.Target, st.TargetName, st.StreamPrefixes) {
		return s.deny(auth.Subscribe)
	}
	return nil
}

// Join runs one member: deliveries out, acks and nacks in.
func (s *groupService) Join(stream grpc.BidiStreamingServer[esdv1.JoinRequest, esdv1.JoinResponse]) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		// The client closed its side before joining: it left, which is no
		// error (CANCELLED, DEADLINE_EXCEEDED if it is gone as well).
		return stream.Context().Err()
	}
	if err != nil {
		return err
	}
	join := first.GetJoin()
	if join == nil {
		var v validator
		v.bad(reasonInvalidArgument, "join", "the first message of Join must be join")
		return v.err()
	}
	if err := validateGroupName("join.group", join.GetGroup()); err != nil {
		return err
	}
	// A member needs subscribe on everything the group delivers; others
	// may learn whether a group name exists (group names are not stream
	// data).
	if err := s.mayWatch(stream.Context(), join.GetGroup()); err != nil {
		return err
	}
	if s.lmt != nil {
		release, err := s.lmt.acquireSubscription(stream.Context())
		if err != nil {
			return err
		}
		defer release()
	}
	mem, err := s.groups.Join(join.GetGroup(), truncate(join.GetMember(), 128))
	if err != nil {
		return err
	}
	defer mem.Leave()
	if err := stream.Send(&esdv1.JoinResponse{Content: &esdv1.JoinResponse_Joined{
		Joined: &esdv1.Joined{MemberId: strconv.FormatUint(mem.ID, 10)}}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.memberRequests(stream, mem) }() // ends when the stream does
	for {
		select {
		case d := <-mem.Deliveries():
			if err := stream.Send(&esdv1.JoinResponse{Content: &esdv1.JoinResponse_Delivery{
				Delivery: &esdv1.Delivery{Event: recordedEvent(d.Event), DeliveryCount: uint32(d.Count)}}}); err != nil {
				return err
			}
			mem.Sent()
		case <-mem.Done():
			return mem.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil // the member closed its side: it leaves
			}
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// memberRequests reads a member's acks and nacks until its stream ends.
func (s *groupService) memberRequests(stream grpc.BidiStreamingServer[esdv1.JoinRequest, esdv1.JoinResponse], mem *group.Member) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		switch c := req.GetContent().(type) {
		case *esdv1.JoinRequest_Ack:
			ids, err := parseIDs("ack.event_ids", c.Ack.GetEventIds())
			if err != nil {
				return err
			}
			mem.Ack(ids)
		case *esdv1.JoinRequest_Nack:
			ids, err := parseIDs("nack.event_ids", c.Nack.GetEventIds())
			if err != nil {
				return err
			}
			action := group.NackRetry
			switch c.Nack.GetAction() {
			case esdv1.NackAction_NACK_ACTION_RETRY_LATER:
				action = group.NackRetryLater
			case esdv1.NackAction_NACK_ACTION_PARK:
				action = group.NackPark
			}
			mem.Nack(ids, action, truncate(c.Nack.GetReason(), 1024))
		default:
			var v validator
			v.bad(reasonInvalidArgument, "join", "join comes once, first")
			return v.err()
		}
	}
}

func parseIDs(field string, ids []string) ([][16]byte, error) {
	out := make([][16]byte, 0, len(ids))
	var v validator
	for i, s := range ids {
		id, err := parseID(s)
		if err != nil {
			v.bad(reasonInvalidArgument, fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		out = append(out, id)
	}
	return out, v.err()
}

func (v *validator) groupName(field, name string) {
	if name == "" || len(name) > maxGroupNameBytes || !printableUTF8(name) {
		v.bad(reasonInvalidArgument, field, "a group name is 1 to %d bytes of UTF-8 without control characters", maxGroupNameBytes)
	}
}

func validateGroupName(field, name string) error {
	var v validator
	v.groupName(field, name)
	return v.err()
}

// validateGroup converts a Group; creating, its start too.
func validateGroup(g *esdv1.Group, create bool) (group.Settings, subscription.StartKind, uint64, error) {
	var v validator
	if g == nil {
		v.bad(reasonInvalidArgument, "group", "group is required")
		return group.Settings{}, 0, 0, v.err()
	}
	v.groupName("group.name", g.GetName())
	s := group.Settings{Name: g.GetName(), MaxDeliveries: int(g.GetMaxDeliveries()), MaxInFlight: int(g.GetMaxInFlight())}
	// The target as a subscription has it: one validation for both.
	sub := &esdv1.SubscribeRequest{Filter: g.GetFilter()}
	switch t := g.GetTarget().(type) {
	case *esdv1.Group_Stream:
		sub.Target = &esdv1.SubscribeRequest_Stream{Stream: t.Stream}
	case *esdv1.Group_Category:
		sub.Target = &esdv1.SubscribeRequest_Category{Category: t.Category}
	case *esdv1.Group_All:
		sub.Target = &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}}
	}
	if r, err := validateSubscribe(sub); err != nil {
		var inv *invalidError
		if errors.As(err, &inv) {
			for _, fv := range inv.violations {
				v.bad(inv.reason, "group."+fv.Field, "%s", fv.Description)
			}
		}
	} else {
		s.Target, s.TargetName, s.StreamPrefixes, s.TypePrefixes = r.Target, r.Name, r.StreamPrefixes, r.TypePrefixes
	}
	s.AckTimeout, _ = v.duration("group.ack_timeout", g.GetAckTimeout(),
		func(d time.Duration) bool { return d == 0 || (d >= group.MinAckTimeout && d <= maxAckTimeout) },
		"ack_timeout is 0 (30s) or %v to %v", group.MinAckTimeout, maxAckTimeout)
	if s.MaxDeliveries > maxMaxDeliveries {
		v.bad(reasonInvalidArgument, "group.max_deliveries", "at most %d", maxMaxDeliveries)
	}
	if s.MaxInFlight > group.MaxMaxInFlight {
		v.bad(reasonInvalidArgument, "group.max_in_flight", "at most %d", group.MaxMaxInFlight)
	}
	switch g.GetStrategy() {
	case esdv1.GroupStrategy_GROUP_STRATEGY_UNSPECIFIED, esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN:
		s.Strategy = group.RoundRobin
	case esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM:
		s.Strategy = group.ByStream
	default:
		v.bad(reasonInvalidArgument, "group.strategy", "unknown strategy %d", g.GetStrategy())
	}
	start, after := subscription.FromStart, uint64(0)
	switch st := g.GetStart().(type) {
	case *esdv1.Group_FromEnd:
		start = subscription.FromEnd
	case *esdv1.Group_AfterPosition:
		start, after = subscription.AfterPosition, st.AfterPosition
	}
	if !create && g.GetStart() != nil {
		v.bad(reasonInvalidArgument, "group.start", "a group's start is set when it is created")
	}
	return s, start, after, v.err()
}

func groupInfo(info group.Info) *esdv1.GroupInfo {
	s := info.Settings
	g := &esdv1.Group{
		Name:          s.Name,
		AckTimeout:    durationpb.New(s.AckTimeout),
		MaxDeliveries: uint32(s.MaxDeliveries),
		MaxInFlight:   uint32(s.MaxInFlight),
		Strategy:      esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN,
	}
	if s.Strategy == group.ByStream {
		g.Strategy = esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM
	}
	switch s.Target {
	case subscription.TargetStream:
		g.Target = &esdv1.Group_Stream{Stream: s.TargetName}
	case subscription.TargetCategory:
		g.Target = &esdv1.Group_Category{Category: s.TargetName}
	default:
		g.Target = &esdv1.Group_All{All: &emptypb.Empty{}}
		if len(s.StreamPrefixes) > 0 || len(s.TypePrefixes) > 0 {
			g.Filter = &esdv1.Filter{StreamPrefixes: s.StreamPrefixes, EventTypePrefixes: s.TypePrefixes}
		}
	}
	return &esdv1.GroupInfo{
		Group:       g,
		Checkpoint:  info.Checkpoint,
		Members:     uint32(info.Members),
		InFlight:    uint64(info.InFlight),
		Parked:      uint64(info.Parked),
		Delivered:   info.Delivered,
		Redelivered: info.Redelivered,
		Acked:       info.Acked,
	}
}
