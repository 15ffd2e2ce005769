// Package writer is esd's sharded writer: it serializes appends and
// deletes per stream, decides expected revisions and idempotent retries in
// memory, and hands each round of decisions to the durable-commit step
// (Committer). It imports no front door (no gRPC): its errors are its own
// (errors.go) and every front door maps them.
//
// Files:
//   - writer.go: Writer, its requests, budget and answers.
//   - round.go: a shard's loop and rounds: deciding, committing, re-deciding.
//   - multi.go: AppendMulti across shards.
//   - cache.go: a shard's cache of stream states.
//   - commit.go: the interfaces to the store (Store) and to the durable-commit
//     step (Committer), where replication plugs in.
//   - errors.go, metrics.go: typed errors, their metric labels, metrics.
//
// # Invariants
//
//  1. One shard goroutine owns each stream (hash(name) % N). It alone
//     decides the stream's expected revisions, idempotent retries and
//     deletes, from a cache of stream states it keeps current; a state is
//     read from the store only on a cache miss.
//  2. A shard takes every request already waiting in its queue (never
//     waiting for more), decides them in arrival order against the cached
//     states plus what the earlier requests of the same round will write,
//     and hands the round to the Committer as one commit. The Committer
//     assigns positions in one order, so positions are gap-free and in
//     commit order, and publishes a position only when every position up
//     to it is durable. The shard does not wait for the fsync: requests
//     pile up behind the one in flight and the next fsync serves them all
//     (group commit, across shards too, since Pebble syncs its WAL once
//     for every batch written meanwhile).
//  3. A request is answered only after its commit is durable and
//     published (the caller waits on the commit's Durable).
//  4. A decision made against a predicted state is kept only if that
//     prediction came true: when the Committer refuses a write (an event
//     id stored on another stream, which the shard cannot see alone), the
//     requests decided after it on the same stream are decided again.
//  5. Everything a commit records that is not derived from what came
//     before it in the log is chosen here, before the Committer, and
//     carried in the writes: new streams' ids, the commit time (from the
//     injectable clock), the ids of the "$deleted" events. Applying the
//     same writes in the same order to the same store therefore writes the
//     same bytes (the log stamps max(the write's time, the last event's),
//     and takes the last event's time from the store when it opens), which
//     is what a replica applying a replicated commit needs. One input is
//     local: Write.LookupEpoch, which a replica must set to 0.
//
// # AppendMulti
//
// AppendMulti spans shards. Its coordinator (the caller's goroutine) sends
// a lock request to each shard involved, one at a time in shard index
// order, and waits for each to answer before the next. A locked shard has
// committed everything queued before the lock, decides the entries for
// its streams, answers with their writes and blocks until the
// coordinator reports the outcome. When all are locked, the coordinator
// commits every write as one atomic commit. Locks taken in index order
// cannot deadlock: a coordinator never waits for a shard while holding a
// shard of higher index. A shard is held for the time of one apply, not of
// an fsync.
//
// # Designs rejected
//
// A single writer goroutine (serializes the per-request work of every
// stream, one core at most); a commit per request without group commit
// (one fsync per append, ~600/s on this class of disk); taking stream
// locks in handlers (a mutex per stream, unbounded memory, no batching).
//
// # Goroutines
//
// One per shard: New starts them, Close stops them after they have
// committed what was queued.
package writer
