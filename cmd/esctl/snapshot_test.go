package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func fillOrder(t *testing.T, addr, stream string, n int) {
	t.Helper()
	for i := range n {
		mustRun(t, addr, "append", stream, fmt.Sprintf(`{"n":%d}`, i), "--type", "Counted")
	}
}

func TestSnapshotCommands(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	fillOrder(t, addr, "order-7", 10)

	got := kv(t, mustRun(t, addr, "snapshot", "save", "order-7", "--revision", "4", "--type", "OrderState", "--data", `{"sum":10}`))
	if got["SAVED"] != "true" || got["REVISION"] != "4" || got["PRUNED"] != "0" {
		t.Fatalf("save: %v", got)
	}
	// Data from stdin, another schema version.
	if _, stderr, code := runCLI(t, addr, strings.NewReader(`{"total":45}`), "snapshot", "save", "order-7", "--revision", "9",
		"--type", "OrderState", "--schema", "2", "--file", "-"); code != exitOK {
		t.Fatalf("save from stdin: %s", stderr)
	}

	out := mustRun(t, addr, "snapshot", "ls", "order-7")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !cmp.Equal(strings.Fields(lines[0]), []string{"REVISION", "SCHEMA", "TYPE", "SIZE", "CREATED", "USABLE"}) {
		t.Fatalf("ls:\n%s", out)
	}
	if f := strings.Fields(lines[1]); f[0] != "4" || f[1] != "0" || f[2] != "OrderState" || f[3] != "10" || f[5] != "true" {
		t.Fatalf("ls row %q", lines[1])
	}
	infos := jsonArray(t, mustRun(t, addr, "snapshot", "ls", "order-7", "-o", "json"), func() *esdv1.SnapshotInfo { return &esdv1.SnapshotInfo{} })
	if len(infos) != 2 || infos[1].GetRevision() != 9 || infos[1].GetSchemaVersion() != 2 {
		t.Fatalf("ls -o json: %v", infos)
	}

	got = kv(t, mustRun(t, addr, "snapshot", "get", "order-7"))
	if got["REVISION"] != "4" || got["DATA"] != `{"sum":10}` || got["SCHEMA"] != "0" || got["TYPE"] != "OrderState" {
		t.Fatalf("get: %v", got)
	}
	var sn esdv1.Snapshot
	if err := protoUnmarshal([]byte(mustRun(t, addr, "snapshot", "get", "order-7", "--schema", "2", "-o", "json")), &sn); err != nil {
		t.Fatal(err)
	}
	if sn.GetRevision() != 9 || string(sn.GetData()) != `{"total":45}` || sn.GetCreated() == nil {
		t.Fatalf("get -o json: %v", &sn)
	}
	if out := mustRun(t, addr, "snapshot", "get", "order-7", "--schema", "2", "--raw"); out != `{"total":45}` {
		t.Fatalf("get --raw: %q", out)
	}
	if _, stderr, code := runCLI(t, addr, nil, "snapshot", "get", "order-7", "--revision", "3"); code != exitError || !strings.Contains(stderr, "SNAPSHOT_NOT_FOUND") {
		t.Fatalf("get below the oldest: exit %d %s", code, stderr)
	}
	if _, stderr, code := runCLI(t, addr, nil, "snapshot", "save", "order-7", "--revision", "10", "--type", "S", "--data", "x"); code != exitError ||
		!strings.Contains(stderr, "SNAPSHOT_REVISION_INVALID") {
		t.Fatalf("save past the head: exit %d %s", code, stderr)
	}
	if _, _, code := runCLI(t, addr, nil, "snapshot", "save", "order-7", "--type", "S", "--data", "x"); code != exitUsage {
		t.Fatalf("save without --revision: exit %d", code)
	}
	if _, _, code := runCLI(t, addr, nil, "snapshot", "rm", "order-7", "--before", "0"); code != exitUsage {
		t.Fatalf("rm --before 0: exit %d", code)
	}

	if got := kv(t, mustRun(t, addr, "snapshot", "rm", "order-7", "--before", "5")); got["DELETED"] != "1" {
		t.Fatalf("rm --before 5: %v", got)
	}
	if got := kv(t, mustRun(t, addr, "snapshot", "rm", "order-7")); got["DELETED"] != "1" {
		t.Fatalf("rm: %v", got)
	}
	if out := mustRun(t, addr, "snapshot", "ls", "order-7", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls after rm: %q", out)
	}
}

// loadJSON is esctl load -o json's object.
type loadJSON struct {
	Snapshot json.RawMessage   `json:"snapshot"`
	Events   []json.RawMessage `json:"events"`
	End      json.RawMessage   `json:"end"`
}

