package client_test

import (
	"context"
	"testing"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func TestSnapshotsAndPolicies(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	appendN(t, c, "acct-1", 4)
	for _, rev := range []uint64{1, 3} {
		if _, err := c.SaveSnapshot(ctx, client.Snapshot{Stream: "acct-1", Revision: rev, Type: "Acct", SchemaVersion: 2, Data: []byte{byte(rev)}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.GetSnapshot(ctx, "acct-1", 2, 2)
	if err != nil || s.GetRevision() != 1 || string(s.GetData()) != "\x01" {
		t.Fatalf("GetSnapshot at most revision 2 = %v, %v; want the one of revision 1", s, err)
	}
	if _, err := c.GetSnapshot(ctx, "acct-1", 9, 0); client.ReasonOf(err) != client.ReasonSnapshotNotFound {
		t.Fatalf("GetSnapshot of another schema version: %v, want SNAPSHOT_NOT_FOUND", err)
	}
	list, err := c.ListSnapshots(ctx, "acct-1")
	if err != nil || len(list) != 2 || list[0].GetRevision() != 1 || list[1].GetRevision() != 3 {
		t.Fatalf("ListSnapshots = %v, %v; want revisions 1 and 3", list, err)
	}
	if n, err := c.DeleteSnapshots(ctx, "acct-1", 3); err != nil || n != 1 {
		t.Fatalf("DeleteSnapshots before 3 = %d, %v; want 1", n, err)
	}

	if err := c.SetSnapshotPolicy(ctx, "acct", &esdv1.SnapshotPolicy{Every: 2}); err != nil {
		t.Fatal(err)
	}
	p, isDefault, err := c.GetSnapshotPolicy(ctx, "acct")
	if err != nil || isDefault || p.GetEvery() != 2 {
		t.Fatalf("GetSnapshotPolicy = %v, %v, %v; want its own, every 2", p, isDefault, err)
	}
	res := appendN(t, c, "acct-1", 2)
	if !res[1].GetSnapshotAdvised() {
		t.Fatalf("two appends after the snapshot under every 2: %v, want a snapshot advised", res[1])
	}
	if err := c.DeleteSnapshotPolicy(ctx, "acct"); err != nil {
		t.Fatal(err)
	}
	if _, isDefault, err := c.GetSnapshotPolicy(ctx, "acct"); err != nil || !isDefault {
		t.Fatalf("after DeleteSnapshotPolicy: default %v, %v; want the default", isDefault, err)
	}
}
