package testutil

import (
	"io/fs"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FaultFS wraps a vfs.FS so that a test can make the disk "full": while
// it is (SetFull), the writes and syncs of every file (WAL, sstables,
// manifest) opened through it fail with ENOSPC, as on a file system with
// no space left; creating a file still works (it takes no data blocks),
// reads go on. Off again, the disk has room.
//
// Pebble's own errorfs injects errors by operation index or at random;
// esd's tests want a switch, flipped at a chosen moment and back.
type FaultFS struct {
	vfs.FS
	full atomic.Bool
	// Match, when set, limits the fault to the files whose names it
	// matches (e.g. the sstables only, *.sst).
	Match func(name string) bool
}

// NewFaultFS wraps fs (nil: the operating system's).
func NewFaultFS(fs vfs.FS) *FaultFS {
	if fs == nil {
		fs = vfs.Default
	}
	return &FaultFS{FS: fs}
}

// SetFull turns the fault on or off.
func (f *FaultFS) SetFull(on bool) { f.full.Store(on) }

func (f *FaultFS) fails(name string) bool {
	return f.full.Load() && (f.Match == nil || f.Match(name))
}

func enospc(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: syscall.ENOSPC}
}

func (f *FaultFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, cat)
	return f.wrap(name, file, err)
}

func (f *FaultFS) ReuseForWrite(oldname, newname string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.ReuseForWrite(oldname, newname, cat)
	return f.wrap(newname, file, err)
}

func (f *FaultFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, cat, opts...)
	return f.wrap(name, file, err)
}

func (f *FaultFS) wrap(name string, file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return file, err
	}
	return &faultFile{File: file, fs: f, name: name}, nil
}

type faultFile struct {
	vfs.File
	fs   *FaultFS
	name string
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.fs.fails(f.name) {
		return 0, enospc("write", f.name)
	}
	return f.File.Write(p)
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.fails(f.name) {
		return 0, enospc("write", f.name)
	}
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if f.fs.fails(f.name) {
		return enospc("sync", f.name)
	}
	return f.File.Sync()
}

func (f *faultFile) SyncData() error {
	if f.fs.fails(f.name) {
		return enospc("sync", f.name)
	}
	return f.File.SyncData()
}

func (f *faultFile) SyncTo(length int64) (bool, error) {
	if f.fs.fails(f.name) {
		return false, enospc("sync", f.name)
	}
	return f.File.SyncTo(length)
}

func (f *faultFile) Preallocate(off, n int64) error {
	if f.fs.fails(f.name) {
		return enospc("fallocate", f.name)
	}
	return f.File.Preallocate(off, n)
}
