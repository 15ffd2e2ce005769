// Package engine is esd without a protocol: it opens the log and owns the
// sharded writer, the subscription hub, the consumer groups, the
// snapshots and the order in which they stop. Front doors (internal/server for esd.v1 over gRPC,
// and any other protocol) validate requests, call the engine's
// operations and map its typed errors to their own statuses; several
// front doors can share one engine in one process.
//
// Operations and their errors:
//   - Append, AppendMulti, Delete: the writer's (writer.ErrOverloaded,
//     writer.ErrShuttingDown, ErrRefused with *eslog.StreamError for a
//     tombstoned stream, *eslog.StreamError alone for a delete of a
//     missing or deleted stream,
//     *eslog.IDConflictError, eslog.ErrStorageFailed) and *ConflictError
//     for an expected revision that did not hold, with the events appended
//     since it.
//   - ReadStream, ReadAll, Stream, ListStreams: the log's
//     (*eslog.StreamError for a missing, deleted or tombstoned stream).
//   - Subscribe: the hub's; Groups: the consumer groups' (group.ErrNotFound,
//     ...).
//   - Load: a stream from its latest snapshot, as ReadStream's errors;
//     Snapshots: the snapshots' own (snapshot.NotFoundError,
//     snapshot.RevisionError, ...). Append and AppendMulti add each
//     stream's snapshot advice to their results once the writer has
//     answered (snapshot.Store.Advise: the advice cache, not the writer).
//     Delete tells the snapshots of a deletion once it is durable (a
//     tombstone purges the stream's snapshots).
//   - StreamMetadata: streams' metadata and categories' default limits
//     (internal/streammeta: *streammeta.WrongRevisionError,
//     streammeta.ErrInvalid, ErrRefused with *eslog.StreamError for a
//     tombstoned stream). It is opened before anything reads, and hands
//     the retention limits to the log, which applies them to every read
//     above (and to the hub's and the groups' catch-up, which read the
//     log).
//   - StartScavenge, Scavenge, StopScavenge: one scavenge at a time
//     (eslog.Scavenge) on a goroutine of its own (ErrScavengeRunning,
//     ErrNoScavenge); it removes the snapshots of the revisions it
//     removes. Open resumes one a restart interrupted, and with
//     Config.ScavengeInterval a goroutine starts one that often.
//
// # Shutdown
//
// Drain, called by every front door when it stops (only the first call
// acts; the others wait for it): a running scavenge is interrupted (it
// stays "running" in the store, and the next Open resumes it); the writer refuses new requests and
// commits and answers what it has queued; Stopping ends, which ends every
// subscription and every streaming operation of the front doors; the
// consumer groups store their checkpoints; the snapshots store their load
// rates. Close drains, then closes the log last.
//
// # Adding to it
//
// A feature with durable state (as snapshots, internal/snapshot; leases)
// gets its own aux namespace in the log and a field here, built in Open
// and stopped in Drain; a replicated commit replaces writer.Local(log) in
// Open.
package engine
