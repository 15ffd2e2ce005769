//go:build e2e

package e2e

import (
	"testing"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestStreamMetadataAcrossKill9: stream metadata and a category's default
// limits, acknowledged, survive kill -9 and apply to reads after the
// restart; esctl stream meta prints its answers as tables and as JSON.
func TestStreamMetadataAcrossKill9(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startESD(t, dir)
	for range 5 {
		mustEsctl(t, p.Addr, "append", "ret-1", "{}", "--type", "Counted")
	}
	wantKV(t, parseKV(t, mustEsctl(t, p.Addr, "stream", "meta", "set", "ret-1", "--max-count", "2", "--json", `{"owner":"billing"}`,
		"--expected-revision", "none").Stdout), map[string]string{"METADATA REVISION": "0"})
	var set esdv1.SetStreamMetadataResponse
	mustProtoJSON(t, mustEsctl(t, p.Addr, "stream", "meta", "set", "--category", "ret", "--max-age", "720h", "-o", "json").Stdout, &set)
	p.Kill()

	p = startESD(t, dir)
	wantKV(t, parseKV(t, mustEsctl(t, p.Addr, "stream", "meta", "get", "ret-1").Stdout), map[string]string{
		"METADATA REVISION": "0", "MAX COUNT": "2", "CUSTOM JSON": `{"owner":"billing"}`,
		"EFFECTIVE MAX COUNT": "2", "EFFECTIVE MAX AGE": "720h0m0s",
	})
	wantKV(t, parseKV(t, mustEsctl(t, p.Addr, "info", "ret-1").Stdout), map[string]string{"EVENTS": "2", "HEAD": "4"})
	var got esdv1.GetStreamMetadataResponse
	mustProtoJSON(t, mustEsctl(t, p.Addr, "stream", "meta", "get", "--category", "ret", "-o", "json").Stdout, &got)
	if !got.GetExists() || got.GetMetadata().GetMaxAge().AsDuration().Hours() != 720 {
		t.Fatalf("category defaults after kill -9: %v", &got)
	}
	if r := esctl(t, p.Addr, "stream", "meta", "set", "ret-1", "--expected-revision", "0"); r.Code != 0 {
		t.Fatalf("set at the revision from before the kill: %s", r)
	}
}
