package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/server"
	"github.com/esdhq/esd/internal/tlsconf"
)

// TestTokenLifecycle: role set, token create (printed once, only its hash
// stored, file 0600), ls (no secrets), revoke.
func TestTokenLifecycle(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.json")
	mustRun(t, "", "token", "role", "set", "orders-writer", "--file", file, "--grant", "orders-:read,append", "--grant", "*:subscribe")
	tok := strings.TrimSpace(mustRun(t, "", "token", "create", "--file", file, "--identity", "billing", "--roles", "orders-writer", "--expires", "24h"))
	if !strings.HasPrefix(tok, "esd_") || strings.Contains(tok, "\n") {
		t.Fatalf("token create printed %q, want one token", tok)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	secret := tok[len("esd_0123456789abcdef_"):] // base64url has '_' too: cut at the fixed length
	if strings.Contains(string(data), secret) {
		t.Fatal("the auth file holds the token's secret")
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("auth file mode %v, want 0600", st.Mode().Perm())
	}
	f, err := auth.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if who, err := auth.Compile(f).Authenticate(tok, time.Now()); err != nil || !who.Allowed(auth.Append, "orders-1") || who.Allowed(auth.Read, "users-1") {
		t.Fatalf("the token does not authenticate as billing with orders-writer: %v", err)
	}
	if _, err := auth.Compile(f).Authenticate(tok, time.Now().Add(25*time.Hour)); err == nil {
		t.Fatal("--expires 24h: valid after 25h")
	}
	id := f.Tokens[0].ID

	out := mustRun(t, "", "token", "ls", "--file", file)
	if !strings.Contains(out, id) || !strings.Contains(out, "billing") || !strings.Contains(out, "orders-writer") || strings.Contains(out, secret) {
		t.Fatalf("token ls:\n%s", out)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "", "-o", "json", "token", "ls", "--file", file)), &rows); err != nil || len(rows) != 1 || rows[0]["id"] != id {
		t.Fatalf("token ls -o json: %v %v", rows, err)
	}
	// A second token for the same identity keeps its roles.
	mustRun(t, "", "token", "create", "--file", file, "--identity", "billing")
	if out := mustRun(t, "", "token", "role", "ls", "--file", file); !strings.Contains(out, "orders-:read,append *:subscribe") {
		t.Fatalf("role ls:\n%s", out)
	}

	mustRun(t, "", "token", "revoke", "--file", file, id)
	f, _ = auth.ReadFile(file)
	if _, err := auth.Compile(f).Authenticate(tok, time.Now()); err == nil {
		t.Fatal("revoked token still valid")
	}
	if _, _, code := runCLI(t, "", strings.NewReader(""), "token", "revoke", "--file", file, id); code != exitError {
		t.Fatalf("revoking twice: exit %d, want %d", code, exitError)
	}
}

func TestTokenUsageErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.json")
	for _, args := range [][]string{
		{"token", "create", "--identity", "x"},                                                    // no file
		{"token", "create", "--file", file},                                                       // no identity
		{"token", "create", "--file", file, "--identity", "nobody"},                               // unknown identity, no --roles
		{"token", "create", "--file", file, "--identity", "x", "--roles", "undefined"},            // undefined role
		{"token", "role", "set", "r", "--file", file, "--grant", "orders-"},                       // no permissions
		{"token", "role", "set", "r", "--file", file, "--grant", "orders-:write"},                 // unknown permission
		{"token", "role", "set", "r", "--file", file, "--grant", "orders-:admin"},                 // admin on a prefix
		{"token", "create", "--file", file, "--identity", "x", "--roles", "", "--expires", "-1h"}, // negative expiry
		{"token", "identity", "set", "x", "--file", file},                                         // no --roles
		{"token", "identity", "set", "x", "--file", file, "--roles", "undefined"},                 // undefined role
	} {
		if _, errOut, code := runCLI(t, "", strings.NewReader(""), args...); code == exitOK {
			t.Errorf("esctl %v: exit 0, want an error (%s)", args, errOut)
		}
	}
	if _, err := os.Stat(file); err == nil {
		t.Error("a failed command wrote the auth file")
	}
}

