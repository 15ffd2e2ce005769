package client

import (
	"context"
	"iter"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// CreateGroup creates a consumer group with the settings g (a name, a
// target, and optionally a filter, start, strategy, ack timeout, max
// deliveries and max in flight). An existing one is an ALREADY_EXISTS
// *Error with reason GROUP_EXISTS. It is not retried: a create that was
// done and retried would fail with GROUP_EXISTS.
func (c *Client) CreateGroup(ctx context.Context, g *esdv1.Group) (*esdv1.GroupInfo, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.groups.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: g})
	return resp.GetInfo(), asError(err)
}

// UpdateGroup changes a group's ack timeout, max deliveries and max in
// flight; g carries the group's name, target, filter and strategy as
// they are, and no start. A 0 setting means its default.
func (c *Client) UpdateGroup(ctx context.Context, g *esdv1.Group) (*esdv1.GroupInfo, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.UpdateGroupResponse, error) {
		return c.groups.UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: g})
	})
	return resp.GetInfo(), err
}

// DeleteGroup deletes a group with its checkpoint and parked events; its
// members' RunMember return a GROUP_NOT_FOUND *Error. It is not retried:
// a delete that was done and retried would fail with GROUP_NOT_FOUND.
func (c *Client) DeleteGroup(ctx context.Context, name string) error {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	_, err := c.groups.DeleteGroup(ctx, &esdv1.DeleteGroupRequest{Name: name})
	return asError(err)
}

// GetGroup describes a group and its progress (checkpoint, members, in
// flight, parked, delivered and acked counts).
func (c *Client) GetGroup(ctx context.Context, name string) (*esdv1.GroupInfo, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.GetGroupResponse, error) {
		return c.groups.GetGroup(ctx, &esdv1.GetGroupRequest{Name: name})
	})
	return resp.GetInfo(), err
}

// ListGroups describes every group, by name.
func (c *Client) ListGroups(ctx context.Context) ([]*esdv1.GroupInfo, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.ListGroupsResponse, error) {
		return c.groups.ListGroups(ctx, &esdv1.ListGroupsRequest{})
	})
	return resp.GetGroups(), err
}

// ListParked returns a group's parked events in position order, fetching
// pages of pageSize (0: 100, at most 1000) as the loop goes on; a failure
// is yielded once, last.
func (c *Client) ListParked(ctx context.Context, group string, pageSize uint32) iter.Seq2[*esdv1.ParkedEvent, error] {
	return pages(ctx, c, func(ctx context.Context, token string) ([]*esdv1.ParkedEvent, string, error) {
		resp, err := c.groups.ListParked(ctx, &esdv1.ListParkedRequest{Group: group, PageSize: pageSize, PageToken: token})
		return resp.GetEvents(), resp.GetNextPageToken(), err
	})
}

// ReplayParked hands up to maxCount (0: all) of a group's parked events,
// oldest first, back to its members, and returns how many it took. It is
// not retried: a replay retried after it was done would take more.
func (c *Client) ReplayParked(ctx context.Context, group string, maxCount uint64) (uint64, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.groups.ReplayParked(ctx, &esdv1.ReplayParkedRequest{Group: group, MaxCount: maxCount})
	return resp.GetReplayed(), asError(err)
}

// WaitForCheckpoint waits until the group's checkpoint reaches position
// (e.g. an append's LastPosition: every event of the group's target up
// to it is acknowledged or parked), so that a read model fed by the group
// shows the caller's own write. It returns the checkpoint and whether it
// reached position; reached is false, with no error, when timeout (0: the
// server's 30 s; at most 5 min) passed first. A group without members
// does not move.
func (c *Client) WaitForCheckpoint(ctx context.Context, group string, position uint64, timeout time.Duration) (checkpoint uint64, reached bool, err error) {
	req := &esdv1.WaitForCheckpointRequest{Group: group, Position: position}
	wait := 30 * time.Second
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
		wait = min(timeout, 5*time.Minute)
	}
	if _, ok := ctx.Deadline(); !ok {
		// Past the client's call timeout: the server's own ends the wait
		// with an answer, and this one only a server that never answers.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait+5*time.Second)
		defer cancel()
	}
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.WaitForCheckpointResponse, error) {
		return c.groups.WaitForCheckpoint(ctx, req)
	})
	return resp.GetCheckpoint(), resp.GetReached(), err
}
