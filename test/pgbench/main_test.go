package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/esdhq/esd/internal/benchstat"
)

func TestInsertSQL(t *testing.T) {
	t.Parallel()
	got := insertSQL(`"events"`, 2, true)
	want := `INSERT INTO "events" (stream_id, version, type, data, event_id) VALUES ` +
		`($1, $2::bigint + 0, $3, $4, $5), ($1, $2::bigint + 1, $3, $6, $7)`
	if got != want {
		t.Errorf("with ids:\n got %s\nwant %s", got, want)
	}
	got = insertSQL(`"events"`, 2, false)
	want = `INSERT INTO "events" (stream_id, version, type, data, event_id) VALUES ` +
		`($1, $2::bigint + 0, $3, $4, gen_random_uuid()), ($1, $2::bigint + 1, $3, $5, gen_random_uuid())`
	if got != want {
		t.Errorf("without ids:\n got %s\nwant %s", got, want)
	}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	ids := make([][16]byte, 100)
	newIDGen().fill(ids)
	seen := make(map[[16]byte]bool)
	for _, u := range ids {
		if u[6]>>4 != 7 || u[8]>>6 != 2 || seen[u] {
			t.Fatalf("bad or repeated id %x", u)
		}
		seen[u] = true
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{},
		{"nope"},
		{"append", "-b", "0"},
		{"append", "-c", "0"},
		{"contention", "-k", "0"},
		{"append", "-d", "0"},
		{"append", "-o", "yaml"},
		{"append", "--bogus"},
		{"setup", "--table", ""},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitUsage, errOut.String())
		}
	}
}

// The workloads against a real PostgreSQL: PGBENCH_TEST_DSN names a
// database the test may create and empty the table pgbench_test in
// (test/bench-compare.sh starts a throwaway cluster).

func testDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("PGBENCH_TEST_DSN")
	if dsn == "" {
		t.Skip("PGBENCH_TEST_DSN not set: no PostgreSQL to run against")
	}
	return dsn
}

func runJSON(t *testing.T, dsn string, args ...string) benchstat.Report {
	t.Helper()
	args = append([]string{"--dsn", dsn, "--table", "pgbench_test", "-o", "json"}, args...)
	var out, errOut bytes.Buffer
	if code := run(t.Context(), args, &out, &errOut); code != exitOK {
		t.Fatalf("pgbench %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out.String(), errOut.String())
	}
	var r benchstat.Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	var keys map[string]any
	if err := json.Unmarshal(out.Bytes(), &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"workload", "ops", "events", "errors", "ops_per_sec", "events_per_sec", "p50_ms", "p90_ms", "p99_ms", "max_ms", "elapsed_sec"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("report lacks %q:\n%s", k, out.String())
		}
	}
	if !(r.P50Ms > 0 && r.P50Ms <= r.P90Ms && r.P90Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
		t.Errorf("latencies not ordered: %+v", r)
	}
	return r
}

// checkTable checks that the table holds want events of streams named
// prefix-N, each stream's versions 0..n-1 without gaps, ids distinct.
func checkTable(t *testing.T, dsn, prefix string, want int64) {
	t.Helper()
	conn, err := connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(conn)
	var n, gaps, ids int64
	err = conn.QueryRow(t.Context(), `
		SELECT count(*), count(DISTINCT event_id),
		       (SELECT count(*) FROM (SELECT stream_id FROM pgbench_test WHERE stream_id LIKE $1
		        GROUP BY stream_id HAVING min(version) <> 0 OR max(version) <> count(*) - 1) g)
		FROM pgbench_test WHERE stream_id LIKE $1`, prefix+"-%").Scan(&n, &ids, &gaps)
	if err != nil {
		t.Fatal(err)
	}
	if n != want || ids != n || gaps != 0 {
		t.Errorf("table holds %d events (%d distinct ids, %d streams with gaps), want %d", n, ids, gaps, want)
	}
}

func TestWorkloads(t *testing.T) {
	dsn := testDSN(t)
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"--dsn", dsn, "--table", "pgbench_test", "setup"}, &out, &errOut); code != exitOK {
		t.Fatalf("setup: exit %d: %s", code, errOut.String())
	}

	t.Run("append", func(t *testing.T) {
		r := runJSON(t, dsn, "append", "-c", "4", "-s", "10", "-b", "3", "--size", "32",
			"-d", "300ms", "--warmup", "0", "--stream-prefix", "pa")
		if r.Errors != 0 || r.Ops == 0 || r.Events != 3*r.Ops {
			t.Errorf("errors %d %v, ops %d, events %d", r.Errors, r.ErrorsByReason, r.Ops, r.Events)
		}
		if r.Workload != "append" || r.Clients != 4 || r.Conns != 4 || r.Batch != 3 || r.Streams != 10 || r.Size != 32 ||
			!r.ClientIDs || r.ServerVersion == "" || r.ContentionReport != nil {
			t.Errorf("parameters %+v", r)
		}
		checkTable(t, dsn, "pa", r.Events)
	})

	t.Run("append with count, warmup and server ids", func(t *testing.T) {
		r := runJSON(t, dsn, "append", "-c", "3", "-s", "5", "-n", "40", "-d", "0",
			"--warmup", "20ms", "--no-ids", "--stream-prefix", "pc")
		if r.Ops != 40 || r.Events != 40 || r.Errors != 0 || r.ClientIDs {
			t.Errorf("ops %d events %d errors %d client ids %t, want 40 40 0 false", r.Ops, r.Events, r.Errors, r.ClientIDs)
		}
	})

	t.Run("contention", func(t *testing.T) {
		r := runJSON(t, dsn, "contention", "-c", "8", "-k", "1", "-b", "2",
			"-d", "300ms", "--warmup", "0", "--stream-prefix", "pk")
		c := r.ContentionReport
		if c == nil {
			t.Fatal("no contention numbers")
		}
		if r.Errors != 0 || c.Successes == 0 || c.Conflicts == 0 || c.Retries != c.Conflicts ||
			r.Ops != c.Successes+c.Conflicts || r.Events != 2*c.Successes || r.Keys != 1 {
			t.Errorf("report %+v %+v", r, c)
		}
		checkTable(t, dsn, "pk", r.Events)
	})

	t.Run("shared streams conflict", func(t *testing.T) {
		// More clients than streams: clients share streams and their exact
		// expectations go wrong, each time a WRONG_EXPECTED_REVISION error
		// after which the client goes on from the head.
		var out, errOut bytes.Buffer
		code := run(t.Context(), []string{"--dsn", dsn, "--table", "pgbench_test", "-o", "json",
			"append", "-c", "4", "-s", "1", "-n", "200", "-d", "0", "--warmup", "0", "--stream-prefix", "ps"}, &out, &errOut)
		var r benchstat.Report
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("exit %d, report: %v\n%s\n%s", code, err, out.String(), errOut.String())
		}
		if code != exitError || r.ErrorsByReason[reasonWrongExpectedRevision] == 0 ||
			r.Errors != r.ErrorsByReason[reasonWrongExpectedRevision] || r.Events+r.Errors != 200 {
			t.Errorf("exit %d, report %+v", code, r)
		}
		if !strings.Contains(errOut.String(), "errors in 200 calls") {
			t.Errorf("stderr %q", errOut.String())
		}
		checkTable(t, dsn, "ps", r.Events)
	})
}
