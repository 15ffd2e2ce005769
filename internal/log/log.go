package log

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	iofs "io/fs"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Options configure Open. The zero value is usable.
type Options struct {
	// FS is the file system; nil means the operating system's. Tests use
	// vfs.NewCrashableMem.
	FS vfs.FS
	// Logger gets lifecycle messages; nil means none.
	Logger *zap.Logger
	// Registerer gets the log's and Pebble's metrics; nil means none.
	Registerer prometheus.Registerer
	// CacheBytes is Pebble's block cache size; 0 means 256 MiB.
	CacheBytes int64
	// Clock is the "now" of the retention limits' MaxAge (SetLimits);
	// nil means time.Now.
	Clock func() time.Time
	// BackgroundError, when set, is called with each error of Pebble's
	// background work (flushes, compactions), during Open too: on a full
	// disk Open waits for a flush that fails again and again, and the
	// caller that bounds Open says why with the last of them.
	BackgroundError func(error)
}

const (
	// deletedStreamID is the system stream "$deleted", where deletions are
	// recorded so that readers of $all and subscribers learn of them.
	deletedStreamID   uint64 = 1
	deletedStreamName        = "$deleted"
	// firstUserStreamID leaves room for more system streams.
	firstUserStreamID uint64 = 16
)

// recentIDsLimit bounds the ids Commit remembers to check client ids
// without reading Pebble (tests lower it to exercise the fallback).
var recentIDsLimit = 1 << 18

// deletion is what readers of $all need to know of a stream that has
// deleted events.
type deletion struct {
	truncateBefore uint64
	tombstoned     bool
}

// Log is the append-only event log. It is safe for concurrent use.
//
// Writes come through Commit, one call at a time in position order (see
// commit.go); reads are capped at the published position, below which
// every position is durable.
type Log struct {
	db   *pebble.DB
	lock *pebble.Lock // the data directory's; released after db closes
	lg   *zap.Logger
	met  *logMetrics

	nextSID atomic.Uint64 // the next stream id to allocate

	// published is the last position readers may see: every position up
	// to it is durable. Only the syncer advances it.
	published atomic.Uint64
	pubMu     sync.Mutex    // guards pubCh
	pubCh     chan struct{} // closed and replaced each time published advances

	// deleted maps stream id -> deletion for every stream with deleted
	// events. Copy-on-write: the syncer swaps in a new map after a delete
	// is durable, before publishing it.
	deleted atomic.Pointer[map[uint64]deletion]

	names nameCache // stream id -> name, for reads of $all

	lim limitsState // retention limits (retention.go)

	// removedBelow bounds the positions of the events scavenges removed
	// (ScavengeJob.RemovedBelow): an index entry naming a missing event
	// below it names a scavenged one, above it the store is corrupt.
	removedBelow atomic.Uint64

	failed atomic.Pointer[error] // the first storage failure; writes stop

	backlog *backlog // whether Pebble is behind (backlog.go)

	// pending are the applied commits not yet published, in position
	// order; frozen, set when the log fails, holds the states they
	// overwrote (see unpublished.go).
	pendMu  sync.Mutex
	pending []*Ticket
	frozen  atomic.Pointer[unpublished]

	queueMu sync.Mutex   // guards queue
	queue   []*commitReq // Commit calls waiting for the commit lock

	commitMu sync.Mutex // serializes commits; guards everything below
	closed   bool
	nextPos  uint64 // the next position to assign
	lastTime int64  // commit times never go backwards in position order
	sys      StreamState
	sysNew   bool // sys has no name key yet
	st       stats
	scratch  []byte
	recent   recentIDs     // ids of the last commits
	epoch    atomic.Uint64 // applied commits of stream writes; written under commitMu

	syncq     chan *Ticket           // applied batches, in position order
	newest    atomic.Pointer[Ticket] // the last batch applied
	auxNewest atomic.Pointer[Ticket] // the last batch with aux writes, stored before it is applied

	onPublish atomic.Pointer[func([]Committed)] // see OnPublish
	syncDone  chan struct{}                     // closed when the syncer has stopped
}

