package log

import (
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Store backlog: whether Pebble is behind, so that the server can hold
// back large appends before Pebble stalls every write, small ones too.
//
// Pebble stops taking writes when its memtables waiting for flush reach
// MemTableStopWritesThreshold, or when L0 has L0StopWritesThreshold
// sublevels; every commit then waits for a flush or a compaction. A
// sampler reads db.Metrics() (too costly to read per append) every
// backlogSampleEvery; the EventListener's WriteStallBegin marks the log
// behind at once.
const (
	backlogSampleEvery = 50 * time.Millisecond
	memTableSize       = 64 << 20
	memTableStopWrites = 4
	// behindMemtableBytes: memtable bytes (the mutable memtable counted
	// whole, and those waiting for or in flush) from which the log is
	// behind: two full memtables wait for flush, one short of the stop.
	behindMemtableBytes = (memTableStopWrites - 1) * memTableSize
	// behindL0Sublevels: L0 sublevels from which the log is behind, below
	// Pebble's write stop threshold (12).
	behindL0Sublevels = 8
)

// backlog is the log's view of Pebble's backlog.
type backlog struct {
	stalled atomic.Bool // between WriteStallBegin and WriteStallEnd
	behind  atomic.Bool // as last sampled
	stop    chan struct{}
	done    chan struct{}
}

// Behind says whether Pebble is behind: a write stall, a full memtable
// waiting for flush, or many L0 sublevels. Cheap: for every append.
func (l *Log) Behind() bool { return l.backlog.stalled.Load() || l.backlog.behind.Load() }

func (b *backlog) listener() pebble.EventListener {
	return pebble.EventListener{
		WriteStallBegin: func(pebble.WriteStallBeginInfo) { b.stalled.Store(true) },
		WriteStallEnd:   func() { b.stalled.Store(false) },
	}
}

func isBehind(m *pebble.Metrics) bool {
	return m.MemTable.Size >= behindMemtableBytes || int(m.Levels[0].Sublevels) >= behindL0Sublevels
}

// sample reads Pebble's metrics every backlogSampleEvery until stop.
func (b *backlog) sample(db *pebble.DB) {
	defer close(b.done)
	t := time.NewTicker(backlogSampleEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.behind.Store(isBehind(db.Metrics()))
		}
	}
}
