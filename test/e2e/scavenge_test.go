//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestScavengeAcrossKill9: 120 streams of 40 events of 16 KiB (75 MiB:
// more than a memtable, so that most of it is in tables, not only in the
// WAL); a quarter soft-deleted, a quarter tombstoned, a quarter with a
// max count of 10 (esctl stream meta set). A scavenge at a low rate is
// killed -9 mid-run; the restarted esd resumes it, and it completes.
// Every visible event is still there with its position, revision and id
// ($all and each stream read as before the scavenge), the deleted streams
// read as deleted, the counts changed by the truncates alone, and the
// store's size on disk dropped. Once the limits are lifted, the streams
// they cut show nothing older.
func TestScavengeAcrossKill9(t *testing.T) {
	dir := t.TempDir()
	p := startESD(t, dir)
	c := dial(t, p.Addr)
	ctx := context.Background()
	const streams, perStream = 120, 40
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range streams {
		req := &esdv1.AppendRequest{Stream: fmt.Sprintf("acct-%d", i)}
		for range perStream {
			data := make([]byte, 16<<10) // random: as incompressible as real payloads
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			req.Events = append(req.Events, &esdv1.ProposedEvent{Id: uuid.NewString(), Type: "Deposited", Data: data})
		}
		if _, err := c.streams.Append(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	for i := range streams {
		switch i % 4 {
		case 0:
			mustEsctl(t, p.Addr, "delete", fmt.Sprintf("acct-%d", i))
		case 1:
			mustEsctl(t, p.Addr, "delete", fmt.Sprintf("acct-%d", i), "--tombstone")
		case 2:
			mustEsctl(t, p.Addr, "stream", "meta", "set", fmt.Sprintf("acct-%d", i), "--max-count", "10")
		}
	}
	before := snapshotStore(t, c, streams)
	info, err := c.admin.GetServerInfo(ctx, &esdv1.GetServerInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// About 3,300 events and 60 index entries to remove at 400 keys a
	// second: some 8 seconds, killed after the first.
	started, err := c.admin.StartScavenge(ctx, &esdv1.StartScavengeRequest{KeysPerSecond: 400})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the scavenge to remove some events", func() bool {
		r, err := c.admin.GetScavenge(ctx, &esdv1.GetScavengeRequest{})
		return err == nil && r.GetScavenge().GetEventsRemoved() >= 300
	})
	p.Kill()

	p = startESD(t, dir)
	c = dial(t, p.Addr)
	var last *esdv1.Scavenge
	waitUntil(t, 60*time.Second, "the resumed scavenge to end", func() bool {
		r, err := c.admin.GetScavenge(ctx, &esdv1.GetScavengeRequest{})
		if err != nil {
			t.Fatalf("GetScavenge after the restart: %v", err)
		}
		last = r.GetScavenge()
		return last.GetState() != esdv1.ScavengeState_SCAVENGE_STATE_RUNNING
	})
	const cut = streams / 4 // streams truncated by their max count of 10
	if last.GetId() != started.GetScavenge().GetId() || last.GetState() != esdv1.ScavengeState_SCAVENGE_STATE_DONE ||
		last.GetStreamsDone() != streams/2+cut || last.GetStreamsTruncated() != cut || last.GetIdsRemoved() != 0 || // all within the window

		last.GetEventsRemoved() != streams/2*perStream+cut*(perStream-10) {
		t.Fatalf("after the restart: %v; want scavenge %s done, with every hidden event removed", last, started.GetScavenge().GetId())
	}
	if after := snapshotStore(t, c, streams); after != before {
		t.Fatalf("visible data changed:\nbefore %s\nafter  %s", before, after)
	}
	info2, err := c.admin.GetServerInfo(ctx, &esdv1.GetServerInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The counts include what limits hide until the truncates, which take
	// no position.
	if info2.GetEventCount() != info.GetEventCount()-cut*(perStream-10) || info2.GetStreamCount() != info.GetStreamCount() ||
		info2.GetLastPosition() != info.GetLastPosition() {
		t.Fatalf("counts: %v, were %v", info2, info)
	}
	t.Logf("disk: %d bytes before, %d after (the job: %d, %d); %d bytes of keys and values removed",
		info.GetDiskBytes(), info2.GetDiskBytes(), last.GetDiskBytesBefore(), last.GetDiskBytesAfter(), last.GetBytesReclaimed())
	// Over two thirds of the events are gone: the store shrinks by a third
	// at least.
	if info2.GetDiskBytes() > info.GetDiskBytes()*2/3 || last.GetDiskBytesAfter() > last.GetDiskBytesBefore()*2/3 {
		t.Fatalf("disk %d bytes after the scavenge, %d before", info2.GetDiskBytes(), info.GetDiskBytes())
	}
	for i := 2; i < streams; i += 4 {
		name := fmt.Sprintf("acct-%d", i)
		mustEsctl(t, p.Addr, "stream", "meta", "set", name) // no limits
		evs, err := c.readStream(ctx, name)
		if err != nil || len(evs) != 10 || evs[0].GetRevision() != perStream-10 {
			t.Fatalf("%s, its limit lifted: %d events, %v; want the 10 from revision %d the truncate left", name, len(evs), err, perStream-10)
		}
	}
	p.Stop()
}

// snapshotStore describes what reads see: $all (position, stream,
// revision, id of each event) and each stream's read (its events, or its
// error code).
func snapshotStore(t *testing.T, c *client, streams int) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	ra, err := c.streams.ReadAll(ctx, &esdv1.ReadAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		resp, err := ra.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEvents() {
			if !strings.HasPrefix(e.GetStream(), "$") {
				fmt.Fprintf(&b, "%d %s@%d %s;", e.GetPosition(), e.GetStream(), e.GetRevision(), e.GetId())
				n++
			}
		}
	}
	all := b.String()
	b.Reset()
	for i := range streams {
		evs, err := c.readStream(ctx, fmt.Sprintf("acct-%d", i))
		if err != nil {
			fmt.Fprintf(&b, "acct-%d:%v;", i, status.Code(err))
			if status.Code(err) != codes.NotFound {
				t.Fatal(err)
			}
			continue
		}
		for _, e := range evs {
			fmt.Fprintf(&b, "%d %s@%d %s;", e.GetPosition(), e.GetStream(), e.GetRevision(), e.GetId())
		}
	}
	if n == 0 {
		t.Fatal("no event in $all")
	}
	return fmt.Sprintf("%d events in $all, hash %x; streams %x", n, hashOf(all), hashOf(b.String()))
}

func hashOf(s string) uint64 {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return h
}
