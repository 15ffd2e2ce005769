//go:build e2e

// Package e2e runs the built esd and esctl binaries as a user does: esd as
// a process on 127.0.0.1 with port 0 (the bound addresses are read from its
// JSON startup log), esctl as a process, and a gRPC client built from the
// generated stubs. The crash tests SIGKILL esd and restart it on the same
// data directory to prove that nothing acknowledged is lost.
//
// Run: go test -tags e2e -race -count=1 ./test/e2e/
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// Paths of the binaries TestMain builds.
var (
	esdBin   string
	esctlBin string
)

// Deadlines of the harness. Generous: under -race on a small CI machine a
// build-cache-cold esd takes a while to start.
const (
	startTimeout = 20 * time.Second // until both listening lines are logged
	stopTimeout  = 30 * time.Second // SIGTERM until exit (esd's grace period is 10s)
	esctlTimeout = 30 * time.Second // one esctl run
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "esd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	esdBin = filepath.Join(dir, "esd")
	esctlBin = filepath.Join(dir, "esctl")
	return m.Run()
}

// buildBinaries builds esd and esctl into dir, with -race when the tests
// run with it.
func buildBinaries(dir string) error {
	return goBuild(dir, testutil.RaceEnabled, "./cmd/esd", "./cmd/esctl")
}

// goBuild builds the packages pkgs of the module into dir. The module root
// is two levels above this package's directory (go test runs a test in its
// package's directory).
func goBuild(dir string, race bool, pkgs ...string) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return fmt.Errorf("module root %s: %w", root, err)
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if race {
		args = append(args, "-race")
	}
	args = append(args, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if race {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=1") // the race detector needs cgo
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// childEnv is the test's environment without ESD_* and ESCTL_* variables,
// so a developer's ESD_ADDR, ESD_SHARDS or ESCTL_TLS_CA does not change
// what a test runs.
// A race-enabled binary sleeps 1s at exit by default (GORACE
// atexit_sleep_ms); unless GORACE is set, that is turned off, or every
// esctl run would take a second.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ESD_") && !strings.HasPrefix(kv, "ESCTL_") {
			env = append(env, kv)
		}
	}
	if testutil.RaceEnabled && os.Getenv("GORACE") == "" {
		env = append(env, "GORACE=atexit_sleep_ms=0")
	}
	return env
}

// ---- esd processes ----

// esdProc is a running esd. Every esdProc is killed and waited for by a
// t.Cleanup, whatever the test does.
type esdProc struct {
	t        testing.TB
	DataDir  string
	Addr     string // gRPC, host:port
	HTTPAddr string // /metrics, /healthz, /readyz
	cmd      *exec.Cmd
	logs     *logSink
	done     chan struct{} // closed when the process has exited and been waited for
	waitErr  error         // cmd.Wait's result; read after done
	checked  bool          // checkLogs ran (after the exit)
}

// logSink collects esd's stderr (shown when a test fails) and picks the
// listening addresses out of its JSON log lines.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer // everything written
	partial []byte       // the unfinished last line
	addr    string
	http    string
	ready   chan struct{} // closed once both addresses are known
}

func newLogSink() *logSink { return &logSink{ready: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.line(s.partial[:i])
		s.partial = s.partial[i+1:]
	}
	return len(p), nil
}

// line reads one log line; s.mu is held.
func (s *logSink) line(b []byte) {
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal(b, &rec) != nil {
		return // not JSON: a race report, a panic; kept in buf
	}
	switch rec.Msg {
	case "listening":
		s.addr = rec.Addr
	case "http listening":
		s.http = rec.Addr
	default:
		return
	}
	if s.addr != "" && s.http != "" {
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
	}
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// startESD starts esd on dataDir with both listeners on 127.0.0.1:0 and
// JSON logs, and returns once both listening addresses are logged.
func startESD(t testing.TB, dataDir string, extraFlags ...string) *esdProc {
	t.Helper()
	return startESDBin(t, esdBin, dataDir, extraFlags...)
}

// startESDBin is startESD with another esd binary.
func startESDBin(t testing.TB, bin, dataDir string, extraFlags ...string) *esdProc {
	t.Helper()
	p := spawnESDBin(t, bin, dataDir, extraFlags...)
	select {
	case <-p.logs.ready:
	case <-p.done:
		t.Fatalf("esd exited before listening: %v\n%s", p.waitErr, p.logs)
	case <-time.After(startTimeout):
		p.Kill()
		t.Fatalf("esd did not log both listening addresses within %v\n%s", startTimeout, p.logs)
	}
	p.logs.mu.Lock()
	p.Addr, p.HTTPAddr = p.logs.addr, p.logs.http
	p.logs.mu.Unlock()
	return p
}

// spawnESD starts esd without waiting for it to listen.
func spawnESD(t testing.TB, dataDir string, extraFlags ...string) *esdProc {
	t.Helper()
	return spawnESDBin(t, esdBin, dataDir, extraFlags...)
}

func spawnESDBin(t testing.TB, bin, dataDir string, extraFlags ...string) *esdProc {
	t.Helper()
	args := append([]string{
		"--data-dir", dataDir,
		"--listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0",
		"--log-format", "json",
	}, extraFlags...)
	p := &esdProc{t: t, DataDir: dataDir, logs: newLogSink(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = childEnv()
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	dieWithParent(p.cmd)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start esd: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		p.checkLogs()
		if t.Failed() {
			t.Logf("esd %s (pid %d) log:\n%s", dataDir, p.cmd.Process.Pid, p.logs)
		}
	})
	return p
}

// exited reports whether the process has exited.
func (p *esdProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits for esd to exit and asserts exit code 0.
func (p *esdProc) Stop() {
	p.t.Helper()
	p.stopWith(syscall.SIGTERM)
}

// Interrupt is Stop with SIGINT (Ctrl-C in a terminal).
func (p *esdProc) Interrupt() {
	p.t.Helper()
	p.stopWith(syscall.SIGINT)
}

func (p *esdProc) stopWith(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		p.t.Fatalf("%v esd: %v", sig, err)
	}
	p.waitExit(stopTimeout)
	if p.waitErr != nil {
		p.t.Fatalf("esd after %v: %v (want exit code 0)\n%s", sig, p.waitErr, p.logs)
	}
	p.checkLogs()
}

// Kill sends SIGKILL and waits for esd to exit; a no-op when it has.
func (p *esdProc) Kill() {
	p.t.Helper()
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill() // fails only when the process is already gone
	<-p.done                 // SIGKILL cannot be ignored: no deadline needed
	p.checkLogs()
}

// waitExit waits for the process to exit, killing it after d.
func (p *esdProc) waitExit(d time.Duration) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("esd did not exit within %v\n%s", d, p.logs)
	}
}

