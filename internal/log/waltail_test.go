package log

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestWALTailCorruption: a store whose WAL's last record is damaged opens
// at the durable prefix (every append before the last one) and warns,
// naming the WAL file, the offset where the readable records end, the
// bytes dropped and the positions; a store closed cleanly opens without
// the warning.
func TestWALTailCorruption(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		appendTo(t, l, "tail", testEvent(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A clean end: no warning.
	core, logs := observer.New(zapcore.InfoLevel)
	l, err = Open(dir, Options{CacheBytes: 8 << 20, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 {
		t.Fatalf("%d warnings opening a cleanly closed store: %v", n, logs.All())
	}
	for i := 10; i < 20; i++ {
		appendTo(t, l, "tail", testEvent(i))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Damage the last record of the newest WAL: a few bytes in its
	// payload.
	path, num, ok := newestWAL(vfs.Default, dir)
	if !ok {
		t.Fatal("no WAL")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := newRecordReader(record.NewReader, bytes.NewReader(data), num)
	var lastOff int64 = -1
	for {
		off := r.Offset()
		rec, err := r.Next()
		if err != nil {
			break
		}
		if _, err := io.ReadAll(rec); err != nil {
			break
		}
		lastOff = off
	}
	if lastOff < 0 {
		t.Fatal("the newest WAL holds no record")
	}
	for i := lastOff + 30; i < lastOff+34; i++ {
		data[i] ^= 0xff
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}

	core, logs = observer.New(zapcore.InfoLevel)
	l, err = Open(dir, Options{CacheBytes: 8 << 20, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() //nolint:errcheck // read only
	warns := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(warns) != 1 {
		t.Fatalf("%d warnings, want 1 about the WAL: %v", len(warns), logs.All())
	}
	w := warns[0].ContextMap()
	t.Logf("%s %v", warns[0].Message, w)
	if w["wal"] != path {
		t.Errorf("wal %v, want %s", w["wal"], path)
	}
	if got := w["readable_up_to_offset"]; got != lastOff {
		t.Errorf("readable_up_to_offset %v, want %d (the damaged record's)", got, lastOff)
	}
	if got, _ := w["dropped_bytes"].(int64); got <= 0 {
		t.Errorf("dropped_bytes %v, want > 0", w["dropped_bytes"])
	}
	// The durable prefix: every append but the damaged last one.
	if got := l.LastPosition(); got != 19 {
		t.Errorf("recovered to position %d, want 19", got)
	}
	if w["recovered_position"] != uint64(19) || w["last_position_in_readable_wal"] != uint64(19) {
		t.Errorf("positions in the warning: %v, want recovered 19 and 19 in the readable WAL", w)
	}
	evs, err := readStream(t, l, StreamQuery{Stream: "tail"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 19 {
		t.Fatalf("%d events, want 19", len(evs))
	}
	for i, e := range evs {
		if e.ID != testEvent(i).ID {
			t.Fatalf("event %d: id %x, want %x", i, e.ID, testEvent(i).ID)
		}
	}
}
