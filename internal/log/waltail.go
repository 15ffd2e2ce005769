package log

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/batchrepr"
	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/wal"
	"go.uber.org/zap"
)

// A WAL whose tail does not read as records (a write cut short before its
// sync, by a crash or by a full disk; or bytes damaged on disk) is opened by Pebble up to its
// last readable record, silently: Pebble tolerates an unclean end of the
// newest WAL (replayWAL's strictWALTail=false) and reports no event for
// it. The events in the dropped bytes are gone; an operator must hear of
// it. So Open reads the newest WAL with Pebble's record reader before
// Pebble does, and warns when its end is neither zeros (walfs.go writes
// them ahead; Pebble preallocates) nor the stale records of a recycled
// file, which are how a WAL normally ends.

// walTail is what a scan of the newest WAL found.
type walTail struct {
	file      string
	size      int64
	readable  int64  // offset where the readable records end
	records   int    // readable records (Pebble batches)
	lastPos   uint64 // the last event position in them; 0: none
	dropped   int64  // bytes after readable up to the last non-zero byte
	corrupt   bool   // the end is not a clean one
	readError error  // the scan itself failed (the warning is then unsure)
}

// newestWAL returns the path and number of the newest WAL file in dir.
func newestWAL(fs vfs.FS, dir string) (string, uint64, bool) {
	names, err := fs.List(dir)
	if err != nil {
		return "", 0, false
	}
	var (
		best  string
		bestN uint64
		found bool
	)
	for _, name := range names {
		n, _, ok := wal.ParseLogFilename(name)
		if ok && (!found || uint64(n) > bestN) {
			best, bestN, found = name, uint64(n), true
		}
	}
	return fs.PathJoin(dir, best), bestN, found
}

// newRecordReader calls record.NewReader, whose log-number parameter has
// a type internal to Pebble: the type parameter is inferred from the
// function, so that the number converts to it.
func newRecordReader[N ~uint64](newReader func(io.Reader, N) *record.Reader, r io.Reader, num uint64) *record.Reader {
	return newReader(r, N(num))
}

// scanWALTail reads the newest WAL in dir as Pebble's replay will.
func scanWALTail(fs vfs.FS, dir string) (walTail, bool) {
	path, num, ok := newestWAL(fs, dir)
	if !ok {
		return walTail{}, false
	}
	t := walTail{file: filepath.Base(path)}
	f, err := fs.Open(path)
	if err != nil {
		t.readError = err
		return t, true
	}
	defer f.Close() //nolint:errcheck // read only
	data, err := io.ReadAll(f)
	if err != nil {
		t.readError = err
		return t, true
	}
	t.size = int64(len(data))
	r := newRecordReader(record.NewReader, bytes.NewReader(data), num)
	for {
		off := r.Offset()
		rec, err := r.Next()
		var b []byte
		if err == nil {
			b, err = io.ReadAll(rec)
		}
		if err != nil {
			t.readable = off
			if !errors.Is(err, io.EOF) {
				t.corrupt = !cleanEnd(data, off, num)
			}
			break
		}
		t.records++
		t.lastPos = max(t.lastPos, lastEventPosition(b))
	}
	if t.corrupt {
		end := int64(len(data))
		for end > t.readable && data[end-1] == 0 {
			end--
		}
		t.dropped = end - t.readable
	}
	return t, true
}

// cleanEnd reports whether the WAL bytes from off on are a normal end:
// zeros, or a chunk header of another log number (the stale records of a
// recycled file; Pebble stops there).
func cleanEnd(data []byte, off int64, num uint64) bool {
	rest := data[min(off, int64(len(data))):]
	if !bytes.ContainsFunc(rest, func(r rune) bool { return r != 0 }) {
		return true
	}
	// Header: checksum (4), length (2), encoding (1), log number (4) for
	// the recyclable (5-8) and WAL-sync (9-12) encodings.
	const recyclableFirst, walSyncLast = 5, 12
	if len(rest) >= 11 && rest[6] >= recyclableFirst && rest[6] <= walSyncLast {
		return uint64(binary.LittleEndian.Uint32(rest[7:11])) != num&0xffffffff
	}
	return false
}

// lastEventPosition is the highest event position a batch writes; 0 when
// it writes no event (or does not decode: the position is then unknown).
func lastEventPosition(repr []byte) uint64 {
	var last uint64
	r := batchrepr.Read(repr)
	for {
		_, key, _, ok, err := r.Next()
		if !ok || err != nil {
			return last
		}
		if pos, err := decodeEventKey(key); err == nil {
			last = max(last, pos)
		}
	}
}

// warnWALTail logs what a corrupt WAL tail made the open drop, once the
// store is open at position recovered.
func warnWALTail(lg *zap.Logger, dir string, t walTail, recovered uint64) {
	if !t.corrupt && t.readError == nil {
		return
	}
	if t.readError != nil {
		lg.Warn("could not read the newest WAL to check its end", zap.String("wal", filepath.Join(dir, t.file)), zap.Error(t.readError))
		return
	}
	fields := []zap.Field{
		zap.String("wal", filepath.Join(dir, t.file)),
		zap.Int64("wal_bytes", t.size),
		zap.Int64("readable_up_to_offset", t.readable),
		zap.Int64("dropped_bytes", t.dropped),
		zap.Int("records_replayed", t.records),
		zap.Uint64("recovered_position", recovered),
	}
	if t.lastPos > 0 {
		fields = append(fields, zap.Uint64("last_position_in_readable_wal", t.lastPos))
	}
	lg.Warn(fmt.Sprintf("the WAL ends in %d bytes that do not read as records: the store was recovered up to the last readable record "+
		"and the writes in those bytes are dropped (a write cut short before its fsync, by a crash or a full disk, which was never acknowledged; "+
		"or bytes damaged on disk, which may hold acknowledged events: check the disk)", t.dropped), fields...)
}
