package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// runBenchJSON runs esctl bench with -o json and decodes the report; it
// also checks the report carries the documented snake_case keys.
func runBenchJSON(t *testing.T, addr string, args ...string) benchReport {
	t.Helper()
	args = append(append([]string{"bench"}, args...), "-o", "json")
	out, stderr, code := runCLI(t, addr, nil, args...)
	if code != exitOK {
		t.Fatalf("esctl %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	var keys map[string]any
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"workload", "ops", "events", "errors", "ops_per_sec", "events_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms", "elapsed_sec"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("report lacks %q:\n%s", k, out)
		}
	}
	_, isContention := keys["conflicts_per_sec"]
	if isContention != (r.Workload == workloadContention) {
		t.Errorf("contention keys present: %t for workload %s", isContention, r.Workload)
	}
	return r
}

func checkLatencies(t *testing.T, r benchReport) {
	t.Helper()
	if !(r.P50Ms > 0 && r.P50Ms <= r.P90Ms && r.P90Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
		t.Errorf("latencies not ordered: p50 %v p90 %v p99 %v max %v", r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
	}
}

func TestBenchAppend(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	r := runBenchJSON(t, addr, "append", "-c", "4", "-s", "10", "-b", "3", "--size", "32",
		"--conns", "2", "-d", "300ms", "--warmup", "0", "--stream-prefix", "ba")
	if r.Errors != 0 || len(r.ErrorsByReason) != 0 {
		t.Errorf("errors: %d %v", r.Errors, r.ErrorsByReason)
	}
	if r.Ops == 0 || r.Events != r.Ops*3 {
		t.Errorf("ops %d, events %d: want events = ops × 3", r.Ops, r.Events)
	}
	if got := srv.eventsWithPrefix(t, "ba-"); got != r.Events {
		t.Errorf("server holds %d events, report says %d", got, r.Events)
	}
	if r.Clients != 4 || r.Conns != 2 || r.Batch != 3 || r.Streams != 10 || r.Size != 32 || !r.ClientIDs || r.ServerVersion != "test" {
		t.Errorf("parameters %+v", r)
	}
	checkLatencies(t, r)

	// Every event carries a distinct client-made id; streams are only
	// those of the bench's prefix, each written by one client.
	ids := make(map[string]bool)
	for n := range 10 {
		for _, ev := range srv.events(t, fmt.Sprintf("ba-%d", n)) {
			if len(ev.GetId()) != 36 || ev.GetId()[14] != '7' || ids[ev.GetId()] {
				t.Fatalf("bad or repeated id %q", ev.GetId())
			}
			ids[ev.GetId()] = true
			if len(ev.GetData()) != 32 || ev.GetType() != benchEventType {
				t.Fatalf("event %v", ev)
			}
		}
	}
}

// TestBenchAppendStreaming: --streaming appends over one AppendStream
// call per client, several in flight each, with the same checks and
// report as unary appends; --count counts appends, whatever is in flight
// at the end of the warmup is counted there.
func TestBenchAppendStreaming(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	r := runBenchJSON(t, srv.addr, "append", "--streaming", "--inflight", "8", "-c", "3", "-s", "60", "-b", "2",
		"--size", "16", "--conns", "2", "-d", "300ms", "--warmup", "0", "--stream-prefix", "bs")
	if r.Errors != 0 || len(r.ErrorsByReason) != 0 {
		t.Errorf("errors: %d %v", r.Errors, r.ErrorsByReason)
	}
	if !r.Streaming || r.Inflight != 8 {
		t.Errorf("streaming %t inflight %d in the report", r.Streaming, r.Inflight)
	}
	if r.Ops == 0 || r.Events != r.Ops*2 {
		t.Errorf("ops %d, events %d: want events = ops × 2", r.Ops, r.Events)
	}
	if got := srv.eventsWithPrefix(t, "bs-"); got != r.Events {
		t.Errorf("server holds %d events, report says %d", got, r.Events)
	}
	if n := srv.calls(t, "AppendStream"); n != 3 {
		t.Errorf("%d AppendStream calls, want one per client", n)
	}
	if n := srv.calls(t, "Append"); n != 0 {
		t.Errorf("%d unary Append calls", n)
	}
	checkLatencies(t, r)

	r = runBenchJSON(t, srv.addr, "append", "--streaming", "-c", "2", "-s", "5", "-n", "40", "-d", "0",
		"--warmup", "20ms", "--stream-prefix", "bsc")
	if r.Ops != 40 || r.Events != 40 || r.Errors != 0 {
		t.Errorf("--count: ops %d events %d errors %d, want 40 40 0", r.Ops, r.Events, r.Errors)
	}

	// Streams written before: each first append conflicts and the client
	// goes on from the head in the WrongExpectedRevision detail.
	args := []string{"bench", "append", "--streaming", "-c", "1", "-s", "2", "-n", "6", "-d", "0", "--warmup", "0",
		"--stream-prefix", "bsc", "-o", "json"}
	out, stderr, code := runCLI(t, srv.addr, nil, args...)
	if code != exitError {
		t.Fatalf("exit %d, want %d: %s", code, exitError, stderr)
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Ops != 6 || r.Events != 4 || r.Errors != 2 || r.ErrorsByReason["WRONG_EXPECTED_REVISION"] != 2 {
		t.Errorf("resync: ops %d events %d errors %v: want 6, 4, 2 conflicts", r.Ops, r.Events, r.ErrorsByReason)
	}

	table := mustRun(t, srv.addr, "bench", "append", "--streaming", "--inflight", "4", "-c", "1", "-n", "5", "-d", "0", "--warmup", "0")
	if !strings.Contains(table, "one AppendStream per client, up to 4 appends in flight") {
		t.Errorf("table lacks the mode:\n%s", table)
	}
}

func TestBenchAppendCountAndWarmup(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	r := runBenchJSON(t, addr, "append", "-c", "3", "-s", "5", "-n", "40", "-d", "0",
		"--warmup", "20ms", "--no-ids", "--stream-prefix", "bc")
	if r.Ops != 40 || r.Events != 40 || r.Errors != 0 {
		t.Errorf("ops %d events %d errors %d, want 40 40 0", r.Ops, r.Events, r.Errors)
	}
	// The warmup wrote too, and the measured phase went on at the heads it
	// left: no conflicts, and the server holds at least the measured events.
	if got := srv.eventsWithPrefix(t, "bc-"); got < 40 {
		t.Errorf("server holds %d events", got)
	}
	if r.ClientIDs {
		t.Error("client_ids true with --no-ids")
	}
}

func TestBenchContention(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	r := runBenchJSON(t, addr, "contention", "-c", "8", "-k", "1", "-b", "2",
		"-d", "300ms", "--warmup", "0", "--stream-prefix", "ct")
	if r.ContentionReport == nil {
		t.Fatal("no contention numbers")
	}
	c := r.ContentionReport
	if r.Errors != 0 {
		t.Errorf("errors: %v", r.ErrorsByReason)
	}
	// Every client's first append expects no stream and only one can win,
	// so 8 clients on 1 key always conflict.
	if c.Conflicts == 0 || c.Successes == 0 {
		t.Errorf("successes %d conflicts %d: want both > 0", c.Successes, c.Conflicts)
	}
	if c.Retries != c.Conflicts {
		t.Errorf("retries %d != conflicts %d", c.Retries, c.Conflicts)
	}
	if r.Ops != c.Successes+c.Conflicts {
		t.Errorf("ops %d != successes %d + conflicts %d", r.Ops, c.Successes, c.Conflicts)
	}
	if r.Events != c.Successes*2 {
		t.Errorf("events %d != successes %d × 2", r.Events, c.Successes)
	}
	if got := int64(len(srv.events(t, "ct-0"))); got != r.Events {
		t.Errorf("server holds %d events, report says %d", got, r.Events)
	}
	if want := float64(c.Retries) / float64(c.Successes); c.RetriesPerSuccess < want-0.001 || c.RetriesPerSuccess > want+0.001 {
		t.Errorf("retries_per_success %v, want %v", c.RetriesPerSuccess, want)
	}
	// The worker needs only the head: it asks for no conflict delta,
	// unless --delta-events says otherwise (-1: unset).
	if r.DeltaEvents == nil || *r.DeltaEvents != 0 {
		t.Errorf("delta_events %v, want 0", r.DeltaEvents)
	}
	for _, m := range srv.requests(t, "Append") {
		if req := m.(*esdv1.AppendRequest); req.ConflictDeltaEvents == nil || *req.ConflictDeltaEvents != 0 {
			t.Fatalf("contention append with conflict_delta_events %v, want 0", req.ConflictDeltaEvents)
		}
	}
	for _, tc := range []struct {
		flag string
		want *uint32
	}{{"-1", nil}, {"3", proto.Uint32(3)}} {
		before := len(srv.requests(t, "Append"))
		runBenchJSON(t, addr, "contention", "-c", "2", "-k", "1", "-n", "6", "-d", "0", "--warmup", "0",
			"--stream-prefix", "ctd"+tc.flag, "--delta-events", tc.flag)
		for _, m := range srv.requests(t, "Append")[before:] {
			if got := m.(*esdv1.AppendRequest).ConflictDeltaEvents; !cmp.Equal(got, tc.want) {
				t.Fatalf("--delta-events %s: conflict_delta_events %v, want %v", tc.flag, got, tc.want)
			}
		}
	}
}

func TestBenchReadStream(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	r := runBenchJSON(t, addr, "read-stream", "--prepare", "1200", "--repeat", "2", "-c", "2",
		"--warmup", "0", "--size", "16", "--stream-prefix", "rs")
	if r.Errors != 0 || r.Ops != 4 || r.Events != 4*1200 {
		t.Errorf("ops %d events %d errors %v: want 4 reads of 1200", r.Ops, r.Events, r.ErrorsByReason)
	}
	if r.Stream != "rs-read" || r.Prepared != 1200 {
		t.Errorf("stream %q prepared %d", r.Stream, r.Prepared)
	}
	evs := srv.events(t, "rs-read")
	if len(evs) != 1200 || evs[1199].GetRevision() != 1199 {
		t.Errorf("prepared stream has %d events", len(evs))
	}
	checkLatencies(t, r)

	// Reading an existing stream by name; a missing one is an error.
	r = runBenchJSON(t, addr, "read-stream", "--stream", "rs-read", "-n", "3", "-d", "0", "--warmup", "0")
	if r.Errors != 0 || r.Ops != 3 || r.Events != 3*1200 {
		t.Errorf("--stream: ops %d events %d errors %v", r.Ops, r.Events, r.ErrorsByReason)
	}
	if _, stderr, code := runCLI(t, addr, nil, "bench", "read-stream", "--stream", "nope", "-n", "1"); code != exitError {
		t.Errorf("missing stream: exit %d, %s", code, stderr)
	}
}

func TestBenchReadAll(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	r := runBenchJSON(t, addr, "read-all", "--prepare", "1100", "--repeat", "1", "--warmup", "0", "--size", "8", "--stream-prefix", "ra")
	if r.Errors != 0 || r.Ops != 1 || r.Events != 1100 {
		t.Errorf("ops %d events %d errors %v", r.Ops, r.Events, r.ErrorsByReason)
	}
	if got := srv.eventsWithPrefix(t, "ra-"); got != 1100 {
		t.Errorf("prepared %d events", got)
	}
}

func TestBenchCatchUp(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	r := runBenchJSON(t, addr, "catch-up", "--prepare", "1100", "--repeat", "2", "--warmup", "0", "--size", "8", "--stream-prefix", "cu")
	if r.Errors != 0 || r.Ops != 2 || r.Events != 2200 || r.Prepared != 1100 {
		t.Errorf("ops %d events %d prepared %d errors %v", r.Ops, r.Events, r.Prepared, r.ErrorsByReason)
	}
	if n := srv.calls(t, "Subscribe"); n != 2 {
		t.Errorf("%d subscriptions, want 2", n)
	}
	checkLatencies(t, r)
}

// TestBenchCountsServerErrors makes every append fail: the run completes,
// reports the failures by reason and exits 1.
func TestBenchCountsServerErrors(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	// Tombstone the one stream the bench writes to.
	mustRun(t, addr, "delete", "bt-0", "--tombstone")
	out, stderr, code := runCLI(t, addr, nil, "bench", "append", "-c", "1", "-s", "1", "-n", "5", "-d", "0",
		"--warmup", "0", "--stream-prefix", "bt", "-o", "json")
	if code != exitError {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitError, stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Errors != 5 || r.ErrorsByReason["STREAM_TOMBSTONED"] != 5 || r.Events != 0 {
		t.Errorf("errors %d %v events %d", r.Errors, r.ErrorsByReason, r.Events)
	}
	if !strings.Contains(stderr, "5 errors") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestBenchTable(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	out := mustRun(t, addr, "bench", "contention", "-c", "2", "-k", "2", "-n", "10", "-d", "0", "--warmup", "0")
	for _, want := range []string{"workload", "contention", "clients", "2 on 4 connections", "keys", "ops", "10 (",
		"conflicts", "retries", "errors", "latency", "p50", "p99", "max"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestIDGen(t *testing.T) {
	t.Parallel()
	g := newIDGen()
	evs := []*esdv1.ProposedEvent{{}, {}, {}}
	seen := make(map[string]bool)
	for range 100 {
		g.fill(evs)
		for _, ev := range evs {
			if seen[ev.GetId()] {
				t.Fatalf("repeated id %s", ev.GetId())
			}
			seen[ev.GetId()] = true
			if len(ev.GetId()) != 36 || ev.GetId()[14] != '7' || !strings.ContainsAny(ev.GetId()[19:20], "89ab") {
				t.Fatalf("not a UUIDv7: %s", ev.GetId())
			}
		}
	}
	var none *idGen
	evs[0].Id = ""
	none.fill(evs) // --no-ids: leaves ids alone
	if evs[0].GetId() != "" {
		t.Error("nil generator set an id")
	}
}

// TestBenchAppendResyncs reuses a prefix: each stream's first append
// expects no stream, fails, and the worker goes on from the head in the
// WrongExpectedRevision detail.
func TestBenchAppendResyncs(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	args := []string{"bench", "append", "-c", "1", "-s", "2", "-n", "6", "-d", "0", "--warmup", "0", "--stream-prefix", "rr", "-o", "json"}
	mustRun(t, addr, args...)
	out, stderr, code := runCLI(t, addr, nil, args...)
	if code != exitError {
		t.Fatalf("exit %d, want %d: %s", code, exitError, stderr)
	}
	var r benchReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Ops != 6 || r.Events != 4 || r.Errors != 2 || r.ErrorsByReason["WRONG_EXPECTED_REVISION"] != 2 {
		t.Errorf("ops %d events %d errors %v: want 6, 4, 2 conflicts", r.Ops, r.Events, r.ErrorsByReason)
	}
	if got := srv.eventsWithPrefix(t, "rr-"); got != 10 {
		t.Errorf("server holds %d events, want 10", got)
	}
}

func TestBenchOptionsCheck(t *testing.T) {
	t.Parallel()
	valid := func() benchOptions {
		return benchOptions{duration: time.Second, conns: 4, batch: 1, streams: 10, keys: 8, size: 256}
	}
	tests := []struct {
		name     string
		workload string
		edit     func(*benchOptions)
		wantErr  string
	}{
		{"defaults", workloadAppend, func(*benchOptions) {}, ""},
		{"zero clients", workloadAppend, func(o *benchOptions) { o.clients = -1 }, "--clients"},
		{"zero conns", workloadAppend, func(o *benchOptions) { o.conns = 0 }, "--conns"},
		{"zero batch", workloadContention, func(o *benchOptions) { o.batch = 0 }, "--batch"},
		{"zero keys", workloadContention, func(o *benchOptions) { o.keys = 0 }, "--keys"},
		{"negative size", workloadAppend, func(o *benchOptions) { o.size = -1 }, "negative"},
		{"endless", workloadAppend, func(o *benchOptions) { o.duration = 0 }, "--duration 0"},
		{"count ends it", workloadAppend, func(o *benchOptions) { o.duration, o.count = 0, 5 }, ""},
		{"repeat ends a read", workloadReadAll, func(o *benchOptions) { o.duration, o.repeat = 0, 1 }, ""},
		{"repeat is for reads", workloadAppend, func(o *benchOptions) { o.repeat = 1 }, "read workloads"},
		{"read-stream needs a stream", workloadReadStream, func(*benchOptions) {}, "--stream"},
		{"stream and prepare", workloadReadStream, func(o *benchOptions) { o.stream, o.prepare = "s", 5 }, "exclude"},
		{"streaming appends", workloadAppend, func(o *benchOptions) { o.streaming, o.inflight = true, 1 }, ""},
		{"streaming is for appends", workloadContention, func(o *benchOptions) { o.streaming, o.inflight = true, 8 }, "--streaming"},
		{"nothing in flight", workloadAppend, func(o *benchOptions) { o.streaming = true }, "--inflight"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.edit(&o)
			err := o.check(tc.workload)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				if o.clients < 1 || !strings.HasPrefix(o.prefix, "bench-") || len(o.prefix) != len("bench-")+6 {
					t.Errorf("defaults not filled in: clients %d prefix %q", o.clients, o.prefix)
				}
				return
			}
			var ue *usageError
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ue) {
				t.Errorf("check = %v, want a usage error about %q", err, tc.wantErr)
			}
		})
	}
	o := valid()
	if err := o.check(workloadReadAll); err != nil || o.clients != 1 {
		t.Errorf("read default clients %d (%v), want 1", o.clients, err)
	}
	o = valid()
	if err := o.check(workloadContention); err != nil || o.clients != 64 {
		t.Errorf("contention default clients %d (%v), want 64", o.clients, err)
	}
}