// lockError explains why the lock on the data directory dir could not be
// taken by the user uid: the lock file could not be created (the
// directory is not writable by uid, a volume owned by another user, say;
// or another file error) or another process holds the lock.
func lockError(dir string, err error, uid int) error {
	var pe *iofs.PathError
	switch {
	case isPermission(err):
		return fmt.Errorf("data dir %s is not writable by this user (uid %d): %w", dir, uid, err)
	case errors.As(err, &pe):
		return fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	return fmt.Errorf("lock data dir %s (is another esd using it?): %w", dir, err)
}

// isPermission reports whether err is a file operation refused for want
// of permission. It asks for an *fs.PathError: a lock held by another
// process comes back from fcntl as a bare EACCES or EAGAIN, which must
// not pass for a permission error.
func isPermission(err error) bool {
	var pe *iofs.PathError
	return errors.As(err, &pe) && errors.Is(pe.Err, iofs.ErrPermission)
}

// CheckLock reports, as Open would, that another process holds the lock
// on the data directory dir (nil when dir does not exist yet). It takes
// the lock and lets go of it: a caller that does other work before Open
// (esd listens on HTTP first) checks the cause a user must hear of first,
// "another esd uses this directory", before "address in use".
func CheckLock(dir string, fs vfs.FS) error {
	if fs == nil {
		fs = vfs.Default
	}
	if _, err := fs.Stat(dir); err != nil {
		return nil //nolint:nilerr // no directory: no lock held; Open creates it, or says why it cannot
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		return lockError(dir, err, os.Getuid())
	}
	return lock.Close()
}

// Open opens (or creates) the log in dir. It takes Pebble's lock on the
// directory, so a second process gets an error instead of a shared store.
func Open(dir string, opts Options) (*Log, error) {
	lg := opts.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		if isPermission(err) {
			return nil, fmt.Errorf("create data dir %s: not permitted for this user (uid %d): %w", dir, os.Getuid(), err)
		}
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, fs)
	if err != nil {
		return nil, lockError(dir, err, os.Getuid())
	}
	cacheBytes := opts.CacheBytes
	if cacheBytes == 0 {
		cacheBytes = 256 << 20
	}
	cache := pebble.NewCache(cacheBytes)
	defer cache.Unref()
	wfs := &walFS{FS: fs}
	plog := pebbleLogger{s: lg.Named("pebble").Sugar(), errs: newLogLimiter(pebbleErrorsPerWindow, pebbleErrorWindow)}
	events := pebble.MakeLoggingEventListener(plog) // Pebble's default, through the rate-limited logger
	if opts.BackgroundError != nil {
		events = pebble.TeeEventListener(events, pebble.EventListener{BackgroundError: opts.BackgroundError})
	}
	// A failed flush fails the log too (once it is open), though the WAL
	// still takes writes: Pebble retries the flush, the memtables pile
	// up, and at two of them Pebble stops taking writes, which would
	// leave every append waiting instead of answered STORAGE_FAILED. The
	// data stays durable in the WAL; the restart that reopens the store
	// replays it.
	events = pebble.TeeEventListener(events, pebble.EventListener{FlushEnd: func(info pebble.FlushInfo) {
		// Pebble reports a flush that wrote no table (every key in the
		// memtable deleted in it too, as a scavenge does to recent
		// events) as the error "pebble: empty table", an unexported value
		// its own tests recognize by the message: it is no failure.
		if info.Err != nil && info.Err.Error() != "pebble: empty table" {
			wfs.failed(fmt.Errorf("flush: %w", info.Err))
		}
	}})
	bl := &backlog{stop: make(chan struct{}), done: make(chan struct{})}
	events = pebble.TeeEventListener(events, bl.listener())
	po := &pebble.Options{
		FS:                 wfs, // zero-filled WAL files: see walfs.go
		Cache:              cache,
		Lock:               lock,
		FormatMajorVersion: pebble.FormatNewest,
		MemTableSize:       memTableSize,
		// Pebble stops writes once its memtables (the mutable one
		// counted whole) reach this many times MemTableSize: at Pebble's
		// 2, every flush of a full memtable stalled every commit.
		MemTableStopWritesThreshold: memTableStopWrites,
		Logger:                      plog,
		EventListener:               &events,
	}
	// Point lookups (names, ids, stream states) mostly miss on the append
	// path; bloom filters make the misses cheap.
	// Reads of $all and of long streams scan: 32 KiB blocks cost an eighth
	// of the block loads (and cache allocations) of Pebble's 4 KiB.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].BlockSize = 32 << 10
	}
	tail, hasWAL := scanWALTail(fs, dir) // before Pebble replays it: see waltail.go
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open pebble: %w", err), lock.Close())
	}
	l := &Log{
		db:       db,
		lock:     lock,
		lg:       lg,
		pubCh:    make(chan struct{}),
		recent:   recentIDs{limit: recentIDsLimit},
		syncq:    make(chan *Ticket, 4096),
		syncDone: make(chan struct{}),
		backlog:  bl,
	}
	l.names.init(1 << 20)
	l.lim.now = opts.Clock
	if l.lim.now == nil {
		l.lim.now = time.Now
	}
	// A failed WAL write or sync fails the log at once, from Pebble's WAL
	// goroutine, not when the syncer gets to the batch: Pebble's error is
	// sticky and its next WAL write panics, so the fewer commits applied
	// after the failure, the better. (A failed flush too: see above.)
	onWALError := l.storageFailed
	wfs.onError.Store(&onWALError)
	if err := l.recover(); err != nil {
		return nil, errors.Join(err, db.Close(), lock.Close())
	}
	if hasWAL {
		warnWALTail(lg, dir, tail, l.published.Load())
	}
	l.met = newLogMetrics(opts.Registerer, l)
	go l.syncer()
	go bl.sample(db)
	lg.Info("log opened", zap.String("dir", dir), zap.Uint64("position", l.published.Load()),
		zap.Uint64("streams", l.st.streams), zap.Uint64("events", l.st.events))
	return l, nil
}

