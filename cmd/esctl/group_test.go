package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/esdhq/esd/internal/testutil"
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
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr) // positions 1 to 8: a start from the end is told apart from the start
	empty := &emptypb.Empty{}
	defaults := func(g *esdv1.Group) *esdv1.Group {
		g.AckTimeout, g.MaxDeliveries, g.MaxInFlight = durationpb.New(30*time.Second), 10, 1000
		return g
	}
	// What esctl sends: the settings given, the others unset, and the start
	// always. What the server keeps: the settings given, its defaults for
	// the rest, and the start as the group's first checkpoint.
	tests := []struct {
		name           string
		args           []string
		sent           *esdv1.Group
		want           *esdv1.Group
		wantCheckpoint uint64
	}{
		{
			"stream with defaults", []string{"g-stream", "--stream", "cart-1"},
			&esdv1.Group{Name: "g-stream", Target: &esdv1.Group_Stream{Stream: "cart-1"}, Start: &esdv1.Group_FromStart{FromStart: empty}},
			defaults(&esdv1.Group{Name: "g-stream", Target: &esdv1.Group_Stream{Stream: "cart-1"},
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN}),
			0,
		},
		{
			"category with settings", []string{"g-cat", "--category", "cart", "--from", "end", "--ack-timeout", "1m30s",
				"--max-deliveries", "3", "--max-in-flight", "50", "--strategy", "by-stream"},
			&esdv1.Group{Name: "g-cat", Target: &esdv1.Group_Category{Category: "cart"}, Start: &esdv1.Group_FromEnd{FromEnd: empty},
				AckTimeout: durationpb.New(90 * time.Second), MaxDeliveries: 3, MaxInFlight: 50,
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM},
			&esdv1.Group{Name: "g-cat", Target: &esdv1.Group_Category{Category: "cart"},
				AckTimeout: durationpb.New(90 * time.Second), MaxDeliveries: 3, MaxInFlight: 50,
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM},
			8,
		},
		{
			"all filtered after a position", []string{"g-all", "--all", "--stream-prefix", "cart-", "--type-prefix", "Item",
				"--type-prefix", "Blob", "--from", "42", "--strategy", "round-robin"},
			&esdv1.Group{Name: "g-all", Target: &esdv1.Group_All{All: empty}, Start: &esdv1.Group_AfterPosition{AfterPosition: 42},
				Filter:   &esdv1.Filter{StreamPrefixes: []string{"cart-"}, EventTypePrefixes: []string{"Item", "Blob"}},
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN},
			defaults(&esdv1.Group{Name: "g-all", Target: &esdv1.Group_All{All: empty},
				Filter:   &esdv1.Filter{StreamPrefixes: []string{"cart-"}, EventTypePrefixes: []string{"Item", "Blob"}},
				Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_ROUND_ROBIN}),
			42,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { // not parallel: each takes the server's requests since the last
			before := len(srv.requests(t, "CreateGroup"))
			out := mustRun(t, addr, append([]string{"group", "create"}, tc.args...)...)
			want := []proto.Message{&esdv1.CreateGroupRequest{Group: tc.sent}}
			if diff := cmp.Diff(want, srv.requests(t, "CreateGroup")[before:], protocmp.Transform()); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			if got := kv(t, out)["NAME"]; got != tc.want.GetName() {
				t.Errorf("NAME %q:\n%s", got, out)
			}
			info := jsonArray(t, "["+mustRun(t, addr, "group", "info", tc.want.GetName(), "-o", "json")+"]", newGroupInfo)[0]
			if diff := cmp.Diff(tc.want, info.GetGroup(), protocmp.Transform()); diff != "" {
				t.Errorf("group (-want +got):\n%s", diff)
			}
			if info.GetCheckpoint() != tc.wantCheckpoint {
				t.Errorf("checkpoint %d, want %d", info.GetCheckpoint(), tc.wantCheckpoint)
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
	srv := startESD(t)
	addr := srv.addr
	mustRun(t, addr, "append", "cart-1", "x", "--type", "T") // so that the start from the end is position 1
	mustRun(t, addr, "group", "create", "g", "--all", "--stream-prefix", "cart-", "--from", "end",
		"--max-deliveries", "3", "--strategy", "by-stream")
	out := mustRun(t, addr, "group", "update", "g", "--ack-timeout", "2m", "--max-in-flight", "10")

	// The whole group goes back, target and filter as they were, the start
	// left out (the server refuses an update with one), only the settings
	// given changed.
	want := &esdv1.Group{
		Name: "g", Target: &esdv1.Group_All{All: &emptypb.Empty{}}, Filter: &esdv1.Filter{StreamPrefixes: []string{"cart-"}},
		AckTimeout: durationpb.New(2 * time.Minute), MaxDeliveries: 3, MaxInFlight: 10,
		Strategy: esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM,
	}
	if diff := cmp.Diff([]proto.Message{&esdv1.UpdateGroupRequest{Group: want}}, srv.requests(t, "UpdateGroup"), protocmp.Transform()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	info := jsonArray(t, "["+mustRun(t, addr, "group", "info", "g", "-o", "json")+"]", newGroupInfo)[0]
	if diff := cmp.Diff(want, info.GetGroup(), protocmp.Transform()); diff != "" {
		t.Errorf("group (-want +got):\n%s", diff)
	}
	if info.GetCheckpoint() != 1 {
		t.Errorf("checkpoint %d: the start from the end moved", info.GetCheckpoint())
	}
	got := kv(t, out)
	if got["ACK TIMEOUT"] != "2m0s" || got["MAX IN FLIGHT"] != "10" || got["MAX DELIVERIES"] != "3" || got["STRATEGY"] != "by-stream" {
		t.Errorf("output: %v", got)
	}

	_, stderr, code := runCLI(t, addr, nil, "group", "update", "nope", "--max-deliveries", "2")
	if code != exitError || !strings.Contains(stderr, "(reason: GROUP_NOT_FOUND)") {
		t.Errorf("update of a missing group: exit %d, stderr %q", code, stderr)
	}
	if n := srv.calls(t, "UpdateGroup"); n != 1 {
		t.Errorf("a missing group was updated blindly: %d updates", n)
	}
}

func TestGroupLsAndRm(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
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

// Join stream messages as esctl sends them: the join (esctl's default
// member name), then an ack or a nack for each delivery.
func joinMsg(group string) *esdv1.JoinRequest {
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: group, Member: "esctl"}}}
}

func ackMsg(id string) *esdv1.JoinRequest {
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: []string{id}}}}
}

