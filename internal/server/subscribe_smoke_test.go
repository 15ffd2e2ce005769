package server

import (
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestSubscribeSmoke: history, caught_up, then live events, for each
// target.
func TestSubscribeSmoke(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	ts.fill(t, "order-1", 3, "Placed")
	ts.fill(t, "other-1", 2, "Noise")
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		req  *esdv1.SubscribeRequest
		want int // history events
	}{
		{"stream", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Stream{Stream: "order-1"}}, 3},
		{"category", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_Category{Category: "order"}}, 4}, // + the live event of the subtest before
		{"all", &esdv1.SubscribeRequest{Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}}}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := ts.streams.Subscribe(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				m, err := sub.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.GetCaughtUp() != nil {
					break
				}
				n += len(m.GetEvents().GetEvents())
			}
			if n != tc.want {
				t.Fatalf("%d history events, want %d", n, tc.want)
			}
			ts.fill(t, "order-1", 1, "Placed")
			m, err := sub.Recv()
			if err != nil {
				t.Fatal(err)
			}
			evs := m.GetEvents().GetEvents()
			if len(evs) != 1 || evs[0].Stream != "order-1" {
				t.Fatalf("live: %v", m)
			}
		})
	}
}
