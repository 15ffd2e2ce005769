package server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
)

var (
	forward  = esdv1.ReadDirection_READ_DIRECTION_FORWARD
	backward = esdv1.ReadDirection_READ_DIRECTION_BACKWARD
)

func positionsOf(evs []*esdv1.RecordedEvent) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.GetPosition())
	}
	return out
}

// TestReadStream: directions, starting revisions and counts.
func TestReadStream(t *testing.T) {
	ts := newTestServer(t)
	for range 5 { // interleave another stream, so positions are not revisions+1
		ts.fill(t, "r-1", 2, "Read")
		ts.fill(t, "r-other", 1, "Other")
	}
	all := ts.mustReadStream(t, "r-1")
	if diff := cmp.Diff(revs(0, 9), revisionsOf(all)); diff != "" {
		t.Fatalf("forward read (-want +got):\n%s", diff)
	}
	for i, e := range all {
		if e.GetStream() != "r-1" || e.GetType() != "Read" || e.GetCreated() == nil || e.GetContentType() == "" ||
			(i > 0 && e.GetPosition() <= all[i-1].GetPosition()) {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	back := func(from, to uint64) []uint64 {
		var out []uint64
		for r := from; ; r-- {
			out = append(out, r)
			if r == to {
				return out
			}
		}
	}
	tests := []struct {
		name string
		req  *esdv1.ReadStreamRequest
		want []uint64
	}{
		{"unspecified is forward", &esdv1.ReadStreamRequest{}, revs(0, 9)},
		{"forward", &esdv1.ReadStreamRequest{Direction: forward}, revs(0, 9)},
		{"from 7", &esdv1.ReadStreamRequest{FromRevision: new(uint64(7))}, revs(7, 9)},
		{"max 3", &esdv1.ReadStreamRequest{MaxCount: 3}, revs(0, 2)},
		{"from 4 max 2", &esdv1.ReadStreamRequest{FromRevision: new(uint64(4)), MaxCount: 2}, revs(4, 5)},
		{"from past the head", &esdv1.ReadStreamRequest{FromRevision: new(uint64(10))}, nil},
		{"backward", &esdv1.ReadStreamRequest{Direction: backward}, back(9, 0)},
		{"backward max 3", &esdv1.ReadStreamRequest{Direction: backward, MaxCount: 3}, back(9, 7)},
		{"backward from 4 max 2", &esdv1.ReadStreamRequest{Direction: backward, FromRevision: new(uint64(4)), MaxCount: 2}, back(4, 3)},
		{"backward from past the head", &esdv1.ReadStreamRequest{Direction: backward, FromRevision: new(uint64(99)), MaxCount: 1}, []uint64{9}},
		{"backward from 0", &esdv1.ReadStreamRequest{Direction: backward, FromRevision: new(uint64(0))}, []uint64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Stream = "r-1"
			chunks, err := ts.readStreamChunks(t, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) != 1 {
				t.Fatalf("%d messages for a small read, want 1 (an empty read answers once too)", len(chunks))
			}
			if diff := cmp.Diff(tc.want, revisionsOf(chunks[0])); diff != "" {
				t.Fatalf("revisions (-want +got):\n%s", diff)
			}
			for _, e := range chunks[0] {
				if e.GetPosition() != all[e.GetRevision()].GetPosition() || e.GetId() != all[e.GetRevision()].GetId() {
					t.Fatalf("event %v differs from the forward read's", e)
				}
			}
		})
	}
	_, err := ts.readStream(t, &esdv1.ReadStreamRequest{Stream: "r-never"})
	wantError(t, err, codes.NotFound, reasonStreamNotFound, "r-never")
}

func chunkSizes(chunks [][]*esdv1.RecordedEvent) []int {
	var out []int
	for _, c := range chunks {
		out = append(out, len(c))
	}
	return out
}

// TestReadChunking: reads of many events come in messages of at most 512
// events, and of large events in messages of about 1 MiB.
func TestReadChunking(t *testing.T) {
	n := 1200
	ts := newTestServer(t)
	ts.fill(t, "many-1", n, "Many")
	tests := []struct {
		name string
		req  *esdv1.ReadStreamRequest
		want []int
	}{
		{"forward", &esdv1.ReadStreamRequest{Stream: "many-1"}, []int{512, 512, 176}},
		{"backward", &esdv1.ReadStreamRequest{Stream: "many-1", Direction: backward}, []int{512, 512, 176}},
		{"max 600", &esdv1.ReadStreamRequest{Stream: "many-1", MaxCount: 600}, []int{512, 88}},
		{"exactly 512", &esdv1.ReadStreamRequest{Stream: "many-1", MaxCount: 512}, []int{512}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chunks, err := ts.readStreamChunks(t, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, chunkSizes(chunks)); diff != "" {
				t.Fatalf("chunk sizes (-want +got):\n%s", diff)
			}
			var flat []*esdv1.RecordedEvent
			for _, c := range chunks {
				flat = append(flat, c...)
			}
			for i := 1; i < len(flat); i++ {
				d := int64(flat[i].GetRevision()) - int64(flat[i-1].GetRevision())
				if (tc.req.Direction == backward && d != -1) || (tc.req.Direction != backward && d != 1) {
					t.Fatalf("revision %d follows %d across chunks", flat[i].GetRevision(), flat[i-1].GetRevision())
				}
			}
		})
	}
	t.Run("read all", func(t *testing.T) {
		msgs, err := ts.readAllMsgs(t, &esdv1.ReadAllRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		var next uint64 = 1
		for _, m := range msgs {
			sizes = append(sizes, len(m.GetEvents()))
			for _, e := range m.GetEvents() {
				if e.GetPosition() != next {
					t.Fatalf("position %d, want %d", e.GetPosition(), next)
				}
				next++
			}
			if m.GetCheckpoint() != 0 {
				t.Fatalf("an unfiltered read sent checkpoint %d", m.GetCheckpoint())
			}
		}
		if diff := cmp.Diff([]int{512, 512, 176}, sizes); diff != "" {
			t.Fatalf("chunk sizes (-want +got):\n%s", diff)
		}
	})
	t.Run("large events", func(t *testing.T) {
		big := make([]*esdv1.ProposedEvent, 8)
		for i := range big {
			big[i] = &esdv1.ProposedEvent{Type: "Big", Data: []byte(strings.Repeat("x", 300<<10))}
		}
		ts.mustAppend(t, appendReq("big-1", xAny, big...))
		chunks, err := ts.readStreamChunks(t, &esdv1.ReadStreamRequest{Stream: "big-1"})
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, c := range chunks {
			bytes := 0
			for _, e := range c {
				bytes += len(e.GetData())
			}
			if bytes-len(c[len(c)-1].GetData()) >= 1<<20 { // the chunk went on after reaching 1 MiB
				t.Fatalf("a message of %d events and %d bytes", len(c), bytes)
			}
			total += len(c)
		}
		if total != 8 || len(chunks) < 2 {
			t.Fatalf("%d events in %d messages, want 8 in several", total, len(chunks))
		}
	})
}

// TestReadAllFilter: filtered reads of $all, with checkpoints where a
// read scans without a match and on its last message.
func TestReadAllFilter(t *testing.T) {
	old := checkpointEvery
	checkpointEvery = 5
	t.Cleanup(func() { checkpointEvery = old })
	ts := newTestServer(t)
	ts.fill(t, "noise-a", 12, "Noise")                                      // 1..12
	ts.mustAppend(t, appendReq("order-1", xAny, event("OrderPlaced", "")))  // 13
	ts.fill(t, "noise-b", 7, "Noise")                                       // 14..20
	ts.mustAppend(t, appendReq("order-2", xAny, event("OrderShipped", ""))) // 21
	ts.mustAppend(t, appendReq("orders-x", xAny, event("OrderPlaced", ""))) // 22
	ts.mustAppend(t, appendReq("noise-c", xAny, event("OrderPlaced", "")))  // 23

	type msg struct {
		Positions  []uint64
		Checkpoint uint64
	}
	tests := []struct {
		name string
		req  *esdv1.ReadAllRequest
		want []msg
	}{
		// Stream prefixes with a '-' are read through the category index, and
		// type prefixes through the type index: only matching events are
		// read, so the one checkpoint is the one at the end.
		{"stream prefix", &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"order-"}}},
			[]msg{{[]uint64{13, 21}, 23}}},
		{"stream and type prefix", &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"order-"}, EventTypePrefixes: []string{"OrderPl"}}},
			[]msg{{[]uint64{13}, 23}}},
		{"type prefix", &esdv1.ReadAllRequest{Filter: &esdv1.Filter{EventTypePrefixes: []string{"OrderPlaced"}}},
			[]msg{{[]uint64{13, 22, 23}, 23}}},
		{"two stream prefixes", &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"noise-", "order-"}, EventTypePrefixes: []string{"Order"}}},
			[]msg{{[]uint64{13, 21, 23}, 23}}},
		{"backward", &esdv1.ReadAllRequest{Direction: backward, Filter: &esdv1.Filter{StreamPrefixes: []string{"order-"}}},
			[]msg{{[]uint64{21, 13}, 1}}},
		{"from a position", &esdv1.ReadAllRequest{FromPosition: new(uint64(14)), Filter: &esdv1.Filter{StreamPrefixes: []string{"order-"}}},
			[]msg{{[]uint64{21}, 23}}},
		// A prefix without '-' may span categories: a scan, which
		// checkpoints every 5 events without a match.
		{"stream prefix without a dash", &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"orde"}}},
			[]msg{{nil, 5}, {nil, 10}, {[]uint64{13}, 18}, {[]uint64{21, 22}, 23}}},
		{"nothing matches", &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{"zzz"}}},
			[]msg{{nil, 5}, {nil, 10}, {nil, 15}, {nil, 20}, {nil, 23}}},
		{"unfiltered from 20 max 2", &esdv1.ReadAllRequest{FromPosition: new(uint64(20)), MaxCount: 2}, []msg{{[]uint64{20, 21}, 0}}},
		{"unfiltered backward from 5 max 2", &esdv1.ReadAllRequest{Direction: backward, FromPosition: new(uint64(5)), MaxCount: 2},
			[]msg{{[]uint64{5, 4}, 0}}},
		{"unfiltered backward max 1", &esdv1.ReadAllRequest{Direction: backward, MaxCount: 1}, []msg{{[]uint64{23}, 0}}},
		{"forward from 0 is from the start", &esdv1.ReadAllRequest{FromPosition: new(uint64(0)), MaxCount: 1}, []msg{{[]uint64{1}, 0}}},
		{"past the end", &esdv1.ReadAllRequest{FromPosition: new(uint64(100))}, []msg{{nil, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := ts.readAllMsgs(t, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var got []msg
			for _, m := range msgs {
				got = append(got, msg{positionsOf(m.GetEvents()), m.GetCheckpoint()})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("messages (-want +got):\n%s", diff)
			}
		})
	}
}