func nackMsg(id string, action esdv1.NackAction, reason string) *esdv1.JoinRequest {
	return &esdv1.JoinRequest{Content: &esdv1.JoinRequest_Nack{Nack: &esdv1.Nack{EventIds: []string{id}, Action: action, Reason: reason}}}
}

// joinSent checks the messages esctl sent on its Join streams since the
// server had received n of them (the length of requests then). The
// client sends the acks ready at once in one message: an ack of several
// events counts as one ack each, in order, as want has them.
func joinSent(t *testing.T, srv *testESD, n int, want ...proto.Message) {
	t.Helper()
	var got []proto.Message
	for _, m := range srv.requests(t, "Join")[n:] {
		ids := m.(*esdv1.JoinRequest).GetAck().GetEventIds()
		if len(ids) < 2 {
			got = append(got, m)
			continue
		}
		for _, id := range ids {
			got = append(got, ackMsg(id))
		}
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("join messages (-want +got):\n%s", diff)
	}
}

// TestGroupJoin joins a group on cart-1's 7 events: acks, nacks that park,
// the parked list and its replay.
func TestGroupJoin(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr)
	evs := srv.events(t, "cart-1")
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
	if stderr != "-- joined group g as member 1\n" { // the server's first member
		t.Errorf("stderr %q", stderr)
	}
	// The server may have sent more ahead; only the 3 printed are acked,
	// so the checkpoint is at the third.
	joinSent(t, srv, 0, joinMsg("g"), ackMsg(evs[0].GetId()), ackMsg(evs[1].GetId()), ackMsg(evs[2].GetId()))
	if got := kv(t, mustRun(t, addr, "group", "info", "g")); got["ACKED"] != "3" || got["MEMBERS"] != "0" || got["CHECKPOINT"] != "3" {
		t.Errorf("info after join: %v", got)
	}

	// Park the next two, then list them.
	sent := len(srv.requests(t, "Join"))
	mustRun(t, addr, "group", "join", "g", "--limit", "2", "--nack", "park", "--reason", "bad\tdata")
	joinSent(t, srv, sent, joinMsg("g"),
		nackMsg(evs[3].GetId(), esdv1.NackAction_NACK_ACTION_PARK, "bad\tdata"),
		nackMsg(evs[4].GetId(), esdv1.NackAction_NACK_ACTION_PARK, "bad\tdata"))
	newParked := func() *esdv1.ParkedEvent { return &esdv1.ParkedEvent{} }
	parked := jsonLines(t, mustRun(t, addr, "group", "parked", "g", "-o", "jsonl"), newParked)
	if len(parked) != 2 {
		t.Fatalf("%d parked, want 2", len(parked))
	}
	for i, p := range parked {
		if p.GetEvent().GetId() != evs[3+i].GetId() || p.GetReason() != "bad\tdata" {
			t.Errorf("parked %d: %v, want event %s with the reason", i, p, evs[3+i].GetId())
		}
	}
	lines = strings.Split(strings.TrimSuffix(mustRun(t, addr, "group", "parked", "g"), "\n"), "\n")
	if got := strings.Fields(lines[0]); !cmp.Equal(got, []string{"POSITION", "STREAM", "REVISION", "TYPE", "DELIVERIES", "REASON", "PARKED-AT"}) {
		t.Errorf("parked header %q", got)
	}
	if len(lines) != 3 {
		t.Fatalf("want 2 parked:\n%s", strings.Join(lines, "\n"))
	}
	// Delivered once: the first join may have got it ahead and left it
	// unanswered, but the group's delivery counts live in its dispatcher,
	// which stopped when its last member left; the second join's started
	// afresh from the checkpoint.
	row := strings.Fields(lines[2])
	if len(row) != 8 || !cmp.Equal(row[:7], []string{"5", "cart-1", "4", "ItemAdded", "1", "bad", "data"}) {
		t.Errorf("parked row %q", row)
	} else if _, err := time.Parse("2006-01-02T15:04:05.000Z07:00", row[7]); err != nil {
		t.Errorf("parked at: %v", err)
	}
	sent = len(srv.requests(t, "ListParked"))
	if got := jsonLines(t, mustRun(t, addr, "group", "parked", "g", "--limit", "1", "-o", "jsonl"), newParked); len(got) != 1 || got[0].GetEvent().GetId() != evs[3].GetId() {
		t.Errorf("parked --limit 1: %v", got)
	}
	// One page of one, asked for.
	if diff := cmp.Diff([]proto.Message{&esdv1.ListParkedRequest{Group: "g", PageSize: 1}}, srv.requests(t, "ListParked")[sent:], protocmp.Transform()); diff != "" {
		t.Errorf("parked --limit 1 requests (-want +got):\n%s", diff)
	}

	if got := kv(t, mustRun(t, addr, "group", "replay-parked", "g", "--max", "1")); got["REPLAYED"] != "1" || got["GROUP"] != "g" {
		t.Errorf("replay: %v", got)
	}
	if diff := cmp.Diff([]proto.Message{&esdv1.ReplayParkedRequest{Group: "g", MaxCount: 1}}, srv.requests(t, "ReplayParked"), protocmp.Transform()); diff != "" {
		t.Errorf("replay requests (-want +got):\n%s", diff)
	}

	// The replayed event comes first again, counting from 1.
	sent = len(srv.requests(t, "Join"))
	got := jsonLines(t, mustRun(t, addr, "group", "join", "g", "--limit", "1", "-o", "jsonl"), func() *esdv1.Delivery { return &esdv1.Delivery{} })
	want := []*esdv1.Delivery{{Event: evs[3], DeliveryCount: 1}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	joinSent(t, srv, sent, joinMsg("g"), ackMsg(evs[3].GetId()))
	if got := jsonLines(t, mustRun(t, addr, "group", "parked", "g", "-o", "jsonl"), newParked); len(got) != 1 || got[0].GetEvent().GetId() != evs[4].GetId() {
		t.Errorf("after replaying one, parked %v", got)
	}
}

