package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const exampleFile = `{
  "roles": {
    "orders-writer": [{"prefix": "orders-", "permissions": ["read", "append"]}],
    "reader": [{"prefix": "*", "permissions": ["read", "subscribe"]}],
    "admin": [{"prefix": "*", "permissions": ["read", "append", "delete", "subscribe", "admin"]}]
  },
  "identities": {
    "billing": {"roles": ["orders-writer"]},
    "ops.example.com": {"roles": ["admin"]},
    "nobody": {"roles": []}
  },
  "tokens": []
}`

func mustDecode(t *testing.T, s string) *File {
	t.Helper()
	f, err := Decode(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"unknown field", `{"roles":{"r":[{"prefix":"a","grants":["read"]}]}}`, "unknown field"},
		{"unknown permission", `{"roles":{"r":[{"prefix":"a","permissions":["write"]}]}}`, `unknown permission "write"`},
		{"empty prefix", `{"roles":{"r":[{"prefix":"","permissions":["read"]}]}}`, "empty prefix"},
		{"glob prefix", `{"roles":{"r":[{"prefix":"orders-*","permissions":["read"]}]}}`, "only valid alone"},
		{"admin on a prefix", `{"roles":{"r":[{"prefix":"a","permissions":["admin"]}]}}`, "server-wide"},
		{"no permissions", `{"roles":{"r":[{"prefix":"a","permissions":[]}]}}`, "no permissions"},
		{"undefined role", `{"identities":{"i":{"roles":["r"]}}}`, `undefined role "r"`},
		{"undefined identity", `{"tokens":[{"id":"0011223344556677","identity":"x","sha256":"` + strings.Repeat("0", 64) + `"}]}`, `undefined identity "x"`},
		{"bad hash", `{"identities":{"i":{}},"tokens":[{"id":"0011223344556677","identity":"i","sha256":"abc"}]}`, "64 hex digits"},
		{"bad id", `{"identities":{"i":{}},"tokens":[{"id":"xyz","identity":"i","sha256":"` + strings.Repeat("0", 64) + `"}]}`, "hex digits"},
		{"repeated id", `{"identities":{"i":{}},"tokens":[{"id":"0011223344556677","identity":"i","sha256":"` + strings.Repeat("0", 64) +
			`"},{"id":"0011223344556677","identity":"i","sha256":"` + strings.Repeat("0", 64) + `"}]}`, "repeated"},
		{"rate 0", `{"identities":{"i":{"rate":{"per_second":0}}}}`, "rate"},
		{"negative burst", `{"identities":{"i":{"rate":{"per_second":1,"burst":-1}}}}`, "rate"},
		{"trailing data", `{} {}`, "after the JSON"},
		{"not JSON", `roles: {}`, "auth file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	f := mustDecode(t, exampleFile)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tok, _, err := NewToken(f, "billing", now, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	short, _, err := NewToken(f, "billing", now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p := Compile(f)
	if who, err := p.Authenticate(tok, now); err != nil || who.Name != "billing" {
		t.Fatalf("valid token: %v %v", who, err)
	}
	if _, err := p.Authenticate(short, now.Add(59*time.Minute)); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	if _, err := p.Authenticate(short, now.Add(time.Hour)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at expiry: %v, want ErrTokenExpired", err)
	}
	// A wrong secret of an expired token is invalid, not expired: expiry
	// is told only to the secret's holder.
	wrong := short[:len(short)-2] + flip(short[len(short)-2:])
	if _, err := p.Authenticate(wrong, now.Add(2*time.Hour)); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("wrong secret of an expired token: %v", err)
	}
	for _, bad := range []string{"", "esd_", tok + "x", "esd_00112233445566770_" + tok[21:], strings.Replace(tok, "esd_", "ESD_", 1),
		"esd_ffffffffffffffff_" + tok[len("esd_0011223344556677_"):], wrong} {
		if _, err := p.Authenticate(bad, now); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("token %q: %v, want ErrTokenInvalid", bad, err)
		}
	}
	id := f.Tokens[0].ID
	if !Revoke(f, id) || Revoke(f, id) {
		t.Fatal("Revoke: want true once, then false")
	}
	if _, err := Compile(f).Authenticate(tok, now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("revoked: %v", err)
	}
	if who, err := p.Certificate("ops.example.com"); err != nil || !who.Everything(Admin) {
		t.Fatalf("certificate: %v %v", who, err)
	}
	if _, err := p.Certificate("stranger"); !errors.Is(err, ErrCertificateUnknown) {
		t.Fatalf("unknown certificate: %v", err)
	}
}

