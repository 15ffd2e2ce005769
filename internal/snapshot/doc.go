// Package snapshot stores snapshots of streams beside the log, in the
// log's aux namespace eslog.NSSnapshots, loads a stream from its latest
// snapshot in one call, and advises when to snapshot. The engine builds
// its Store in Open and closes it in Drain; front doors reach it through
// the engine.
//
//   - store.go: Store, Save, Get, List, Delete, the purge of a tombstoned
//     stream's snapshots.
//   - advice.go: Load, the policies and the advice (Advise, decide).
//   - codec.go: the keys and the encoding of the namespace.
//   - cache.go: the advice cache, a bounded LRU of each stream's latest
//     snapshot revision.
//   - rates.go: the streams' load rates, a count-min sketch of decayed
//     load counts (fixed memory; its error bound is stated there).
//   - metrics.go: the esd_snapshot_* metrics.
//
// # What it owns
//
// Every key of NSSnapshots (codec.go): per stream an index (the list of
// its snapshots: revision, schema version, type, size, time) and a data
// record per snapshot, keyed <stream> 0x00 <revision> <schema version> so
// that a scan of a stream gives its snapshots in revision order; per
// category its own policy; the load rates, stored at shutdown.
//
// # Invariants
//
//  1. A data record exists exactly when its stream's index lists it.
//     Every change of a stream's snapshots (a save, its pruning, a
//     delete) is one Aux.CompareAndSwapMany of the index (compared with
//     the value it was decided on) and of the data records it adds,
//     replaces or removes: all of it is durable, or none. A concurrent
//     change makes the swap fail, and the change is decided again on what
//     is stored then, so concurrent saves for one stream leave the newest.
//     The one exception is a tombstone's purge, which removes the index
//     and every data record of the stream at once, unconditionally.
//  2. A stream keeps at most Retention snapshots, the newest by
//     (revision, schema version); a save that would not be among them
//     stores nothing (a newer snapshot is never displaced by an older
//     one). A save of a stored (revision, schema version) replaces it.
//  3. A snapshot is saved only at a revision that is a visible event of
//     its stream when the save checks (not past the head, not below its
//     first visible revision, the stream not tombstoned). It is usable
//     while that holds: reads (Get, Load) skip the snapshots below the
//     stream's first visible revision (FirstVisible: a soft delete's
//     TruncateBefore, or the retention limits') and past the head they
//     read at. The next save of the stream prunes those below a soft
//     delete (or a scavenge's truncate); those below a retention limit
//     stay, usable again if the limit is raised or removed (limits are a
//     view), until a scavenge makes the limit's cut durable and removes
//     them.
//  4. A tombstone purges the stream's snapshots (StreamDeleted, called by
//     the engine once the tombstone is durable). A crash before the purge,
//     or a save that raced the tombstone, can leave some: every read of a
//     tombstoned stream's snapshots (Get, List, Load) purges them first,
//     and no read ever returns them.
//  5. Load reads the stream's state once and answers from it alone: the
//     snapshot is the newest usable at or below that head, the events are
//     those after it up to that head (eslog.ReadStateViews), and the head
//     it reports is that head.
//  6. Snapshots take no position: they are never in $all, never
//     delivered to subscribers or groups. Their writes go through the
//     log's commit queue, so they are durable (fsynced) when Save
//     returns, like events.
//
// # Advice
//
// Advise (after an append) and Load compute the events a stream has had
// since its newest usable snapshot of any schema version (its visible
// events without one), and apply the policy of its category (the name
// before its first '-'), the category's own (stored in the namespace,
// SetPolicy) or the default (Config.Default): advise when
// events-since >= Every, or when events-since x load rate >=
// ReplayThreshold (dynamic). With no policy Advise does nothing. The
// base of the count comes from the advice cache (a bounded LRU,
// Config.CacheStreams names; on a miss, two reads of the store). A save
// raises it, a delete of snapshots or of the stream removes it, and the
// next advice loads it again. Each cache shard counts its removals, so
// that neither a load that read the store before a delete nor a save
// whose swap came before a delete puts back a base the delete made
// wrong: such a save removes the name instead of raising it. A save or
// a delete of snapshots that fails after its swap may have reached the
// log (its ctx ended while it waited for durability) also removes the
// name; so does an engine Delete of the stream that fails other than by
// a definite refusal (ForgetAdvice). Advice is advisory: a race of an
// append with a save or a delete may make that one answer's count stale
// by the change in flight, and one gap remains: when a write whose
// caller gave up commits only after the removal, a load in between may
// cache the base from before it, until the stream's next save or
// delete, or eviction.
//
// # Goroutines and locks
//
// None of its own. Locks: the advice cache's shard locks and polMu (a
// policy change) are leaves; nothing is held while writing to the log,
// except polMu around a policy's write.
package snapshot
