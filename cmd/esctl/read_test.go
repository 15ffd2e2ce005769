package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func newEvent() *esdv1.RecordedEvent { return &esdv1.RecordedEvent{} }

// fillReadStreams writes 7 events to "cart-1", one of them binary, and one
// to "user-1".
func fillReadStreams(t *testing.T, addr string) {
	t.Helper()
	for i := range 6 {
		mustRun(t, addr, "append", "cart-1", `{"item":`+string(rune('0'+i))+`}`, "--type", "ItemAdded")
	}
	if _, stderr, code := runCLI(t, addr, strings.NewReader("\x00\x01\x02"), "append", "cart-1", "--type", "Blob"); code != exitOK {
		t.Fatalf("append binary: %s", stderr)
	}
	mustRun(t, addr, "append", "user-1", "joined", "--type", "UserJoined")
}

func TestReadFormats(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	fillReadStreams(t, addr)
	want := srv.events(t, "cart-1")

	t.Run("table", func(t *testing.T) {
		out := mustRun(t, addr, "read", "cart-1")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1+len(want) {
			t.Fatalf("%d lines, want header and %d rows:\n%s", len(lines), len(want), out)
		}
		if got := strings.Fields(lines[0]); !cmp.Equal(got, []string{"REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"}) {
			t.Errorf("header %q", got)
		}
		if !strings.Contains(lines[1], `{"item":0}`) || !strings.Contains(lines[1], want[0].GetId()) {
			t.Errorf("first row %q", lines[1])
		}
		if !strings.Contains(lines[7], "<3 bytes>") {
			t.Errorf("binary data not shown as a size: %q", lines[7])
		}
	})
	t.Run("json", func(t *testing.T) {
		got := jsonArray(t, mustRun(t, addr, "read", "cart-1", "-o", "json"), newEvent)
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
	t.Run("jsonl", func(t *testing.T) {
		out := mustRun(t, addr, "read", "cart-1", "-o", "jsonl")
		if n := strings.Count(out, "\n"); n != len(want) {
			t.Errorf("%d lines, want %d", n, len(want))
		}
		got := jsonLines(t, out, newEvent)
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
	t.Run("json empty", func(t *testing.T) {
		out := mustRun(t, addr, "read", "cart-1", "--from", "100", "-o", "json")
		if got := jsonArray(t, out, newEvent); len(got) != 0 {
			t.Errorf("%d events", len(got))
		}
	})
}

func TestReadOptions(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	fillReadStreams(t, addr)
	revisions := func(evs []*esdv1.RecordedEvent) []uint64 {
		var revs []uint64
		for _, ev := range evs {
			revs = append(revs, ev.GetRevision())
		}
		return revs
	}
	tests := []struct {
		name string
		args []string
		want []uint64
	}{
		{"all", nil, []uint64{0, 1, 2, 3, 4, 5, 6}},
		{"from", []string{"--from", "4"}, []uint64{4, 5, 6}},
		{"limit", []string{"--limit", "2"}, []uint64{0, 1}},
		{"backward", []string{"--backward", "--limit", "3"}, []uint64{6, 5, 4}},
		{"backward from", []string{"--backward", "--from", "1"}, []uint64{1, 0}},
		{"from 0 explicitly", []string{"--from", "0", "--limit", "1"}, []uint64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"read", "cart-1", "-o", "jsonl"}, tc.args...)
			got := revisions(jsonLines(t, mustRun(t, addr, args...), newEvent))
			if !cmp.Equal(got, tc.want) {
				t.Errorf("revisions %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadAll(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	fillReadStreams(t, addr)
	positions := func(args ...string) []uint64 {
		t.Helper()
		var ps []uint64
		for _, ev := range jsonLines(t, mustRun(t, addr, append([]string{"read-all", "-o", "jsonl"}, args...)...), newEvent) {
			ps = append(ps, ev.GetPosition())
		}
		return ps
	}
	if got := positions(); !cmp.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("all: %v", got)
	}
	if got := positions("--from", "6", "--limit", "2"); !cmp.Equal(got, []uint64{6, 7}) {
		t.Errorf("from 6 limit 2: %v", got)
	}
	if got := positions("--backward", "--limit", "2"); !cmp.Equal(got, []uint64{8, 7}) {
		t.Errorf("backward: %v", got)
	}
	if got := positions("--stream-prefix", "user-", "--stream-prefix", "nobody"); !cmp.Equal(got, []uint64{8}) {
		t.Errorf("stream prefix: %v", got)
	}
	if got := positions("--type-prefix", "Blob"); !cmp.Equal(got, []uint64{7}) {
		t.Errorf("type prefix: %v", got)
	}

	out := mustRun(t, addr, "read-all")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if got := strings.Fields(lines[0]); !cmp.Equal(got, []string{"STREAM", "REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"}) {
		t.Errorf("header %q", got)
	}
	if len(lines) != 9 || !strings.HasPrefix(lines[8], "user-1 ") {
		t.Errorf("table:\n%s", out)
	}
	if got := jsonArray(t, mustRun(t, addr, "read-all", "-o", "json"), newEvent); len(got) != 8 {
		t.Errorf("json: %d events", len(got))
	}
}

// sameEvents checks got against want, as cmp.Diff with protocmp does but
// faster on many events: it shows the first that differs.
func sameEvents(t *testing.T, want, got []*esdv1.RecordedEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d events, want %d", len(got), len(want))
		return
	}
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			t.Errorf("event %d (-want +got):\n%s", i, cmp.Diff(want[i], got[i], protocmp.Transform()))
			return
		}
	}
}

// TestReadSpansMessages reads more events than one message of the server
// holds (512): read, read-all and subscribe join the messages, in order,
// in every format, and a table longer than a flush block keeps its rows.
func TestReadSpansMessages(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	const n = 1100
	mustRun(t, addr, "bench", "read-stream", "--prepare", "1100", "--repeat", "1", "--warmup", "0", "--size", "8", "--stream-prefix", "big")
	want := srv.events(t, "big-read")
	if len(want) != n {
		t.Fatalf("prepared %d events", len(want))
	}
	cmds := []struct {
		name   string
		args   []string
		method string // of the call, whose messages the server counts
		revCol int    // the REVISION column of a table
		jsonl  bool   // -o json is one object a line
	}{
		{"read", []string{"read", "big-read"}, "ReadStream", 0, false},
		{"read-all", []string{"read-all"}, "ReadAll", 1, false},
		{"subscribe", []string{"subscribe", "big-read", "--until-caught-up"}, "Subscribe", 2, true},
	}
	for _, c := range cmds {
		for _, format := range []string{"table", "json", "jsonl"} {
			t.Run(c.name+" "+format, func(t *testing.T) { // not parallel: each counts the server's messages since the last
				sent := srv.responses(t, c.method)
				out := mustRun(t, addr, append(c.args, "-o", format)...)
				// The premise: n events, at most 512 a message, took several
				// messages (a subscription's caught up is one more).
				if m := srv.responses(t, c.method) - sent; m < 3 {
					t.Errorf("the server sent %d messages", m)
				}
				switch {
				case format == "table":
					lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
					if len(lines) != 1+n {
						t.Fatalf("%d lines, want a header and %d rows", len(lines), n)
					}
					if got := strings.Fields(lines[0])[c.revCol]; got != "REVISION" {
						t.Errorf("header %q", lines[0])
					}
					for i, l := range lines[1:] {
						if f := strings.Fields(l); len(f) <= c.revCol || f[c.revCol] != strconv.Itoa(i) {
							t.Fatalf("row %d is %q", i, l)
						}
					}
				case format == "json" && !c.jsonl:
					sameEvents(t, want, jsonArray(t, out, newEvent))
				default:
					sameEvents(t, want, jsonLines(t, out, newEvent))
				}
			})
		}
	}

	sent := srv.responses(t, "ReadStream")
	var revs, wantRevs []uint64
	for _, ev := range jsonLines(t, mustRun(t, addr, "read", "big-read", "--backward", "--limit", "600", "-o", "jsonl"), newEvent) {
		revs = append(revs, ev.GetRevision())
	}
	for i := range 600 {
		wantRevs = append(wantRevs, uint64(n-1-i))
	}
	if !cmp.Equal(revs, wantRevs) {
		t.Errorf("read backward: %d revisions, not %d down to %d", len(revs), n-1, n-600)
	}
	if m := srv.responses(t, "ReadStream") - sent; m < 2 {
		t.Errorf("read backward: the server sent %d messages", m)
	}
}
