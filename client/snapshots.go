package client

import (
	"context"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// GetSnapshot returns the latest snapshot of stream of schemaVersion at
// or below maxRevision (0: no bound). None is a NOT_FOUND *Error with
// reason SNAPSHOT_NOT_FOUND.
func (c *Client) GetSnapshot(ctx context.Context, stream string, schemaVersion uint32, maxRevision uint64) (*esdv1.Snapshot, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.GetSnapshotResponse, error) {
		return c.snaps.GetSnapshot(ctx, &esdv1.GetSnapshotRequest{Stream: stream, SchemaVersion: schemaVersion, MaxRevision: maxRevision})
	})
	return resp.GetSnapshot(), err
}

// ListSnapshots describes the snapshots of stream (without their data),
// in revision order.
func (c *Client) ListSnapshots(ctx context.Context, stream string) ([]*esdv1.SnapshotInfo, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.ListSnapshotsResponse, error) {
		return c.snaps.ListSnapshots(ctx, &esdv1.ListSnapshotsRequest{Stream: stream})
	})
	return resp.GetSnapshots(), err
}

// DeleteSnapshots deletes the snapshots of stream at revisions below
// beforeRevision (0: all of them) and returns how many it deleted. It is
// retried like a read, as deleting twice deletes nothing more; a retry
// after a lost answer counts 0.
func (c *Client) DeleteSnapshots(ctx context.Context, stream string, beforeRevision uint64) (uint32, error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.DeleteSnapshotsResponse, error) {
		return c.snaps.DeleteSnapshots(ctx, &esdv1.DeleteSnapshotsRequest{Stream: stream, BeforeRevision: beforeRevision})
	})
	return resp.GetDeleted(), err
}

// SetSnapshotPolicy sets when the server advises a snapshot of the
// streams of category (see AppendResponse.SnapshotAdvised and
// Loaded.SnapshotAdvised).
func (c *Client) SetSnapshotPolicy(ctx context.Context, category string, p *esdv1.SnapshotPolicy) error {
	_, err := retry(ctx, c, func(ctx context.Context) (*esdv1.SetSnapshotPolicyResponse, error) {
		return c.snaps.SetSnapshotPolicy(ctx, &esdv1.SetSnapshotPolicyRequest{Category: category, Policy: p})
	})
	return err
}

// GetSnapshotPolicy returns the policy that applies to category, and
// whether it is the server's default (the category has none of its own).
func (c *Client) GetSnapshotPolicy(ctx context.Context, category string) (policy *esdv1.SnapshotPolicy, isDefault bool, err error) {
	resp, err := retry(ctx, c, func(ctx context.Context) (*esdv1.GetSnapshotPolicyResponse, error) {
		return c.snaps.GetSnapshotPolicy(ctx, &esdv1.GetSnapshotPolicyRequest{Category: category})
	})
	return resp.GetPolicy(), resp.GetIsDefault(), err
}

// DeleteSnapshotPolicy removes the policy of category: the server's
// default applies again. Removing none is no error.
func (c *Client) DeleteSnapshotPolicy(ctx context.Context, category string) error {
	_, err := retry(ctx, c, func(ctx context.Context) (*esdv1.DeleteSnapshotPolicyResponse, error) {
		return c.snaps.DeleteSnapshotPolicy(ctx, &esdv1.DeleteSnapshotPolicyRequest{Category: category})
	})
	return err
}
