//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// storeView is what a server shows of its store: $all, grouped by stream.
type storeView struct {
	all      []*esdv1.RecordedEvent
	byStream map[string][]*esdv1.RecordedEvent // in position order
	byID     map[string]*esdv1.RecordedEvent
	info     *esdv1.GetServerInfoResponse
}

// checkStore reads the whole store of a quiet server (no writes while it
// runs, no stream ever deleted) and proves what must hold of it whatever
// was written or crashed before:
//   - $all holds positions 1..last_position, each once, in order (no gap,
//     no duplicate), and every event id once;
//   - per stream, revisions are 0..n-1 in position order;
//   - ReadStream of each stream returns exactly its events of $all;
//   - GetStream's head, event_count and exists agree with ReadStream;
//   - GetServerInfo's stream_count, event_count and last_position agree
//     with $all;
//   - a stream of names that $all does not hold reads NOT_FOUND/STREAM_NOT_FOUND.
func checkStore(t testing.TB, c *client, names []string) storeView {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := c.admin.GetServerInfo(ctx, &esdv1.GetServerInfoRequest{})
	if err != nil {
		t.Fatalf("GetServerInfo: %v", err)
	}
	all, err := c.readAll(ctx)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	v := storeView{all: all, byStream: map[string][]*esdv1.RecordedEvent{}, byID: map[string]*esdv1.RecordedEvent{}, info: info}

	for i, ev := range all {
		if want := uint64(i + 1); ev.GetPosition() != want {
			t.Fatalf("$all: event %d has position %d, want %d (positions must be contiguous from 1): %v", i, ev.GetPosition(), want, ev)
		}
		if prev, dup := v.byID[ev.GetId()]; dup {
			t.Errorf("$all: event id %s stored twice: at positions %d and %d", ev.GetId(), prev.GetPosition(), ev.GetPosition())
		}
		v.byID[ev.GetId()] = ev
		if ev.GetCreated() == nil || ev.GetContentType() == "" {
			t.Errorf("$all: event at position %d lacks created time or content type: %v", ev.GetPosition(), ev)
		}
		evs := v.byStream[ev.GetStream()]
		if want := uint64(len(evs)); ev.GetRevision() != want {
			t.Errorf("$all: stream %s: event at position %d has revision %d, want %d (revisions contiguous, in position order)",
				ev.GetStream(), ev.GetPosition(), ev.GetRevision(), want)
		}
		v.byStream[ev.GetStream()] = append(evs, ev)
	}
	if last := uint64(len(all)); info.GetLastPosition() != last {
		t.Errorf("GetServerInfo: last_position %d, but $all ends at %d", info.GetLastPosition(), last)
	}
	if info.GetEventCount() != uint64(len(all)) || info.GetStreamCount() != uint64(len(v.byStream)) {
		t.Errorf("GetServerInfo: %d streams, %d events; $all holds %d events of %d streams",
			info.GetStreamCount(), info.GetEventCount(), len(all), len(v.byStream))
	}

	check := map[string]bool{}
	for _, n := range names {
		check[n] = true
	}
	for n := range v.byStream {
		check[n] = true
	}
	for _, name := range slices.Sorted(maps.Keys(check)) {
		want := v.byStream[name]
		got, err := c.readStream(ctx, name)
		switch {
		case len(want) == 0:
			if status.Code(err) != codes.NotFound || reasonOf(err) != "STREAM_NOT_FOUND" {
				t.Errorf("ReadStream %s (no events in $all): want NOT_FOUND/STREAM_NOT_FOUND, got %d events, %v", name, len(got), err)
			}
		case err != nil:
			t.Errorf("ReadStream %s: %v", name, err)
		case !eventsEqual(got, want):
			t.Errorf("ReadStream %s returns %d events that differ from its %d events in $all", name, len(got), len(want))
		}
		resp, err := c.streams.GetStream(ctx, &esdv1.GetStreamRequest{Stream: name})
		if err != nil {
			t.Errorf("GetStream %s: %v", name, err)
			continue
		}
		si := resp.GetInfo()
		n := uint64(len(want))
		if si.GetExists() != (n > 0) || si.GetEventCount() != n || (n > 0 && si.GetHead() != n-1) || si.GetDeleted() || si.GetTombstoned() {
			t.Errorf("GetStream %s: exists %t head %d event_count %d; ReadStream has %d events", name, si.GetExists(), si.GetHead(), si.GetEventCount(), n)
		}
	}
	return v
}

func eventsEqual(a, b []*esdv1.RecordedEvent) bool {
	return slices.EqualFunc(a, b, func(x, y *esdv1.RecordedEvent) bool { return proto.Equal(x, y) })
}

// sentEvent is an event as the client sent it, and where the server said
// it stored it.
type sentEvent struct {
	ev       *esdv1.ProposedEvent
	stream   string
	revision uint64
	position uint64
}

// matches says how rec differs from what was sent, or "" when it does not.
func (s sentEvent) matches(rec *esdv1.RecordedEvent) string {
	wantCT := s.ev.GetContentType()
	if wantCT == "" {
		wantCT = "application/octet-stream"
	}
	switch {
	case rec == nil:
		return "missing"
	case rec.GetId() != s.ev.GetId():
		return fmt.Sprintf("id %s, want %s", rec.GetId(), s.ev.GetId())
	case rec.GetStream() != s.stream:
		return fmt.Sprintf("stream %s, want %s", rec.GetStream(), s.stream)
	case rec.GetRevision() != s.revision:
		return fmt.Sprintf("revision %d, want %d", rec.GetRevision(), s.revision)
	case rec.GetPosition() != s.position:
		return fmt.Sprintf("position %d, want %d", rec.GetPosition(), s.position)
	case rec.GetType() != s.ev.GetType():
		return fmt.Sprintf("type %q, want %q", rec.GetType(), s.ev.GetType())
	case !bytes.Equal(rec.GetData(), s.ev.GetData()):
		return fmt.Sprintf("data %q, want %q", rec.GetData(), s.ev.GetData())
	case !bytes.Equal(rec.GetMetadata(), s.ev.GetMetadata()):
		return fmt.Sprintf("metadata %q, want %q", rec.GetMetadata(), s.ev.GetMetadata())
	case rec.GetContentType() != wantCT:
		return fmt.Sprintf("content type %q, want %q", rec.GetContentType(), wantCT)
	case !slices.Equal(rec.GetTags(), s.ev.GetTags()):
		return fmt.Sprintf("tags %q, want %q", rec.GetTags(), s.ev.GetTags())
	}
	return ""
}
