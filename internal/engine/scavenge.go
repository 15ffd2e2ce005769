package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	eslog "github.com/esdhq/esd/internal/log"
)

// DefaultScavengeRate is the keys a second a scavenge deletes when its
// starter names no rate. At this rate a scavenge of 500,000 hidden small
// events (1,015,000 keys with their ids and index entries) took 26 s
// alone, and 36 to 44 s under 16 writers whose appends ran at 0.84 to
// 0.86 of a run without it (BenchmarkScavengeUnderLoad, README
// "Benchmarks").
const DefaultScavengeRate = 50000

// DefaultIdempotencyWindow is esd's Config.IdempotencyWindow unless told
// otherwise: retries come within seconds or minutes of the original
// append, and a day covers a client that was down for hours.
const DefaultIdempotencyWindow = 24 * time.Hour

// ErrScavengeRunning refuses a scavenge while another runs.
var ErrScavengeRunning = errors.New("a scavenge is running")

// ErrNoScavenge: no scavenge ever ran on this store.
var ErrNoScavenge = errors.New("no scavenge has run on this store")

// scavenges runs one scavenge at a time, in the background.
type scavenges struct {
	mu      sync.Mutex
	job     eslog.ScavengeJob // the running or last job, as last reported
	have    bool
	cancel  context.CancelFunc // of the running job; nil when none runs
	done    chan struct{}      // closed when the running job has stored its end
	closing bool               // Drain: the running job is interrupted, not stopped
}

// resumeScavenge goes on with a scavenge a restart interrupted.
func (e *Engine) resumeScavenge() error {
	j, ok, err := e.log.ScavengeJob()
	if err != nil {
		return err
	}
	e.scav.mu.Lock()
	defer e.scav.mu.Unlock()
	e.scav.job, e.scav.have = j, ok
	if ok && j.State == eslog.ScavengeRunning {
		e.lg().Info("resuming the scavenge a restart interrupted", zap.String("id", j.ID), zap.Uint64("next_stream", j.NextStream))
		e.runScavengeLocked(j)
	}
	return nil
}

// StartScavenge starts a scavenge deleting keysPerSecond keys a second
// (0: DefaultScavengeRate) and returns its record. It fails with
// ErrScavengeRunning while one runs.
func (e *Engine) StartScavenge(keysPerSecond int) (eslog.ScavengeJob, error) {
	if keysPerSecond <= 0 {
		keysPerSecond = DefaultScavengeRate
	}
	e.scav.mu.Lock()
	defer e.scav.mu.Unlock()
	if e.scav.cancel != nil {
		return e.scav.job, fmt.Errorf("%w: %s", ErrScavengeRunning, e.scav.job.ID)
	}
	if e.scav.closing || e.stopping.Err() != nil {
		return eslog.ScavengeJob{}, ErrShuttingDown
	}
	id, err := uuid.NewV7()
	if err != nil {
		return eslog.ScavengeJob{}, err
	}
	j := e.log.NewScavengeJob(id.String(), e.now(), keysPerSecond)
	// Stored before it starts: a restart from here on resumes it.
	if err := e.log.SaveScavengeJob(&j); err != nil {
		return eslog.ScavengeJob{}, err
	}
	e.scav.job, e.scav.have = j, true
	e.runScavengeLocked(j)
	return j, nil
}

func (e *Engine) now() time.Time {
	if e.cfg.Clock != nil {
		return e.cfg.Clock()
	}
	return time.Now()
}

