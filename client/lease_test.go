package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"

	"github.com/esdhq/esd/client"
)

func TestLeaseFencesWrites(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	if _, err := c.Append(ctx, "account-42", client.NoStream(), client.JSONEvent("Opened", map[string]int{"balance": 100})); err != nil {
		t.Fatal(err)
	}
	l, err := c.AcquireLease(ctx, "account-42", "refunds", 30*time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	if l.Token == 0 || l.Owner != "refunds" || !l.Expires.After(time.Now()) {
		t.Fatalf("lease %+v", l)
	}
	// Another writer is refused, told who holds the stream.
	_, err = c.Append(ctx, "account-42", client.Any(), client.NewEvent("Purchased", nil))
	if client.ReasonOf(err) != "STREAM_LEASED" {
		t.Fatalf("append without the token: %v, want STREAM_LEASED", err)
	}
	var e *client.Error
	if !errors.As(err, &e) || e.Meta["owner"] != "refunds" {
		t.Fatalf("STREAM_LEASED without the holder: %v", err)
	}
	// A second acquirer waits, and is refused when the wait ends.
	if _, err := c.AcquireLease(ctx, "account-42", "recount", time.Minute, 50*time.Millisecond); client.ReasonOf(err) != "STREAM_LEASED" {
		t.Fatalf("second acquire: %v, want STREAM_LEASED", err)
	}
	// The holder writes with its token, in an AppendMulti too.
	if _, err := l.Append(ctx, client.Exact(0), client.NewEvent("Refunded", nil)); err != nil {
		t.Fatalf("fenced append: %v", err)
	}
	if _, err := c.AppendMulti(ctx,
		client.AppendEntry{Stream: "account-42", Expected: client.Exact(1), Events: nil, FencingToken: l.Token},
		client.AppendEntry{Stream: "refunds-log", Expected: client.Any(), Events: []*esdv1.ProposedEvent{client.NewEvent("Logged", nil)}},
	); err != nil {
		t.Fatalf("fenced AppendMulti: %v", err)
	}
	if err := l.Renew(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetLease(ctx, "account-42")
	if err != nil || got == nil || got.Token != l.Token {
		t.Fatalf("GetLease: %+v %v", got, err)
	}
	if list, err := c.ListLeases(ctx, "account-"); err != nil || len(list) != 1 {
		t.Fatalf("ListLeases: %v %v", list, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// Released: writes without a token pass; the old holder, once the
	// stream was leased again, never.
	if _, err := c.Append(ctx, "account-42", client.Exact(1), client.NewEvent("Purchased", nil)); err != nil {
		t.Fatalf("append after release: %v", err)
	}
	next, err := c.AcquireLease(ctx, "account-42", "recount", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LeaseOf("account-42", l.Token).Append(ctx, client.Any(), client.NewEvent("Late", nil)); client.ReasonOf(err) != "STALE_FENCING_TOKEN" {
		t.Fatalf("append with the old token: %v, want STALE_FENCING_TOKEN", err)
	}
	if _, err := next.DeleteStream(ctx, client.Any(), false); err != nil {
		t.Fatalf("fenced delete: %v", err)
	}
	if got, err := c.GetLease(ctx, "free"); err != nil || got != nil {
		t.Fatalf("GetLease of a free stream: %+v %v", got, err)
	}
}
