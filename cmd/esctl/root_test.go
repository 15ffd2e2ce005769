package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/esdhq/esd/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// runCLI runs esctl in-process against addr ("" = no --addr) and returns
// what it printed and its exit code.
func runCLI(t *testing.T, addr string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if addr != "" {
		args = append([]string{"--addr", addr}, args...)
	}
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, stdin, &out, &errOut)
	return out.String(), errOut.String(), code
}

// mustRun runs esctl and fails the test unless it exits 0.
func mustRun(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, addr, strings.NewReader(""), args...)
	if code != exitOK {
		t.Fatalf("esctl %v: exit %d, stderr:\n%s", args, code, errOut)
	}
	return out
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// silentAddr returns the address of a listener that accepts connections
// but never speaks HTTP/2, so a client stays connecting until its deadline.
func silentAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards conns
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

// protoUnmarshal reads a message esctl printed with -o json or jsonl:
// data shown as JSON goes back to base64 first, as protojson wants bytes
// (the data compacted: -o json indents it with the rest).
func protoUnmarshal(b []byte, m proto.Message) error { return testutil.UnmarshalCLIJSON(b, m) }

// jsonArray parses -o json output of a list into messages made by newMsg.
func jsonArray[T proto.Message](t *testing.T, out string, newMsg func() T) []T {
	t.Helper()
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raws); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, out)
	}
	msgs := make([]T, len(raws))
	for i, raw := range raws {
		msgs[i] = newMsg()
		if err := protoUnmarshal(raw, msgs[i]); err != nil {
			t.Fatalf("element %d: %v", i, err)
		}
	}
	return msgs
}

// jsonLines parses -o jsonl output into messages made by newMsg.
func jsonLines[T proto.Message](t *testing.T, out string, newMsg func() T) []T {
	t.Helper()
	var msgs []T
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		m := newMsg()
		if err := protoUnmarshal([]byte(line), m); err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, line)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	addr := startESD(t).addr
	mustRun(t, addr, "append", "s-1", "one", "--type", "T")

	// A server answering UNAVAILABLE with a reason is up: that is an error,
	// not unreachability.
	shuttingDown := startFake(t, &fakeServer{getErr: withReason(codes.Unavailable, "shutting down", "SHUTTING_DOWN")})
	// A connected server that answers too late is an error, not unreachable.
	hanging := startFake(t, &fakeServer{getHang: true})

	tests := []struct {
		name       string
		addr       string
		args       []string
		want       int
		wantStderr string
	}{
		{"ok", addr, []string{"read", "s-1"}, exitOK, ""},
		{"deadline when connected", hanging, []string{"info", "s-1", "--timeout", "200ms"}, exitError, "esctl: deadline exceeded after 200ms (--timeout)"},
		{"wrong expected revision", addr, []string{"append", "s-1", "two", "--type", "T", "--expected", "no-stream"}, exitWrongRevision, "(reason: WRONG_EXPECTED_REVISION)"},
		{"wrong expected revision on delete", addr, []string{"delete", "s-1", "--expected", "7"}, exitWrongRevision, "(reason: WRONG_EXPECTED_REVISION)"},
		{"unreachable", closedAddr(t), []string{"info", "s-1"}, exitUnavailable, "cannot reach esd"},
		{"unreachable read", closedAddr(t), []string{"read", "s-1"}, exitUnavailable, "cannot reach esd"},
		{"deadline while connecting", silentAddr(t), []string{"info", "s-1", "--timeout", "200ms"}, exitUnavailable, "no connection within 200ms (--timeout)"},
		{"unresolvable", "no-such-host.invalid:7400", []string{"info", "s-1", "--timeout", "2s"}, exitUnavailable, "cannot reach esd"},
		{"unreachable bench", closedAddr(t), []string{"bench", "append", "-d", "100ms"}, exitUnavailable, "cannot reach esd"},
		{"not found", addr, []string{"read", "missing"}, exitError, "(reason: STREAM_NOT_FOUND)"},
		{"invalid argument", addr, []string{"append", "$system", "x", "--type", "T"}, exitError, "(reason: INVALID_ARGUMENT)"},
		{"unavailable with reason", shuttingDown, []string{"info", "s-1"}, exitError, "(reason: SHUTTING_DOWN)"},
		{"bad file", addr, []string{"append", "s-1", "--type", "T", "--file", "/nonexistent/x"}, exitError, "no such file"},
		{"unknown command", addr, []string{"bogus"}, exitUsage, "unknown command"},
		{"unknown flag", addr, []string{"read", "s-1", "--bogus"}, exitUsage, "unknown flag"},
		{"missing argument", addr, []string{"read"}, exitUsage, "accepts 1 arg"},
		{"too many arguments", addr, []string{"info", "a", "b"}, exitUsage, "accepts 1 arg"},
		{"missing --type", addr, []string{"append", "s-1", "x"}, exitUsage, `"type" not set`},
		{"bad --expected", addr, []string{"append", "s-1", "x", "--type", "T", "--expected", "maybe"}, exitUsage, "want any, no-stream"},
		{"negative --expected", addr, []string{"delete", "s-1", "--expected", "-1"}, exitUsage, "want any, no-stream"},
		{"bad --output", addr, []string{"-o", "yaml", "info", "s-1"}, exitUsage, "unknown output format"},
		{"data twice", addr, []string{"append", "s-1", "x", "--type", "T", "--file", "-"}, exitUsage, "not both"},
		{"bad --from", addr, []string{"read", "s-1", "--from", "x"}, exitUsage, "invalid argument"},
		{"unknown workload", addr, []string{"bench", "nope"}, exitUsage, "invalid argument"},
		{"read-stream without stream", addr, []string{"bench", "read-stream"}, exitUsage, "needs --stream"},
		{"unknown server subcommand", addr, []string{"server", "bogus"}, exitUsage, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, stderr, code := runCLI(t, tc.addr, strings.NewReader(""), tc.args...)
			if code != tc.want {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.want, stderr)
			}
			if tc.want != exitOK && !strings.HasPrefix(stderr, "esctl: ") {
				t.Errorf("stderr does not start with %q:\n%s", "esctl: ", stderr)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr)
			}
		})
	}
}

