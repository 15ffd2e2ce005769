package log

import (
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// gateFS wraps a file system so that a test can hold back the fsyncs of
// Pebble's WAL files: while it holds them, a WAL file's Sync, SyncData
// and SyncTo wait, so batches written meanwhile are applied (readable)
// but not durable, and a CrashClone with UnsyncedDataPercent 0 loses
// them. Other files sync as usual.
type gateFS struct {
	vfs.FS
	mu   sync.Mutex
	shut chan struct{} // nil: open
}

func newGateFS(fs vfs.FS) *gateFS { return &gateFS{FS: fs} }

// Hold makes WAL syncs wait until Release.
func (g *gateFS) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut == nil {
		g.shut = make(chan struct{})
	}
}

// Release lets WAL syncs through again, the waiting ones first.
func (g *gateFS) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
}

func (g *gateFS) wait() {
	g.mu.Lock()
	ch := g.shut
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (g *gateFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &gateFile{File: f, g: g}, nil
}

func (g *gateFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.Create(name, category)
	return g.wrap(name, f, err)
}

func (g *gateFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.FS.OpenReadWrite(name, category, opts...)
	return g.wrap(name, f, err)
}

func (g *gateFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.FS.ReuseForWrite(oldname, newname, category)
	return g.wrap(newname, f, err)
}

// Unwrap hides the wrapped FS, so that Pebble writes through this one.
func (g *gateFS) Unwrap() vfs.FS { return nil }

type gateFile struct {
	vfs.File
	g *gateFS
}

func (f *gateFile) Sync() error {
	f.g.wait()
	return f.File.Sync()
}

func (f *gateFile) SyncData() error {
	f.g.wait()
	return f.File.SyncData()
}

func (f *gateFile) SyncTo(length int64) (bool, error) {
	f.g.wait()
	return f.File.SyncTo(length)
}
