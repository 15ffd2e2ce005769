package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func TestParseExpected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    expectedRevision
		wantErr bool
	}{
		{"any", expectedRevision{client.Any()}, false},
		{"no-stream", expectedRevision{client.NoStream()}, false},
		{"no_stream", expectedRevision{client.NoStream()}, false},
		{"exists", expectedRevision{client.StreamExists()}, false},
		{"stream-exists", expectedRevision{client.StreamExists()}, false},
		{"stream_exists", expectedRevision{client.StreamExists()}, false},
		{"0", expectedRevision{client.Exact(0)}, false},
		{"42", expectedRevision{client.Exact(42)}, false},
		{"18446744073709551615", expectedRevision{client.Exact(1<<64 - 1)}, false},
		{"18446744073709551616", expectedRevision{}, true},
		{"-1", expectedRevision{}, true},
		{"", expectedRevision{}, true},
		{"ANY", expectedRevision{}, true},
		{"1.5", expectedRevision{}, true},
		{"0x10", expectedRevision{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseExpected(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseExpected(%q) error %v, want error %t", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseExpected(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if err == nil && tc.in != "" {
				// String round-trips to the same value.
				back, err := parseExpected(got.String())
				if err != nil || back != got {
					t.Errorf("String() = %q does not parse back", got.String())
				}
			}
		})
	}
}

func TestExpectedToClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want client.Expected
	}{
		{"any", client.Any()},
		{"no-stream", client.NoStream()},
		{"exists", client.StreamExists()},
		{"7", client.Exact(7)},
		{"0", client.Exact(0)},
	} {
		e, err := parseExpected(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Expected; got != tc.want {
			t.Errorf("%s: the client's expectation is %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestAppendData(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	file := filepath.Join(t.TempDir(), "data.json")
	if err := os.WriteFile(file, []byte(`{"from":"file"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin *strings.Reader // nil: no stdin at all
		want  string
	}{
		{"argument", []string{"hello"}, strings.NewReader("ignored"), "hello"},
		{"file", []string{"--file", file}, strings.NewReader("ignored"), `{"from":"file"}`},
		{"stdin dash", []string{"--file", "-"}, strings.NewReader("from stdin"), "from stdin"},
		{"piped stdin", nil, strings.NewReader("piped"), "piped"},
		{"no data", nil, nil, ""},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream := "data-" + string(rune('a'+i))
			args := append([]string{"append", stream, "--type", "T"}, tc.args...)
			var stdin = tc.stdin
			var code int
			var stderr string
			if stdin == nil {
				_, stderr, code = runCLI(t, addr, nil, args...)
			} else {
				_, stderr, code = runCLI(t, addr, stdin, args...)
			}
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			evs := srv.events(t, stream)
			if len(evs) != 1 {
				t.Fatalf("stream has %d events, want 1", len(evs))
			}
			if got := string(evs[0].GetData()); got != tc.want {
				t.Errorf("data %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAppendFields(t *testing.T) {
	t.Parallel()
	srv := startESD(t)
	addr := srv.addr
	const id = "0190c6c3-6d2a-7b8e-9f00-0123456789ab"
	out := mustRun(t, addr, "append", "order-1", `{"n":1}`, "--type", "OrderPlaced", "--id", id,
		"--content-type", "application/json", "--metadata", "user=ann", "--tag", "a,b", "--tag", "c",
		"--expected", "no-stream", "-o", "json")
	var resp esdv1.AppendResponse
	if err := protoUnmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("append -o json: %v\n%s", err, out)
	}
	if resp.GetLastPosition() != 1 || resp.GetCommitTime() == nil {
		t.Errorf("response %v", &resp)
	}
	evs := srv.events(t, "order-1")
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	want := &esdv1.RecordedEvent{
		Id: id, Stream: "order-1", Revision: 0, Position: 1, Type: "OrderPlaced", Data: []byte(`{"n":1}`),
		Metadata: []byte("user=ann"), ContentType: "application/json", Tags: []string{"a,b", "c"},
	}
	if diff := cmp.Diff(want, evs[0], protocmp.Transform(), protocmp.IgnoreFields(&esdv1.RecordedEvent{}, "created")); diff != "" {
		t.Errorf("stored event (-want +got):\n%s", diff)
	}

	// Table output names each fact.
	out = mustRun(t, addr, "append", "order-1", "x", "--type", "T", "--expected", "0")
	for _, key := range []string{"FIRST REVISION", "LAST REVISION", "FIRST POSITION", "LAST POSITION", "COMMIT TIME"} {
		if !strings.Contains(out, key) {
			t.Errorf("append output lacks %s:\n%s", key, out)
		}
	}
}

func TestAppendWrongRevisionDetail(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	for i := range 3 {
		mustRun(t, addr, "append", "acct-1", "v"+string(rune('0'+i)), "--type", "Deposited")
	}
	out, stderr, code := runCLI(t, addr, nil, "append", "acct-1", "late", "--type", "Withdrawn", "--expected", "0")
	if code != exitWrongRevision {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitWrongRevision, stderr)
	}
	if out != "" {
		t.Errorf("stdout not empty: %q", out)
	}
	for _, want := range []string{
		"(reason: WRONG_EXPECTED_REVISION)",
		"stream:       acct-1",
		"expected:     0",
		"actual head:  2",
		"exists:       true",
		"events since: 2",
		"revision 1  position 2  Deposited",
		"revision 2  position 3  Deposited",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "revision 0 ") {
		t.Errorf("events since include the expected revision itself:\n%s", stderr)
	}

	// A stream that does not exist.
	_, stderr, code = runCLI(t, addr, nil, "append", "acct-2", "x", "--type", "T", "--expected", "exists")
	if code != exitWrongRevision || !strings.Contains(stderr, "actual head:  none") || !strings.Contains(stderr, "exists:       false") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}