// TestGroupParkedPages parks more events than a page of ListParked holds
// (the server's default page is 100): esctl follows the page token.
func TestGroupParkedPages(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	mustRun(t, addr, "bench", "read-stream", "--prepare", "120", "--repeat", "1", "--warmup", "0", "--size", "8", "--stream-prefix", "pp")
	mustRun(t, addr, "group", "create", "g", "--stream", "pp-read")
	mustRun(t, addr, "group", "join", "g", "--limit", "120", "--nack", "park", "-o", "jsonl")
	parked := jsonLines(t, mustRun(t, addr, "group", "parked", "g", "-o", "jsonl"), func() *esdv1.ParkedEvent { return &esdv1.ParkedEvent{} })
	if len(parked) != 120 {
		t.Fatalf("%d parked, want 120", len(parked))
	}
	for i, p := range parked {
		if p.GetEvent().GetRevision() != uint64(i) {
			t.Fatalf("parked %d is revision %d", i, p.GetEvent().GetRevision())
		}
	}
	// The server's page size, then the same from the token it gave.
	reqs := srv.requests(t, "ListParked")
	if len(reqs) != 2 {
		t.Fatalf("%d ListParked calls, want 2 pages", len(reqs))
	}
	token := reqs[1].(*esdv1.ListParkedRequest).GetPageToken()
	want := []proto.Message{&esdv1.ListParkedRequest{Group: "g"}, &esdv1.ListParkedRequest{Group: "g", PageToken: token}}
	if diff := cmp.Diff(want, reqs, protocmp.Transform()); diff != "" || token == "" {
		t.Errorf("requests, the second's page token %q (-want +got):\n%s", token, diff)
	}
}