func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestPrincipal(t *testing.T) {
	f := mustDecode(t, `{"roles":{
	  "a":[{"prefix":"orders-","permissions":["read"]},{"prefix":"orders-eu-","permissions":["read","delete"]},{"prefix":"cart","permissions":["subscribe"]}],
	  "b":[{"prefix":"*","permissions":["append"]},{"prefix":"$","permissions":["read"]}]},
	  "identities":{"i":{"roles":["a","b"]}}}`)
	p := Compile(f).identities["i"]
	for _, tc := range []struct {
		perm   Permission
		stream string
		want   bool
	}{
		{Read, "orders-1", true}, {Read, "orders", false}, {Read, "order", false}, {Read, "$deleted", true},
		{Delete, "orders-eu-1", true}, {Delete, "orders-us-1", false},
		{Append, "anything", true}, {Append, "$deleted", true}, {Admin, "x", false},
	} {
		if got := p.Allowed(tc.perm, tc.stream); got != tc.want {
			t.Errorf("Allowed(%s, %q) = %t", tc.perm, tc.stream, got)
		}
	}
	if got := p.Prefixes(Read); strings.Join(got, ",") != "$,orders-" {
		t.Errorf("read prefixes %q: orders-eu- is inside orders-", got)
	}
	if !p.CoversCategory(Subscribe, "cart") || p.CoversCategory(Read, "orders") || !p.CoversPrefix(Read, "orders-eu") {
		t.Error("category or prefix coverage wrong")
	}
	if !p.Everything(Append) || p.Everything(Read) || p.Any(Admin) {
		t.Error("Everything/Any wrong")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	f := mustDecode(t, exampleFile)
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v: want 0600", st.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d files left, want only the auth file", len(entries))
	}
	g, err := ReadFile(path)
	if err != nil || len(g.Roles) != 3 || len(g.Identities) != 3 {
		t.Fatalf("read back: %+v %v", g, err)
	}
	f.Identities["x"] = Identity{Roles: []string{"missing"}}
	if err := WriteFile(path, f); err == nil {
		t.Fatal("an inconsistent file was written")
	}
}

// TestReload: a revoked token stops working within a bounded wait of the
// file's change, and a broken file keeps the policy in force.
func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	f := mustDecode(t, exampleFile)
	tok, _, err := NewToken(f, "billing", time.Now(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, err := New(path, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, hup) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	if _, err := a.Policy().Authenticate(tok, time.Now()); err != nil {
		t.Fatal(err)
	}

	// A broken file: the old policy stays, the error is counted.
	if err := os.WriteFile(path, []byte(`{"roles": `), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(a.reloads.WithLabelValues("error")) >= 1 })
	if _, err := a.Policy().Authenticate(tok, time.Now()); err != nil {
		t.Fatalf("after a broken file: %v, want the old policy", err)
	}

	// Revoked: refused within the wait (the debounce is 100ms).
	Revoke(f, f.Tokens[0].ID)
	start := time.Now()
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, err := a.Policy().Authenticate(tok, time.Now()); return err != nil })
	t.Logf("revocation in force %v after the write", time.Since(start).Round(time.Millisecond))

	// SIGHUP reloads too.
	ok := testutil.ToFloat64(a.reloads.WithLabelValues("ok"))
	hup <- os.Interrupt // any value: Run does not look at which signal
	waitFor(t, func() bool { return testutil.ToFloat64(a.reloads.WithLabelValues("ok")) > ok })
}

// waitFor polls cond for up to 5s: the bound a reload must meet.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FuzzDecode: Decode never panics, and what it accepts compiles, passes
// Check and survives a write and read back.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(exampleFile))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		p := Compile(file)
		for name := range file.Identities {
			who, err := p.Certificate(name)
			if name != "" && (err != nil || who.Name != name) {
				t.Fatalf("identity %q does not compile", name)
			}
		}
		path := filepath.Join(t.TempDir(), "auth.json")
		if err := WriteFile(path, file); err != nil {
			t.Fatalf("accepted file not written: %v", err)
		}
		if _, err := ReadFile(path); err != nil {
			t.Fatalf("written file not read back: %v", err)
		}
	})
}

// TestEnsureDevFile: the development file gives its identities every
// permission on every stream, and is not written over once there.
func TestEnsureDevFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "auth.json")
	made, err := EnsureDevFile(p, "admin")
	if err != nil || !made {
		t.Fatalf("EnsureDevFile: %v, %v", made, err)
	}
	a, err := NewStatic(mustRead(t, p))
	if err != nil {
		t.Fatal(err)
	}
	who, err := a.Policy().Certificate("admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, perm := range Permissions {
		if !who.Everything(perm) {
			t.Errorf("admin lacks %s on every stream", perm)
		}
	}
	if _, err := a.Policy().Certificate("app"); err == nil {
		t.Error("an identity not named is known")
	}
	f := mustRead(t, p)
	f.Identities["app"] = Identity{Roles: []string{DevRole}}
	if err := WriteFile(p, f); err != nil {
		t.Fatal(err)
	}
	if made, err := EnsureDevFile(p, "admin"); err != nil || made {
		t.Fatalf("second EnsureDevFile: %v, %v (want the file kept)", made, err)
	}
	if _, ok := mustRead(t, p).Identities["app"]; !ok {
		t.Error("the operator's edit was written over")
	}
}

func mustRead(t *testing.T, p string) *File {
	t.Helper()
	f, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
