// Package testutil holds the helpers that the tests of several packages
// share:
//
//   - waiting for a condition by polling it until a deadline (Poll,
//     Eventually), in place of sleeping for a guessed while;
//   - reading a metric's value from a Prometheus registry (MetricValue);
//   - whether the race detector is on (RaceEnabled), for tests that
//     shrink their sizes under it or build binaries with it.
//
// Only tests import it. It imports no other package of esd, so that the
// tests of any package (internal/log, internal/subscription,
// internal/group, internal/server, test/e2e) can.
package testutil
