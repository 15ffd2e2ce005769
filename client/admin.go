package client

import (
	"context"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// StartScavenge starts a scavenge: the server removes from disk, in the
// background, the events that deletions and retention limits hide (the
// limits' cut becomes durable: raising a limit afterwards shows nothing
// older), throttled to keysPerSecond
// (0: the server's default). One runs at a time: another start fails with
// FAILED_PRECONDITION/SCAVENGE_RUNNING. Not retried, as a second start is
// refused.
func (c *Client) StartScavenge(ctx context.Context, keysPerSecond uint32) (*esdv1.Scavenge, error) {
	ctx, cancel := c.callCtx(ctx)
	defer cancel()
	resp, err := c.admin.StartScavenge(ctx, &esdv1.StartScavengeRequest{KeysPerSecond: keysPerSecond})
	return resp.GetScavenge(), asError(err)
}

// Scavenge describes the running scavenge, or the last one (NOT_FOUND when
// none ever ran on the store).
func (c *Client) Scavenge(ctx context.Context) (*esdv1.Scavenge, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.GetScavengeResponse, error) {
		return c.admin.GetScavenge(ctx, &esdv1.GetScavengeRequest{})
	})
	return resp.GetScavenge(), err
}

// StopScavenge stops the running scavenge once its progress is stored and
// returns it; with none running, it returns the last one.
func (c *Client) StopScavenge(ctx context.Context) (*esdv1.Scavenge, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.StopScavengeResponse, error) {
		return c.admin.StopScavenge(ctx, &esdv1.StopScavengeRequest{})
	})
	return resp.GetScavenge(), err
}
