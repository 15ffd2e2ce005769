//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/uuid"
)

// TestGroupAtLeastOnceAcrossKill9: a consumer group on a category, two
// members acking, one member dropped mid-batch, then esd killed with -9
// and restarted on the same store while events keep coming. In the end
// every event of the category was delivered and acknowledged, and the
// group's durable checkpoint is the last position.
func TestGroupAtLeastOnceAcrossKill9(t *testing.T) {
	dir := t.TempDir()
	p := startESD(t, dir)
	mustEsctl(t, p.Addr, "group", "create", "billing", "--category", "order", "--ack-timeout", "1s")
	if out := mustEsctl(t, p.Addr, "group", "info", "billing", "-o", "json").Stdout; !strings.Contains(out, `"category":"order"`) &&
		!strings.Contains(out, `"category": "order"`) {
		t.Fatalf("group info: %s", out)
	}

	var mu sync.Mutex // guards acked
	acked := map[string]int{}
	appendOrders := func(c *client, from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			_, err := c.streams.Append(context.Background(), &esdv1.AppendRequest{
				Stream: fmt.Sprintf("order-%d", i%7),
				Events: []*esdv1.ProposedEvent{{Id: uuid.NewString(), Type: "OrderPlaced", Data: []byte(fmt.Sprint(i))}},
			})
			if err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		}
	}
	// member joins and acks until its context ends; with dropAfter > 0 it
	// stops acking after that many deliveries and leaves (a crash mid-batch).
	member := func(ctx context.Context, c *client, dropAfter int) {
		groups := esdv1.NewConsumerGroupServiceClient(c.conn)
		j, err := groups.Join(ctx)
		if err != nil {
			return
		}
		if j.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: "billing"}}}) != nil {
			return
		}
		n := 0
		for {
			m, err := j.Recv()
			if err != nil {
				return
			}
			d := m.GetDelivery()
			if d == nil {
				continue
			}
			n++
			if dropAfter > 0 && n > dropAfter {
				return // holds this one and whatever else was sent ahead, unacked
			}
			id := d.GetEvent().GetId()
			if j.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: []string{id}}}}) != nil {
				return
			}
			mu.Lock()
			acked[id]++
			mu.Unlock()
		}
	}

	c := dial(t, p.Addr)
	appendOrders(c, 0, 150)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, drop := range []int{0, 20} {
		wg.Add(1)
		go func() { defer wg.Done(); member(ctx, c, drop) }()
	}
	appendOrders(c, 150, 100)
	testutil.Eventually(t, 20*time.Second, "some acks before the kill", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > 100
	})
	p.Kill()
	cancel()
	wg.Wait()

	p = startESD(t, dir) // a new address: the members reconnect there
	c = dial(t, p.Addr)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); member(ctx, c, 0) }()
	}
	appendOrders(c, 250, 100)

	all, err := c.readAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range all {
		if strings.HasPrefix(e.GetStream(), "order-") {
			want = append(want, e.GetId())
		}
	}
	last := all[len(all)-1].GetPosition()
	groups := esdv1.NewConsumerGroupServiceClient(c.conn)
	testutil.Eventually(t, 30*time.Second, "the checkpoint at the last position", func() bool {
		info, err := groups.GetGroup(context.Background(), &esdv1.GetGroupRequest{Name: "billing"})
		return err == nil && info.GetInfo().GetCheckpoint() == last
	})
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	missing, again := 0, 0
	for _, id := range want {
		switch n := acked[id]; {
		case n == 0:
			missing++
		case n > 1:
			again++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d events never acknowledged", missing, len(want))
	}
	t.Logf("%d events, all acknowledged; %d more than once (at least once: redelivered after the kill)", len(want), again)

	// The checkpoint is durable: it survives a clean restart.
	p.Stop()
	p = startESD(t, dir)
	info, err := esdv1.NewConsumerGroupServiceClient(dial(t, p.Addr).conn).GetGroup(context.Background(), &esdv1.GetGroupRequest{Name: "billing"})
	if err != nil || info.GetInfo().GetCheckpoint() != last {
		t.Fatalf("after restart: checkpoint %d, want %d (%v)", info.GetInfo().GetCheckpoint(), last, err)
	}
	p.Stop()
}
