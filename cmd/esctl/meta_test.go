package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func TestStreamMetaCommands(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	fillOrder(t, addr, "order-9", 5)

	got := kv(t, mustRun(t, addr, "stream", "meta", "get", "order-9"))
	if got["METADATA REVISION"] != "-" || got["MAX COUNT"] != "-" || got["EFFECTIVE MAX COUNT"] != "-" {
		t.Fatalf("get before any metadata: %v", got)
	}
	got = kv(t, mustRun(t, addr, "stream", "meta", "set", "order-9", "--max-count", "2", "--json", `{"team":"billing"}`, "--expected-revision", "none"))
	if got["METADATA REVISION"] != "0" {
		t.Fatalf("set: %v", got)
	}
	got = kv(t, mustRun(t, addr, "stream", "meta", "get", "order-9"))
	if got["METADATA REVISION"] != "0" || got["MAX COUNT"] != "2" || got["CUSTOM JSON"] != `{"team":"billing"}` ||
		got["EFFECTIVE MAX COUNT"] != "2" || got["MAX AGE"] != "-" {
		t.Fatalf("get: %v", got)
	}
	if info := kv(t, mustRun(t, addr, "info", "order-9")); info["EVENTS"] != "2" || info["HEAD"] != "4" {
		t.Fatalf("info with max count 2: %v", info)
	}

	// A wrong expected revision says which one it found.
	_, stderr, code := runCLI(t, addr, strings.NewReader(""), "stream", "meta", "set", "order-9", "--truncate-before", "3", "--expected-revision", "7")
	if code != exitError || !strings.Contains(stderr, "WRONG_EXPECTED_METADATA_REVISION") || !strings.Contains(stderr, "found revision 0") {
		t.Fatalf("wrong revision: exit %d, stderr %q", code, stderr)
	}
	got = kv(t, mustRun(t, addr, "stream", "meta", "set", "order-9", "--truncate-before", "1", "--expected-revision", "0"))
	if got["METADATA REVISION"] != "1" {
		t.Fatalf("set at 0: %v", got)
	}

	// Category defaults: a stream without its own max age takes the
	// category's.
	mustRun(t, addr, "stream", "meta", "set", "--category", "order", "--max-age", "720h", "--max-count", "100")
	got = kv(t, mustRun(t, addr, "stream", "meta", "get", "--category", "order"))
	if got["MAX AGE"] != "720h0m0s" || got["MAX COUNT"] != "100" || got["METADATA REVISION"] != "0" {
		t.Fatalf("get --category: %v", got)
	}
	var resp esdv1.GetStreamMetadataResponse
	if err := protojson.Unmarshal([]byte(mustRun(t, addr, "stream", "meta", "get", "order-9", "-o", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	if eff := resp.GetEffectiveLimits(); eff.GetMaxCount() != 100 || eff.GetMaxAge().AsDuration().Hours() != 720 || eff.GetTruncateBefore() != 1 {
		t.Fatalf("effective limits of order-9: %v", &resp)
	}

	for _, args := range [][]string{
		{"stream", "meta", "get"},
		{"stream", "meta", "get", "order-9", "--category", "order"},
		{"stream", "meta", "set", "order-9", "--max-count", "0"},
		{"stream", "meta", "set", "order-9", "--max-age", "-1s"},
		{"stream", "meta", "set", "order-9", "--json", "{"},
		{"stream", "meta", "set", "order-9", "--expected-revision", "soon"},
		{"stream", "meta", "nope"},
	} {
		if _, stderr, code := runCLI(t, addr, strings.NewReader(""), args...); code != exitUsage {
			t.Errorf("esctl %v: exit %d, want %d (usage); stderr %q", args, code, exitUsage, stderr)
		}
	}
	// The server's validation: a category takes no truncate-before.
	if _, stderr, code := runCLI(t, addr, strings.NewReader(""), "stream", "meta", "set", "--category", "order", "--truncate-before", "2"); code != exitError ||
		!strings.Contains(stderr, "INVALID_ARGUMENT") {
		t.Fatalf("category truncate-before: exit %d, stderr %q", code, stderr)
	}
}
