package main

import (
	"google.golang.org/grpc/status"

	"github.com/esdhq/esd/internal/benchstat"
)

// The counters, latency histogram and report live in internal/benchstat,
// shared with test/pgbench (the same workloads against PostgreSQL).
type (
	benchStats  = benchstat.Stats
	benchReport = benchstat.Report
)

// Error keys of failures the bench finds itself, beside the server's reasons.
const (
	errRevisionMismatch = benchstat.ErrRevisionMismatch
	errOutOfOrder       = benchstat.ErrOutOfOrder
	errShortRead        = benchstat.ErrShortRead
	errMissingDetail    = benchstat.ErrMissingDetail
)

// errorKey names a failed call: the ErrorInfo reason, else the gRPC code.
func errorKey(err error) string {
	st := status.Convert(err)
	if r := errorReason(st); r != "" {
		return r
	}
	return st.Code().String()
}

// printBenchReport prints the report: KEY VALUE lines in table mode, the
// report as one JSON object in json and jsonl.
func (a *app) printBenchReport(r *benchReport) error {
	return r.Print(a.stdout, a.output)
}
