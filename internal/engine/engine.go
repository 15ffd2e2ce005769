package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/esdhq/esd/internal/group"
	"github.com/esdhq/esd/internal/lease"
	eslog "github.com/esdhq/esd/internal/log"
	"github.com/esdhq/esd/internal/snapshot"
	"github.com/esdhq/esd/internal/streammeta"
	"github.com/esdhq/esd/internal/subscription"
	"github.com/esdhq/esd/internal/writer"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Config configures Open.
type Config struct {
	// Dir is the data directory.
	Dir string
	// FS is the file system; nil means the operating system's (tests use
	// Pebble's in-memory ones).
	FS vfs.FS
	// CacheBytes is the log's block cache; 0 means the log's default.
	CacheBytes int64
	// Shards is the number of writer shards; 0 means 1.
	Shards int
	// QueueLen bounds each writer shard's queue; 0 means the writer's
	// default.
	QueueLen int
	// SubscriptionBufferBytes bounds the memory of the recent events held
	// for live subscribers; 0 means the hub's default (32 MiB).
	SubscriptionBufferBytes int
	// Clock gives commit times and the "now" of the retention limits'
	// max age; nil means time.Now.
	Clock func() time.Time
	// Logger gets lifecycle messages; nil means none.
	Logger *zap.Logger
	// Registerer gets every component's metrics; nil means none.
	Registerer prometheus.Registerer
	// Snapshots configures the snapshots (retention, default policy);
	// the zero value keeps 2 a stream and advises nothing.
	Snapshots snapshot.Config
	// Leases configures the leases (MaxTTL); their clock is Clock.
	Leases lease.Config
	// ScavengeInterval, when positive, starts a scavenge this often (none
	// while one runs), deleting ScavengeRate keys a second (0: the
	// default).
	ScavengeInterval time.Duration
	ScavengeRate     int
	// IdempotencyWindow is how long after an append a retry of it is
	// answered as the original append was, even once a scavenge removed
	// its events: a scavenge removes the ids of events hidden for good
	// and committed longer ago than this. 0 keeps every id forever.
	IdempotencyWindow time.Duration
	// StorageBackgroundError, when set, gets each error of the store's
	// background work (eslog.Options.BackgroundError), during Open too.
	StorageBackgroundError func(error)
}

// Engine is esd's storage and its operations, shared by the front doors.
// It is safe for concurrent use.
type Engine struct {
	cfg    Config
	log    *eslog.Log
	writer *writer.Writer
	hub    *subscription.Hub
	groups *group.Manager
	snaps  *snapshot.Store
	leases *lease.Manager
	meta   *streammeta.Store
	scav   scavenges

	stopping context.Context // ends in Drain, after the writer has stopped
	stop     context.CancelFunc
	drain    sync.Once
	closeErr error
	closed   sync.Once

	// testDeleted, when set (by tests only), is called with the result of
	// the writer's Delete and returns the result Delete goes on with.
	testDeleted func(err error) error
}

