// Package lease holds leases on stream names: exclusive access to one
// stream for a moment, for the rare critical operation that cannot be
// expressed as an optimistic append (an expected revision).
//
// A Manager grants at most one live lease per stream. A lease has an
// owner (a free-form name, for messages), an expiry and a fencing token.
//
// # Fencing tokens
//
// A stream's fencing token increases with every new lease on it and never
// goes back, across restarts and crashes: Acquire writes the stream's new
// token (its high-water mark) to the log's aux namespace NSLeases and
// returns only once that write is durable, so a token that was ever
// returned is on disk and the next lease after any crash gets a greater
// one. A token a crash made Acquire fail to return may be handed out
// again; no one has seen it.
//
// What a token guarantees: when the resource (here: appends and deletes
// of the stream) checks each write's token with Check, a holder whose
// lease expired or was released cannot write after a newer lease was
// granted, however late its write arrives (a paused process, a slow
// network): its token is older than the current one. What it does not
// guarantee: anything at all if the resource does not check tokens, and
// mutual exclusion between the holder and writers that pass no token
// after the lease is gone. A lease is a hint to cooperating clients plus
// a fence at the resource, not a lock of the client's own actions: a
// holder that goes on after its lease expired is refused only at the
// resource.
//
// # Clocks
//
// TTLs are measured by the server's clock (Config.Clock), never the
// client's: a client learns the expiry as a server time and should renew
// well before it. Every TTL is bounded by Config.MaxTTL, so a crashed
// holder blocks no one for longer than that.
//
// # What is durable
//
// The stream's record in NSLeases (key: the stream name) holds the
// high-water token, the owner and the expiry as wall-clock time (0 once
// released). Acquire, Renew and Release write it before they return, so
// after a restart a lease that was live still blocks others until its
// expiry, the safer choice for a holder that survived the server's
// restart and is still working. A wall clock stepped back across a
// restart could stretch that wait; Open caps a loaded expiry at now plus
// MaxTTL, so it never exceeds one TTL bound. Records are never deleted:
// the high-water mark must outlive the lease, so memory and the
// namespace hold one small record per stream ever leased.
//
// # Waiting
//
// An Acquire with wait > 0 queues behind the stream's earlier waiters
// (first come, first served) and gets the lease when it is released or
// expires, unless wait or its context ends first. Expiry is noticed by
// the waiter itself, rechecked at least every pollInterval, so that a
// clock that is not the wall clock (tests, a stepped clock) is followed.
package lease
