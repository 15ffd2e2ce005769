package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/esdhq/esd/internal/tlsconf"
)

// TestTLS cannot run in parallel: it sets ESCTL_TLS_*. It makes
// certificates with `esctl certs dev`, serves esd with mTLS on them, and
// connects with the TLS flags, their environment variables, and without
// what the server asks for.
func TestTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	out := mustRun(t, "", "certs", "dev", "--out", dir, "--client", "admin", "--client", "app")
	for _, want := range []string{"esd --tls-cert " + filepath.Join(dir, "server.pem"), "esctl --tls-ca " + filepath.Join(dir, "ca.pem"), `identity "app"`} {
		if !strings.Contains(out, want) {
			t.Errorf("certs dev output lacks %q:\n%s", want, out)
		}
	}
	if _, stderr, code := runCLI(t, "", nil, "certs", "dev", "--out", dir); code != exitUsage || !strings.Contains(stderr, "--force") {
		t.Errorf("certs dev over a CA: exit %d, %s; want a usage error naming --force", code, stderr)
	}
	if fi, err := os.Stat(filepath.Join(dir, "app-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("app-key.pem: %v %v, want mode 0600", fi, err)
	}
	rl, err := tlsconf.NewReloader(tlsconf.Files{
		Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem"), ClientCA: filepath.Join(dir, "ca.pem"),
	}, zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := startESDTLS(t, rl.GRPCCredentials()).addr
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin-key.pem")
	flags := []string{"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key}

	mustRun(t, addr, append(flags, "append", "tls-1", `{"a":1}`, "--type", "T")...)
	if out := mustRun(t, addr, append(flags, "read", "tls-1", "-o", "jsonl")...); !strings.Contains(out, `"stream":"tls-1"`) {
		t.Errorf("read over mTLS: %s", out)
	}
	// bench dials its own connections, with the same flags.
	mustRun(t, addr, append(flags, "bench", "append", "-c", "2", "--conns", "2", "-n", "20", "-d", "0", "--warmup", "0")...)

	for _, tc := range []struct {
		name, hint string
		args       []string
	}{
		{"plain text", "connect with --tls-ca", nil},
		{"no client certificate", "give --tls-cert and --tls-key", []string{"--tls-ca", ca}},
	} {
		_, stderr, code := runCLI(t, addr, nil, append(tc.args, "read", "tls-1")...)
		if code != exitUnavailable || !strings.Contains(stderr, tc.hint) {
			t.Errorf("%s: exit %d, stderr %s; want exit %d and the hint %q", tc.name, code, stderr, exitUnavailable, tc.hint)
		}
	}
	if _, stderr, code := runCLI(t, addr, nil, "--tls-cert", cert, "read", "tls-1"); code != exitUsage || !strings.Contains(stderr, "--tls-key") {
		t.Errorf("--tls-cert alone: exit %d, %s; want a usage error", code, stderr)
	}
	if _, stderr, code := runCLI(t, addr, nil, "--tls-ca", filepath.Join(dir, "nope.pem"), "read", "tls-1"); code != exitUsage || !strings.Contains(stderr, "nope.pem") {
		t.Errorf("a missing CA file: exit %d, %s; want a usage error naming it", code, stderr)
	}

	// The environment, and a flag winning over it.
	t.Setenv("ESCTL_TLS_CA", ca)
	t.Setenv("ESCTL_TLS_CERT", filepath.Join(dir, "app.pem"))
	t.Setenv("ESCTL_TLS_KEY", filepath.Join(dir, "app-key.pem"))
	mustRun(t, addr, "server", "info")
	if _, _, code := runCLI(t, addr, nil, "--tls-server-name", "esd.example", "server", "info"); code != exitUnavailable {
		t.Errorf("--tls-server-name esd.example (not in the certificate): exit %d, want %d", code, exitUnavailable)
	}
	mustRun(t, addr, "--tls-server-name", "localhost", "server", "info")
}
