// Package subscription delivers committed events to subscribers: history
// from the log, then live events from an in-memory buffer of recent
// commits (Hub). It never writes.
//
// # Invariants
//
//  1. The writer never waits for a subscriber. The log's syncer hands each
//     published commit to Hub.Publish, which appends it to a bounded ring
//     and wakes (a non-blocking send on a channel of capacity 1) only the
//     subscribers the commit concerns: those of its streams, of their
//     categories, and of $all.
//  2. No gap, no duplicate, positions increasing: a subscriber keeps one
//     cursor, the last position it considered. History is read from the
//     log up to a fixed position (AllQuery.To / StreamQuery.To), then the
//     ring is read after the cursor. The ring's positions are contiguous,
//     so whether it still holds the position after the cursor is one
//     comparison; when it does not (the subscriber read slowly), the
//     subscriber reads the log again up to the newest position and
//     returns to the ring.
//  3. Bounded memory: the ring is bounded by events and bytes; a
//     subscriber holds one batch of the ring and the message it is
//     sending. A slow client makes gRPC's Send block, which only moves
//     that subscriber's cursor back into the log.
//  4. Idle subscribers cost a goroutine blocked on a channel.
//
// Simpler designs rejected: a channel per subscriber fed by the writer
// (the writer would wait, or drop events); reading the log on every
// commit (a read per subscriber per commit).
package subscription
