package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// reloadDebounce is how long the watcher waits after a change of the auth
// file's directory before it reads the file: an editor or esctl writes a
// temporary file and renames it, several events for one change.
const reloadDebounce = 100 * time.Millisecond

// Authenticator serves the Policy of an auth file and reloads it when the
// file changes (Run) or on demand (Reload). A file that does not load
// keeps the Policy in force: a typo must not lock everyone out, nor let
// everyone in.
type Authenticator struct {
	path    string
	lg      *zap.Logger
	cur     atomic.Pointer[Policy]
	mu      sync.Mutex // one reload at a time
	stamp   fileStamp  // of the file last read (under mu)
	reloads *prometheus.CounterVec
	// Now is the clock tokens' expiry is checked against.
	Now func() time.Time
}

// New loads the auth file at path, which must be valid, and registers the
// reload metric with reg (nil: none). Run keeps it current.
func New(path string, lg *zap.Logger, reg prometheus.Registerer) (*Authenticator, error) {
	if lg == nil {
		lg = zap.NewNop()
	}
	a := &Authenticator{path: path, lg: lg, Now: time.Now,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esd_auth_reloads_total",
			Help: "Reloads of the auth file, by result: ok (in force), error (the file did not load; the one before stays in force).",
		}, []string{"result"}),
	}
	a.reloads.WithLabelValues("ok")
	a.reloads.WithLabelValues("error")
	if reg != nil {
		if err := reg.Register(a.reloads); err != nil {
			return nil, err
		}
	}
	a.stamp = stampOf(path)
	f, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	a.cur.Store(Compile(f))
	return a, nil
}

// fileStamp tells whether a file changed between two looks.
type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: st.ModTime(), size: st.Size(), ok: true}
}

// NewStatic serves the Policy of f, never reloaded (embedding and tests).
func NewStatic(f *File) (*Authenticator, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	a := &Authenticator{lg: zap.NewNop(), Now: time.Now, reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "esd_auth_reloads_total"}, []string{"result"})}
	a.cur.Store(Compile(f))
	return a, nil
}

// Policy returns the Policy in force.
func (a *Authenticator) Policy() *Policy { return a.cur.Load() }

// Path is the auth file's path ("" for NewStatic).
func (a *Authenticator) Path() string { return a.path }

// Reload reads the auth file again; on error the Policy in force stays and
// the error is logged and returned.
func (a *Authenticator) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.path == "" {
		return errors.New("auth: no file to reload")
	}
	a.stamp = stampOf(a.path)
	f, err := ReadFile(a.path)
	if err != nil {
		a.reloads.WithLabelValues("error").Inc()
		a.lg.Error("auth file not reloaded: the previous one stays in force", zap.String("path", a.path), zap.Error(err))
		return err
	}
	a.cur.Store(Compile(f))
	a.reloads.WithLabelValues("ok").Inc()
	a.lg.Info("auth file reloaded", zap.String("path", a.path), zap.Int("identities", len(f.Identities)), zap.Int("tokens", len(f.Tokens)))
	return nil
}

// Run reloads the file when its directory changes (debounced) and when
// hup delivers (SIGHUP; nil: never), until ctx ends. The directory is
// watched, not the file: esctl and editors replace the file by a rename,
// and Kubernetes swaps a symlink, which a watch on the file itself loses.
func (a *Authenticator) Run(ctx context.Context, hup <-chan os.Signal) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch auth file: %w", err)
	}
	defer w.Close() //nolint:errcheck // nothing to do about it at exit
	if err := w.Add(filepath.Dir(a.path)); err != nil {
		return fmt.Errorf("watch auth file: %w", err)
	}
	// A change between the last read and the watch has no event: look.
	a.mu.Lock()
	changed := stampOf(a.path) != a.stamp
	a.mu.Unlock()
	if changed {
		_ = a.Reload() // logged
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			_ = a.Reload() // logged
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
				continue // no content change
			}
			timer.Reset(reloadDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			a.lg.Warn("auth file watch", zap.Error(err))
			timer.Reset(reloadDebounce) // events may have been lost: read the file again
		case <-timer.C:
			_ = a.Reload()
		}
	}
}
