// Package benchstat is the measuring half of a load generator: a latency
// histogram (Histogram), one client's counters (Stats) and the report a
// run prints (Report), as KEY VALUE lines or as one JSON object. esctl
// bench uses it, and so does test/pgbench (the same write workloads
// against PostgreSQL), so that their reports compare field by field.
//
// # Invariants
//
//  1. Recording a call takes no lock, and its latency no allocation: each
//     client owns its Stats, used by one goroutine at a time; a run merges
//     them when it ends (Stats.Merge).
//  2. A latency the histogram reports is at most 1/128 above the true
//     value and never above the largest recorded; values below 128 ns are
//     exact.
//  3. The report is a contract: test/bench-compare.sh reads its JSON keys,
//     test/bench.sh its table lines.
//
// It starts no goroutine and imports no other package of esd.
package benchstat
