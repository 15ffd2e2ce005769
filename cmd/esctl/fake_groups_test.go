package main

import (
	"context"
	"errors"
	"io"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// fakeGroups is an in-memory ConsumerGroupService. It records what esctl
// sends (groups created and updated, acks, nacks, parked-list pages,
// replays); Join delivers the events of the fake's log that the group
// follows and that are not acked or parked, then what nacks with retry
// ask for again, and ends when the member closes its side.
type fakeGroups struct {
	esdv1.UnimplementedConsumerGroupServiceServer
	log *fakeServer // the events Join delivers

	mu          sync.Mutex // guards every field below
	groups      map[string]*fakeGroup
	creates     []*esdv1.Group
	updates     []*esdv1.Group
	joins       []*esdv1.JoinGroup
	acks        []string
	nacks       []*esdv1.Nack
	parkedReqs  []*esdv1.ListParkedRequest
	replays     []*esdv1.ReplayParkedRequest
	parkedPage  int  // ListParked's default page size
	hangOnLeave bool // Join does not end when the member closes its side
}

type fakeGroup struct {
	info   *esdv1.GroupInfo
	done   map[string]bool   // acked or parked, by event id
	counts map[string]uint32 // deliveries so far, by event id
	parked []*esdv1.ParkedEvent
}

func newFakeGroups(log *fakeServer) *fakeGroups {
	return &fakeGroups{log: log, groups: make(map[string]*fakeGroup), parkedPage: 100}
}

func groupNotFound(name string) error {
	return withReason(codes.NotFound, "group "+strconv.Quote(name)+" not found", "GROUP_NOT_FOUND", "")
}

// stored is g as the server keeps and returns it: defaults filled in, the
// start left out.
func stored(g *esdv1.Group) *esdv1.Group {
	g = proto.CloneOf(g)
	g.Start = nil
	if g.GetAckTimeout().AsDuration() == 0 {
		g.AckTimeout = durationpb.New(30 * time.Second)
	}
	if g.GetMaxDeliveries() == 0 {
		g.MaxDeliveries = 10
	}
	if g.GetMaxInFlight() == 0 {
		g.MaxInFlight = 1000
	}
	if g.GetStrategy() == esdv1.GroupStrategy_GROUP_STRATEGY_UNSPECIFIED {
		g.Strategy = esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN
	}
	return g
}

// asSubscription is the group's target as a subscription has it.
func asSubscription(g *esdv1.Group) *esdv1.SubscribeRequest {
	req := &esdv1.SubscribeRequest{Filter: g.GetFilter()}
	switch t := g.GetTarget().(type) {
	case *esdv1.Group_Stream:
		req.Target = &esdv1.SubscribeRequest_Stream{Stream: t.Stream}
	case *esdv1.Group_Category:
		req.Target = &esdv1.SubscribeRequest_Category{Category: t.Category}
	case *esdv1.Group_All:
		req.Target = &esdv1.SubscribeRequest_All{All: t.All}
	}
	return req
}

func (f *fakeGroups) CreateGroup(_ context.Context, req *esdv1.CreateGroupRequest) (*esdv1.CreateGroupResponse, error) {
	g := req.GetGroup()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, g)
	if g.GetName() == "" {
		return nil, invalid("", "group.name is required")
	}
	if _, err := subscriptionMatch(asSubscription(g)); err != nil {
		return nil, err
	}
	if f.groups[g.GetName()] != nil {
		return nil, withReason(codes.AlreadyExists, "group exists", "GROUP_EXISTS", "")
	}
	fg := &fakeGroup{info: &esdv1.GroupInfo{Group: stored(g)}, done: map[string]bool{}, counts: map[string]uint32{}}
	f.groups[g.GetName()] = fg
	return &esdv1.CreateGroupResponse{Info: proto.CloneOf(fg.info)}, nil
}

func (f *fakeGroups) UpdateGroup(_ context.Context, req *esdv1.UpdateGroupRequest) (*esdv1.UpdateGroupResponse, error) {
	g := req.GetGroup()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, g)
	fg := f.groups[g.GetName()]
	switch {
	case fg == nil:
		return nil, groupNotFound(g.GetName())
	case g.GetStart() != nil:
		return nil, invalid("", "a group's start is set when it is created")
	case !proto.Equal(asSubscription(g), asSubscription(fg.info.GetGroup())):
		return nil, invalid("", "a group's target is set when it is created")
	}
	fg.info.Group = stored(g)
	return &esdv1.UpdateGroupResponse{Info: proto.CloneOf(fg.info)}, nil
}