func TestLoadCommand(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillOrder(t, addr, "cart-3", 8)
	all := srv.events(t, "cart-3")

	// Without a snapshot: every event, as read prints them.
	out := mustRun(t, addr, "load", "cart-3")
	if !strings.Contains(out, "HEAD                   7") || strings.Contains(out, "SNAPSHOT REVISION") {
		t.Fatalf("load without a snapshot:\n%s", out)
	}
	if n := strings.Count(out, "Counted"); n != 8 {
		t.Fatalf("load without a snapshot printed %d events:\n%s", n, out)
	}

	mustRun(t, addr, "snapshot", "save", "cart-3", "--revision", "5", "--type", "CartState", "--data", `{"items":6}`)
	out = mustRun(t, addr, "load", "cart-3")
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "SNAPSHOT STREAM") || !strings.Contains(out, "SNAPSHOT REVISION  5") || !strings.Contains(out, `{"items":6}`) {
		t.Fatalf("load table:\n%s", out)
	}
	if n := strings.Count(out, "Counted"); n != 2 {
		t.Fatalf("load printed %d events, want 2 (revisions 6, 7):\n%s", n, out)
	}
	if !strings.Contains(out, "EVENTS SINCE SNAPSHOT  0") || !strings.Contains(out, "SNAPSHOT ADVISED       false") {
		t.Fatalf("load end rows:\n%s", out)
	}

	var l loadJSON
	if err := json.Unmarshal([]byte(mustRun(t, addr, "load", "cart-3", "-o", "json")), &l); err != nil {
		t.Fatalf("load -o json: %v", err)
	}
	var sn esdv1.Snapshot
	if err := protoUnmarshal(l.Snapshot, &sn); err != nil || sn.GetRevision() != 5 {
		t.Fatalf("load -o json snapshot: %v %v", &sn, err)
	}
	var got []*esdv1.RecordedEvent
	for _, raw := range l.Events {
		ev := &esdv1.RecordedEvent{}
		if err := protoUnmarshal(raw, ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if diff := cmp.Diff(all[6:], got, protocmp.Transform()); diff != "" {
		t.Fatalf("load -o json events (-want +got):\n%s", diff)
	}
	var end esdv1.LoadEnd
	if err := protoUnmarshal(l.End, &end); err != nil || end.GetHead() != 7 {
		t.Fatalf("load -o json end: %v %v", &end, err)
	}

	out = mustRun(t, addr, "load", "cart-3", "-o", "jsonl")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], `{"snapshot":`) || !strings.HasPrefix(lines[1], `{"event":`) || !strings.HasPrefix(lines[3], `{"end":`) {
		t.Fatalf("load -o jsonl:\n%s", out)
	}
	// At the head, in json: an empty events list; with another schema
	// version, no snapshot.
	mustRun(t, addr, "snapshot", "save", "cart-3", "--revision", "7", "--type", "CartState", "--data", `{}`)
	l = loadJSON{}
	if err := json.Unmarshal([]byte(mustRun(t, addr, "load", "cart-3", "-o", "json")), &l); err != nil || l.Events == nil || len(l.Events) != 0 {
		t.Fatalf("load at the head -o json: %+v %v", l, err)
	}
	l = loadJSON{}
	if err := json.Unmarshal([]byte(mustRun(t, addr, "load", "cart-3", "--schema", "4", "-o", "json")), &l); err != nil || l.Snapshot != nil || len(l.Events) != 8 {
		t.Fatalf("load --schema 4 -o json: %+v %v", l, err)
	}
	if _, stderr, code := runCLI(t, addr, nil, "load", "cart-none"); code != exitError || !strings.Contains(stderr, "STREAM_NOT_FOUND") {
		t.Fatalf("load of a stream never written: exit %d %s", code, stderr)
	}
}

func TestSnapshotPolicyCommands(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	got := kv(t, mustRun(t, addr, "snapshot", "policy", "get", "order"))
	if got["POLICY"] != "default" || got["EVERY"] != "off" || got["REPLAY THRESHOLD"] != "off" {
		t.Fatalf("policy get: %v", got)
	}
	got = kv(t, mustRun(t, addr, "snapshot", "policy", "set", "order", "--every", "3"))
	if got["EVERY"] != "3" || got["POLICY"] != "own" {
		t.Fatalf("policy set: %v", got)
	}
	mustRun(t, addr, "snapshot", "policy", "set", "cart", "--replay-threshold", "500")
	if got := kv(t, mustRun(t, addr, "snapshot", "policy", "get", "cart")); got["REPLAY THRESHOLD"] != "500" || got["EVERY"] != "off" {
		t.Fatalf("policy get cart: %v", got)
	}
	for i, want := range []string{"false", "false", "true"} {
		got := kv(t, mustRun(t, addr, "append", "order-1", "{}", "--type", "T"))
		if got["EVENTS SINCE SNAPSHOT"] != fmt.Sprint(i+1) || got["SNAPSHOT ADVISED"] != want {
			t.Fatalf("append %d: %v", i, got)
		}
	}
	mustRun(t, addr, "snapshot", "policy", "rm", "order")
	if got := kv(t, mustRun(t, addr, "snapshot", "policy", "get", "order")); got["POLICY"] != "default" {
		t.Fatalf("policy after rm: %v", got)
	}
	if got := kv(t, mustRun(t, addr, "append", "order-1", "{}", "--type", "T")); got["SNAPSHOT ADVISED"] != "" {
		t.Fatalf("append without a policy shows advice: %v", got)
	}
	if _, _, code := runCLI(t, addr, nil, "snapshot", "policy", "set", "order"); code != exitUsage {
		t.Fatalf("policy set without a rule: exit %d", code)
	}
	if _, stderr, code := runCLI(t, addr, nil, "snapshot", "policy", "get", "order-1"); code != exitError || !strings.Contains(stderr, "INVALID_ARGUMENT") {
		t.Fatalf("policy get of a stream name: exit %d %s", code, stderr)
	}
}
