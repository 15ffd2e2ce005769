package client_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/esdhq/esd/client"
	"github.com/esdhq/esd/internal/testutil/esdtest"
)

func dial(t *testing.T) (*client.Client, *esdtest.Server) {
	t.Helper()
	srv := esdtest.Start(t)
	c, err := client.Dial(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, srv
}

func TestAppendConflictCarriesTheEventsSince(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	if _, err := c.Append(ctx, "order-1", client.NoStream(), client.JSONEvent("Placed", map[string]int{"n": 1})); err != nil {
		t.Fatal(err)
	}
	second := client.JSONEvent("Paid", map[string]int{"n": 2})
	if _, err := c.Append(ctx, "order-1", client.Exact(0), second); err != nil {
		t.Fatal(err)
	}
	_, err := c.Append(ctx, "order-1", client.Exact(0), client.NewEvent("Shipped", nil))
	conflict, ok := client.IsWrongExpectedRevision(err)
	if !ok {
		t.Fatalf("append at a stale revision: %v, want a conflict", err)
	}
	if !conflict.StreamExists || conflict.ActualHead != 1 || len(conflict.Events) != 1 || conflict.Events[0].GetId() != second.GetId() {
		t.Fatalf("conflict = %+v, want head 1 and the one event appended since", conflict)
	}
	if r, ok := conflict.Expected.Revision(); !ok || r != 0 {
		t.Fatalf("conflict.Expected = %v, want revision 0", conflict.Expected)
	}
}

func TestAppendRetryWithSameIDsWritesOnce(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	ev := client.NewEvent("Placed", []byte("x"))
	first, err := c.Append(ctx, "order-2", client.NoStream(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetId() == "" {
		t.Fatal("Append left the event without an id")
	}
	// The same event again, as a retry after a lost answer would send it.
	again, err := c.Append(ctx, "order-2", client.NoStream(), ev)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if again.GetFirstPosition() != first.GetFirstPosition() || again.GetLastRevision() != 0 {
		t.Fatalf("retry answered %v, want the original %v", again, first)
	}
	l, err := c.Load(ctx, "order-2", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Events) != 1 || l.Head != 0 {
		t.Fatalf("loaded %d events, head %d; want 1 event, head 0", len(l.Events), l.Head)
	}
}

func TestLoadOfAMissingStream(t *testing.T) {
	c, _ := dial(t)
	_, err := c.Load(context.Background(), "nobody", 0)
	if !client.IsNotFound(err) || client.ReasonOf(err) != client.ReasonStreamNotFound {
		t.Fatalf("Load of a missing stream: %v, want NOT_FOUND/STREAM_NOT_FOUND", err)
	}
}

func TestErrorGRPCStatus(t *testing.T) {
	made := &client.Error{Code: codes.NotFound, Reason: client.ReasonStreamDeleted, Message: "subscription ended"}
	if st := made.GRPCStatus(); st.Code() != codes.NotFound || st.Message() != "subscription ended" {
		t.Fatalf("status of a client-made error: %v", st)
	}
	if status.Code(fmt.Errorf("wrapped: %w", made)) != codes.NotFound {
		t.Fatal("status.Code does not see a client-made error's code through a wrap")
	}
}
