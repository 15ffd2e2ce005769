package server

import (
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestGroupSmoke: two members share a category, ack everything, and the
// checkpoint reaches the last position.
func TestGroupSmoke(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	groups := esdv1.NewConsumerGroupServiceClient(ts.conn)
	ctx := testCtx(t)
	ts.fill(t, "order-1", 5, "Placed")
	_, err := groups.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: &esdv1.Group{
		Name: "g", Target: &esdv1.Group_Category{Category: "order"}, AckTimeout: durationpb.New(time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 100)
	for range 2 {
		j, err := groups.Join(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := j.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: "g"}}}); err != nil {
			t.Fatal(err)
		}
		if m, err := j.Recv(); err != nil || m.GetJoined() == nil {
			t.Fatalf("joined: %v %v", m, err)
		}
		go func() {
			for {
				m, err := j.Recv()
				if err != nil {
					return
				}
				d := m.GetDelivery()
				got <- d.GetEvent().GetId()
				_ = j.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: []string{d.GetEvent().GetId()}}}})
			}
		}()
	}
	ts.fill(t, "order-2", 5, "Placed")
	seen := map[string]bool{}
	for len(seen) < 10 {
		select {
		case id := <-got:
			seen[id] = true
		case <-ctx.Done():
			t.Fatalf("%d of 10 delivered", len(seen))
		}
	}
	last := ts.lastPosition(t)
	for {
		info, err := groups.GetGroup(ctx, &esdv1.GetGroupRequest{Name: "g"})
		if err != nil {
			t.Fatal(err)
		}
		if info.GetInfo().GetCheckpoint() == last {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("checkpoint %d, want %d", info.GetInfo().GetCheckpoint(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
