package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHTTPHandlerPprof: /debug/pprof/ answers 404 unless Config.Pprof is
// set; /metrics, /healthz and /readyz answer either way.
func TestHTTPHandlerPprof(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pprof     bool
		wantPprof int
	}{
		{name: "default", pprof: false, wantPprof: http.StatusNotFound},
		{name: "pprof", pprof: true, wantPprof: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, withConfig(func(c *Config) { c.Pprof = tc.pprof }))
			hs := httptest.NewServer(ts.srv.HTTPHandler(ts.reg))
			defer hs.Close()
			get := func(path string) (int, string) {
				t.Helper()
				resp, err := hs.Client().Get(hs.URL + path)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				defer resp.Body.Close() //nolint:errcheck // read-only
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("GET %s: read body: %v", path, err)
				}
				return resp.StatusCode, string(body)
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
				if code, _ := get(path); code != tc.wantPprof {
					t.Errorf("GET %s: %d, want %d", path, code, tc.wantPprof)
				}
			}
			if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "esd_append_stream_inflight") {
				t.Errorf("GET /metrics: %d, body without esd_append_stream_inflight:\n%.500s", code, body)
			}
			if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
				t.Errorf("GET /healthz: %d %q, want 200 \"ok\\n\"", code, body)
			}
			if code, body := get("/readyz"); code != http.StatusOK || body != "ready\n" {
				t.Errorf("GET /readyz: %d %q, want 200 \"ready\\n\"", code, body)
			}
		})
	}
}