// runScavengeLocked runs j in the background; e.scav.mu is held.
func (e *Engine) runScavengeLocked(j eslog.ScavengeJob) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.scav.cancel, e.scav.done = cancel, done
	go func() {
		defer close(done)
		defer cancel()
		opts := eslog.ScavengeOptions{
			KeysPerSecond: j.KeysPerSecond,
			// The retention limits of stream metadata hide events as a
			// view, which a limit raised or removed undoes: the job first
			// makes their cut durable, a truncate through the writer per
			// stream, and then removes what deletions and truncates hide
			// (the log's default FirstVisible, eslog.DeletedBefore).
			EnforceLimits: func(ctx context.Context) (int, error) {
				return e.meta.Enforce(ctx, e.writer.Truncate)
			},
			StreamDone: e.scavengedStream,
			// Decided at each run: a resumed job forgets up to its own
			// start's window.
			ForgetIDsBefore: e.forgetIDsBefore(),
			Now:             e.now,
			Progress: func(j eslog.ScavengeJob) {
				e.scav.mu.Lock()
				e.scav.job = j
				e.scav.mu.Unlock()
			},
		}
		end, err := e.log.Scavenge(ctx, j, opts)
		e.scav.mu.Lock()
		defer e.scav.mu.Unlock()
		if e.scav.closing && end.State == eslog.ScavengeStopped {
			// Interrupted by a shutdown, not stopped by an operator: the
			// next start of esd goes on with it.
			end.State, end.Finished = eslog.ScavengeRunning, 0
			if serr := e.log.SaveScavengeJob(&end); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		e.scav.job, e.scav.cancel = end, nil
		if err != nil {
			e.lg().Warn("scavenge failed", zap.String("id", end.ID), zap.Error(err))
			return
		}
		e.lg().Info("scavenge ended", zap.String("id", end.ID), zap.String("state", string(end.State)),
			zap.Uint64("events_removed", end.EventsRemoved), zap.Uint64("bytes_removed", end.BytesRemoved),
			zap.Uint64("disk_before", end.DiskBefore), zap.Uint64("disk_after", end.DiskAfter))
	}()
}

// forgetIDsBefore is the commit time before which a scavenge removes the
// ids of events hidden for good (0: none).
func (e *Engine) forgetIDsBefore() int64 {
	if e.cfg.IdempotencyWindow <= 0 {
		return 0
	}
	return e.now().Add(-e.cfg.IdempotencyWindow).UnixNano()
}

// scavengedStream removes the snapshots of a stream's hidden revisions:
// no load can use them any more.
func (e *Engine) scavengedStream(ctx context.Context, s *eslog.StreamState) error {
	_, err := e.snaps.Delete(ctx, s.Name, eslog.DeletedBefore(s))
	return err
}

// Scavenge returns the running or last scavenge; ErrNoScavenge when none
// ever ran.
func (e *Engine) Scavenge() (eslog.ScavengeJob, error) {
	e.scav.mu.Lock()
	defer e.scav.mu.Unlock()
	if !e.scav.have {
		return eslog.ScavengeJob{}, ErrNoScavenge
	}
	return e.scav.job, nil
}

// StopScavenge stops the running scavenge, waits until it has stored its
// state, and returns it; with none running, it returns the last one.
func (e *Engine) StopScavenge(ctx context.Context) (eslog.ScavengeJob, error) {
	e.scav.mu.Lock()
	cancel, done := e.scav.cancel, e.scav.done
	e.scav.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			return eslog.ScavengeJob{}, ctx.Err()
		}
	}
	return e.Scavenge()
}

// WaitScavenge waits until no scavenge runs (for tests and the
// scheduler).
func (e *Engine) WaitScavenge(ctx context.Context) error {
	e.scav.mu.Lock()
	done := e.scav.done
	running := e.scav.cancel != nil
	e.scav.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// interruptScavenge ends the running scavenge for a shutdown: it stays
// "running" in the store, and the next Open resumes it.
func (e *Engine) interruptScavenge() {
	e.scav.mu.Lock()
	e.scav.closing = true
	cancel, done := e.scav.cancel, e.scav.done
	e.scav.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// scheduleScavenges starts a scavenge every interval (none while one
// runs) until the engine stops.
func (e *Engine) scheduleScavenges(interval time.Duration, keysPerSecond int) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-e.stopping.Done():
			return
		case <-t.C:
			if _, err := e.StartScavenge(keysPerSecond); err != nil && !errors.Is(err, ErrScavengeRunning) && !errors.Is(err, ErrShuttingDown) {
				e.lg().Warn("scheduled scavenge did not start", zap.Error(err))
			}
		}
	}
}
