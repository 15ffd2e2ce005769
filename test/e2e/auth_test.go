//go:build e2e

package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAuthEndToEnd: the real esd with --auth-file and esctl --token.
// Tokens made by esctl token work at once; a call without one, or outside
// the token's grants, is refused with its reason; a revoked token is
// refused within a bounded wait; a broken file (reloaded on SIGHUP) keeps
// the one in force; /debug/pprof/ needs an admin token, /metrics does not.
func TestAuthEndToEnd(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "auth.json")
	mustEsctl(t, closedAddr(t), "token", "role", "set", "orders-writer", "--file", file, "--grant", "orders-:read,append")
	mustEsctl(t, closedAddr(t), "token", "role", "set", "admin", "--file", file, "--grant", "*:read,append,delete,subscribe,admin")
	writer := strings.TrimSpace(mustEsctl(t, closedAddr(t), "token", "create", "--file", file, "--identity", "billing", "--roles", "orders-writer").Stdout)
	admin := strings.TrimSpace(mustEsctl(t, closedAddr(t), "token", "create", "--file", file, "--identity", "ops", "--roles", "admin").Stdout)

	p := startESD(t, t.TempDir(), "--auth-file", file, "--pprof")

	if r := esctl(t, p.Addr, "append", "orders-1", "x", "--type", "T"); r.Code != 1 || !strings.Contains(r.Stderr, "TOKEN_MISSING") {
		t.Fatalf("no token: %s", r)
	}
	mustEsctl(t, p.Addr, "--token", writer, "append", "orders-1", "x", "--type", "T")
	if r := mustEsctl(t, p.Addr, "--token", writer, "read", "orders-1"); !strings.Contains(r.Stdout, "REVISION") {
		t.Fatalf("read: %s", r)
	}
	if r := esctl(t, p.Addr, "--token", writer, "read", "users-1"); r.Code != 1 || !strings.Contains(r.Stderr, "PERMISSION_DENIED") {
		t.Fatalf("read outside the grant: %s", r)
	}
	if r := esctl(t, p.Addr, "--token", writer, "server", "info"); r.Code != 1 || !strings.Contains(r.Stderr, "PERMISSION_DENIED") {
		t.Fatalf("server info without admin: %s", r)
	}
	mustEsctl(t, p.Addr, "--token", admin, "server", "info")

	// /debug/pprof/ needs admin; /metrics and /healthz stay open.
	if code, _ := httpGet(t, p.HTTPAddr, "/debug/pprof/"); code != http.StatusUnauthorized {
		t.Fatalf("pprof without a token: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.HTTPAddr+"/debug/pprof/", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pprof with an admin token: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if code, _ := httpGet(t, p.HTTPAddr, "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}

	// A broken file, reloaded on SIGHUP: the one in force stays.
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`{"roles": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the broken file's reload error counted", func() bool {
		_, body := httpGet(t, p.HTTPAddr, "/metrics")
		for _, l := range metricLines(body, "esd_auth_reloads_total") {
			if strings.Contains(l, `result="error"`) && !strings.HasSuffix(l, " 0") {
				return true
			}
		}
		return false
	})
	mustEsctl(t, p.Addr, "--token", writer, "read", "orders-1")
	if err := os.WriteFile(file, good, 0o600); err != nil {
		t.Fatal(err)
	}

	// Revoked: refused within 5s, without a restart.
	var id string
	for _, line := range strings.Split(mustEsctl(t, p.Addr, "token", "ls", "--file", file).Stdout, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "billing" {
			id = f[0]
		}
	}
	start := time.Now()
	mustEsctl(t, p.Addr, "token", "revoke", "--file", file, id)
	waitUntil(t, 5*time.Second, "the revoked token refused", func() bool {
		r := esctl(t, p.Addr, "--token", writer, "read", "orders-1")
		return r.Code == 1 && strings.Contains(r.Stderr, "TOKEN_INVALID")
	})
	t.Logf("revoked token refused %v after esctl token revoke", time.Since(start).Round(time.Millisecond))
	mustEsctl(t, p.Addr, "--token", admin, "read", "orders-1")
	p.Stop()
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
