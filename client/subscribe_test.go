package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/esdhq/esd/client"
	"go.uber.org/goleak"
)

// TestSubscribeHistoryCaughtUpLive follows a stream: its history, one
// CaughtUp, then an event appended after it; breaking out of the loop
// ends the subscription.
func TestSubscribeHistoryCaughtUpLive(t *testing.T) {
	c, _ := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	appendN(t, c, "sub-1", 3)
	var got []string
	for se, err := range c.Subscribe(ctx, client.SubscribeStream("sub-1")) {
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case se.CaughtUp:
			got = append(got, "caught-up")
			if _, err := c.Append(ctx, "sub-1", client.Exact(2), client.NewEvent("Live", nil)); err != nil {
				t.Fatal(err)
			}
		case se.Event != nil:
			got = append(got, se.Event.GetType())
		}
		if len(got) == 5 {
			break
		}
	}
	if want := "[E0 E1 E2 caught-up Live]"; fmtS(got) != want {
		t.Fatalf("subscription saw %s, want %s", fmtS(got), want)
	}
}

func TestSubscribeCategoryAfterPosition(t *testing.T) {
	c, _ := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := appendN(t, c, "shop-1", 2)
	appendN(t, c, "other-1", 1)
	appendN(t, c, "shop-2", 1)
	var streams []string
	for se, err := range c.Subscribe(ctx, client.SubscribeCategory("shop"), client.AfterPosition(first[0].GetLastPosition())) {
		if err != nil {
			t.Fatal(err)
		}
		if se.CaughtUp {
			break
		}
		streams = append(streams, se.Event.GetStream())
	}
	if want := "[shop-1 shop-2]"; fmtS(streams) != want {
		t.Fatalf("category subscription saw %s, want %s", fmtS(streams), want)
	}
}

func TestSubscriptionEndsWhenItsStreamIsDeleted(t *testing.T) {
	c, _ := dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	appendN(t, c, "gone-1", 1)
	var last error
	for se, err := range c.Subscribe(ctx, client.SubscribeStream("gone-1")) {
		if se.CaughtUp {
			if _, err := c.DeleteStream(ctx, "gone-1", client.Any(), false); err != nil {
				t.Fatal(err)
			}
		}
		last = err
	}
	if !client.IsNotFound(last) || client.ReasonOf(last) != client.ReasonStreamDeleted {
		t.Fatalf("subscription to a deleted stream ended with %v, want NOT_FOUND/STREAM_DELETED", last)
	}
}

// TestSubscribeCancelLeavesNoGoroutine ends live subscriptions by
// cancelling their context and by breaking, and checks that nothing of
// theirs is left once the client and server stop.
func TestSubscribeCancelLeavesNoGoroutine(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	c, srv := dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		var last error
		for _, err := range c.Subscribe(ctx, client.SubscribeAll(client.Filter{}), client.FromEnd()) {
			last = err
		}
		done <- last
	}()
	for se, err := range c.Subscribe(context.Background(), client.SubscribeAll(client.Filter{TypePrefixes: []string{"X"}})) {
		if err != nil {
			t.Fatal(err)
		}
		if se.CaughtUp {
			break
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a cancelled subscription yielded %v, want nothing", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled subscription did not end")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	goleak.VerifyNone(t, ignore)
}

// TestSubscribeOnceSurfacesTheEnd: with SubscribeOnce the server's ending
// is the last marker, with its reason, and no error follows: a deletion
// instead of a NOT_FOUND error, a shutdown instead of a resumption.
func TestSubscribeOnceSurfacesTheEnd(t *testing.T) {
	t.Run("deleted", func(t *testing.T) {
		c, _ := dial(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		appendN(t, c, "once-1", 2)
		var got []string
		for se, err := range c.Subscribe(ctx, client.SubscribeStream("once-1"), client.SubscribeOnce()) {
			switch {
			case err != nil:
				t.Fatal(err)
			case se.CaughtUp:
				got = append(got, "caught-up")
				if _, err := c.DeleteStream(ctx, "once-1", client.Any(), false); err != nil {
					t.Fatal(err)
				}
			case se.Ended != "":
				got = append(got, "ended "+se.Ended)
			case se.Event != nil:
				got = append(got, se.Event.GetType())
			}
		}
		if want := "[E0 E1 caught-up ended STREAM_DELETED]"; fmtS(got) != want {
			t.Fatalf("subscription saw %s, want %s", fmtS(got), want)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		c, srv := dial(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		appendN(t, c, "once-2", 1)
		stopped := make(chan struct{})
		var got []string
		for se, err := range c.Subscribe(ctx, client.SubscribeAll(client.Filter{}), client.SubscribeOnce()) {
			switch {
			case err != nil:
				t.Fatal(err)
			case se.CaughtUp:
				got = append(got, "caught-up")
				go func() { defer close(stopped); srv.Stop() }()
			case se.Ended != "":
				got = append(got, "ended "+se.Ended)
			case se.Event != nil:
				got = append(got, se.Event.GetType())
			}
		}
		<-stopped
		if want := "[E0 caught-up ended SHUTTING_DOWN]"; fmtS(got) != want {
			t.Fatalf("subscription saw %s, want %s", fmtS(got), want)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		// One call and no retry: the error comes at once, not after
		// WithRetries' backoff.
		_, srv := dial(t)
		c, err := client.Dial(srv.Addr, client.WithRetries(100))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		srv.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		n := 0
		for _, err := range c.Subscribe(ctx, client.SubscribeAll(client.Filter{}), client.SubscribeOnce()) {
			n++
			if !client.IsTemporary(err) {
				t.Fatalf("yielded %v, want the UNAVAILABLE error", err)
			}
		}
		if n != 1 || ctx.Err() != nil {
			t.Fatalf("%d yields (ctx %v), want the error once, before ctx ended", n, ctx.Err())
		}
	})
}