func TestGroupJoinRetry(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr)
	id := srv.events(t, "user-1")[0].GetId()
	mustRun(t, addr, "group", "create", "g", "--stream", "user-1")
	out := mustRun(t, addr, "group", "join", "g", "--nack", "retry", "--limit", "3", "-o", "jsonl")
	var counts []uint32
	for _, d := range jsonLines(t, out, func() *esdv1.Delivery { return &esdv1.Delivery{} }) {
		counts = append(counts, d.GetDeliveryCount())
	}
	if !cmp.Equal(counts, []uint32{1, 2, 3}) {
		t.Errorf("delivery counts %v, want 1 2 3", counts)
	}
	// No ack: a nack RETRY each time, with the default reason.
	retry := nackMsg(id, esdv1.NackAction_NACK_ACTION_RETRY, "nacked by esctl")
	joinSent(t, srv, 0, joinMsg("g"), retry, retry, retry)
	// Nothing acked or parked; redelivered at least the twice printed (the
	// server may have sent it once more before esctl left).
	got := kv(t, mustRun(t, addr, "group", "info", "g"))
	if redelivered, err := strconv.Atoi(got["REDELIVERED"]); err != nil || redelivered < 2 || got["ACKED"] != "0" || got["PARKED"] != "0" {
		t.Errorf("info after join: %v", got)
	}
}

// TestGroupJoinInterrupt cancels the context as Ctrl-C does: esctl leaves
// the group, its ack counted, and exits 0.
func TestGroupJoinInterrupt(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr)
	id := srv.events(t, "user-1")[0].GetId()
	mustRun(t, addr, "group", "create", "g", "--stream", "user-1")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	b := startCLI(ctx, addr, id, "", "group", "join", "g")
	waitFor(t, b.stdout.seen, "the delivery")
	cancel()
	if code := b.exit(t); code != exitOK {
		t.Fatalf("exit %d: %s", code, b.stderr)
	}
	joinSent(t, srv, 0, joinMsg("g"), ackMsg(id))
	if got := kv(t, mustRun(t, addr, "group", "info", "g")); got["ACKED"] != "1" || got["CHECKPOINT"] != "8" || got["MEMBERS"] != "0" {
		t.Errorf("info after join: %v", got)
	}
}

