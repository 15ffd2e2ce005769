package server

import (
	"testing"

	"github.com/esdhq/esd/internal/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/grpc/codes"
)

// TestWriterMetrics: the writer's and the log's counters follow what the
// clients were told.
func TestWriterMetrics(t *testing.T) {
	ts := newTestServer(t, withShards(2))
	requests := func(op, result string) float64 {
		t.Helper()
		return testutil.MetricValue(t, ts.reg, "esd_writer_requests_total", map[string]string{"op": op, "result": result})
	}
	counter := func(name string) float64 {
		t.Helper()
		return testutil.MetricValue(t, ts.reg, name, nil)
	}
	type check struct {
		name string
		got  func() float64
		want float64
	}
	verify := func(t *testing.T, checks []check) {
		t.Helper()
		for _, c := range checks {
			if got := c.got(); got != c.want {
				t.Errorf("%s: %v, want %v", c.name, got, c.want)
			}
		}
	}

	// Three appends (6 events), one conflict.
	first := appendReq("met-1", xNoStream, events(2, "A")...)
	ts.mustAppend(t, first)
	ts.mustAppend(t, appendReq("met-1", xExact(1), events(3, "B")...))
	ts.mustAppend(t, appendReq("met-2", xAny, events(1, "C")...))
	_, err := ts.streams.Append(testCtx(t), appendReq("met-1", xExact(0), event("Late", "")))
	wantError(t, err, codes.Aborted, reasonWrongExpectedRevision, "met-1")
	verify(t, []check{
		{"append ok", func() float64 { return requests("append", "ok") }, 3},
		{"append conflicts", func() float64 { return requests("append", reasonWrongExpectedRevision) }, 1},
		{"conflicts", func() float64 { return counter("esd_writer_conflicts_total") }, 1},
		{"writer events", func() float64 { return counter("esd_writer_appended_events_total") }, 6},
		{"log events", func() float64 { return counter("esd_log_appended_events_total") }, 6},
		{"last position", func() float64 { return counter("esd_log_last_position") }, 6},
		{"visible events", func() float64 { return counter("esd_log_events") }, 6},
		{"streams", func() float64 { return counter("esd_log_streams") }, 2},
	})

	// A retry stores nothing; a delete stores its $deleted event; an
	// append to a tombstone and a refused request store nothing.
	ts.mustAppend(t, first)
	ts.mustDelete(t, "met-2", true)
	_, err = ts.streams.Append(testCtx(t), appendReq("met-2", xAny, event("Zombie", "")))
	wantError(t, err, codes.FailedPrecondition, reasonStreamTombstoned, "met-2")
	_, err = ts.streams.Append(testCtx(t), appendReq("", xAny, event("Bad", "")))
	wantError(t, err, codes.InvalidArgument, reasonInvalidArgument, "")
	verify(t, []check{
		{"append ok", func() float64 { return requests("append", "ok") }, 4},
		{"append tombstoned", func() float64 { return requests("append", reasonStreamTombstoned) }, 1},
		{"delete ok", func() float64 { return requests("delete", "ok") }, 1},
		{"conflicts", func() float64 { return counter("esd_writer_conflicts_total") }, 1},
		{"writer events", func() float64 { return counter("esd_writer_appended_events_total") }, 6},
		{"log events", func() float64 { return counter("esd_log_appended_events_total") }, 7},
		{"last position", func() float64 { return counter("esd_log_last_position") }, 7},
		{"visible events", func() float64 { return counter("esd_log_events") }, 6}, // met-1's 5 and the deletion
		{"streams", func() float64 { return counter("esd_log_streams") }, 2},       // met-1 and $deleted
	})

	// The names follow Prometheus' conventions. (promlint, not
	// testutil.GatherAndLint: testutil needs a module go.sum lacks.)
	fams, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(fams).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
}
