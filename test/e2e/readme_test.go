//go:build e2e

package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/esdhq/esd/internal/testutil"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

// TestReadmeFlow walks the flow a new user follows: start esd, append with
// optimistic concurrency, read, inspect, delete, look at the server and its
// HTTP endpoints, stop it, start it again on the same data, and see that
// one data directory takes one esd and that a dead server is exit code 3.
func TestReadmeFlow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startESD(t, dir)
	addr := p.Addr

	// Create the stream, then append at the head we know.
	r := mustEsctl(t, addr, "append", "product-42", `{"name":"chair"}`, "--type", "ProductCreated", "--expected", "no-stream")
	kv := parseKV(t, r.Stdout)
	wantKV(t, kv, map[string]string{"STREAM": "product-42", "FIRST REVISION": "0", "LAST REVISION": "0", "FIRST POSITION": "1", "LAST POSITION": "1"})
	r = mustEsctl(t, addr, "append", "product-42", `{"name":"armchair"}`, "--type", "ProductRenamed", "--expected", "0")
	wantKV(t, parseKV(t, r.Stdout), map[string]string{"FIRST REVISION": "1", "LAST REVISION": "1", "FIRST POSITION": "2", "LAST POSITION": "2"})

	// A stale writer loses: exit 4, the reason and what changed on stderr.
	r = esctl(t, addr, "append", "product-42", `{"name":"stool"}`, "--type", "ProductRenamed", "--expected", "0")
	if r.Code != 4 || !strings.Contains(r.Stderr, "WRONG_EXPECTED_REVISION") {
		t.Fatalf("conflicting append: want exit 4 and WRONG_EXPECTED_REVISION on stderr, got %s", r)
	}
	if !regexp.MustCompile(`actual head:\s+1\b`).MatchString(r.Stderr) || !strings.Contains(r.Stderr, `{"name":"armchair"}`) {
		t.Errorf("conflicting append: stderr should show the head (1) and the event since the expected revision:\n%s", r.Stderr)
	}
	if r.Stdout != "" {
		t.Errorf("conflicting append printed to stdout: %q", r.Stdout)
	}

	// Read it back, one JSON object a line.
	r = mustEsctl(t, addr, "read", "product-42", "-o", "jsonl")
	evs := parseJSONL(t, r.Stdout)
	if len(evs) != 2 {
		t.Fatalf("read -o jsonl: want 2 events, got %d:\n%s", len(evs), r.Stdout)
	}
	want := []struct{ typ, data string }{{"ProductCreated", `{"name":"chair"}`}, {"ProductRenamed", `{"name":"armchair"}`}}
	for i, ev := range evs {
		if ev.GetRevision() != uint64(i) || ev.GetPosition() != uint64(i+1) || ev.GetStream() != "product-42" ||
			ev.GetType() != want[i].typ || string(ev.GetData()) != want[i].data || len(ev.GetId()) != 36 || ev.GetCreated() == nil {
			t.Errorf("read -o jsonl event %d: got %v, want revision %d position %d type %s data %s with an id and a created time",
				i, ev, i, i+1, want[i].typ, want[i].data)
		}
	}

	// The global log, as one JSON array.
	r = mustEsctl(t, addr, "read-all", "-o", "json")
	all := parseJSONArray(t, r.Stdout)
	if len(all) != 2 || !proto.Equal(all[0], evs[0]) || !proto.Equal(all[1], evs[1]) {
		t.Errorf("read-all -o json: want the 2 events of product-42, got:\n%s", r.Stdout)
	}

	// The stream's summary.
	r = mustEsctl(t, addr, "info", "product-42", "-o", "json")
	var info esdv1.StreamInfo
	mustProtoJSON(t, r.Stdout, &info)
	if info.GetStream() != "product-42" || info.GetHead() != 1 || info.GetEventCount() != 2 || !info.GetExists() || info.GetDeleted() {
		t.Errorf("info -o json: want head 1, 2 events, exists, got %s", r.Stdout)
	}

	// The stream list, as a table.
	r = mustEsctl(t, addr, "ls")
	rows := parseTable(t, r.Stdout)
	if len(rows) != 1 || rows[0]["STREAM"] != "product-42" || rows[0]["HEAD"] != "1" || rows[0]["EVENTS"] != "2" || rows[0]["STATE"] != "live" {
		t.Errorf("ls: want one live row product-42 head 1 with 2 events, got:\n%s", r.Stdout)
	}

	// Delete it: reads now say so.
	r = mustEsctl(t, addr, "delete", "product-42")
	wantKV(t, parseKV(t, r.Stdout), map[string]string{"STREAM": "product-42", "POSITION": "3"})
	r = esctl(t, addr, "read", "product-42")
	if r.Code == 0 || !strings.Contains(r.Stderr, "STREAM_DELETED") {
		t.Errorf("read of a deleted stream: want a non-zero exit and STREAM_DELETED on stderr, got %s", r)
	}
	if r.Code != 1 {
		t.Errorf("read of a deleted stream: want exit 1 (error), got %d", r.Code)
	}

	// The server's view, and its agreement with $all.
	r = mustEsctl(t, addr, "server", "info", "-o", "json")
	var si esdv1.GetServerInfoResponse
	mustProtoJSON(t, r.Stdout, &si)
	r = mustEsctl(t, addr, "read-all", "-o", "json")
	all = parseJSONArray(t, r.Stdout)
	streams := map[string]bool{}
	for _, ev := range all {
		streams[ev.GetStream()] = true
		if ev.GetStream() == "product-42" {
			t.Errorf("read-all after delete still returns an event of product-42: %v", ev)
		}
	}
	if si.GetDataDir() != dir || si.GetLastPosition() != 3 || si.GetShards() == 0 || si.GetVersion() == "" ||
		si.GetUptime() == nil || si.GetStarted() == nil || si.GetDiskBytes() == 0 {
		t.Errorf("server info -o json: want data dir %s, last position 3, shards, version, uptime, started, disk bytes; got %v", dir, &si)
	}
	if si.GetEventCount() != uint64(len(all)) || si.GetStreamCount() != uint64(len(streams)) {
		t.Errorf("server info: %d streams, %d events; read-all returns %d events of %d streams",
			si.GetStreamCount(), si.GetEventCount(), len(all), len(streams))
	}

	// HTTP: liveness, readiness, metrics.
	if code, body := httpGet(t, p.HTTPAddr, "/healthz"); code != 200 {
		t.Errorf("GET /healthz: %d %s", code, body)
	}
	if code, body := httpGet(t, p.HTTPAddr, "/readyz"); code != 200 {
		t.Errorf("GET /readyz: %d %s", code, body)
	}
	code, metrics := httpGet(t, p.HTTPAddr, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	for _, name := range []string{"esd_writer_requests_total", "esd_log_last_position", "grpc_server_handled_total",
		"esd_pebble_disk_bytes", "go_goroutines", "esd_build_info"} {
		if len(metricLines(metrics, name)) == 0 {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if l := metricLines(metrics, "esd_log_last_position"); len(l) != 1 || l[0] != "esd_log_last_position 3" {
		t.Errorf("/metrics: want esd_log_last_position 3, got %q", l)
	}
	if !hasMetric(metrics, "grpc_server_handled_total", `grpc_code="Aborted"`, `grpc_method="Append"`) {
		t.Errorf("/metrics: no grpc_server_handled_total sample for the aborted Append")
	}

	// What a restart must show again.
	before := map[string]string{}
	for _, args := range [][]string{
		{"read-all", "-o", "json"}, {"ls", "-o", "json"}, {"info", "product-42", "-o", "json"},
	} {
		before[strings.Join(args, " ")] = mustEsctl(t, addr, args...).Stdout
	}

	// SIGTERM: exit 0, store closed cleanly.
	p.Stop()
	if !strings.Contains(p.logs.String(), `"msg":"store closed"`) {
		t.Errorf("esd stopped without logging \"store closed\"")
	}

	p2 := startESD(t, dir)
	for args, out := range before {
		if got := mustEsctl(t, p2.Addr, strings.Fields(args)...).Stdout; got != out {
			t.Errorf("esctl %s after a restart:\n%s\nbefore:\n%s", args, got, out)
		}
	}
	r = mustEsctl(t, p2.Addr, "server", "info", "-o", "json")
	var si2 esdv1.GetServerInfoResponse
	mustProtoJSON(t, r.Stdout, &si2)
	if si2.GetLastPosition() != si.GetLastPosition() || si2.GetEventCount() != si.GetEventCount() || si2.GetStreamCount() != si.GetStreamCount() {
		t.Errorf("server info after restart: last position %d, %d events, %d streams; before: %d, %d, %d",
			si2.GetLastPosition(), si2.GetEventCount(), si2.GetStreamCount(), si.GetLastPosition(), si.GetEventCount(), si.GetStreamCount())
	}

	// A soft-deleted stream takes appends again; revisions continue.
	r = mustEsctl(t, p2.Addr, "append", "product-42", `{"name":"sofa"}`, "--type", "ProductCreated", "--expected", "no-stream")
	wantKV(t, parseKV(t, r.Stdout), map[string]string{"FIRST REVISION": "2", "FIRST POSITION": "4"})
	evs = parseJSONL(t, mustEsctl(t, p2.Addr, "read", "product-42", "-o", "jsonl").Stdout)
	if len(evs) != 1 || evs[0].GetRevision() != 2 || string(evs[0].GetData()) != `{"name":"sofa"}` {
		t.Errorf("read after re-creating a deleted stream: want only revision 2, got %v", evs)
	}

	// One esd per data directory: a second one fails, saying why.
	second := spawnESD(t, dir)
	second.waitExit(startTimeout)
	if c := second.exitCode(); c == 0 {
		t.Errorf("a second esd on a data dir in use exited 0")
	}
	if log := second.logs.String(); !strings.Contains(log, "lock") || !strings.Contains(log, dir) {
		t.Errorf("a second esd on a data dir in use: want a message about the lock on %s, got:\n%s", dir, log)
	}
	mustEsctl(t, p2.Addr, "server", "info") // the first is unharmed
	p2.Interrupt()                          // Ctrl-C stops as cleanly as SIGTERM

	// Nobody listening: exit 3.
	r = esctl(t, closedAddr(t), "ls")
	if r.Code != 3 {
		t.Errorf("esctl ls against a closed port: want exit 3, got %s", r)
	}
	r = esctl(t, p2.Addr, "server", "info")
	if r.Code != 3 {
		t.Errorf("esctl server info against a stopped esd: want exit 3, got %s", r)
	}
}

// TestSecondESDSamePortsReportsLock starts a second esd the way a user
// who runs `esd` twice with the default flags does: the same data
// directory and the same addresses. It must refuse to start and say that
// the data directory is locked by another esd, the real problem, rather
// than stop at the first symptom (the port in use), which suggests
// changing --listen: doing that only leads to the lock error.
func TestSecondESDSamePortsReportsLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startESD(t, dir)
	second := spawnESD(t, dir, "--listen", p.Addr, "--http-listen", p.HTTPAddr) // the last flag wins
	second.waitExit(startTimeout)
	if c := second.exitCode(); c == 0 {
		t.Errorf("a second esd on a data dir in use exited 0")
	}
	if log := second.logs.String(); !strings.Contains(log, "lock") || !strings.Contains(log, dir) {
		t.Errorf("a second esd with the same data dir and addresses: want a message about the lock on %s, got:\n%s", dir, log)
	}
	mustEsctl(t, p.Addr, "server", "info") // the first is unharmed
	p.Stop()
}

// ---- output parsers shared by the esctl tests ----

// parseKV reads esctl's KEY  VALUE table (keys may hold single spaces;
// two or more separate the columns).
func parseKV(t testing.TB, out string) map[string]string {
	t.Helper()
	kv := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		cols := splitCols(line)
		if len(cols) != 2 {
			t.Fatalf("key-value output: line %q is not KEY  VALUE:\n%s", line, out)
		}
		kv[cols[0]] = cols[1]
	}
	return kv
}