// TestGroupJoinLeaveTimeout: a server that does not end the stream after
// the member closed its side is given --timeout, then esctl says its acks
// may be lost.
func TestGroupJoinLeaveTimeout(t *testing.T) {
	t.Parallel()
	addr := startFake(t, &fakeServer{})
	_, stderr, code := runCLI(t, addr, nil, "group", "join", "g", "--limit", "1", "--timeout", "100ms")
	if code != exitError || !strings.Contains(stderr, "the last acks may be lost") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestGroupExitCodes(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
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
		{"server refuses", addr, []string{"group", "create", "x", "--all", "--ack-timeout", "2h"}, exitError, "(reason: INVALID_ARGUMENT)"},
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
	if creates, updates := srv.calls(t, "CreateGroup"), srv.calls(t, "UpdateGroup"); creates != 2 || updates != 0 {
		t.Errorf("usage errors reached the server: %d creates, %d updates", creates, updates)
	}
}

// TestGroupWait waits for the checkpoint of a group on cart's events:
// not reached without a member (exit 1, the checkpoint printed), reached
// once a member has acknowledged the position, and reached for a member
// acknowledging while esctl waits.
func TestGroupWait(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr)
	mustRun(t, addr, "group", "create", "g", "--category", "cart")

	out, stderr, code := runCLI(t, addr, nil, "group", "wait", "g", "3", "--timeout", "200ms")
	if code != exitError || !strings.Contains(stderr, "has not reached position 3 (checkpoint 0): still being processed") {
		t.Errorf("not reached: exit %d, stderr %q", code, stderr)
	}
	if got := kv(t, out); got["GROUP"] != "g" || got["POSITION"] != "3" || got["CHECKPOINT"] != "0" || got["REACHED"] != "false" {
		t.Errorf("not reached: %v", got)
	}
	want := []proto.Message{&esdv1.WaitForCheckpointRequest{Group: "g", Position: 3, Timeout: durationpb.New(200 * time.Millisecond)}}
	if diff := cmp.Diff(want, srv.requests(t, "WaitForCheckpoint"), protocmp.Transform()); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}

	mustRun(t, addr, "group", "join", "g", "--limit", "3")
	if got := kv(t, mustRun(t, addr, "group", "wait", "g", "3")); got["CHECKPOINT"] != "3" || got["REACHED"] != "true" {
		t.Errorf("after the acks: %v", got)
	}

	type result struct {
		out, stderr string
		code        int
	}
	waited := make(chan result, 1)
	go func() {
		out, stderr, code := runCLI(t, addr, nil, "group", "wait", "g", "5", "--timeout", "20s", "-o", "json")
		waited <- result{out, stderr, code}
	}()
	testutil.Eventually(t, 10*time.Second, "the wait at the server", func() bool { return srv.calls(t, "WaitForCheckpoint") == 3 })
	mustRun(t, addr, "group", "join", "g", "--limit", "2")
	r := <-waited
	resp := &esdv1.WaitForCheckpointResponse{}
	if r.code != exitOK {
		t.Fatalf("wait while a member acks: exit %d, stderr %q", r.code, r.stderr)
	}
	if err := protojson.Unmarshal([]byte(r.out), resp); err != nil || !resp.GetReached() || resp.GetCheckpoint() != 5 {
		t.Errorf("wait while a member acks: %q (%v)", r.out, err)
	}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"group", "wait", "g", "x1"}, exitUsage, "is not a position"},
		{[]string{"group", "wait", "g"}, exitUsage, "accepts 2 arg"},
		{[]string{"group", "wait", "nope", "1"}, exitError, "(reason: GROUP_NOT_FOUND)"},
	} {
		if _, stderr, code := runCLI(t, addr, nil, tc.args...); code != tc.code || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.stderr)
		}
	}
}
