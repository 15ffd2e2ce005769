//go:build e2e && linux

package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// The slow-subscriber memory test's workload: memLoadAppends appends of
// memLoadBatch events of memLoadEventBytes each (192 MiB of event data),
// from memLoadWriters concurrent writers, into an esd with a small block
// cache and subscription buffer so that what a lagging subscriber could
// cost stands out.
const (
	memLoadEventBytes = 4 << 10
	memLoadBatch      = 64
	memLoadAppends    = 768
	memLoadWriters    = 4
	memBufferBytes    = 8 << 20
	// memSlack is what the lagging run's peak RSS may exceed the control
	// run's by besides the subscription buffer: the subscriber's own
	// batch and message, gRPC's per-stream buffers, and the noise of two
	// separate processes' heaps (GC timing).
	memSlack = 48 << 20
)

// TestSlowSubscriberMemory: a subscriber to $all stops reading while
// 192 MiB of events are appended, then reads again. It misses nothing
// (every acknowledged event once, in position order), it was served from
// the store (it fell behind the buffer), and esd's peak resident memory
// exceeds that of a control run (the same appends, then the same events
// read by a subscriber that kept up) by no more than the subscription
// buffer and some slack: a lagging subscriber does not hold what it lags
// behind.
//
// esd is built without -race here: the race detector's shadow memory
// would be most of what is measured.
func TestSlowSubscriberMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 2 x 192 MiB")
	}
	bin := esdBin
	if testutil.RaceEnabled {
		dir := t.TempDir()
		if err := goBuild(dir, false, "./cmd/esd"); err != nil {
			t.Fatal(err)
		}
		bin = dir + "/esd"
	}
	// The stalled subscriber must survive its stall here: what it costs
	// while stalled is what is measured (a stall of the default 10s ends a
	// subscriber: the limits' tests).
	flags := []string{"--cache-bytes", strconv.Itoa(16 << 20), "--subscription-buffer-bytes", strconv.Itoa(memBufferBytes),
		"--subscriber-stall-timeout", "10m"}

	control := memRun(t, bin, flags, false)
	lagging := memRun(t, bin, flags, true)
	mib := func(kb int64) string { return fmt.Sprintf("%.0f MiB", float64(kb)/1024) }
	t.Logf("peak RSS after appending %d MiB: control %s, with a stalled subscriber %s; after the subscriber read it all: control %s, lagging %s",
		memLoadAppends*memLoadBatch*memLoadEventBytes>>20, mib(control.hwmLoaded), mib(lagging.hwmLoaded),
		mib(control.hwmRead), mib(lagging.hwmRead))
	if lagging.fallbacks == 0 {
		t.Errorf("the stalled subscriber never fell behind the buffer (esd_subscription_fallbacks_total 0)")
	}
	for _, c := range []struct {
		when             string
		lagging, control int64
	}{{"after the appends", lagging.hwmLoaded, control.hwmLoaded}, {"after the reading", lagging.hwmRead, control.hwmRead}} {
		if c.lagging > c.control+(memBufferBytes+memSlack)>>10 {
			t.Errorf("%s: peak RSS with a lagging subscriber %s > control %s + buffer %d MiB + slack %d MiB",
				c.when, mib(c.lagging), mib(c.control), memBufferBytes>>20, memSlack>>20)
		}
	}
}

type memResult struct {
	hwmLoaded, hwmRead int64 // esd's peak RSS (KiB) after the appends, after the reading
	fallbacks          float64
}

// memRun starts esd and subscribes to $all from the start. With stall,
// the subscriber reads nothing while the appends run; without, it
// subscribes after them. Then it reads every event and checks them
// against the appends' answers.
func memRun(t *testing.T, bin string, flags []string, stall bool) memResult {
	t.Helper()
	dir := t.TempDir()
	defer os.RemoveAll(dir) // 192 MiB: not left until the test ends
	p := startESDBin(t, bin, dir, flags...)
	c := dial(t, p.Addr)
	// A deadline for the whole run: a regression that stops delivery fails
	// the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	subscribe := func() esdv1.StreamService_SubscribeClient {
		t.Helper()
		s, err := c.streams.Subscribe(ctx, &esdv1.SubscribeRequest{
			Target: &esdv1.SubscribeRequest_All{All: &emptypb.Empty{}},
			From:   &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var sub esdv1.StreamService_SubscribeClient
	if stall {
		sub = subscribe()
		if m, err := sub.Recv(); err != nil || m.GetCaughtUp() == nil {
			t.Fatalf("first message %v, %v: want caught_up", m, err)
		}
	}

	// The appends, each event's id remembered at its position.
	ids := make([]string, memLoadAppends*memLoadBatch+1)
	data := make([]byte, memLoadEventBytes)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	var wg sync.WaitGroup
	errs := make(chan error, memLoadWriters)
	for w := range memLoadWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := w; a < memLoadAppends; a += memLoadWriters {
				req := &esdv1.AppendRequest{Stream: fmt.Sprintf("mem-%d", a%16)}
				for e := range memLoadBatch {
					d := append([]byte(nil), data...)
					binary.BigEndian.PutUint64(d, uint64(a*memLoadBatch+e))
					req.Events = append(req.Events, &esdv1.ProposedEvent{Id: uuid.NewString(), Type: "Blob", Data: d})
				}
				resp, err := c.streams.Append(ctx, req)
				if err != nil {
					errs <- fmt.Errorf("append %d: %w", a, err)
					return
				}
				for e, ev := range req.Events {
					ids[resp.GetFirstPosition()+uint64(e)] = ev.GetId() // each position is written once
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var r memResult
	r.hwmLoaded = procStatusKB(t, p.cmd.Process.Pid, "VmHWM")

	if !stall {
		sub = subscribe()
	}
	next := uint64(1)
	for next < uint64(len(ids)) {
		m, err := sub.Recv()
		if err != nil {
			t.Fatalf("subscription after %d events: %v", next-1, err)
		}
		for _, e := range m.GetEvents().GetEvents() {
			if e.GetPosition() != next || e.GetId() != ids[next] {
				t.Fatalf("event at position %d (id %s), want position %d (id %s)", e.GetPosition(), e.GetId(), next, ids[next])
			}
			next++
		}
	}
	r.hwmRead = procStatusKB(t, p.cmd.Process.Pid, "VmHWM")
	_, body := httpGet(t, p.HTTPAddr, "/metrics")
	for _, l := range metricLines(body, "esd_subscription_fallbacks_total") {
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", l, err)
		}
		r.fallbacks += v
	}
	cancel()
	p.Stop()
	return r
}

// procStatusKB reads a "Name: N kB" line of /proc/pid/status.
func procStatusKB(t *testing.T, pid int, name string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status %q: %v", pid, sc.Text(), err)
			}
			return kb
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, name)
	return 0
}
