package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func newGroupInfo() *esdv1.GroupInfo { return &esdv1.GroupInfo{} }

// kv parses KEY VALUE output (keys may hold one space, as "ACK TIMEOUT").
func kv(t *testing.T, out string) map[string]string {
	t.Helper()
	m := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		k, v, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("not a KEY VALUE line: %q", line)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m
}

func TestGroupCreate(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	empty := &emptypb.Empty{}
	tests := []struct {
		name string
		args []string
		want *esdv1.Group
	}{
		{
			"stream with defaults", []string{"g-stream", "--stream", "cart-1"},
			&esdv1.Group{Name: "g-stream", Target: &esdv1.Group_Stream{Stream: "cart-1"}, Start: &esdv1.Group_FromStart{FromStart: empty}},
		},
		{
			"category with settings", []string{"g-cat", "--category", "cart", "--from", "end", "--ack-timeout", "1m30s",
				"--max-deliveries", "3", "--max-in-flight", "50", "--strategy", "by-stream"},
			&esdv1.Group{Name: "g-cat", Target: &esdv1.Group_Category{Category: "cart"}, Start: &esdv1.Group_FromEnd{FromEnd: empty},
				AckTimeout: durationpb.New(90 * time.Second), MaxDeliveries: 3, MaxInFlight: 50,
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM},
		},
		{
			"all filtered after a position", []string{"g-all", "--all", "--stream-prefix", "cart-", "--type-prefix", "Item",
				"--type-prefix", "Blob", "--from", "42", "--strategy", "round-robin"},
			&esdv1.Group{Name: "g-all", Target: &esdv1.Group_All{All: empty}, Start: &esdv1.Group_AfterPosition{AfterPosition: 42},
				Filter:   &esdv1.Filter{StreamPrefixes: []string{"cart-"}, EventTypePrefixes: []string{"Item", "Blob"}},
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { // not parallel: each reads the fake's last request
			out := mustRun(t, addr, append([]string{"group", "create"}, tc.args...)...)
			creates, _, _, _ := fake.groups.sent()
			if diff := cmp.Diff(tc.want, creates[len(creates)-1], protocmp.Transform()); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if got := kv(t, out)["NAME"]; got != tc.want.GetName() {
				t.Errorf("NAME %q:\n%s", got, out)
			}
		})
	}

	// The output is the group info; unset settings show the server's defaults.
	got := kv(t, mustRun(t, addr, "group", "info", "g-stream"))
	want := map[string]string{
		"NAME": "g-stream", "TARGET": "stream:cart-1", "STREAM PREFIXES": "-", "TYPE PREFIXES": "-",
		"STRATEGY": "round-robin", "ACK TIMEOUT": "30s", "MAX DELIVERIES": "10", "MAX IN FLIGHT": "1000",
		"CHECKPOINT": "0", "MEMBERS": "0", "IN FLIGHT": "0", "PARKED": "0", "DELIVERED": "0", "REDELIVERED": "0", "ACKED": "0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("info (-want +got):\n%s", diff)
	}
	got = kv(t, mustRun(t, addr, "group", "info", "g-all"))
	if got["TARGET"] != "all+filter" || got["STREAM PREFIXES"] != "cart-" || got["TYPE PREFIXES"] != "Item, Blob" {
		t.Errorf("filtered group: %v", got)
	}

	out := mustRun(t, addr, "group", "create", "g-json", "--all", "-o", "json")
	info := jsonArray(t, "["+out+"]", newGroupInfo)[0]
	if info.GetGroup().GetName() != "g-json" || info.GetGroup().GetAll() == nil {
		t.Errorf("json: %v", info)
	}

	_, stderr, code := runCLI(t, addr, nil, "group", "create", "g-stream", "--all")
	if code != exitError || !strings.Contains(stderr, "(reason: GROUP_EXISTS)") {
		t.Errorf("create twice: exit %d, stderr %q", code, stderr)
	}
}

func TestGroupUpdate(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	mustRun(t, addr, "group", "create", "g", "--all", "--stream-prefix", "cart-", "--from", "end",
		"--max-deliveries", "3", "--strategy", "by-stream")
	out := mustRun(t, addr, "group", "update", "g", "--ack-timeout", "2m", "--max-in-flight", "10")

	// The whole group goes back, target and filter as they were, the start
	// left out, only the settings given changed.
	want := &esdv1.Group{
		Name: "g", Target: &esdv1.Group_All{All: &emptypb.Empty{}}, Filter: &esdv1.Filter{StreamPrefixes: []string{"cart-"}},
		AckTimeout: durationpb.New(2 * time.Minute), MaxDeliveries: 3, MaxInFlight: 10,
		Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM,
	}
	_, updates, _, _ := fake.groups.sent()
	if len(updates) != 1 {
		t.Fatalf("%d updates", len(updates))
	}
	if diff := cmp.Diff(want, updates[0], protocmp.Transform()); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	got := kv(t, out)
	if got["ACK TIMEOUT"] != "2m0s" || got["MAX IN FLIGHT"] != "10" || got["MAX DELIVERIES"] != "3" || got["STRATEGY"] != "by-stream" {
		t.Errorf("output: %v", got)
	}

	_, stderr, code := runCLI(t, addr, nil, "group", "update", "nope", "--max-deliveries", "2")
	if code != exitError || !strings.Contains(stderr, "(reason: GROUP_NOT_FOUND)") {
		t.Errorf("update of a missing group: exit %d, stderr %q", code, stderr)
	}
	if _, updates, _, _ := fake.groups.sent(); len(updates) != 1 {
		t.Errorf("a missing group was updated blindly: %d updates", len(updates))
	}
}

func TestGroupLsAndRm(t *testing.T) {
	t.Parallel()
	_, addr := newTestServer(t)
	out := mustRun(t, addr, "group", "ls")
	if got := strings.Fields(out); !cmp.Equal(got, []string{"NAME", "TARGET", "STRATEGY", "CHECKPOINT", "MEMBERS", "IN-FLIGHT", "PARKED", "DELIVERED", "ACKED"}) {
		t.Errorf("empty ls %q", out)
	}
	mustRun(t, addr, "group", "create", "orders", "--category", "order", "--strategy", "by-stream")
	mustRun(t, addr, "group", "create", "audit", "--all")

	lines := strings.Split(strings.TrimSuffix(mustRun(t, addr, "group", "ls"), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("ls:\n%s", strings.Join(lines, "\n"))
	}
	for i, want := range [][]string{
		{"audit", "all", "round-robin", "0", "0", "0", "0", "0", "0"},
		{"orders", "category:order", "by-stream", "0", "0", "0", "0", "0", "0"},
	} {
		if got := strings.Fields(lines[i+1]); !cmp.Equal(got, want) {
			t.Errorf("row %d %q, want %q", i, got, want)
		}
	}
	if infos := jsonArray(t, mustRun(t, addr, "group", "ls", "-o", "json"), newGroupInfo); len(infos) != 2 {
		t.Errorf("json: %d groups", len(infos))
	}
	if infos := jsonLines(t, mustRun(t, addr, "group", "ls", "-o", "jsonl"), newGroupInfo); len(infos) != 2 {
		t.Errorf("jsonl: %d groups", len(infos))
	}

	if got := kv(t, mustRun(t, addr, "group", "rm", "audit")); got["GROUP"] != "audit" || got["DELETED"] != "true" {
		t.Errorf("rm: %v", got)
	}
	for _, args := range [][]string{{"group", "rm", "audit"}, {"group", "info", "audit"}} {
		if _, stderr, code := runCLI(t, addr, nil, args...); code != exitError || !strings.Contains(stderr, "(reason: GROUP_NOT_FOUND)") {
			t.Errorf("%v after rm: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestGroupJoin joins a group on cart-1's 7 events: acks, nacks that park,
// the parked list and its replay.
func TestGroupJoin(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	fillReadStreams(t, addr)
	evs := fake.events("cart-1")
	mustRun(t, addr, "group", "create", "g", "--category", "cart")

	out, stderr, code := runCLI(t, addr, nil, "group", "join", "g", "--limit", "3")
	if code != exitOK {
		t.Fatalf("join: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if got := strings.Fields(lines[0]); !cmp.Equal(got, []string{"POSITION", "STREAM", "REVISION", "TYPE", "ID", "DELIVERY-COUNT", "DATA"}) {
		t.Errorf("header %q", got)
	}
	if len(lines) != 4 {
		t.Fatalf("want 3 deliveries:\n%s", out)
	}
	if got := strings.Fields(lines[1]); !cmp.Equal(got, []string{"1", "cart-1", "0", "ItemAdded", evs[0].GetId(), "1", `{"item":0}`}) {
		t.Errorf("first row %q", got)
	}
	if stderr != "-- joined group g as member 7\n" {
		t.Errorf("stderr %q", stderr)
	}
	// The fake delivered all 7 at once; only the 3 printed are acked.
	_, _, acks, _ := fake.groups.sent()
	if want := []string{evs[0].GetId(), evs[1].GetId(), evs[2].GetId()}; !cmp.Equal(acks, want) {
		t.Errorf("acks %v, want %v", acks, want)
	}
	if got := kv(t, mustRun(t, addr, "group", "info", "g")); got["ACKED"] != "3" || got["MEMBERS"] != "0" || got["CHECKPOINT"] != "3" {
		t.Errorf("info after join: %v", got)
	}

	// Park the next two, then list them.
	mustRun(t, addr, "group", "join", "g", "--limit", "2", "--nack", "park", "--reason", "bad\tdata")
	_, _, _, nacks := fake.groups.sent()
	wantNacks := []*esdv1.Nack{
		{EventIds: []string{evs[3].GetId()}, Action: esdv1.NackAction_NACK_ACTION_PARK, Reason: "bad\tdata"},
		{EventIds: []string{evs[4].GetId()}, Action: esdv1.NackAction_NACK_ACTION_PARK, Reason: "bad\tdata"},
	}
	if diff := cmp.Diff(wantNacks, nacks, protocmp.Transform()); diff != "" {
		t.Errorf("nacks (-want +got):\n%s", diff)
	}
	fake.groups.mu.Lock()
	fake.groups.parkedPage = 1 // esctl must follow the page tokens
	fake.groups.mu.Unlock()
	lines = strings.Split(strings.TrimSuffix(mustRun(t, addr, "group", "parked", "g"), "\n"), "\n")
	if got := strings.Fields(lines[0]); !cmp.Equal(got, []string{"POSITION", "STREAM", "REVISION", "TYPE", "DELIVERIES", "REASON", "PARKED-AT"}) {
		t.Errorf("parked header %q", got)
	}
	if len(lines) != 3 {
		t.Fatalf("want 2 parked:\n%s", strings.Join(lines, "\n"))
	}
	// Delivered twice: the first join got every event and left this one
	// unanswered.
	if got := strings.Fields(lines[2]); !cmp.Equal(got, []string{"5", "cart-1", "4", "ItemAdded", "2", "bad", "data", "2025-01-02T03:04:05.000Z"}) {
		t.Errorf("parked row %q", got)
	}
	if got := jsonLines(t, mustRun(t, addr, "group", "parked", "g", "--limit", "1", "-o", "jsonl"),
		func() *esdv1.ParkedEvent { return &esdv1.ParkedEvent{} }); len(got) != 1 || got[0].GetEvent().GetId() != evs[3].GetId() {
		t.Errorf("parked --limit 1: %v", got)
	}
	fake.groups.mu.Lock()
	last := fake.groups.parkedReqs[len(fake.groups.parkedReqs)-1]
	fake.groups.mu.Unlock()
	if last.GetPageSize() != 1 || last.GetPageToken() != "" {
		t.Errorf("--limit 1 asked for %v", last)
	}

	if got := kv(t, mustRun(t, addr, "group", "replay-parked", "g", "--max", "1")); got["REPLAYED"] != "1" || got["GROUP"] != "g" {
		t.Errorf("replay: %v", got)
	}
	fake.groups.mu.Lock()
	replay := fake.groups.replays[0]
	fake.groups.mu.Unlock()
	if diff := cmp.Diff(&esdv1.ReplayParkedRequest{Group: "g", MaxCount: 1}, replay, protocmp.Transform()); diff != "" {
		t.Errorf("replay request (-want +got):\n%s", diff)
	}

	// The replayed event comes first again, counting from 1.
	got := jsonLines(t, mustRun(t, addr, "group", "join", "g", "--limit", "1", "-o", "jsonl"), func() *esdv1.Delivery { return &esdv1.Delivery{} })
	want := []*esdv1.Delivery{{Event: evs[3], DeliveryCount: 1}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

func TestGroupJoinRetry(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	fillReadStreams(t, addr)
	mustRun(t, addr, "group", "create", "g", "--stream", "user-1")
	out := mustRun(t, addr, "group", "join", "g", "--nack", "retry", "--limit", "3", "-o", "jsonl")
	var counts []uint32
	for _, d := range jsonLines(t, out, func() *esdv1.Delivery { return &esdv1.Delivery{} }) {
		counts = append(counts, d.GetDeliveryCount())
	}
	if !cmp.Equal(counts, []uint32{1, 2, 3}) {
		t.Errorf("delivery counts %v, want 1 2 3", counts)
	}
	_, _, acks, nacks := fake.groups.sent()
	if len(acks) != 0 || len(nacks) != 3 || nacks[0].GetAction() != esdv1.NackAction_NACK_ACTION_RETRY {
		t.Errorf("acks %v, nacks %v", acks, nacks)
	}
}

// TestGroupJoinInterrupt cancels the context as Ctrl-C does: esctl leaves
// the group, its ack counted, and exits 0.
func TestGroupJoinInterrupt(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	fillReadStreams(t, addr)
	id := fake.events("user-1")[0].GetId()
	mustRun(t, addr, "group", "create", "g", "--stream", "user-1")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b := startCLI(ctx, addr, id, "", "group", "join", "g")
	waitFor(t, b.stdout.seen, "the delivery")
	cancel()
	if code := b.exit(t); code != exitOK {
		t.Fatalf("exit %d: %s", code, b.stderr)
	}
	if _, _, acks, _ := fake.groups.sent(); !cmp.Equal(acks, []string{id}) {
		t.Errorf("acks %v", acks)
	}
}

// TestGroupJoinLeaveTimeout: a server that does not end the stream after
// the member closed its side is given --timeout, then esctl says its acks
// may be lost.
func TestGroupJoinLeaveTimeout(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	fillReadStreams(t, addr)
	mustRun(t, addr, "group", "create", "g", "--stream", "user-1")
	fake.groups.mu.Lock()
	fake.groups.hangOnLeave = true
	fake.groups.mu.Unlock()
	_, stderr, code := runCLI(t, addr, nil, "group", "join", "g", "--limit", "1", "--timeout", "100ms")
	if code != exitError || !strings.Contains(stderr, "the last acks may be lost") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestGroupExitCodes(t *testing.T) {
	t.Parallel()
	fake, addr := newTestServer(t)
	mustRun(t, addr, "group", "create", "g", "--all")
	tests := []struct {
		name       string
		addr       string
		args       []string
		want       int
		wantStderr string
	}{
		{"no target", addr, []string{"group", "create", "x"}, exitUsage, "give exactly one of --stream, --category or --all"},
		{"two targets", addr, []string{"group", "create", "x", "--stream", "s", "--category", "c"}, exitUsage, "give exactly one of"},
		{"prefix without all", addr, []string{"group", "create", "x", "--stream", "s", "--stream-prefix", "p"}, exitUsage, "--all only"},
		{"bad strategy", addr, []string{"group", "create", "x", "--all", "--strategy", "fastest"}, exitUsage, "want round-robin or by-stream"},
		{"bad from", addr, []string{"group", "create", "x", "--all", "--from", "-1"}, exitUsage, "want start, end or a number"},
		{"negative ack timeout", addr, []string{"group", "create", "x", "--all", "--ack-timeout", "-1s"}, exitUsage, "must not be negative"},
		{"negative max deliveries", addr, []string{"group", "create", "x", "--all", "--max-deliveries", "-1"}, exitUsage, "invalid argument"},
		{"no name", addr, []string{"group", "create", "--all"}, exitUsage, "accepts 1 arg"},
		{"update nothing", addr, []string{"group", "update", "g"}, exitUsage, "nothing to change"},
		{"update target", addr, []string{"group", "update", "g", "--all"}, exitUsage, "unknown flag: --all"},
		{"ack and nack", addr, []string{"group", "join", "g", "--ack", "--nack", "park"}, exitUsage, "exclude each other"},
		{"no answer", addr, []string{"group", "join", "g", "--ack=false"}, exitUsage, "needs --nack"},
		{"bad nack", addr, []string{"group", "join", "g", "--nack", "drop"}, exitUsage, "want retry, retry-later or park"},
		{"reason without nack", addr, []string{"group", "join", "g", "--reason", "x"}, exitUsage, "--reason goes with --nack"},
		{"negative parked limit", addr, []string{"group", "parked", "g", "--limit", "-1"}, exitUsage, "must not be negative"},
		{"unknown subcommand", addr, []string{"group", "bogus"}, exitUsage, "unknown command"},
		{"join missing group", addr, []string{"group", "join", "nope"}, exitError, "(reason: GROUP_NOT_FOUND)"},
		{"parked missing group", addr, []string{"group", "parked", "nope"}, exitError, "(reason: GROUP_NOT_FOUND)"},
		{"replay missing group", addr, []string{"group", "replay-parked", "nope"}, exitError, "(reason: GROUP_NOT_FOUND)"},
		{"server refuses", addr, []string{"group", "create", "x", "--stream", "$bad"}, exitError, "(reason: INVALID_ARGUMENT)"},
		{"unreachable", closedAddr(t), []string{"group", "ls"}, exitUnavailable, "cannot reach esd"},
		{"unreachable join", closedAddr(t), []string{"group", "join", "g"}, exitUnavailable, "cannot reach esd"},
	}
	t.Run("cases", func(t *testing.T) { // returns when its parallel subtests are done
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				out, stderr, code := runCLI(t, tc.addr, nil, tc.args...)
				if code != tc.want {
					t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.want, stderr)
				}
				if !strings.HasPrefix(stderr, "esctl: ") || !strings.Contains(stderr, tc.wantStderr) {
					t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
				}
				if out != "" {
					t.Errorf("an error alone prints nothing on stdout, got:\n%s", out)
				}
			})
		}
	})
	// Only "g" and the name the server refused got there.
	if creates, updates, _, _ := fake.groups.sent(); len(creates) != 2 || len(updates) != 0 {
		t.Errorf("usage errors reached the server: %d creates, %d updates", len(creates), len(updates))
	}
}
