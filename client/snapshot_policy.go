package client

import (
	"context"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// SetSnapshotPolicy sets when esd advises snapshots of the streams of a
// category (the stream name before its first "-"): every so many events
// since the latest snapshot, or once the replay work of their loads
// passes a threshold (see SnapshotPolicy in the API). An Aggregate with
// snapshots configured saves one whenever esd advises it. Setting a
// policy is idempotent, so it is retried like a read.
func (c *Client) SetSnapshotPolicy(ctx context.Context, category string, p *esdv1.SnapshotPolicy) error {
	_, err := retry(ctx, c, func(ctx context.Context) (*esdv1.SetSnapshotPolicyResponse, error) {
		return c.snaps.SetSnapshotPolicy(ctx, &esdv1.SetSnapshotPolicyRequest{Category: category, Policy: p})
	})
	return err
}
