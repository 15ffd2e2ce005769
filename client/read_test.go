package client_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"go.uber.org/goleak"
)

// appendN appends n events to stream, one an append, and returns them as
// written.
func appendN(t *testing.T, c *client.Client, stream string, n int) []*esdv1.AppendResponse {
	t.Helper()
	var out []*esdv1.AppendResponse
	for i := range n {
		r, err := c.Append(context.Background(), stream, client.Any(), client.NewEvent(fmt.Sprintf("E%d", i), []byte{byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func revisions(t *testing.T, seq func(func(*esdv1.RecordedEvent, error) bool)) []uint64 {
	t.Helper()
	var revs []uint64
	for ev, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, ev.GetRevision())
	}
	return revs
}

func TestReadDirectionsFromAndMaxCount(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	appendN(t, c, "read-1", 5)
	for _, tc := range []struct {
		name string
		opts []client.ReadOption
		want string
	}{
		{"all", nil, "[0 1 2 3 4]"},
		{"from 2, 2 of them", []client.ReadOption{client.FromRevision(2), client.MaxCount(2)}, "[2 3]"},
		{"backward", []client.ReadOption{client.Backward()}, "[4 3 2 1 0]"},
		{"backward from 1", []client.ReadOption{client.Backward(), client.FromRevision(1)}, "[1 0]"},
	} {
		if got := fmt.Sprint(revisions(t, c.Read(ctx, "read-1", tc.opts...))); got != tc.want {
			t.Errorf("%s: revisions %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestReadOfAMissingStreamYieldsNotFound(t *testing.T) {
	c, _ := dial(t)
	n := 0
	var last error
	for ev, err := range c.Read(context.Background(), "nobody") {
		n++
		if ev != nil {
			t.Fatalf("got an event %v from a missing stream", ev)
		}
		last = err
	}
	if n != 1 || !client.IsNotFound(last) || client.ReasonOf(last) != client.ReasonStreamNotFound {
		t.Fatalf("read of a missing stream yielded %d times, last %v; want once, STREAM_NOT_FOUND", n, last)
	}
}

func TestReadAllFilteredAndBackward(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	appendN(t, c, "cart-1", 2)
	appendN(t, c, "user-1", 3)
	var streams []string
	for ev, err := range c.ReadAll(ctx, client.WithFilter(client.Filter{StreamPrefixes: []string{"user-"}})) {
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, ev.GetStream())
	}
	if fmt.Sprint(streams) != "[user-1 user-1 user-1]" {
		t.Fatalf("filtered ReadAll: %v, want user-1's three events", streams)
	}
	var positions []uint64
	for ev, err := range c.ReadAll(ctx, client.Backward(), client.MaxCount(2)) {
		if err != nil {
			t.Fatal(err)
		}
		positions = append(positions, ev.GetPosition())
	}
	if len(positions) != 2 || positions[0] <= positions[1] {
		t.Fatalf("backward ReadAll of 2: positions %v, want 2 descending", positions)
	}
}

// TestIteratorsEndCleanly breaks out of reads and lists early and runs
// others to their end; after the client and server stop, no goroutine of
// theirs is left.
func TestIteratorsEndCleanly(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	c, srv := dial(t)
	ctx := context.Background()
	appendN(t, c, "leak-1", 600) // more than a chunk
	for range 3 {
		for _, err := range c.Read(ctx, "leak-1") {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		for _, err := range c.ReadAll(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		for _, err := range c.ListStreams(ctx, "", 1) {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if n := len(revisions(t, c.Read(ctx, "leak-1"))); n != 600 {
		t.Fatalf("read %d events, want 600", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	goleak.VerifyNone(t, ignore)
}

func TestStreamsGetDeleteAndList(t *testing.T) {
	c, _ := dial(t)
	ctx := context.Background()
	appendN(t, c, "doc-1", 2)
	appendN(t, c, "doc-2", 1)
	appendN(t, c, "other-1", 1)
	info, err := c.GetStream(ctx, "doc-1")
	if err != nil || !info.GetExists() || info.GetHead() != 1 || info.GetEventCount() != 2 {
		t.Fatalf("GetStream(doc-1) = %v, %v; want existing, head 1, 2 events", info, err)
	}
	if info, err := c.GetStream(ctx, "never"); err != nil || info.GetExists() || info.GetCreated() != nil {
		t.Fatalf("GetStream(never) = %v, %v; want no error, every flag false", info, err)
	}

	_, err = c.DeleteStream(ctx, "doc-1", client.Exact(0), false)
	if _, ok := client.IsWrongExpectedRevision(err); !ok {
		t.Fatalf("delete at a stale revision: %v, want a conflict", err)
	}
	if _, err := c.DeleteStream(ctx, "doc-1", client.Exact(1), false); err != nil {
		t.Fatal(err)
	}
	if info, _ := c.GetStream(ctx, "doc-1"); !info.GetDeleted() || info.GetExists() {
		t.Fatalf("after a soft delete: %v, want deleted", info)
	}
	if _, err := c.DeleteStream(ctx, "doc-2", client.Any(), true); err != nil {
		t.Fatal(err)
	}
	_, err = c.Append(ctx, "doc-2", client.Any(), client.NewEvent("E", nil))
	if client.ReasonOf(err) != client.ReasonStreamTombstoned {
		t.Fatalf("append to a tombstoned stream: %v, want STREAM_TOMBSTONED", err)
	}

	var names []string
	for s, err := range c.ListStreams(ctx, "doc-", 1) { // a page each
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, fmt.Sprintf("%s:%v:%v", s.GetStream(), s.GetDeleted(), s.GetTombstoned()))
	}
	if got := fmt.Sprint(names); got != "[doc-1:true:false doc-2:false:true]" {
		t.Fatalf("ListStreams(doc-) = %s", got)
	}
}

func TestServerInfoAndConn(t *testing.T) {
	c, _ := dial(t)
	appendN(t, c, "info-1", 3)
	info, err := c.ServerInfo(context.Background())
	if err != nil || info.GetVersion() != "test" || info.GetLastPosition() < 3 {
		t.Fatalf("ServerInfo = %v, %v; want version test, last position ≥ 3", info, err)
	}
	resp, err := esdv1.NewStreamServiceClient(c.Conn()).GetStream(context.Background(), &esdv1.GetStreamRequest{Stream: "info-1"})
	if err != nil || resp.GetInfo().GetHead() != 2 {
		t.Fatalf("GetStream on Conn = %v, %v; want head 2", resp, err)
	}
}

func fmtS(v any) string { return fmt.Sprint(v) }
