package client_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestWaitForCheckpoint: a wait for an append's position answers reached
// once the group's member has handled it; one for a position no member
// reaches answers not reached at its timeout, without an error; a group
// that does not exist is NOT_FOUND.
func TestWaitForCheckpoint(t *testing.T) {
	c, _ := dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	createGroup(t, c, "waiters", "parcel", esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN)
	var handled atomic.Uint64 // the last position handled
	done := runMember(ctx, c, "waiters", func(_ context.Context, ev *esdv1.RecordedEvent) error {
		time.Sleep(20 * time.Millisecond) // slower than the append: the wait must wait
		handled.Store(ev.GetPosition())
		return nil
	})

	var last uint64
	for i := range 5 {
		resp, err := c.Append(ctx, "parcel-1", client.Any(), client.JSONEvent("Sent", i))
		if err != nil {
			t.Fatal(err)
		}
		last = resp.GetLastPosition()
	}
	cp, reached, err := c.WaitForCheckpoint(ctx, "waiters", last, 10*time.Second)
	if err != nil || !reached || cp < last {
		t.Fatalf("WaitForCheckpoint(%d) = %d, %v, %v; want reached", last, cp, reached, err)
	}
	if h := handled.Load(); h < last {
		t.Fatalf("reached %d with the member at %d", last, h)
	}

	start := time.Now()
	cp, reached, err = c.WaitForCheckpoint(ctx, "waiters", last+1000, 200*time.Millisecond)
	if err != nil || reached || cp < last {
		t.Fatalf("WaitForCheckpoint of a future position = %d, %v, %v; want not reached, no error", cp, reached, err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("answered not reached after %v, before the 200ms timeout", d)
	}

	if _, _, err := c.WaitForCheckpoint(ctx, "nobody", 1, time.Second); !client.IsNotFound(err) {
		t.Fatalf("WaitForCheckpoint of a missing group: %v, want NOT_FOUND", err)
	}
	cancel()
	if err := waitErr(t, done); err != nil {
		t.Fatalf("member: %v", err)
	}
}