// TestTokenIdentitySet: an identity without a token (a client
// certificate's common name) gets its roles, replaced on the next set.
func TestTokenIdentitySet(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.json")
	mustRun(t, "", "token", "role", "set", "reader", "--file", file, "--grant", "*:read")
	mustRun(t, "", "token", "role", "set", "writer", "--file", file, "--grant", "orders-:append")
	mustRun(t, "", "token", "identity", "set", "app.example.com", "--file", file, "--roles", "reader,writer")
	who := func() *auth.Principal {
		t.Helper()
		f, err := auth.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p, err := auth.Compile(f).Certificate("app.example.com")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := who(); !p.Allowed(auth.Read, "users-1") || !p.Allowed(auth.Append, "orders-1") || p.Allowed(auth.Append, "users-1") {
		t.Fatal("app.example.com does not hold reader and writer")
	}
	mustRun(t, "", "token", "identity", "set", "app.example.com", "--file", file, "--roles", "")
	if p := who(); p.Any(auth.Read) || p.Any(auth.Append) {
		t.Fatal("--roles \"\" left app.example.com permissions")
	}
}

// TestTokenFlag: --token and ESD_TOKEN authenticate esctl's calls to an
// esd with security on; without them the call is UNAUTHENTICATED.
func TestTokenFlag(t *testing.T) {
	file := filepath.Join(t.TempDir(), "auth.json")
	mustRun(t, "", "token", "role", "set", "ops", "--file", file, "--grant", "*:read,append,admin")
	tok := strings.TrimSpace(mustRun(t, "", "token", "create", "--file", file, "--identity", "ops", "--roles", "ops"))
	a, err := auth.New(file, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	esd := startESDWith(t, func(c *server.Config) { c.Auth = a })

	_, errOut, code := runCLI(t, esd.addr, strings.NewReader(""), "server", "info")
	if code != exitError || !strings.Contains(errOut, "TOKEN_MISSING") {
		t.Fatalf("no token: exit %d, %s", code, errOut)
	}
	mustRun(t, esd.addr, "--token", tok, "append", "orders-1", "x", "--type", "T")
	if out := mustRun(t, esd.addr, "--token", tok, "read", "orders-1"); !strings.Contains(out, "REVISION") {
		t.Fatalf("read with --token:\n%s", out)
	}
	t.Setenv(envToken, tok)
	mustRun(t, esd.addr, "server", "info")
	_, errOut, code = runCLI(t, esd.addr, strings.NewReader(""), "--token", "esd_bad", "server", "info")
	if code != exitError || !strings.Contains(errOut, "TOKEN_INVALID") {
		t.Fatalf("bad --token over ESD_TOKEN: exit %d, %s", code, errOut)
	}
}

// TestTokenOverTLS: --token together with the TLS flags, on every command
// bench included (it dials its own connections): over TLS without a client
// certificate the token is the identity, and with one it wins over the
// certificate's; bench without a token is refused.
func TestTokenOverTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	mustRun(t, "", "certs", "dev", "--out", dir, "--client", "admin")
	file := filepath.Join(dir, "auth.json") // certs dev's: admin may do everything
	mustRun(t, "", "token", "role", "set", "writer", "--file", file, "--grant", "bench-:read,append")
	tok := strings.TrimSpace(mustRun(t, "", "token", "create", "--file", file, "--identity", "app", "--roles", "writer"))
	a, err := auth.New(file, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rl, err := tlsconf.NewReloader(tlsconf.Files{Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem"),
		ClientCA: filepath.Join(dir, "ca.pem"), ClientAuth: tlsconf.VerifyClientCertIfGiven}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	esd := startESDWith(t, func(c *server.Config) { c.Auth, c.Creds = a, rl.GRPCCredentials() })
	ca := []string{"--tls-ca", filepath.Join(dir, "ca.pem")}
	withToken := append(ca, "--token", tok)

	mustRun(t, esd.addr, append(withToken, "append", "bench-x", "{}", "--type", "T")...)
	if out := mustRun(t, esd.addr, append(withToken, "read", "bench-x")...); !strings.Contains(out, "REVISION") {
		t.Fatalf("read with --token over TLS:\n%s", out)
	}
	bench := []string{"bench", "append", "-c", "2", "--conns", "2", "-n", "20", "-d", "0", "--warmup", "0"}
	mustRun(t, esd.addr, append(withToken, bench...)...)
	if _, errOut, code := runCLI(t, esd.addr, strings.NewReader(""), append(ca, bench...)...); code == 0 || !strings.Contains(errOut, "TOKEN_MISSING") {
		t.Fatalf("bench without a token: exit %d, %s", code, errOut)
	}
	// The admin certificate may do everything; the token, sent too, wins.
	admin := append(ca, "--tls-cert", filepath.Join(dir, "admin.pem"), "--tls-key", filepath.Join(dir, "admin-key.pem"))
	mustRun(t, esd.addr, append(admin, "server", "info")...)
	if _, errOut, code := runCLI(t, esd.addr, strings.NewReader(""), append(admin, "--token", tok, "server", "info")...); code == 0 ||
		!strings.Contains(errOut, "PERMISSION_DENIED") {
		t.Fatalf("server info with the certificate of admin and the token of app: exit %d, %s", code, errOut)
	}
}
