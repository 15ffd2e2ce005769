// Package server is esd's esd.v1 gRPC front door on an engine
// (internal/engine): it validates requests, calls the engine and maps
// the engine's typed errors to gRPC statuses. It holds no state of its
// own beyond the gRPC server.
//
//   - stream_service.go, subscribe.go, group_service.go,
//     snapshot_service.go, admin_service.go: the esd.v1 services. Handlers return plain
//     errors; the interceptors in server.go map them with toStatus
//     (errors.go), the one place that knows the mapping of docs/api.md.
//   - append_stream.go: AppendStream, many appends in flight on one call,
//     with its flow control (its doc comment has the design).
//   - validate.go: request validation and docs/api.md's limits.
//   - wire.go, bufpool.go: reads' and subscriptions' events encoded
//     straight from the stored records into the wire form, in pooled
//     buffers.
//   - metrics.go: what the services count (the writer, the log and the
//     hub count their own).
//   - server.go: the gRPC server (health, reflection, keepalive, metrics,
//     panic recovery) and its ordered shutdown; the HTTP handler for
//     /metrics, /healthz, /readyz and, when Config.Pprof is set (esd's
//     --pprof), /debug/pprof/.
//
// Goroutines: gRPC's own; per AppendStream call, a reader and a worker
// per stream with appends queued, all ended before its handler returns
// (but the reader, which ends when gRPC closes the call); the engine's
// are the engine's.
package server
