//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestEsctlOutputFormats runs every command in every output format: -o json
// is one JSON document (an object, or an array for lists), -o jsonl is one
// JSON object a line, tables start with their headers; both JSON formats
// decode as the command's proto message.
func TestEsctlOutputFormats(t *testing.T) {
	t.Parallel()
	p := startESD(t, t.TempDir())
	for i := range 3 {
		mustEsctl(t, p.Addr, "append", "fmt-1", fmt.Sprintf(`{"n":%d}`, i), "--type", "Counted")
	}
	mustEsctl(t, p.Addr, "append", "fmt-2", "x", "--type", "Other")

	newEvent := func() proto.Message { return &esdv1.RecordedEvent{} }
	newInfo := func() proto.Message { return &esdv1.StreamInfo{} }
	tests := []struct {
		name string
		args func(format string) []string
		// list: the output is a sequence of n messages of newMsg; else one.
		list   bool
		n      int
		newMsg func() proto.Message
		header []string // table: the first line's columns (lists) or the keys (one message)
	}{
		{
			name:   "append",
			args:   func(f string) []string { return []string{"append", "made-" + f, "{}", "--type", "Made"} },
			newMsg: func() proto.Message { return &esdv1.AppendResponse{} },
			header: []string{"STREAM", "FIRST REVISION", "LAST REVISION", "FIRST POSITION", "LAST POSITION", "COMMIT TIME"},
		},
		{
			name: "read", args: func(string) []string { return []string{"read", "fmt-1"} },
			list: true, n: 3, newMsg: newEvent,
			header: []string{"REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"},
		},
		{
			name: "read backward limit", args: func(string) []string { return []string{"read", "fmt-1", "--backward", "--limit", "2"} },
			list: true, n: 2, newMsg: newEvent,
			header: []string{"REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"},
		},
		{
			name: "read-all filtered", args: func(string) []string { return []string{"read-all", "--stream-prefix", "fmt-1"} },
			list: true, n: 3, newMsg: newEvent,
			header: []string{"STREAM", "REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"},
		},
		{
			name: "read-all no match", args: func(string) []string { return []string{"read-all", "--type-prefix", "NoSuchType"} },
			list: true, n: 0, newMsg: newEvent,
			header: []string{"STREAM", "REVISION", "POSITION", "TYPE", "ID", "CREATED", "DATA"},
		},
		{
			name: "info", args: func(string) []string { return []string{"info", "fmt-1"} },
			newMsg: newInfo,
			header: []string{"STREAM", "STATE", "EXISTS", "HEAD", "EVENTS", "CREATED", "UPDATED"},
		},
		{
			name: "ls", args: func(string) []string { return []string{"ls", "fmt-"} },
			list: true, n: 2, newMsg: newInfo,
			header: []string{"STREAM", "HEAD", "EVENTS", "STATE", "UPDATED"},
		},
		{
			name: "ls paged", args: func(string) []string { return []string{"ls", "fmt-", "--page-size", "1"} },
			list: true, n: 2, newMsg: newInfo,
			header: []string{"STREAM", "HEAD", "EVENTS", "STATE", "UPDATED"},
		},
		{
			name: "delete",
			args: func(f string) []string {
				mustEsctl(t, p.Addr, "append", "del-"+f, "x", "--type", "Made")
				return []string{"delete", "del-" + f}
			},
			newMsg: func() proto.Message { return &esdv1.DeleteStreamResponse{} },
			header: []string{"STREAM", "POSITION", "COMMIT TIME"},
		},
		{
			name: "server info", args: func(string) []string { return []string{"server", "info"} },
			newMsg: func() proto.Message { return &esdv1.GetServerInfoResponse{} },
			header: []string{"VERSION", "COMMIT", "STARTED", "UPTIME", "DATA DIR", "SHARDS", "LAST POSITION", "STREAMS", "EVENTS", "DISK",
				"MAX EVENT BYTES", "MAX APPEND BYTES", "MAX APPEND EVENTS"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// json: one document.
			out := mustEsctl(t, p.Addr, append(tc.args("json"), "-o", "json")...).Stdout
			if !json.Valid([]byte(out)) {
				t.Fatalf("-o json is not valid JSON:\n%s", out)
			}
			if tc.list {
				var raw []json.RawMessage
				if err := json.Unmarshal([]byte(out), &raw); err != nil {
					t.Fatalf("-o json of a list is not an array: %v\n%s", err, out)
				}
				if len(raw) != tc.n {
					t.Errorf("-o json: %d elements, want %d:\n%s", len(raw), tc.n, out)
				}
				for _, m := range raw {
					mustProtoJSON(t, string(m), tc.newMsg())
				}
			} else {
				mustProtoJSON(t, out, tc.newMsg())
				if !strings.HasPrefix(out, "{") {
					t.Errorf("-o json: want one object, got:\n%s", out)
				}
			}

			// jsonl: one compact object a line.
			out = mustEsctl(t, p.Addr, append(tc.args("jsonl"), "-o", "jsonl")...).Stdout
			want := 1
			if tc.list {
				want = tc.n
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if out == "" {
				lines = nil
			} else if !strings.HasSuffix(out, "\n") {
				t.Errorf("-o jsonl: the last line has no newline: %q", out)
			}
			if len(lines) != want {
				t.Errorf("-o jsonl: %d lines, want %d:\n%s", len(lines), want, out)
			}
			for _, l := range lines {
				var obj map[string]any
				if err := json.Unmarshal([]byte(l), &obj); err != nil {
					t.Errorf("-o jsonl: line is not a JSON object: %v\n%q", err, l)
					continue
				}
				mustProtoJSON(t, l, tc.newMsg())
			}

			// table: headers first (lists), or KEY VALUE lines.
			out = mustEsctl(t, p.Addr, tc.args("table")...).Stdout
			if tc.list {
				rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
				if got := splitCols(rows[0]); strings.Join(got, "|") != strings.Join(tc.header, "|") {
					t.Errorf("table header: got %q, want %q\n%s", got, tc.header, out)
				}
				if len(rows)-1 != tc.n {
					t.Errorf("table: %d rows under the header, want %d:\n%s", len(rows)-1, tc.n, out)
				}
				for _, r := range parseTable(t, out) {
					if len(r) != len(tc.header) { // every event here has data: no column is empty
						t.Errorf("table row %v does not fill the columns %q", r, tc.header)
					}
				}
			} else {
				parseKV(t, out) // KEY  VALUE lines
				var keys []string
				for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
					keys = append(keys, splitCols(l)[0])
				}
				if strings.Join(keys, "|") != strings.Join(tc.header, "|") {
					t.Errorf("table keys: got %q, want %q", keys, tc.header)
				}
			}
		})
	}
}