// recover reads what Open needs without scanning events: the format, the
// last position, the last stream id, the stats and the deleted streams.
func (l *Log) recover() error {
	v, ok, err := l.get(metaFormatKey)
	switch {
	case err != nil:
		return err
	case !ok:
		last, err := l.lastKey(kEvent)
		if err != nil {
			return err
		}
		if last != nil {
			return fmt.Errorf("%w: events but no format key", ErrCorrupt)
		}
		b := l.db.NewBatch()
		_ = b.Set(metaFormatKey, binary.BigEndian.AppendUint32(nil, formatVersion), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("write format: %w", err)
		}
	case len(v) != 4:
		return fmt.Errorf("%w: format key of %d bytes", ErrCorrupt, len(v))
	case binary.BigEndian.Uint32(v) != formatVersion:
		return &FormatError{Found: binary.BigEndian.Uint32(v)}
	}

	last, err := l.lastKey(kEvent)
	if err != nil {
		return err
	}
	var lastPos uint64
	if last != nil {
		if lastPos, err = decodeEventKey(last); err != nil {
			return err
		}
	}
	l.nextPos = lastPos + 1
	l.published.Store(lastPos)

	l.nextSID.Store(firstUserStreamID)
	if last, err = l.lastKey(kStream); err != nil {
		return err
	}
	if last != nil {
		sid, err := decodeStreamKey(last)
		if err != nil {
			return err
		}
		if sid >= firstUserStreamID {
			l.nextSID.Store(sid + 1)
		}
	}

	if v, ok, err := l.get(metaStatsKey); err != nil {
		return err
	} else if ok {
		if l.st, err = decodeStats(v); err != nil {
			return err
		}
	}

	l.sys = StreamState{ID: deletedStreamID, Name: deletedStreamName}
	l.sysNew = true
	if v, ok, err := l.get(appendStreamKey(nil, deletedStreamID)); err != nil {
		return err
	} else if ok {
		if l.sys, err = decodeState(deletedStreamID, v); err != nil {
			return err
		}
		l.sysNew = false
	}

	if j, ok, err := l.ScavengeJob(); err != nil {
		return err
	} else if ok {
		below := j.RemovedBelow
		if !j.bounded {
			// A store scavenged before the bound was kept: any gap may be
			// a scavenged event, as it was then.
			below = lastPos + 1
		}
		l.removedBelow.Store(below)
	}

	deleted := make(map[uint64]deletion)
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{kDeleted}, UpperBound: []byte{kDeleted + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		sid, err := decodeStreamKey(it.Key())
		if err != nil {
			return errors.Join(err, it.Close())
		}
		s, ok, err := l.state(sid)
		if err != nil || !ok {
			return errors.Join(err, fmt.Errorf("%w: deleted stream %d has no state", ErrCorrupt, sid), it.Close())
		}
		deleted[sid] = deletion{truncateBefore: s.TruncateBefore, tombstoned: s.Tombstoned}
	}
	if err := it.Close(); err != nil {
		return err
	}
	l.deleted.Store(&deleted)
	// Commit times go on from the last event's, not from this machine's
	// clock, so that applying the same writes to the same store stamps the
	// same times wherever and whenever it runs.
	if lastPos > 0 {
		rec, ok, err := l.get(appendEventKey(nil, lastPos))
		if err != nil || !ok {
			return errors.Join(err, fmt.Errorf("%w: no event at the last position %d", ErrCorrupt, lastPos))
		}
		var v recordView
		if err := decodeRecord(rec, &v); err != nil {
			return fmt.Errorf("position %d: %w", lastPos, err)
		}
		l.lastTime = v.created
	}
	return nil
}