func (f *fakeGroups) DeleteGroup(_ context.Context, req *esdv1.DeleteGroupRequest) (*esdv1.DeleteGroupResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.groups[req.GetName()] == nil {
		return nil, groupNotFound(req.GetName())
	}
	delete(f.groups, req.GetName())
	return &esdv1.DeleteGroupResponse{}, nil
}

func (f *fakeGroups) GetGroup(_ context.Context, req *esdv1.GetGroupRequest) (*esdv1.GetGroupResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fg := f.groups[req.GetName()]
	if fg == nil {
		return nil, groupNotFound(req.GetName())
	}
	return &esdv1.GetGroupResponse{Info: proto.CloneOf(fg.info)}, nil
}

func (f *fakeGroups) ListGroups(context.Context, *esdv1.ListGroupsRequest) (*esdv1.ListGroupsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &esdv1.ListGroupsResponse{}
	for _, fg := range f.groups {
		resp.Groups = append(resp.Groups, proto.CloneOf(fg.info))
	}
	sort.Slice(resp.Groups, func(i, j int) bool {
		return resp.Groups[i].GetGroup().GetName() < resp.Groups[j].GetGroup().GetName()
	})
	return resp, nil
}

// ListParked pages by position; the page token is the last position sent.
func (f *fakeGroups) ListParked(_ context.Context, req *esdv1.ListParkedRequest) (*esdv1.ListParkedResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.parkedReqs = append(f.parkedReqs, req)
	fg := f.groups[req.GetGroup()]
	if fg == nil {
		return nil, groupNotFound(req.GetGroup())
	}
	var after uint64
	if tok := req.GetPageToken(); tok != "" {
		p, err := strconv.ParseUint(tok, 10, 64)
		if err != nil {
			return nil, invalid("", "bad page token")
		}
		after = p
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = f.parkedPage
	}
	resp := &esdv1.ListParkedResponse{}
	for _, p := range fg.parked {
		if p.GetEvent().GetPosition() <= after {
			continue
		}
		if len(resp.Events) == size {
			resp.NextPageToken = strconv.FormatUint(resp.Events[size-1].GetEvent().GetPosition(), 10)
			break
		}
		resp.Events = append(resp.Events, p)
	}
	return resp, nil
}

// ReplayParked takes events off the parked list: the next Join delivers
// them again, counting from 1.
func (f *fakeGroups) ReplayParked(_ context.Context, req *esdv1.ReplayParkedRequest) (*esdv1.ReplayParkedResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replays = append(f.replays, req)
	fg := f.groups[req.GetGroup()]
	if fg == nil {
		return nil, groupNotFound(req.GetGroup())
	}
	n := len(fg.parked)
	if m := req.GetMaxCount(); m > 0 && m < uint64(n) {
		n = int(m)
	}
	for _, p := range fg.parked[:n] {
		delete(fg.done, p.GetEvent().GetId())
		delete(fg.counts, p.GetEvent().GetId())
	}
	fg.parked = fg.parked[n:]
	fg.info.Parked = uint64(len(fg.parked))
	return &esdv1.ReplayParkedResponse{Replayed: uint64(n)}, nil
}

func (f *fakeGroups) Join(ss grpc.BidiStreamingServer[esdv1.JoinRequest, esdv1.JoinResponse]) error {
	first, err := ss.Recv()
	if err != nil {
		return err
	}
	join := first.GetJoin()
	if join == nil {
		return invalid("", "the first message of Join must be join")
	}
	pending, err := f.join(join)
	if err != nil {
		return err
	}
	defer f.leave(join.GetGroup())
	if err := ss.Send(&esdv1.JoinResponse{Content: &esdv1.JoinResponse_Joined{Joined: &esdv1.Joined{MemberId: "7"}}}); err != nil {
		return err
	}
	for {
		for _, ev := range pending {
			if err := ss.Send(&esdv1.JoinResponse{Content: &esdv1.JoinResponse_Delivery{Delivery: f.deliver(join.GetGroup(), ev)}}); err != nil {
				return err
			}
		}
		req, err := ss.Recv()
		switch {
		case errors.Is(err, io.EOF) && f.hangs():
			<-ss.Context().Done()
			return ss.Context().Err()
		case errors.Is(err, io.EOF):
			return nil // the member left
		case err != nil:
			return err
		}
		if pending, err = f.answer(join.GetGroup(), req); err != nil {
			return err
		}
	}
}