// TestListStreams: pages in name-byte order, tokens, prefixes, flags.
func TestListStreams(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	names := []string{"ls-c", "ls-a-2", "ls-ü", "ls-b-3", "ls-Z", "ls-b-1", "ls-a-1", "ls-b-2", "ls-d", "ls-e", "other"}
	for _, n := range names {
		ts.fill(t, n, 2, "Listed")
	}
	ts.mustDelete(t, "ls-d", false)
	ts.mustDelete(t, "ls-e", true)

	list := func(t *testing.T, prefix string, size uint32) [][]string {
		t.Helper()
		var pages [][]string
		token := ""
		for {
			resp, err := ts.streams.ListStreams(testCtx(t), &esdv1.ListStreamsRequest{Prefix: prefix, PageSize: size, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			var page []string
			for _, s := range resp.GetStreams() {
				page = append(page, s.GetStream())
			}
			pages = append(pages, page)
			token = resp.GetNextPageToken()
			if token == "" {
				return pages
			}
			if len(pages) > 20 {
				t.Fatal("endless paging")
			}
		}
	}
	tests := []struct {
		name   string
		prefix string
		size   uint32
		want   [][]string
	}{
		{"pages of 3", "ls-", 3, [][]string{{"ls-Z", "ls-a-1", "ls-a-2"}, {"ls-b-1", "ls-b-2", "ls-b-3"}, {"ls-c", "ls-d", "ls-e"}, {"ls-ü"}}},
		{"a full last page has no token", "ls-b-", 3, [][]string{{"ls-b-1", "ls-b-2", "ls-b-3"}}},
		{"pages of 2 under a prefix", "ls-b-", 2, [][]string{{"ls-b-1", "ls-b-2"}, {"ls-b-3"}}},
		{"default page size", "ls-", 0, [][]string{{"ls-Z", "ls-a-1", "ls-a-2", "ls-b-1", "ls-b-2", "ls-b-3", "ls-c", "ls-d", "ls-e", "ls-ü"}}},
		{"no match", "zz", 5, [][]string{nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, list(t, tc.prefix, tc.size)); diff != "" {
				t.Fatalf("pages (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("flags", func(t *testing.T) {
		resp, err := ts.streams.ListStreams(testCtx(t), &esdv1.ListStreamsRequest{Prefix: "ls-"})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range resp.GetStreams() {
			want := &esdv1.StreamInfo{Stream: s.GetStream(), Head: 1, Exists: true, EventCount: 2, Created: s.GetCreated(), Updated: s.GetUpdated()}
			switch s.GetStream() {
			case "ls-d":
				want.Exists, want.Deleted, want.EventCount = false, true, 0
			case "ls-e":
				want.Exists, want.Tombstoned, want.EventCount = false, true, 0
			}
			if !cmp.Equal(want, s, cmpProto) || s.GetCreated() == nil {
				t.Fatalf("listed %v, want %v", s, want)
			}
		}
	})
	t.Run("all streams include $deleted", func(t *testing.T) {
		var flat []string
		for _, p := range list(t, "", 4) {
			flat = append(flat, p...)
		}
		if len(flat) != len(names)+1 || flat[0] != "$deleted" {
			t.Fatalf("listed %v", flat)
		}
	})
	// A page token only says where the previous page ended; the prefix
	// of the request still bounds the listing.
	token := func(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }
	t.Run("token before the prefix", func(t *testing.T) {
		resp, err := ts.streams.ListStreams(testCtx(t), &esdv1.ListStreamsRequest{Prefix: "ls-b-", PageToken: token("ls-a-1")})
		if err != nil { // refusing a token of another listing is fine too
			wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
			return
		}
		for _, s := range resp.GetStreams() {
			if !strings.HasPrefix(s.GetStream(), "ls-b-") {
				t.Fatalf("listing with prefix ls-b- returned %q", s.GetStream())
			}
		}
	})
	t.Run("token after the prefix", func(t *testing.T) {
		resp, err := ts.streams.ListStreams(testCtx(t), &esdv1.ListStreamsRequest{Prefix: "ls-a-", PageToken: token("ls-c")})
		if err != nil {
			t.Fatalf("ListStreams: %v", err)
		}
		if len(resp.GetStreams()) != 0 || resp.GetNextPageToken() != "" {
			t.Fatalf("listing with prefix ls-a- after ls-c returned %v", resp)
		}
	})
}

// TestGetStreamAndServerInfo: a stream never written is not an error;
// the server's counts follow what was written; it reports its limits.
func TestGetStreamAndServerInfo(t *testing.T) {
	ts := newTestServer(t, withShards(3))
	info := ts.getStream(t, "never-1")
	if !cmp.Equal(&esdv1.StreamInfo{Stream: "never-1"}, info, cmpProto) {
		t.Fatalf("GetStream of a stream never written: %v", info)
	}
	si := ts.info(t)
	if si.GetLastPosition() != 0 || si.GetStreamCount() != 0 || si.GetEventCount() != 0 || si.GetShards() != 3 ||
		si.GetVersion() != "test" || si.GetCommit() != "abc" || si.GetDataDir() != ts.dir || si.GetStarted() == nil || si.GetUptime() == nil {
		t.Fatalf("server info of an empty store: %v", si)
	}
	d := DefaultLimits
	if si.GetMaxEventBytes() != uint64(d.MaxEventBytes) || si.GetMaxAppendBytes() != uint64(d.MaxAppendBytes) ||
		si.GetMaxAppendEvents() != uint64(d.MaxAppendEvents) {
		t.Fatalf("server info reports the limits %d, %d, %d, want the defaults %d, %d, %d", si.GetMaxEventBytes(),
			si.GetMaxAppendBytes(), si.GetMaxAppendEvents(), d.MaxEventBytes, d.MaxAppendBytes, d.MaxAppendEvents)
	}
	first := ts.mustAppend(t, appendReq("gs-1", xNoStream, events(3, "A")...))
	last := ts.mustAppend(t, appendReq("gs-1", xAny, events(2, "B")...))
	ts.fill(t, "gs-2", 4, "C")
	info = ts.getStream(t, "gs-1")
	want := &esdv1.StreamInfo{Stream: "gs-1", Head: 4, Exists: true, EventCount: 5, Created: first.GetCommitTime(), Updated: last.GetCommitTime()}
	if !cmp.Equal(want, info, cmpProto) {
		t.Fatalf("GetStream: %v, want %v", info, want)
	}
	si = ts.info(t)
	if si.GetLastPosition() != 9 || si.GetStreamCount() != 2 || si.GetEventCount() != 9 || si.GetDiskBytes() == 0 {
		t.Fatalf("server info: %v", si)
	}
	ts.mustDelete(t, "gs-2", false) // -4 events, -1 stream; +1 event in $deleted
	si = ts.info(t)
	if si.GetLastPosition() != 10 || si.GetStreamCount() != 2 || si.GetEventCount() != 6 {
		t.Fatalf("server info after a delete: %v", si)
	}
	ts.restart()
	if got := ts.info(t); got.GetLastPosition() != 10 || got.GetStreamCount() != 2 || got.GetEventCount() != 6 {
		t.Fatalf("server info after restart: %v", got)
	}
	// Limits set, not defaults, are the ones reported.
	set := newTestServer(t, withLimits(Limits{MaxEventBytes: 1000, MaxAppendBytes: 5000, MaxAppendEvents: 7})).info(t)
	if set.GetMaxEventBytes() != 1000 || set.GetMaxAppendBytes() != 5000 || set.GetMaxAppendEvents() != 7 {
		t.Fatalf("server info with limits set: %v", set)
	}
}

// TestReadsSeeNoHoles: while several shards commit, every ReadAll sees
// positions 1..k with no hole, every ReadStream sees revisions from 0
// with no hole, and an acknowledged append is visible to the reads that
// follow it (its position was published before the answer).
func TestReadsSeeNoHoles(t *testing.T) {
	appenders, perAppender, readers := 8, 30, 2
	if testutil.RaceEnabled || testing.Short() {
		perAppender = 15
	}
	ts := newTestServer(t, withShards(4))
	ctx := testCtx(t)
	var wg, readersWG sync.WaitGroup
	done := make(chan struct{})
	errc := make(chan error, appenders+readers)
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := fmt.Sprintf("holes-%d", a)
			for i := range perAppender {
				resp, err := ts.streams.Append(ctx, appendReq(stream, xAny, events(1+i%3, "H")...))
				if err != nil {
					errc <- err
					return
				}
				rs, err := ts.streams.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: stream, Direction: backward, MaxCount: 1})
				if err != nil {
					errc <- err
					return
				}
				m, err := rs.Recv()
				if err != nil {
					errc <- err
					return
				}
				if len(m.GetEvents()) != 1 || m.GetEvents()[0].GetPosition() < resp.GetLastPosition() {
					errc <- fmt.Errorf("%s: after an append acknowledged at %d the last event read is %v",
						stream, resp.GetLastPosition(), m.GetEvents())
					return
				}
			}
		}()
	}
	for range readers {
		readersWG.Add(1)
		go func() {
			defer readersWG.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				rs, err := ts.streams.ReadAll(ctx, &esdv1.ReadAllRequest{})
				if err != nil {
					errc <- err
					return
				}
				next := uint64(1)
				for {
					m, err := rs.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						errc <- err
						return
					}
					for _, e := range m.GetEvents() {
						if e.GetPosition() != next {
							errc <- fmt.Errorf("ReadAll saw position %d where %d was due: a hole", e.GetPosition(), next)
							return
						}
						next++
					}
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readersWG.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