// checkLogs, once esd has exited, fails the test when the race detector
// reported inside esd, or when a line of its --log-format json output is
// not a JSON object (log pipelines drop or choke on those: a library
// printing to stderr, a panic). It checks a process once.
func (p *esdProc) checkLogs() {
	p.t.Helper()
	if p.checked || !p.exited() {
		return
	}
	p.checked = true
	logs := p.logs.String()
	if strings.Contains(logs, "WARNING: DATA RACE") {
		p.t.Errorf("the race detector reported a data race in esd (log below)")
		return
	}
	lines := strings.Split(logs, "\n")
	for _, line := range lines[:len(lines)-1] { // complete lines: a kill may cut the last one
		var obj map[string]any
		if line != "" && json.Unmarshal([]byte(line), &obj) != nil {
			p.t.Errorf("esd --log-format json wrote a line that is not a JSON object: %q", line)
			return
		}
	}
}

// exitCode is the process's exit code once done (-1 for a signal).
func (p *esdProc) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// ---- esctl ----

// esctlResult is one esctl run.
type esctlResult struct {
	Stdout, Stderr string
	Code           int
}

func (r esctlResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// esctl runs `esctl --addr addr args...` with no stdin (so append never
// waits for piped data) and returns its output and exit code.
func esctl(t testing.TB, addr string, args ...string) esctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), esctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, esctlBin, append([]string{"--addr", addr}, args...)...)
	cmd.Env = childEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := esctlResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("esctl %s: %v\n%s", strings.Join(args, " "), err, res)
	}
	if strings.Contains(res.Stderr, "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a data race in esctl %s:\n%s", strings.Join(args, " "), res.Stderr)
	}
	return res
}

// mustEsctl runs esctl and fails the test unless it exits 0.
func mustEsctl(t testing.TB, addr string, args ...string) esctlResult {
	t.Helper()
	r := esctl(t, addr, args...)
	if r.Code != 0 {
		t.Fatalf("esctl %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// ---- gRPC ----

// client is a gRPC connection to one esd.
type client struct {
	conn    *grpc.ClientConn
	streams esdv1.StreamServiceClient
	admin   esdv1.AdminServiceClient
}

// dial connects to addr (lazily, as grpc.NewClient does) and closes the
// connection at cleanup.
func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{conn: conn, streams: esdv1.NewStreamServiceClient(conn), admin: esdv1.NewAdminServiceClient(conn)}
}

// readStream reads all of a stream forward.
func (c *client) readStream(ctx context.Context, stream string) ([]*esdv1.RecordedEvent, error) {
	rs, err := c.streams.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: stream})
	if err != nil {
		return nil, err
	}
	var evs []*esdv1.RecordedEvent
	for {
		resp, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, resp.GetEvents()...)
	}
}

// readAll reads all of $all forward.
func (c *client) readAll(ctx context.Context) ([]*esdv1.RecordedEvent, error) {
	rs, err := c.streams.ReadAll(ctx, &esdv1.ReadAllRequest{})
	if err != nil {
		return nil, err
	}
	var evs []*esdv1.RecordedEvent
	for {
		resp, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, resp.GetEvents()...)
	}
}

// reasonOf returns the google.rpc.ErrorInfo reason of a gRPC error, or "".
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// ---- HTTP ----

// httpGet fetches http://addr+path and returns the status code and body.
func httpGet(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// metricLines returns the samples of metric family name in a Prometheus
// text exposition (lines "name value" or "name{labels} value").
func metricLines(body, name string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			out = append(out, l)
		}
	}
	return out
}

// closedAddr returns a 127.0.0.1 address nothing listens on: a port the
// kernel just handed out and that was closed again.
func closedAddr(t testing.TB) string {
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
