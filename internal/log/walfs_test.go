package log

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// smallSyncs makes the chunks f passes look written by small fsyncs
// (walZeroMinSyncs of them each), so that each is zero-filled.
func smallSyncs(f vfs.File) vfs.File { return smallSyncFile{f.(*walFile)} }

type smallSyncFile struct{ *walFile }

func (f smallSyncFile) Write(p []byte) (int, error) {
	f.syncs.Store(walZeroMinSyncs)
	return f.walFile.Write(p)
}

// TestWALFileZeroFill: a WAL file synced often is zero-filled a chunk
// ahead of its writes, which land where a plain file's would; other files
// are left alone; a recycled WAL is overwritten in place and zero-filled
// only past its old size.
func TestWALFileZeroFill(t *testing.T) {
	dir := t.TempDir()
	fs := &walFS{FS: vfs.Default}
	wal := filepath.Join(dir, "000001.log")
	f, err := fs.Create(wal, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f = smallSyncs(f)
	var want []byte
	write := func(f vfs.File, n int, b byte) {
		t.Helper()
		p := bytes.Repeat([]byte{b}, n)
		if _, err := f.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	write(f, 100, 'a')
	if err := f.Preallocate(0, 64<<20); err != nil { // ignored
		t.Fatal(err)
	}
	checkSize(t, wal, walZeroChunk)
	write(f, walZeroChunk-100, 'b') // up to the boundary exactly
	checkSize(t, wal, walZeroChunk)
	write(f, 2*walZeroChunk+7, 'c') // across two boundaries
	checkSize(t, wal, 4*walZeroChunk)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkContent(t, wal, want, 4*walZeroChunk)

	// Recycled: overwritten from offset 0; zeros only past the old size.
	old := want
	want = nil
	reused := filepath.Join(dir, "000002.log")
	f, err = fs.ReuseForWrite(wal, reused, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f = smallSyncs(f)
	write(f, 10, 'd')
	checkSize(t, reused, 4*walZeroChunk)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkContent(t, reused, append(want, old[10:]...), 4*walZeroChunk)
	f, err = fs.ReuseForWrite(reused, filepath.Join(dir, "000003.log"), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f = smallSyncs(f)
	want = nil
	write(f, 4*walZeroChunk+1, 'e')
	checkSize(t, filepath.Join(dir, "000003.log"), 5*walZeroChunk)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// Not a WAL: no zeros.
	other := filepath.Join(dir, "MANIFEST-000001")
	f, err = fs.Create(other, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkSize(t, other, 1)
}

// TestWALFileLargeSyncs: the first chunk is zero-filled; past a chunk
// that saw fewer than walZeroMinSyncs fsyncs, writes are plain appends;
// once fsyncs are small again, zeros again, from the last byte written.
func TestWALFileLargeSyncs(t *testing.T) {
	dir := t.TempDir()
	wal := filepath.Join(dir, "000001.log")
	file, err := (&walFS{FS: vfs.Default}).Create(wal, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f := file.(*walFile)
	var want []byte
	write := func(n int, b byte) {
		t.Helper()
		p := bytes.Repeat([]byte{b}, n)
		if _, err := f.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	write(10, 'a')
	checkSize(t, wal, walZeroChunk) // the first chunk: zeros
	for range 3 {
		if err := f.SyncData(); err != nil { // counted
			t.Fatal(err)
		}
	}
	if n := f.syncs.Load(); n != 3 {
		t.Fatalf("%d fsyncs counted, want 3", n)
	}
	write(walZeroChunk, 'b') // 3 fsyncs in the chunk: no zeros past the data
	checkSize(t, wal, walZeroChunk+10)
	write(walZeroChunk, 'c')
	checkSize(t, wal, 2*walZeroChunk+10)
	f.syncs.Store(walZeroMinSyncs) // small fsyncs from here on
	write(100, 'd')                // below the boundary decided last (3 MiB): no decision
	checkSize(t, wal, 2*walZeroChunk+110)
	write(walZeroChunk, 'e')
	checkSize(t, wal, 4*walZeroChunk)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	checkContent(t, wal, want, 4*walZeroChunk)
}

func checkSize(t *testing.T, path string, want int64) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != want {
		t.Fatalf("%s: %d bytes, want %d", filepath.Base(path), st.Size(), want)
	}
}

// checkContent: the file holds data, then zeros up to size.
func checkContent(t *testing.T, path string, data []byte, size int) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte(nil), data...), make([]byte, size-len(data))...)
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: content differs from the writes followed by zeros", filepath.Base(path))
	}
}

// TestZeroFilledWALReplays: on the operating system's file system, the
// log's WAL files are zero-filled, and a copy of the store taken while
// the log is open (what a process killed at that moment leaves: written
// and synced, not closed) opens with every durable event, the zeros read
// as the end of the log.
func TestZeroFilledWALReplays(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(filepath.Join(dir, "db"), Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := range n {
		appendTo(t, l, "s-"+string(rune('a'+i%5)), testEvent(i))
	}
	wals := 0
	entries, err := os.ReadDir(filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if isWAL(e.Name()) {
			wals++
			st, err := os.Stat(filepath.Join(dir, "db", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() == 0 || st.Size()%walZeroChunk != 0 {
				t.Errorf("WAL %s is %d bytes, not whole zero-filled chunks", e.Name(), st.Size())
			}
		}
	}
	if wals == 0 {
		t.Fatal("no WAL file")
	}
	if err := copyDir(filepath.Join(dir, "db"), filepath.Join(dir, "copy")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(filepath.Join(dir, "copy"), Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	var got int
	if err := c.ReadAll(context.Background(), AllQuery{}, func(*RecordedEvent) error { got++; return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("the copy holds %d events, want %d", got, n)
	}
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), "LOCK") {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err == nil {
			_, err = io.Copy(dst, src)
			err = errors.Join(err, dst.Close())
		}
		if cerr := src.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
