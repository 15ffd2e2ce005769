// Package log is esd's append-only event log on Pebble: the only package
// that imports Pebble. It owns the key encoding (keys.go), the event
// record (record.go), stream states (state.go), commits (commit.go),
// reads (read.go) and the zero-filling of Pebble's WAL files that makes a
// one-commit fsync cheap (walfs.go). It knows nothing about gRPC.
//
// # Key spaces
//
// One prefix byte per key space (keys.go), integers fixed-width
// big-endian; names end with 0x00 where more follows (they hold none):
//
//	0x00 name                  -> format version, store-wide counts
//	0x01 pos                   -> event record (two CRC32-C checksums)
//	0x02 sid firstRev          -> firstPos count          per-stream version index, one entry per append
//	0x03 stream name           -> sid                     names interned to 8-byte ids
//	0x04 sid                   -> stream state            head, deletion, times, name
//	0x05 event id              -> sid rev pos first last  durable id index (idempotency)
//	0x06 sid                   -> (empty)                 streams with deleted events
//	0x07 category 0x00 pos     -> record, or 'r' count    category index: copies, or one entry per large append
//	0x08 type 0x00 pos         -> count                   event type index, one entry per run of a type
//	0x09 namespace-prefix key  -> value                   aux: other packages' state
//
// An append (one Write's events) takes contiguous positions and
// contiguous revisions, so the indexes hold ranges: a stream index entry
// is an append's revisions firstRev..firstRev+count-1 at positions
// firstPos.. (keys.go); a category entry is a copy of one record for an
// append of fewer than categoryRangeMin events, else one entry for the
// whole append; a type entry covers a run of consecutive events of one
// append with the same type (index.go). A read finds the entry holding
// its first revision or position (the last one starting at or before
// it) and reads the entry's events from the 0x01 space with one seek and
// then steps. An append of n events thus writes 2n keys (event, id) and
// a few more: one stream index entry, one category entry (n copies below
// categoryRangeMin) and one type entry per run, plus the stream state.
//
// The aux space is divided into namespaces (namespaces.go), each reached
// only through its own handle (Log.Aux), whose keys are relative to it:
//
//	0x09 "grp/" key            consumer groups (internal/group); key is
//	                           s/<name>, c/<name> or p/<name> 0x00 pos
//	0x09 "snap/" key           snapshots (internal/snapshot)
//	0x09 "lease/" key          leases (internal/lease)
//	0x09 "meta/" key           stream metadata (internal/streammeta)
//	0x09 "scav/" key           the running or last scavenge (scavenge.go)
//
// # Invariants
//
//  1. A commit (Commit) is one Pebble batch: all of it or none of it
//     survives a crash. Commit runs under one lock, which assigns
//     positions, so positions are contiguous and in commit order, and
//     Pebble's WAL holds the batches in position order.
//  2. Commit writes the batch with Pebble's ApplyNoSyncWait (only ever
//     through applyNoSyncWait, pebbleapply.go, which states the contract
//     relied on) and returns; one syncer goroutine waits for each batch's
//     fsync in order and only then publishes its positions. Pebble makes
//     a batch readable before its fsync, so every read is capped at the
//     published position: no reader sees a position before every
//     position below it is durable.
//  3. Event ids are unique across the store. The writer looks ids up
//     (LookupIDs) before deciding an append; Commit checks, under its
//     lock, the ids committed since that lookup (kept in memory), so two
//     shards cannot store one id twice.
//  4. Deleted events are hidden from every read: a stream's
//     TruncateBefore hides its older revisions, and readers of $all skip
//     them using the in-memory set of streams with deletions, loaded at
//     Open from 0x06. They stay on disk until a scavenge (scavenge.go)
//     removes them with the index entries that cover only them; it never
//     removes a visible event, nor moves one. Retention limits
//     (retention.go: max count, max age, truncate-before, set from
//     stream metadata through SetLimits) hide events the same way but as
//     a view computed at each read, which a limit raised or removed
//     undoes: a stream's first visible revision is the largest of its
//     TruncateBefore and the limits' (VisibleFrom), and readers of $all
//     test each event against the in-memory table of limits, a nil test
//     when no stream has any. A scavenge first makes the limits' cut
//     durable, a DeleteTruncate write per stream (which raises its
//     TruncateBefore, capped at its head), and then removes what
//     TruncateBefore hides.
//  5. Open reads only the last keys of the event and stream spaces, the
//     counts and the deleted streams: no scan of the events.
//  6. Aux writes and compare-and-swaps (auxspace.go) are requests of the
//     same commit queue: applied under the commit lock, possibly in one
//     batch with events, in one order with them, and acknowledged by the
//     syncer once durable. They take no position. A compare-and-swap
//     compares with every aux write applied before it; Get and Scan of
//     the aux space return only durable values.
//
// # Concurrency
//
// Log is safe for concurrent use. Lock order: commitMu, then pubMu. The
// syncer goroutine is started by Open and stopped by Close, which first
// refuses new commits and waits until every applied batch is answered.
package log