func wantKV(t testing.TB, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

// parseTable reads a table with a header line into one map a row.
func parseTable(t testing.TB, out string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := splitCols(lines[0])
	var rows []map[string]string
	for _, l := range lines[1:] {
		cols := splitCols(l)
		if len(cols) > len(header) {
			t.Fatalf("table row %q has more columns than the header %q", l, lines[0])
		}
		row := map[string]string{}
		for i, c := range cols {
			row[header[i]] = c
		}
		rows = append(rows, row)
	}
	return rows
}

// splitCols splits a tabwriter line on runs of two or more spaces.
func splitCols(line string) []string {
	var cols []string
	for _, c := range strings.Split(line, "  ") {
		if c = strings.TrimSpace(c); c != "" {
			cols = append(cols, c)
		}
	}
	return cols
}

// parseJSONL reads one RecordedEvent a line.
func parseJSONL(t testing.TB, out string) []*esdv1.RecordedEvent {
	t.Helper()
	var evs []*esdv1.RecordedEvent
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" && out == "" {
			break
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("jsonl line %d is not one JSON object: %v\n%q", i+1, err, line)
		}
		ev := &esdv1.RecordedEvent{}
		mustProtoJSON(t, line, ev)
		evs = append(evs, ev)
	}
	return evs
}

// parseJSONArray reads a JSON array of RecordedEvents.
func parseJSONArray(t testing.TB, out string) []*esdv1.RecordedEvent {
	t.Helper()
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("-o json is not a JSON array: %v\n%s", err, out)
	}
	evs := make([]*esdv1.RecordedEvent, len(raw))
	for i, m := range raw {
		evs[i] = &esdv1.RecordedEvent{}
		mustProtoJSON(t, string(m), evs[i])
	}
	return evs
}

// mustProtoJSON decodes s strictly (unknown fields are an error) into m.
// Data esctl shows as JSON goes back to base64 first, as protojson wants
// bytes (compacted: -o json indents it with the rest).
func mustProtoJSON(t testing.TB, s string, m proto.Message) {
	t.Helper()
	if err := testutil.UnmarshalCLIJSON([]byte(s), m); err != nil {
		t.Fatalf("decode %T from %q: %v", m, s, err)
	}
}

// hasMetric reports whether a sample of name carries every label pair.
func hasMetric(body, name string, labels ...string) bool {
	for _, l := range metricLines(body, name) {
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if ok {
			return true
		}
	}
	return false
}