// TestEsctlExitCodes proves esctl's exit-code contract: 0 ok, 1 error
// (the server's reason on stderr), 2 usage, 3 unreachable, 4 wrong expected
// revision; and that failures print nothing on stdout.
func TestEsctlExitCodes(t *testing.T) {
	t.Parallel()
	p := startESD(t, t.TempDir())
	mustEsctl(t, p.Addr, "append", "codes-1", "x", "--type", "T")
	mustEsctl(t, p.Addr, "delete", "codes-tomb", "--tombstone")
	const id = "0198c0de-0000-7000-8000-000000000001"
	mustEsctl(t, p.Addr, "append", "codes-id", "x", "--type", "T", "--id", id)
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 1<<20+1), 0o600); err != nil { // esd's default --max-event-bytes + 1
		t.Fatal(err)
	}
	dead := closedAddr(t)

	tests := []struct {
		name   string
		addr   string // "" = the live server
		args   []string
		code   int
		stderr string // must appear on stderr
	}{
		{"help", "", []string{"--help"}, 0, ""},
		{"info of a stream never written", "", []string{"info", "never-written"}, 0, ""},
		{"append without args", "", []string{"append"}, 2, "--help"},
		{"append without --type", "", []string{"append", "codes-1", "x"}, 2, "type"},
		{"append with too many args", "", []string{"append", "codes-1", "x", "y", "--type", "T"}, 2, ""},
		{"append with a bad --expected", "", []string{"append", "codes-1", "x", "--type", "T", "--expected", "soon"}, 2, "soon"},
		{"read without a stream", "", []string{"read"}, 2, ""},
		{"read with two streams", "", []string{"read", "a", "b"}, 2, ""},
		{"unknown output format", "", []string{"-o", "yaml", "ls"}, 2, "yaml"},
		{"unknown flag", "", []string{"ls", "--bogus"}, 2, "bogus"},
		{"unknown command", "", []string{"frobnicate"}, 2, "frobnicate"},
		{"unknown server subcommand", "", []string{"server", "reboot"}, 2, "reboot"},
		{"negative ls limit", "", []string{"ls", "--limit", "-1"}, 2, ""},
		{"data and --file", "", []string{"append", "codes-1", "x", "--file", "/dev/null", "--type", "T"}, 2, ""},
		{"wrong expected revision", "", []string{"append", "codes-1", "x", "--type", "T", "--expected", "7"}, 4, "WRONG_EXPECTED_REVISION"},
		{"no-stream on an existing stream", "", []string{"append", "codes-1", "x", "--type", "T", "--expected", "no-stream"}, 4, "WRONG_EXPECTED_REVISION"},
		{"delete with a wrong expected revision", "", []string{"delete", "codes-1", "--expected", "3"}, 4, "WRONG_EXPECTED_REVISION"},
		{"read of a stream never written", "", []string{"read", "never-written"}, 1, "STREAM_NOT_FOUND"},
		{"delete of a stream never written", "", []string{"delete", "never-written"}, 1, "STREAM_NOT_FOUND"},
		{"read of a tombstoned stream", "", []string{"read", "codes-tomb"}, 1, "STREAM_TOMBSTONED"},
		{"append to a tombstoned stream", "", []string{"append", "codes-tomb", "x", "--type", "T"}, 1, "STREAM_TOMBSTONED"},
		{"reserved stream name", "", []string{"append", "$mine", "x", "--type", "T"}, 1, "INVALID_ARGUMENT"},
		{"bad event id", "", []string{"append", "codes-1", "x", "--type", "T", "--id", "not-a-uuid"}, 1, "INVALID_ARGUMENT"},
		{"event too large", "", []string{"append", "codes-1", "--file", big, "--type", "T"}, 1, "EVENT_TOO_LARGE"},
		{"retry of a stored append", "", []string{"append", "codes-id", "x", "--type", "T", "--id", id}, 0, ""},
		{"event id stored on another stream", "", []string{"append", "codes-other", "x", "--type", "T", "--id", id}, 1, "EVENT_ID_CONFLICT"},
		{"unreachable: ls", dead, []string{"ls"}, 3, dead},
		{"unreachable: append", dead, []string{"append", "codes-1", "x", "--type", "T"}, 3, dead},
		{"unreachable: read", dead, []string{"read", "codes-1"}, 3, dead},
		{"unreachable: server info", dead, []string{"server", "info", "-o", "json"}, 3, dead},
	}
	t.Run("cases", func(t *testing.T) { // returns when every parallel case has
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel() // none of them changes a stream
				addr := tc.addr
				if addr == "" {
					addr = p.Addr
				}
				r := esctl(t, addr, tc.args...)
				if r.Code != tc.code {
					t.Errorf("esctl %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), r.Code, tc.code, r)
				}
				if !strings.Contains(r.Stderr, tc.stderr) {
					t.Errorf("esctl %s: stderr lacks %q\n%s", strings.Join(tc.args, " "), tc.stderr, r)
				}
				if tc.code != 0 && r.Stdout != "" {
					t.Errorf("esctl %s failed but printed to stdout: %q", strings.Join(tc.args, " "), r.Stdout)
				}
				if tc.code == 0 && tc.args[0] != "--help" && r.Stdout == "" {
					t.Errorf("esctl %s succeeded with no output", strings.Join(tc.args, " "))
				}
			})
		}
	})

	// Nothing any of those did changed a stream.
	for stream, n := range map[string]int{"codes-1": 1, "codes-id": 1} {
		if evs := parseJSONL(t, mustEsctl(t, p.Addr, "read", stream, "-o", "jsonl").Stdout); len(evs) != n {
			t.Errorf("%s has %d events after the commands, want %d", stream, len(evs), n)
		}
	}
	if r := esctl(t, p.Addr, "read", "codes-other"); r.Code != 1 || !strings.Contains(r.Stderr, "STREAM_NOT_FOUND") {
		t.Errorf("codes-other must not exist after an append failed with EVENT_ID_CONFLICT: %s", r)
	}
}
