//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// skipLangExamplesEnv, set to 1, skips TestLanguageClients on a machine
// without Node or Debian's gRPC Python packages. Unset, their absence
// fails the test: CI must run the clients.
const skipLangExamplesEnv = "ESD_SKIP_LANG_EXAMPLES"

const (
	clientTimeout = 2 * time.Minute // one client run, stub generation included
	npmCITimeout  = 5 * time.Minute
)

// The lines each example client prints when esd behaves as documented;
// the stream name differs per run.
var clientWantLines = []string{
	"appended OrderPlaced at revision 0 (expected no_stream)",
	"appended OrderPaid at revision 1 (expected revision 0)",
	"conflict: ABORTED reason WRONG_EXPECTED_REVISION actual_head 1 expected exact 0 events_since [1 OrderPaid]",
	"read 2 events: 0 OrderPlaced, 1 OrderPaid",
	"subscribe: caught up after 2 events",
	"subscribe: live event OrderShipped at revision 2",
	"ok",
}

var clientStreamLine = regexp.MustCompile(`(?m)^esd \S+, stream (\S+)$`)

// TestLanguageClients runs the Node and Python example clients, built from
// the published proto3 files alone, against a real esd: each must exit 0
// having appended with expected revisions, decoded a conflict's
// ErrorInfo and WrongExpectedRevision from the status trailer, read the
// stream back and received a live event on a subscription; the events it
// wrote are then read back through the Go client.
//
// Needs protoc, node and npm, and /usr/bin/python3 with Debian's python3-grpcio,
// protoc and grpc_python_plugin (protobuf-compiler-grpc); .ci/run installs
// them. Run: go test -tags e2e -run TestLanguageClients -v ./test/e2e/
func TestLanguageClients(t *testing.T) {
	if os.Getenv(skipLangExamplesEnv) == "1" {
		t.Skipf("%s=1", skipLangExamplesEnv)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	p := startESD(t, t.TempDir())

	// Every published file, as the toolchain users have (Debian 12's protoc
	// 3.21, which knows no editions) loads it.
	t.Run("protoc", func(t *testing.T) {
		needTools(t, "protoc")
		var files []string
		for _, pattern := range []string{"proto/esd/v1/*.proto", "third_party/proto/google/rpc/*.proto"} {
			found, err := filepath.Glob(filepath.Join(root, pattern))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range found {
				// Relative to the root, as in the README: protoc wants the
				// -I directories as prefixes of the file names.
				rel, err := filepath.Rel(root, f)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, rel)
			}
		}
		if len(files) < 8 {
			t.Fatalf("want the 6 published protos and the 2 google/rpc ones, got %v", files)
		}
		version := runTool(t, root, clientTimeout, "protoc", "--version")
		runTool(t, root, clientTimeout, "protoc", append([]string{"-I", "proto", "-I", filepath.Join("third_party", "proto"),
			"--descriptor_set_out=" + filepath.Join(t.TempDir(), "esd.pb")}, files...)...)
		t.Logf("%s loads %s", strings.TrimSpace(version), strings.Join(files, " "))
	})

	t.Run("node", func(t *testing.T) {
		needTools(t, "node", "npm")
		dir := filepath.Join(root, "examples", "node")
		if _, err := os.Stat(filepath.Join(dir, "node_modules")); errors.Is(err, os.ErrNotExist) {
			runTool(t, dir, npmCITimeout, "npm", "ci", "--no-audit", "--no-fund")
		}
		out := runTool(t, dir, clientTimeout, "node", "client.js", p.Addr)
		checkClientRun(t, p.Addr, out)
	})

	t.Run("python", func(t *testing.T) {
		const python = "/usr/bin/python3"
		needTools(t, python, "protoc", "grpc_python_plugin")
		if out, err := exec.Command(python, "-c", "import grpc").CombinedOutput(); err != nil {
			t.Fatalf("%s cannot import grpc (apt-get install python3-grpcio), or set %s=1 to skip it: %v\n%s",
				python, skipLangExamplesEnv, err, out)
		}
		out := runTool(t, filepath.Join(root, "examples", "python"), clientTimeout, python, "client.py", p.Addr)
		checkClientRun(t, p.Addr, out)
	})
}

// needTools fails the test unless every tool is found.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by this test (.ci/run installs it), or set %s=1 to skip it: %v",
				tool, skipLangExamplesEnv, err)
		}
	}
}

// runTool runs name args in dir and fails the test unless it exits 0
// within timeout; it returns stdout.
func runTool(t *testing.T, dir string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s (in %s): %v (timeout %v)\nstdout:\n%s\nstderr:\n%s",
			name, strings.Join(args, " "), dir, err, timeout, stdout.String(), stderr.String())
	}
	t.Logf("%s %s:\n%s", name, strings.Join(args, " "), stdout.String())
	return stdout.String()
}

// checkClientRun checks an example client's output line by line, then
// reads the stream it wrote through the Go client.
func checkClientRun(t *testing.T, addr, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	m := clientStreamLine.FindStringSubmatch(out)
	if m == nil || len(lines) != len(clientWantLines)+1 {
		t.Fatalf("want the line \"esd ADDR, stream NAME\" then %d lines, got:\n%s", len(clientWantLines), out)
	}
	for i, want := range clientWantLines {
		if lines[i+1] != want {
			t.Errorf("line %d: got %q, want %q", i+2, lines[i+1], want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := dial(t, addr).readStream(ctx, m[1])
	if err != nil {
		t.Fatalf("read %s: %v", m[1], err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.GetType()+"/"+ev.GetContentType())
	}
	want := "OrderPlaced/application/json OrderPaid/application/json OrderShipped/application/json"
	if strings.Join(got, " ") != want {
		t.Errorf("stream %s as read by Go: %v, want %s", m[1], got, want)
	}
}
