//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/tlsconf"
)

// tlsFlags are esctl's flags for the development files of dir, as client
// name.
func tlsFlags(dir, name string) []string {
	return []string{"--tls-ca", filepath.Join(dir, "ca.pem"),
		"--tls-cert", filepath.Join(dir, name+".pem"), "--tls-key", filepath.Join(dir, name+"-key.pem")}
}

// TestTLS: certificates from `esctl certs dev`, the real esd with them,
// mTLS and the auth file (the client certificate's common name is the
// identity), esctl appending and reading with --tls-*; refused without a client
// certificate and in plain text; /metrics over HTTPS; and the certificates
// of another CA swapped in and read on SIGHUP, after which the new CA's
// clients connect and the old CA's do not.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certs := filepath.Join(dir, "tls")
	r := mustEsctl(t, "127.0.0.1:1", "certs", "dev", "--out", certs, "--client", "admin", "--client", "reader")
	if !strings.Contains(r.Stdout, "esd --tls-cert") {
		t.Errorf("certs dev does not say how to start esd:\n%s", r.Stdout)
	}
	// Security is on with TLS: the auth file certs dev wrote gives both
	// clients everything; reader is narrowed to reading.
	authFile := filepath.Join(certs, "auth.json")
	mustEsctl(t, "127.0.0.1:1", "token", "role", "set", "read-only", "--file", authFile, "--grant", "*:read")
	mustEsctl(t, "127.0.0.1:1", "token", "identity", "set", "reader", "--file", authFile, "--roles", "read-only")
	p := startESD(t, filepath.Join(dir, "data"), "--tls-cert", filepath.Join(certs, "server.pem"),
		"--tls-key", filepath.Join(certs, "server-key.pem"), "--tls-client-ca", filepath.Join(certs, "ca.pem"),
		"--auth-file", authFile)
	admin := tlsFlags(certs, "admin")

	mustEsctl(t, p.Addr, append(admin, "append", "tls-1", `{"n":1}`, "--type", "T", "--expected", "no-stream")...)
	if r := esctl(t, p.Addr, append(tlsFlags(certs, "reader"), "append", "tls-1", `{"n":2}`, "--type", "T")...); r.Code == 0 ||
		!strings.Contains(r.Stderr, "PERMISSION_DENIED") {
		t.Errorf("reader's append: want PERMISSION_DENIED, got %s", r)
	}
	r = mustEsctl(t, p.Addr, append(tlsFlags(certs, "reader"), "read", "tls-1", "-o", "jsonl")...)
	if evs := parseJSONL(t, r.Stdout); len(evs) != 1 || string(evs[0].GetData()) != `{"n":1}` {
		t.Errorf("read over mTLS: %s", r.Stdout)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"without a client certificate", []string{"--tls-ca", filepath.Join(certs, "ca.pem")}},
		{"in plain text", nil},
	} {
		if r := esctl(t, p.Addr, append(tc.args, "read", "tls-1")...); r.Code != 3 || !strings.Contains(r.Stderr, "hint:") {
			t.Errorf("%s: want exit 3 with a hint, got %s", tc.name, r)
		}
	}

	// /metrics over HTTPS, trusting the CA, with no client certificate.
	code, body := httpsGet(t, p.HTTPAddr, "/metrics", filepath.Join(certs, "ca.pem"))
	if code != 200 || len(metricLines(body, "esd_tls_certificate_expiry_timestamp_seconds")) != 1 {
		t.Errorf("GET https://.../metrics: %d, want 200 with esd_tls_certificate_expiry_timestamp_seconds", code)
	}

	// Another CA's files copied over the first's, then SIGHUP.
	other := filepath.Join(dir, "other")
	mustEsctl(t, "127.0.0.1:1", "certs", "dev", "--out", other)
	for _, f := range []string{"server.pem", "server-key.pem", "ca.pem"} {
		b, err := os.ReadFile(filepath.Join(other, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := tlsconf.WriteFileAtomic(filepath.Join(certs, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var last esctlResult
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if last = esctl(t, p.Addr, append(tlsFlags(other, "admin"), "read", "tls-1")...); last.Code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP, the new CA's client is still refused: %s", last)
		}
	}
	if r := esctl(t, p.Addr, append(admin, "read", "tls-1")...); r.Code != 3 {
		t.Errorf("after SIGHUP, the old CA's client: want exit 3, got %s", r)
	}
	_, body = httpsGet(t, p.HTTPAddr, "/metrics", filepath.Join(other, "ca.pem"))
	if l := metricLines(body, "esd_tls_reloads_total"); !strings.Contains(strings.Join(l, "\n"), `esd_tls_reloads_total{result="success"} 1`) &&
		!strings.Contains(strings.Join(l, "\n"), `esd_tls_reloads_total{result="success"} 2`) { // the watcher may have read a half-copied set first
		t.Errorf("esd_tls_reloads_total after SIGHUP: %v", l)
	}
	if !strings.Contains(p.logs.String(), "TLS files reloaded") {
		t.Errorf("no reload logged:\n%s", p.logs)
	}
	p.Stop()
}

// TestTLSDevDir: --tls-dev-dir makes development certificates at the
// first start, says so in a WARN line naming the client files, requires
// client certificates, and reuses the certificates on the next start.
func TestTLSDevDir(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	devDir := filepath.Join(data, "tls") // as in the container image: in the data volume
	p := startESD(t, data, "--tls-dev-dir", devDir)
	if !strings.Contains(p.logs.String(), `"level":"warn"`) || !strings.Contains(p.logs.String(), "DEVELOPMENT certificates") ||
		!strings.Contains(p.logs.String(), filepath.Join(devDir, "admin.pem")) {
		t.Errorf("no WARN line about development certificates naming the client files:\n%s", p.logs)
	}
	flags := tlsFlags(devDir, "admin")
	mustEsctl(t, p.Addr, append(flags, "append", "dev-1", "x", "--type", "T")...)
	if r := esctl(t, p.Addr, "--tls-ca", filepath.Join(devDir, "ca.pem"), "read", "dev-1"); r.Code != 3 {
		t.Errorf("without a client certificate: want exit 3, got %s", r)
	}
	p.Stop()
	p = startESD(t, data, "--tls-dev-dir", devDir)
	if r := mustEsctl(t, p.Addr, append(flags, "read", "dev-1", "-o", "jsonl")...); len(parseJSONL(t, r.Stdout)) != 1 {
		t.Errorf("after a restart with the same certificates: %s", r)
	}
	p.Stop()
}

// TestInsecureRule: esd refuses to serve plain text on an address other
// than loopback, naming the flags that fix it, and starts with --insecure.
func TestInsecureRule(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, esdBin, "--data-dir", t.TempDir(), "--listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0")
	cmd.Env = childEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 ||
		!strings.Contains(stderr.String(), "--listen 0.0.0.0:0 is not a loopback address") || !strings.Contains(stderr.String(), "--insecure") {
		t.Errorf("esd --listen 0.0.0.0:0 without TLS: %v, want exit 2 naming --insecure:\n%s", err, stderr.String())
	}
	p := startESD(t, t.TempDir(), "--listen", "0.0.0.0:0", "--insecure")
	p.Stop()
}

// httpsGet fetches https://addr+path trusting the CAs of caFile.
func httpsGet(t testing.TB, addr, path, caFile string) (int, string) {
	t.Helper()
	cfg, err := tlsconf.ClientConfig(caFile, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	resp, err := c.Get("https://" + addr + path)
	if err != nil {
		t.Fatalf("GET https://%s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