// Open opens the log in cfg.Dir and starts the writer, the hub, the
// consumer groups and the snapshots on it.
func Open(cfg Config) (*Engine, error) {
	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry() // the components register unconditionally
	}
	l, err := eslog.Open(cfg.Dir, eslog.Options{
		FS: cfg.FS, Logger: lg.Named("log"), Registerer: reg, CacheBytes: cfg.CacheBytes,
		BackgroundError: cfg.StorageBackgroundError, Clock: cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: l}
	// Before anything reads: the retention limits apply from the first
	// read on.
	if e.meta, err = streammeta.Open(l); err != nil {
		return nil, errors.Join(fmt.Errorf("load stream metadata: %w", err), l.Close())
	}
	clock := cfg.Clock
	if clock == nil {
		clock = time.Now
	}
	lcfg := cfg.Leases
	if lcfg.Clock == nil {
		lcfg.Clock = clock
	}
	if e.leases, err = lease.Open(l, lcfg); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	e.stopping, e.stop = context.WithCancel(context.Background())
	e.hub = subscription.NewHub(l, subscription.Options{BufferBytes: cfg.SubscriptionBufferBytes, Registerer: reg})
	l.OnPublish(e.hub.Publish) // before anything writes: the hub sees every commit
	e.writer = writer.New(l, writer.Local(l), writer.Config{
		Shards: cfg.Shards, QueueLen: cfg.QueueLen, Clock: cfg.Clock, Registerer: reg,
		Fence: fence{e.leases, lcfg.Clock},
	})
	e.groups, err = group.NewManager(l, e.hub, lg.Named("group"), reg)
	if err != nil {
		e.writer.Close()
		return nil, errors.Join(err, l.Close())
	}
	e.snaps, err = snapshot.Open(l, cfg.Snapshots, lg.Named("snapshot"), reg)
	if err != nil {
		e.writer.Close()
		e.groups.Close()
		return nil, errors.Join(fmt.Errorf("load snapshots: %w", err), l.Close())
	}
	if err := e.resumeScavenge(); err != nil {
		e.Drain()
		return nil, errors.Join(fmt.Errorf("resume the scavenge: %w", err), l.Close())
	}
	if cfg.ScavengeInterval > 0 {
		go e.scheduleScavenges(cfg.ScavengeInterval, cfg.ScavengeRate)
	}
	return e, nil
}

// Drain stops the engine's work in order: a running scavenge is
// interrupted (the next Open resumes it), the writer refuses new requests
// and commits what it has queued, Stopping ends (subscriptions and
// streaming operations end), the consumer groups store their checkpoints,
// the snapshots store their load rates. Only the first call acts;
// concurrent calls return when it is done.
func (e *Engine) Drain() {
	e.drain.Do(func() {
		e.interruptScavenge() // first: it removes snapshots through e.snaps
		e.writer.Close()
		e.stop()
		e.leases.Close() // ends the waits of AcquireLease
		e.groups.Close()
		if err := e.snaps.Close(); err != nil {
			e.lg().Warn("store snapshot load rates (they start afresh)", zap.Error(err))
		}
	})
}

func (e *Engine) lg() *zap.Logger {
	if e.cfg.Logger == nil {
		return zap.NewNop()
	}
	return e.cfg.Logger
}

// Close drains the engine and closes the log. Calling it twice is
// harmless.
func (e *Engine) Close() error {
	e.closed.Do(func() {
		e.Drain()
		e.closeErr = e.log.Close()
	})
	return e.closeErr
}

// Stopping is done once Drain has stopped the writer: front doors end
// their streaming operations then.
func (e *Engine) Stopping() context.Context { return e.stopping }

// Ready reports whether the engine takes requests: not draining, and its
// storage works.
func (e *Engine) Ready() bool { return e.stopping.Err() == nil && e.log.Failed() == nil }

// Failed returns the storage failure that stopped writes, or nil.
func (e *Engine) Failed() error { return e.log.Failed() }

// Log is the engine's log, for reads the operations here do not cover.
func (e *Engine) Log() *eslog.Log { return e.log }

// Writer is the engine's writer (its shards, for tests and metrics).
func (e *Engine) Writer() *writer.Writer { return e.writer }

// Groups are the consumer groups.
func (e *Engine) Groups() *group.Manager { return e.groups }

// Leases is the engine's leases on streams, which fence its writes.
func (e *Engine) Leases() *lease.Manager { return e.leases }

// fence makes the leases the writer's Fencer, on the engine's clock.
type fence struct {
	m   *lease.Manager
	now func() time.Time
}

func (f fence) Check(stream string, token uint64) error { return f.m.Check(stream, token, f.now()) }

// Snapshots are the snapshots: save, get, list, delete, policies. Load
// and the advice of appends are the engine's operations.
func (e *Engine) Snapshots() *snapshot.Store { return e.snaps }

// StreamMetadata is the streams' metadata and the categories' default
// limits, which every read applies.
func (e *Engine) StreamMetadata() *streammeta.Store { return e.meta }

// Shards is the number of writer shards.
func (e *Engine) Shards() int { return e.writer.Shards() }
