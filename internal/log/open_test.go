package log

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestOpenUnwritableDir: a data directory the user may not write to is
// named as such, with the user's uid. Root writes anywhere: skipped as
// root (TestLockError covers the message choice there).
func TestOpenUnwritableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root bypasses file permissions")
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "data")
	if err := os.Mkdir(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	l, err := Open(dir, Options{})
	if err == nil {
		l.Close()
		t.Fatal("Open of a read-only directory succeeded")
	}
	want := fmt.Sprintf("data dir %s is not writable by this user (uid %d)", dir, os.Getuid())
	if !strings.Contains(err.Error(), want) || !errors.Is(err, iofs.ErrPermission) {
		t.Fatalf("error %q, want one containing %q and wrapping fs.ErrPermission", err, want)
	}

	// A data directory to create under a directory the user may not write to.
	l, err = Open(filepath.Join(dir, "sub"), Options{})
	if err == nil {
		l.Close()
		t.Fatal("Open under a read-only directory succeeded")
	}
	if !strings.Contains(err.Error(), "not permitted for this user") {
		t.Fatalf("error %q, want one saying the directory cannot be created by this user", err)
	}
}

// TestLockError: the lock error names a permission error (the lock file
// could not be created) and a lock held elsewhere differently.
func TestLockError(t *testing.T) {
	const dir, uid = "/data", 65532
	notWritable := "data dir /data is not writable by this user (uid 65532)"
	locked := "lock data dir /data (is another esd using it?)"
	other := "lock data dir /data: "
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"EACCES creating the lock file", &iofs.PathError{Op: "open", Path: "/data/LOCK", Err: syscall.EACCES}, notWritable},
		{"EPERM creating the lock file", &iofs.PathError{Op: "open", Path: "/data/LOCK", Err: syscall.EPERM}, notWritable},
		{"EROFS creating the lock file", &iofs.PathError{Op: "open", Path: "/data/LOCK", Err: syscall.EROFS}, other},
		{"wrapped EACCES", fmt.Errorf("pebble: %w", &iofs.PathError{Op: "open", Path: "/data/LOCK", Err: syscall.EACCES}), notWritable},
		{"lock held (EAGAIN from fcntl)", syscall.EAGAIN, locked},
		{"lock held (EACCES from fcntl)", syscall.EACCES, locked},
		{"lock held in this process", errors.New("lock held by current process"), locked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lockError(dir, tc.err, uid)
			if !strings.HasPrefix(got.Error(), tc.want) {
				t.Errorf("%q, want it to start with %q", got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("%q does not wrap %v", got, tc.err)
			}
		})
	}
}
