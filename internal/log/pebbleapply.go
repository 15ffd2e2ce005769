package log

import "github.com/cockroachdb/pebble/v2"

// applyNoSyncWait writes b to the WAL and the memtable and returns without
// waiting for the WAL's fsync; b.SyncWait waits for it. It is the only use
// of Pebble's DB.ApplyNoSyncWait, which Pebble marks EXPERIMENTAL ("Do not
// yet use outside CockroachDB"): should it change or go, this function is
// what to rewrite (with DB.Apply and a sync per batch, or a WAL-sync
// goroutine of our own).
//
// Verified against github.com/cockroachdb/pebble/v2 v2.1.7 (go.mod). The
// contract esd relies on, checked by TestApplyNoSyncWaitContract:
//
//	(a) once it returns nil, b is readable (Get, iterators, snapshots),
//	    but not necessarily durable;
//	(b) once b.SyncWait() returns nil, b survives a crash;
//	(c) batches become durable in apply order: if a batch survives a
//	    crash, every batch applied before it does too (Pebble's single WAL
//	    is written, synced and replayed in sequence-number order, and
//	    replay stops at the first record that did not survive), and each
//	    batch survives whole or not at all.
//
// The caller must call b.SyncWait before b.Close. An error means b was not
// applied; Pebble's commit pipeline may be broken, so the log fails.
func applyNoSyncWait(db *pebble.DB, b *pebble.Batch) error {
	return db.ApplyNoSyncWait(b, pebble.Sync)
}