// TestEnvAddr cannot run in parallel: it sets ESD_ADDR.
func TestEnvAddr(t *testing.T) {
	addr := startESD(t).addr
	t.Setenv(envAddr, addr)
	out, stderr, code := runCLI(t, "", nil, "server", "info")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "VERSION") {
		t.Errorf("no server info:\n%s", out)
	}
	// --addr wins over the environment.
	if _, _, code := runCLI(t, closedAddr(t), nil, "server", "info"); code != exitUnavailable {
		t.Errorf("--addr did not win over %s: exit %d", envAddr, code)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	out, _, code := runCLI(t, "", nil, "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, cmd := range []string{"append", "read", "read-all", "subscribe", "info", "ls", "delete", "group", "server", "bench", "completion"} {
		if !strings.Contains(out, cmd) {
			t.Errorf("help lacks %q:\n%s", cmd, out)
		}
	}
	if out := mustRun(t, "", "completion", "bash"); !strings.Contains(out, "esctl") {
		t.Errorf("no bash completion script")
	}
}

func TestDisplayData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []byte
		max  int
		want string
	}{
		{"empty", nil, 60, ""},
		{"text", []byte(`{"a":1}`), 60, `{"a":1}`},
		{"whitespace folded", []byte("{\n\t\"a\": 1\n}\n"), 60, `{ "a": 1 }`},
		{"binary", []byte{0, 1, 2, 0xff}, 60, "<4 bytes>"},
		{"control character", []byte("a\x00b"), 60, "<3 bytes>"},
		{"cut", []byte("abcdefghij"), 5, "abcd…"},
		{"cut runes", []byte("ééééé"), 3, "éé…"},
		{"no limit", []byte("abcdefghij"), 0, "abcdefghij"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := displayData(tc.in, tc.max); got != tc.want {
				t.Errorf("displayData(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}