// Close stops taking commits, waits until every applied batch is synced
// and answered, and closes Pebble. Calling it twice is harmless.
func (l *Log) Close() error {
	l.commitMu.Lock()
	if l.closed {
		l.commitMu.Unlock()
		return nil
	}
	l.closed = true
	close(l.syncq)
	l.commitMu.Unlock()
	<-l.syncDone
	close(l.backlog.stop)
	<-l.backlog.done
	l.met.unregister()
	return errors.Join(l.db.Close(), l.lock.Close())
}

// LastPosition is the last published position: every position up to it
// is durable and visible.
func (l *Log) LastPosition() uint64 { return l.published.Load() }

// WaitPublished blocks until position pos is published or ctx ends.
func (l *Log) WaitPublished(ctx context.Context, pos uint64) error {
	for {
		if l.published.Load() >= pos {
			return nil
		}
		l.pubMu.Lock()
		ch := l.pubCh
		l.pubMu.Unlock()
		if l.published.Load() >= pos {
			return nil
		}
		if err := l.Failed(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Published returns a channel closed the next time the published position
// advances (or the log fails).
func (l *Log) Published() <-chan struct{} {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	return l.pubCh
}

func (l *Log) publish(pos uint64) {
	l.published.Store(pos)
	l.pubMu.Lock()
	close(l.pubCh)
	l.pubCh = make(chan struct{})
	l.pubMu.Unlock()
}

// OnPublish sets fn to be called with every commit's events once they are
// published, in position order, from one goroutine. fn must not block
// (the log's writes wait for it) and must not modify the events; it may
// keep them.
func (l *Log) OnPublish(fn func([]Committed)) { l.onPublish.Store(&fn) }

// Committed is an event as committed, for live subscribers.
type Committed struct {
	Position, StreamID, Revision uint64
	Stream                       string
	Record                       []byte // the encoded record: read through EventView.Decode
	// For an event of "$deleted": the stream it deletes, and whether
	// forever.
	Deletes   string
	Tombstone bool
}

// Hidden reports whether the event sid/rev is deleted. Retention limits
// are not consulted: live delivery, its caller, passes every event on as
// committed (retention.go).
func (l *Log) Hidden(sid, rev uint64) bool {
	d, ok := (*l.deleted.Load())[sid]
	return ok && (d.tombstoned || rev < d.truncateBefore)
}

// Failed returns the storage failure that stopped writes, or nil.
func (l *Log) Failed() error {
	if p := l.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (l *Log) fail(err error) error {
	err = fmt.Errorf("%w: %w", ErrStorageFailed, err)
	l.pendMu.Lock()
	// Freeze with the failure, under pendMu: a reader that sees the
	// failure finds the states the unpublished commits overwrote, and the
	// syncer publishes nothing more (publishPending).
	first := l.failed.CompareAndSwap(nil, &err)
	if first {
		l.freezeLocked()
	}
	l.pendMu.Unlock()
	if first {
		l.lg.Error("storage failed; writes stop until esd restarts (reads go on)", zap.Error(err))
		l.pubMu.Lock() // wake waiters so that they see the failure
		close(l.pubCh)
		l.pubCh = make(chan struct{})
		l.pubMu.Unlock()
	}
	return *l.failed.Load()
}

// syncer waits for each applied batch's fsync, in position order, then
// makes its deletions visible, publishes its positions and answers it.
// Answering only when every earlier batch is durable too keeps the
// published positions gap-free.
func (l *Log) syncer() {
	defer close(l.syncDone)
	for t := range l.syncq {
		start := time.Now()
		err := t.batch.SyncWait()
		l.met.syncSeconds.Observe(time.Since(start).Seconds())
		_ = t.batch.Close()
		t.batch = nil
		if err != nil {
			t.err = l.fail(err)
		} else if t.err = l.publishPending(t); t.err == nil {
			if hook := l.onPublish.Load(); hook != nil && len(t.events) > 0 {
				(*hook)(t.events)
			}
		}
		t.events, t.writes, t.sysBefore = nil, nil, nil
		close(t.done)
	}
}

// publishPending publishes t, the oldest pending commit, now durable,
// unless the log has failed: then t is not acknowledged (an earlier batch
// failed, or the failure came before t's turn) and stays frozen.
func (l *Log) publishPending(t *Ticket) error {
	l.pendMu.Lock()
	defer l.pendMu.Unlock()
	if err := l.Failed(); err != nil {
		return err
	}
	if len(l.pending) > 0 && l.pending[0] == t {
		l.pending[0] = nil
		l.pending = l.pending[1:]
	}
	if len(t.deletions) > 0 {
		l.applyDeletions(t.deletions)
	}
	if t.last > l.published.Load() { // not an aux write alone
		l.publish(t.last)
	}
	return nil
}

func (l *Log) applyDeletions(ds map[uint64]deletion) {
	old := *l.deleted.Load()
	m := make(map[uint64]deletion, len(old)+len(ds))
	for k, v := range old {
		m[k] = v
	}
	for k, v := range ds {
		m[k] = v
	}
	l.deleted.Store(&m)
}

// NewStreamID allocates an id for a new stream. Ids are never reused; an
// id whose commit fails is simply skipped.
func (l *Log) NewStreamID() uint64 {
	id := l.nextSID.Add(1) - 1
	if id == math.MaxUint64 {
		panic("log: stream ids exhausted")
	}
	return id
}

// WALBytes is the live data in the WAL files: what the next open replays
// and flushes to a table (about the room that flush needs).
func (l *Log) WALBytes() uint64 { return l.db.Metrics().WAL.Size }

// DiskBytes is the space the store takes on disk.
func (l *Log) DiskBytes() uint64 { return l.db.Metrics().DiskSpaceUsage() }

// TableBytes is the size of the store's live tables: its data once
// flushed, without the WAL files (which Pebble recycles, and walfs.go
// fills ahead) that DiskBytes counts too.
func (l *Log) TableBytes() uint64 { return l.db.Metrics().Table.Local.LiveSize }

// keySpaces names the key spaces (keys.go), by prefix byte.
var keySpaces = [...]string{kMeta: "meta", kEvent: "events", kIndex: "stream index", kName: "names",
	kStream: "states", kID: "ids", kDeleted: "deleted", kCategory: "categories", kType: "types", kAux: "aux"}

// TableBytesBySpace estimates TableBytes per key space (events, ids, ...),
// for benchmarks that say where the space goes.
func (l *Log) TableBytesBySpace() (map[string]uint64, error) {
	out := make(map[string]uint64, len(keySpaces))
	for p, name := range keySpaces {
		n, err := l.db.EstimateDiskUsage([]byte{byte(p)}, []byte{byte(p) + 1})
		if err != nil {
			return nil, err
		}
		out[name] = n
	}
	return out, nil
}

// Flush writes the memtables to tables (benchmarks measure TableBytes
// after it).
func (l *Log) Flush() error { return l.db.Flush() }

// Stats are store-wide counts.
type Stats struct {
	LastPosition uint64
	Streams      uint64 // streams with visible events
	Events       uint64 // visible events
}

// Stats returns the store-wide counts (they may include a commit that is
// not published yet).
func (l *Log) Stats() Stats {
	l.commitMu.Lock()
	st := l.st
	l.commitMu.Unlock()
	return Stats{LastPosition: l.published.Load(), Streams: st.streams, Events: st.events}
}

// get returns a copy of the value of key.
func (l *Log) get(key []byte) ([]byte, bool, error) {
	v, closer, err := l.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

// has reports whether key is stored.
func (l *Log) has(key []byte) (bool, error) {
	_, closer, err := l.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// lastKey returns a copy of the last key with the given prefix byte.
func (l *Log) lastKey(prefix byte) ([]byte, error) {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return nil, err
	}
	var k []byte
	if it.Last() {
		k = append([]byte(nil), it.Key()...)
	}
	return k, it.Close()
}

// pebbleLogger routes Pebble's messages to zap. Its errors go through
// errs (nil: all of them): on a full or failing disk Pebble retries its
// flushes and compactions in the background and logs each failure, which
// made hundreds of thousands of lines in seconds.
type pebbleLogger struct {
	s    *zap.SugaredLogger
	errs *logLimiter
}

func (p pebbleLogger) Infof(format string, args ...any)  { p.s.Debugf(format, args...) }
func (p pebbleLogger) Fatalf(format string, args ...any) { p.s.Fatalf(format, args...) }

func (p pebbleLogger) Errorf(format string, args ...any) {
	if p.errs == nil {
		p.s.Errorf(format, args...)
		return
	}
	ok, dropped := p.errs.allow()
	if dropped > 0 {
		p.s.Errorf("%d more Pebble errors in the last %s were not logged", dropped, p.errs.window)
	}
	if ok {
		p.s.Errorf(format, args...)
	}
}

// Pebble's errors: at most pebbleErrorsPerWindow logged per
// pebbleErrorWindow; the rest are counted and the count logged.
const (
	pebbleErrorsPerWindow = 10
	pebbleErrorWindow     = 10 * time.Second
)

// logLimiter lets through at most max messages a window and counts the
// others.
type logLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu      sync.Mutex
	start   time.Time // of the current window
	n       int       // let through in it
	dropped int       // held back in it
}

func newLogLimiter(max int, window time.Duration) *logLimiter {
	return &logLimiter{max: max, window: window, now: time.Now}
}

// allow reports whether a message may be logged, and, when a new window
// starts, how many the last one held back (to be reported once).
func (l *logLimiter) allow() (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := l.now(); l.start.IsZero() || now.Sub(l.start) >= l.window {
		dropped, l.start, l.n, l.dropped = l.dropped, now, 0, 0
	}
	if l.n < l.max {
		l.n++
		return true, dropped
	}
	l.dropped++
	return false, dropped
}
