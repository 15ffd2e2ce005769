package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/engine"
	"go.uber.org/zap"
)

// Resuming after a storage failure.
//
// A failed WAL write or sync is final for the open store: Pebble keeps
// the error (every later sync returns it, and its next WAL write panics),
// and the commits applied before the failure sit in its memtable,
// readable but not durable. The log then refuses writes and serves reads
// at the published position (internal/log/unpublished.go).
//
// Reopening the store inside the process would need every read in
// flight to let go of the old Pebble (its iterators use memory Pebble
// frees at Close), and every component that keeps state in memory (the
// writer shards' stream states, the log's recent ids and stream names,
// the consumer groups' checkpoints, the snapshots' advice) to rebuild it
// from the reopened store. Startup already does exactly that. So once the
// disk takes writes again, esd stops serving (the same drain as SIGTERM:
// in-flight requests end, clients reconnect), closes the store and starts
// again in the same process: run returns errRestart and main re-executes
// the binary with the same arguments and environment (same PID, so a
// supervisor sees one process). The new start replays the WAL: the
// durable prefix, every acknowledged event.

// errRestart: the store failed and its disk takes writes again; esd
// restarts to reopen it.
var errRestart = errors.New("storage works again: restarting to reopen the store")

// probeBytes is written and synced by each probe: a disk with room for
// it, and for the WAL's replay, takes writes again.
const probeBytes = 1 << 20

// probeName is the probe's file in the data directory (Pebble ignores
// names it did not make).
const probeName = "esd-storage-probe.tmp"

// watchStorage waits until the engine's storage has failed and a probe
// of its disk succeeds; it returns true then, false when ctx ends first.
func watchStorage(ctx context.Context, eng *engine.Engine, cfg config, lg *zap.Logger) bool {
	fs := cfg.fs
	if fs == nil {
		fs = vfs.Default
	}
	tick := time.NewTicker(cfg.StorageProbeInterval)
	defer tick.Stop()
	var failedAt time.Time
	lastProbe := ""
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
		ferr := eng.Failed()
		if ferr == nil {
			continue
		}
		if failedAt.IsZero() {
			failedAt = time.Now()
			lg.Warn("storage failed: writes are refused (STORAGE_FAILED), reads go on; "+
				"esd probes the disk and restarts itself once it takes writes again",
				zap.Error(ferr), zap.Duration("probe_every", cfg.StorageProbeInterval))
		}
		err := probeStorage(fs, cfg.DataDir, eng.Log().WALBytes())
		if err == nil {
			lg.Warn("storage works again: restarting esd to reopen the store",
				zap.String("dir", cfg.DataDir), zap.Duration("failed_for", time.Since(failedAt)))
			return true
		}
		if msg := err.Error(); msg != lastProbe { // each new reason once, not every few seconds
			lastProbe = msg
			lg.Info("storage probe: the disk does not take writes yet", zap.Error(err))
		}
	}
}

// probeStorage checks that dir's disk has room for the WAL's replay at
// the restart (the open flushes the replayed WAL to a table before it
// returns: about walBytes, the WAL's live data) and takes a written,
// synced file.
func probeStorage(fs vfs.FS, dir string, walBytes uint64) error {
	want := walBytes + 2*probeBytes
	if du, err := fs.GetDiskUsage(dir); err == nil && du.AvailBytes < want {
		return fmt.Errorf("%d bytes free in %s, want %d (the WAL's live data to replay, and a margin)", du.AvailBytes, dir, want)
	}
	path := fs.PathJoin(dir, probeName)
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	_, werr := f.Write(make([]byte, probeBytes))
	serr := f.Sync()
	cerr := f.Close()
	rerr := fs.Remove(path)
	return errors.Join(werr, serr, cerr, rerr)
}

// reexec replaces the process with a new run of the same binary, with
// the same arguments and environment. It returns only on failure.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, os.Environ())
}
