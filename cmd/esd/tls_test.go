package main

import (
	"context"
	"crypto/tls"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/tlsconf"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// TestTLSConfig: the TLS flags, the rule that plain text is served on
// loopback addresses only, unless --insecure, and the rule that a
// certificate comes with an auth file (security is on with TLS).
func TestTLSConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	cert := []string{"--tls-cert", "s.pem", "--tls-key", "s-key.pem", "--auth-file", "auth.json"}
	with := func(a ...[]string) []string {
		var out []string
		for _, x := range a {
			out = append(out, x...)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     func(string) string
		wantTLS bool
		wantErr string // a part of the error; "" means none
	}{
		{name: "defaults: loopback, plain text", wantTLS: false},
		{name: "localhost plain text", args: []string{"--listen", "localhost:7400", "--http-listen", "[::1]:7401"}},
		{name: "127.0.0.2 plain text", args: []string{"--listen", "127.0.0.2:7400"}},
		{name: "all interfaces refused", args: []string{"--listen", "0.0.0.0:7400"}, wantErr: "--listen 0.0.0.0:7400 is not a loopback address"},
		{name: "empty host refused", args: []string{"--listen", ":7400"}, wantErr: "--listen :7400 is not a loopback address"},
		{name: "IPv6 any refused", args: []string{"--http-listen", "[::]:7401"}, wantErr: "--http-listen [::]:7401 is not a loopback address"},
		{name: "a host name refused", args: []string{"--listen", "esd.internal:7400"}, wantErr: "or --insecure"},
		{name: "a LAN address refused", args: []string{"--http-listen", "10.0.0.5:7401"}, wantErr: "--http-listen 10.0.0.5:7401"},
		{name: "environment too", env: env("ESD_LISTEN", "0.0.0.0:7400"), wantErr: "--listen 0.0.0.0:7400"},
		{name: "insecure allows", args: []string{"--listen", "0.0.0.0:7400", "--http-listen", ":7401", "--insecure"}},
		{name: "insecure from the environment", args: []string{"--listen", "0.0.0.0:7400"}, env: env("ESD_INSECURE", "true")},
		{name: "TLS allows", args: with(cert, []string{"--listen", "0.0.0.0:7400", "--http-listen", ":7401"}), wantTLS: true},
		{name: "dev dir allows", args: []string{"--listen", "0.0.0.0:7400", "--tls-dev-dir", "/d"}, wantTLS: true},
		{name: "TLS from the environment", args: []string{"--listen", "0.0.0.0:7400"},
			env: env("ESD_TLS_CERT", "c", "ESD_TLS_KEY", "k", "ESD_TLS_CLIENT_CA", "ca", "ESD_AUTH_FILE", "a"), wantTLS: true},
		{name: "TLS needs an auth file", args: []string{"--tls-cert", "c", "--tls-key", "k"}, wantErr: "--tls-cert turns security on: give --auth-file"},
		{name: "insecure ignores the dev dir", args: []string{"--listen", "0.0.0.0:7400"},
			env: env("ESD_TLS_DEV_DIR", "/data/tls", "ESD_INSECURE", "true"), wantTLS: false},
		{name: "insecure excludes a certificate", args: with(cert, []string{"--insecure"}), wantErr: "--insecure and --tls-cert exclude each other"},
		{name: "cert without key", args: []string{"--tls-cert", "c"}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "key without cert", args: []string{"--tls-key", "k"}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "client CA without TLS", args: []string{"--tls-client-ca", "ca"}, wantErr: "--tls-client-ca needs TLS"},
		{name: "client CA", args: with(cert, []string{"--tls-client-ca", "ca", "--tls-client-auth", "verify-if-given"}), wantTLS: true},
		{name: "client auth without a client CA", args: with(cert, []string{"--tls-client-auth", "require"}), wantErr: "--tls-client-auth needs a client CA"},
		{name: "client auth with a dev dir", args: []string{"--tls-dev-dir", "d", "--tls-client-auth", "verify-if-given"}, wantTLS: true},
		{name: "bad client auth", args: with(cert, []string{"--tls-client-ca", "ca", "--tls-client-auth", "maybe"}), wantErr: `--tls-client-auth "maybe"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := tc.env
			if getenv == nil {
				getenv = env()
			}
			c, err := parseConfig(tc.args, getenv)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			case tc.wantErr == "" && c.tlsOn() != tc.wantTLS:
				t.Fatalf("tlsOn %v, want %v", c.tlsOn(), tc.wantTLS)
			}
		})
	}
}

// TestRunTLS starts esd in-process with development certificates: the
// gRPC listener wants a client certificate, the HTTP one serves /metrics
// over HTTPS to a client that trusts the CA (and has no certificate),
// and a second start reuses the certificates.
func TestRunTLS(t *testing.T) {
	dir := t.TempDir()
	devDir := filepath.Join(dir, "tls")
	cfg, err := parseConfig([]string{"--data-dir", filepath.Join(dir, "data"), "--tls-dev-dir", devDir,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	var firstSerial *big.Int
	for start := range 2 {
		rl, err := newTLS(cfg, zaptest.NewLogger(t), prometheus.NewRegistry())
		if err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		serial := rl.Certificate().SerialNumber
		if start == 1 && serial.Cmp(firstSerial) != 0 {
			t.Errorf("second start: a new server certificate (serial %v, was %v), want the first reused", serial, firstSerial)
		}
		firstSerial = serial
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	obs, logs := observer.New(zap.InfoLevel)
	lg := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return zapcore.NewTee(c, obs) })))
	go func() { done <- run(ctx, cfg, lg) }()
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		if l := logs.FilterMessage("http listening").All(); len(l) > 0 {
			addr = l[0].ContextMap()["addr"].(string)
		}
		select {
		case err := <-done:
			t.Fatalf("run: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("esd did not listen within 20s")
		}
	}
	// Security is on with TLS: development certificates come with a
	// development auth file, in force.
	if logs.FilterMessageSnippet("DEVELOPMENT auth file").Len() != 1 || logs.FilterMessage("security on").Len() != 1 {
		t.Errorf("no development auth file in force: %v", logs.All())
	}
	if _, err := os.Stat(filepath.Join(devDir, devAuthFileName)); err != nil {
		t.Errorf("development auth file: %v", err)
	}
	ccfg, err := tlsconf.ClientConfig(filepath.Join(devDir, tlsconf.DevCAFile), "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: ccfg, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics over HTTPS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "esd_tls_certificate_expiry_timestamp_seconds ") ||
		!strings.Contains(string(body), `esd_tls_reloads_total{result="success"} 0`) {
		t.Errorf("/metrics over HTTPS: %d, want 200 with the esd_tls_* metrics:\n%.2000s", resp.StatusCode, body)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("/metrics over HTTPS: %s, want HTTP/2", resp.Proto)
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/healthz"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP on the TLS port: 200, want refused")
		}
	}
	untrusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
	resp, err = untrusting.Get("https://" + addr + "/healthz")
	if err == nil {
		_ = resp.Body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("HTTPS without the CA: %v, want unknown authority", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(devDir, "admin.pem")); err != nil {
		t.Error(err)
	}
}
