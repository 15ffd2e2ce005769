// Package server holds esd's gRPC services and the sharded writer.
//
//   - writer.go: the sharded writer (its invariants, the AppendMulti
//     protocol and the designs rejected are in the comment at its top).
//   - stream_service.go, admin_service.go: the esd.v1 services. Handlers
//     return plain errors; the interceptors in server.go map them with
//     toStatus (errors.go), the one place that knows the mapping of API.md.
//   - validate.go: request validation and API.md's limits.
//   - server.go: the gRPC server (health, reflection, keepalive, metrics,
//     panic recovery) and its ordered shutdown; the HTTP handler for
//     /metrics, /healthz, /readyz.
//
// Goroutines: one per writer shard (NewWriter starts them, Writer.Close
// stops them after they have committed what was queued); gRPC's own.
package server
