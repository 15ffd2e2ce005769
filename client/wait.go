package client

import (
	"context"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// WaitForCheckpoint waits until the consumer group's checkpoint reaches
// position, that is until every event of its target up to there is
// acknowledged (or parked): a read model fed by the group then holds a
// write whose position the caller has (an AppendResponse's LastPosition).
// It returns the group's checkpoint and whether it reached position;
// false, with no error, when timeout (0: the server's 30 s; at most 5
// min) passed first, so that "still being processed" is not a failure.
//
// The call itself runs until the server's answer, past the client's
// timeout: ctx alone can cut it short. A group that does not exist, or
// is deleted during the wait, is a NOT_FOUND *Error.
func (c *Client) WaitForCheckpoint(ctx context.Context, group string, position uint64, timeout time.Duration) (checkpoint uint64, reached bool, err error) {
	req := &esdv1.WaitForCheckpointRequest{Group: group, Position: position}
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
	}
	// Waiting is idempotent: a retry after the server was unavailable
	// waits again.
	call := func(ctx context.Context) (*esdv1.WaitForCheckpointResponse, error) {
		return c.groups.WaitForCheckpoint(ctx, req)
	}
	if _, ok := ctx.Deadline(); !ok && c.opts.timeout > 0 {
		// The client's timeout would cut the wait short with
		// DEADLINE_EXCEEDED: bound the call by the server's bound on
		// the wait and a margin instead.
		wait := timeout
		if wait <= 0 {
			wait = 30 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, min(wait, 5*time.Minute)+c.opts.timeout)
		defer cancel()
	}
	resp, err := retry(ctx, c, call)
	if err != nil {
		return 0, false, err
	}
	return resp.GetCheckpoint(), resp.GetReached(), nil
}