// join makes a member of the group and returns the events to deliver.
func (f *fakeGroups) join(join *esdv1.JoinGroup) ([]*esdv1.RecordedEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joins = append(f.joins, join)
	fg := f.groups[join.GetGroup()]
	if fg == nil {
		return nil, groupNotFound(join.GetGroup())
	}
	match, err := subscriptionMatch(asSubscription(fg.info.GetGroup()))
	if err != nil {
		return nil, err
	}
	fg.info.Members++
	var evs []*esdv1.RecordedEvent
	f.log.mu.Lock()
	defer f.log.mu.Unlock()
	for _, ev := range f.log.log {
		if ev != nil && match(ev) && !fg.done[ev.GetId()] {
			evs = append(evs, ev)
		}
	}
	return evs, nil
}

func (f *fakeGroups) leave(group string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fg := f.groups[group]; fg != nil {
		fg.info.Members--
	}
}

func (f *fakeGroups) hangs() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hangOnLeave
}

// deliver counts a delivery of ev.
func (f *fakeGroups) deliver(group string, ev *esdv1.RecordedEvent) *esdv1.Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := &esdv1.Delivery{Event: ev, DeliveryCount: 1}
	if fg := f.groups[group]; fg != nil {
		fg.counts[ev.GetId()]++
		d.DeliveryCount = fg.counts[ev.GetId()]
		fg.info.Delivered++
		if d.DeliveryCount > 1 {
			fg.info.Redelivered++
		}
	}
	return d
}

// answer records an ack or a nack and returns what to deliver again.
func (f *fakeGroups) answer(group string, req *esdv1.JoinRequest) ([]*esdv1.RecordedEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fg := f.groups[group]
	if fg == nil {
		return nil, groupNotFound(group)
	}
	switch c := req.GetContent().(type) {
	case *esdv1.JoinRequest_Ack:
		for _, id := range c.Ack.GetEventIds() {
			f.acks = append(f.acks, id)
			if ev := f.event(id); ev != nil && !fg.done[id] {
				fg.done[id] = true
				fg.info.Acked++
				fg.info.Checkpoint = max(fg.info.Checkpoint, ev.GetPosition())
			}
		}
	case *esdv1.JoinRequest_Nack:
		f.nacks = append(f.nacks, c.Nack)
		var again []*esdv1.RecordedEvent
		for _, id := range c.Nack.GetEventIds() {
			ev := f.event(id)
			switch {
			case ev == nil || fg.done[id]:
			case c.Nack.GetAction() == esdv1.NackAction_NACK_ACTION_PARK:
				fg.done[id] = true
				fg.parked = append(fg.parked, &esdv1.ParkedEvent{Event: ev, DeliveryCount: fg.counts[id],
					Reason: c.Nack.GetReason(), ParkedAt: timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))})
				slices.SortFunc(fg.parked, func(a, b *esdv1.ParkedEvent) int {
					return int(a.GetEvent().GetPosition()) - int(b.GetEvent().GetPosition())
				})
				fg.info.Parked = uint64(len(fg.parked))
			case c.Nack.GetAction() != esdv1.NackAction_NACK_ACTION_RETRY_LATER:
				again = append(again, ev) // retry: at once (the fake has no timers for retry-later)
			}
		}
		return again, nil
	default:
		return nil, invalid("", "join comes once, first")
	}
	return nil, nil
}

// event finds an event of the log by id; call with f.mu held.
func (f *fakeGroups) event(id string) *esdv1.RecordedEvent {
	f.log.mu.Lock()
	defer f.log.mu.Unlock()
	for _, ev := range f.log.log {
		if ev != nil && ev.GetId() == id {
			return ev
		}
	}
	return nil
}

// sent returns copies of what esctl sent.
func (f *fakeGroups) sent() (creates, updates []*esdv1.Group, acks []string, nacks []*esdv1.Nack) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.creates), slices.Clone(f.updates), slices.Clone(f.acks), slices.Clone(f.nacks)
}
