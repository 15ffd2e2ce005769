// Package group holds esd's consumer groups: named, durable subscriptions
// whose events are shared among the members connected at the moment, each
// event acknowledged (or refused) by the member it was given to.
//
//   - manager.go: Manager, the groups' settings, their lifecycle (create,
//     update, delete, list, parked events) and Join.
//   - dispatcher.go: the dispatcher of a group with members: its source
//     subscription, deliveries, acks, nacks, timeouts, parking and the
//     checkpoint.
//   - wait.go: WaitCheckpoint, waiting for a group's checkpoint to reach
//     a position.
//   - store.go: the durable state in the log's aux space (settings,
//     checkpoint, parked events) and its encoding.
//   - metrics.go: the groups' metrics.
//
// # At least once
//
//  1. The checkpoint is a position every event up to which is finished:
//     acknowledged, parked, or not for this group. The dispatcher keeps
//     the source's entries in position order (order) and moves the
//     checkpoint only past a prefix of finished ones (advance), so an
//     event in flight, waiting for a member or waiting to be retried holds
//     the checkpoint below it.
//  2. A dispatcher starts its source subscription after the stored
//     checkpoint. The stored checkpoint is never ahead of the dispatcher's
//     (save writes what advance computed, every saveEvery and at
//     shutdown), so after a crash, a restart or the last member leaving,
//     every event that was not finished is delivered again: at least once,
//     never lost. Events finished after the last save are delivered again
//     too; handlers must be idempotent.
//  3. A parked event is written to the parked list (durably) before it
//     counts as finished; replaying it takes it out of the list only once
//     a member acknowledges it.
//  4. An event whose member leaves, times out (AckTimeout) or nacks it
//     with retry goes back to the waiting list ahead of newer ones; after
//     MaxDeliveries deliveries it is parked. Delivery counts live in the
//     dispatcher's memory: they restart when the group's members all leave
//     or the server restarts.
//  5. ByStream hands each stream's events to one member at a time, in
//     order: the next event of a stream waits until the previous one is
//     finished.
//
// # Goroutines and locks
//
// Per group with members: the dispatcher's loop (owns all of its state;
// members, the source and the manager reach it through channels, see do)
// and its source (a subscription on the hub feeding the loop). Both stop
// when the last member leaves, the group is deleted or the manager
// closes; Manager.Close waits for them after storing the checkpoints.
//
// Lock order: Manager.mu, then group.mu. The dispatcher takes group.mu
// only for the few fields the manager reads (parked count, run, replay,
// the frontier and its waiters) and never holds it while waiting for a
// channel.
package group
