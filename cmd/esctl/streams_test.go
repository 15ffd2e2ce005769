package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func newInfo() *esdv1.StreamInfo { return &esdv1.StreamInfo{} }

func TestLsFollowsPages(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	for i := range 7 {
		mustRun(t, addr, "append", fmt.Sprintf("a-%d", i), "x", "--type", "T")
	}
	mustRun(t, addr, "append", "b-0", "x", "--type", "T")

	names := func(infos []*esdv1.StreamInfo) string {
		var s []string
		for _, in := range infos {
			s = append(s, in.GetStream())
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name      string
		args      []string
		want      string
		prefix    string
		wantPages []uint32 // the page size esctl asks for in each ListStreams call
	}{
		{"pages of 2", []string{"a-", "--page-size", "2"}, "a-0,a-1,a-2,a-3,a-4,a-5,a-6", "a-", []uint32{2, 2, 2, 2}},
		{"all in one page", nil, "a-0,a-1,a-2,a-3,a-4,a-5,a-6,b-0", "", []uint32{0}},
		{"limit across pages", []string{"--page-size", "2", "--limit", "3"}, "a-0,a-1,a-2", "", []uint32{2, 2}},
		{"limit sets the page size", []string{"--limit", "3"}, "a-0,a-1,a-2", "", []uint32{3}},
		{"no match", []string{"zzz"}, "", "zzz", []uint32{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { // not parallel: each takes the server's requests since the last
			before := len(srv.requests(t, "ListStreams"))
			out := mustRun(t, addr, append([]string{"ls", "-o", "jsonl"}, tc.args...)...)
			if got := names(jsonLines(t, out, newInfo)); got != tc.want {
				t.Errorf("streams %q, want %q", got, tc.want)
			}
			reqs := srv.requests(t, "ListStreams")[before:]
			var want []proto.Message
			for _, size := range tc.wantPages {
				want = append(want, &esdv1.ListStreamsRequest{Prefix: tc.prefix, PageSize: size})
			}
			// The page tokens are the server's: none in the first call, one
			// in each next.
			if diff := cmp.Diff(want, reqs, protocmp.Transform(),
				protocmp.IgnoreFields(&esdv1.ListStreamsRequest{}, "page_token")); diff != "" {
				t.Errorf("ListStreams requests (-want +got):\n%s", diff)
			}
			for i, r := range reqs {
				if tok := r.(*esdv1.ListStreamsRequest).GetPageToken(); (tok == "") != (i == 0) {
					t.Errorf("call %d has page token %q", i, tok)
				}
			}
		})
	}

	out := mustRun(t, addr, "ls", "b", "-o", "json")
	if got := names(jsonArray(t, out, newInfo)); got != "b-0" {
		t.Errorf("json: %q", got)
	}
	out = mustRun(t, addr, "ls", "--page-size", "3")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 9 || strings.Join(strings.Fields(lines[0]), " ") != "STREAM HEAD EVENTS STATE UPDATED" {
		t.Errorf("table:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) != 5 || f[0] != "a-0" || f[1] != "0" || f[2] != "1" || f[3] != "live" {
		t.Errorf("row %q", lines[1])
	}
}

func TestDeleteAndInfo(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	mustRun(t, addr, "append", "doc-1", "a", "--type", "T")
	mustRun(t, addr, "append", "doc-1", "b", "--type", "T")
	mustRun(t, addr, "append", "doc-2", "a", "--type", "T")

	state := func(stream string) *esdv1.StreamInfo {
		t.Helper()
		var in esdv1.StreamInfo
		out := mustRun(t, addr, "info", stream, "-o", "json")
		if err := protoUnmarshal([]byte(out), &in); err != nil {
			t.Fatalf("info -o json: %v\n%s", err, out)
		}
		return &in
	}
	if in := state("doc-1"); !in.GetExists() || in.GetHead() != 1 || in.GetEventCount() != 2 {
		t.Errorf("info %v", in)
	}
	out := mustRun(t, addr, "info", "doc-1")
	for _, want := range []string{"STATE", "live", "HEAD", "EVENTS", "CREATED", "UPDATED"} {
		if !strings.Contains(out, want) {
			t.Errorf("info table lacks %q:\n%s", want, out)
		}
	}
	if out := mustRun(t, addr, "info", "never"); !strings.Contains(out, "absent") {
		t.Errorf("info of a stream never written:\n%s", out)
	}

	out = mustRun(t, addr, "delete", "doc-1", "--expected", "1")
	if !strings.Contains(out, "POSITION") || !strings.Contains(out, "4") {
		t.Errorf("delete output:\n%s", out)
	}
	if in := state("doc-1"); !in.GetDeleted() || in.GetExists() {
		t.Errorf("after delete: %v", in)
	}
	out = mustRun(t, addr, "delete", "doc-2", "--tombstone", "-o", "json")
	var resp esdv1.DeleteStreamResponse
	if err := protoUnmarshal([]byte(out), &resp); err != nil || resp.GetPosition() != 5 {
		t.Errorf("delete -o json: %v %v\n%s", err, &resp, out)
	}
	out = mustRun(t, addr, "ls")
	if !strings.Contains(out, "deleted") || !strings.Contains(out, "tombstoned") {
		t.Errorf("ls does not show the states:\n%s", out)
	}
	_, stderr, code := runCLI(t, addr, nil, "append", "doc-2", "x", "--type", "T")
	if code != exitError || !strings.Contains(stderr, "(reason: STREAM_TOMBSTONED)") {
		t.Errorf("append to a tombstone: exit %d, %s", code, stderr)
	}
	_, stderr, code = runCLI(t, addr, nil, "read", "doc-1")
	if code != exitError || !strings.Contains(stderr, "(reason: STREAM_DELETED)") {
		t.Errorf("read of a deleted stream: exit %d, %s", code, stderr)
	}
}

func TestServerInfo(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	mustRun(t, addr, "append", "s-1", "x", "--type", "T")
	out := mustRun(t, addr, "server", "info")
	for _, want := range []string{"VERSION", "test", "COMMIT", "abc123", "STARTED", "UPTIME", "DATA DIR", "SHARDS", "LAST POSITION", "STREAMS", "EVENTS", "DISK"} {
		if !strings.Contains(out, want) {
			t.Errorf("server info lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^MAX EVENT BYTES +1048576$`).MatchString(out) || !regexp.MustCompile(`(?m)^MAX APPEND EVENTS +10000$`).MatchString(out) {
		t.Errorf("server info lacks the append limits:\n%s", out)
	}
	var resp esdv1.GetServerInfoResponse
	out = mustRun(t, addr, "server", "info", "-o", "jsonl")
	if strings.Count(out, "\n") != 1 {
		t.Errorf("jsonl is not one line:\n%s", out)
	}
	if err := protoUnmarshal([]byte(out), &resp); err != nil || resp.GetEventCount() != 1 {
		t.Errorf("server info -o jsonl: %v %v", err, &resp)
	}
	if out := mustRun(t, addr, "server"); !strings.Contains(out, "info") {
		t.Errorf("esctl server does not list its subcommands:\n%s", out)
	}
}

// TestServerInfoTable shows figures a fresh server does not have: an
// uptime in minutes, a data dir and a size in MiB.
func TestServerInfoTable(t *testing.T) {
	t.Parallel()
	addr := startFake(t, &fakeServer{})
	out := mustRun(t, addr, "server", "info")
	for _, want := range []string{"VERSION", "test", "UPTIME", "1m30s", "DATA DIR", "/tmp/esd", "LAST POSITION", "DISK", "3.0 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("server info lacks %q:\n%s", want, out)
		}
	}
	// An esd that does not report its limits (older than the fields).
	if !regexp.MustCompile(`(?m)^MAX EVENT BYTES +-$`).MatchString(out) {
		t.Errorf("server info of a server without limits does not show them as -:\n%s", out)
	}
}
