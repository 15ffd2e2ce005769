package log

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// Fuzz targets of the codecs. Their f.Add seeds run under plain go test;
// `make fuzz` (go test -run=^$ -fuzz=FuzzX) explores further.

// splitTags turns a fuzzed string into a tag list: nil when !has, else
// the comma-separated parts (empty tags included).
func splitTags(has bool, s string) []string {
	if !has {
		return nil
	}
	return strings.Split(s, ",")
}

func FuzzRecordRoundTrip(f *testing.F) {
	f.Add(uint64(16), uint64(0), int64(1), []byte{}, "", "", false, "", []byte(nil), []byte(nil))
	f.Add(uint64(17), uint64(3), int64(1_700_000_000_000_000_000), []byte("0123456789abcdef"), "ProductRenamed",
		"application/json", true, "a,bb,", []byte(`{"user":"u"}`), []byte(`{"name":"x"}`))
	f.Add(uint64(math.MaxUint64), uint64(math.MaxUint64), int64(math.MinInt64), []byte{0xff}, "\x00", "\xff", true, "", []byte{0}, bytes.Repeat([]byte{0xab}, 300))
	f.Add(uint64(1), uint64(7), int64(-1), []byte("short"), strings.Repeat("T", 256), strings.Repeat("c", 200), true,
		strings.Repeat("tag,", 31)+"tag", bytes.Repeat([]byte{1}, 200), []byte{})
	f.Fuzz(func(t *testing.T, sid, rev uint64, created int64, id []byte, typ, ctype string, hasTags bool, tags string, meta, data []byte) {
		ev := Event{Type: typ, ContentType: ctype, Tags: splitTags(hasTags, tags), Metadata: meta, Data: data}
		copy(ev.ID[:], id)
		rec := encodeRecord(nil, sid, rev, &ev)
		if len(rec) > ev.size() {
			t.Fatalf("record of %d bytes, size() says %d", len(rec), ev.size())
		}
		stampRecord(rec, created)
		var v recordView
		if err := decodeRecord(rec, &v); err != nil {
			t.Fatalf("decode of a fresh record: %v", err)
		}
		var got RecordedEvent
		v.materialize(&got, 5, "s")
		want := recordCase{sid: sid, rev: rev, created: created, ev: ev}.wantRecorded(5, "s")
		if diff := gocmp.Diff(want, got, exactBytes); diff != "" {
			t.Fatalf("record round trip (-want +got):\n%s", diff)
		}
		// A second record appended behind the first leaves the first intact.
		two := encodeRecord(append([]byte(nil), rec...), rev, sid, &ev)
		if err := decodeRecord(two[:len(rec)], &v); err != nil || !bytes.Equal(two[:len(rec)], rec) {
			t.Fatalf("first of two records: %v", err)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	valid := encodeRecord(nil, 16, 2, &Event{ID: testEvent(1).ID, Type: "T", ContentType: "c", Tags: []string{"a", ""}, Metadata: []byte("m"), Data: []byte("data")})
	stampRecord(valid, 12345)
	f.Add([]byte(nil), uint32(0), byte(1))
	f.Add(valid, uint32(0), byte(1))
	f.Add(valid, uint32(15), byte(0x80))
	f.Add(valid, uint32(16), byte(0xff))
	f.Add(valid, uint32(len(valid)-1), byte(0x01))
	f.Add(valid[:recordHeaderLen], uint32(47), byte(2))
	f.Add(append(make([]byte, recordHeaderLen), 1, 'T', 0, 200, 1, 'a'), uint32(50), byte(4))
	f.Add(append(make([]byte, recordHeaderLen), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), uint32(3), byte(7))
	f.Add(append(make([]byte, recordHeaderLen), 0x80, 0x00, 0x80, 0x80, 0x00, 0x81, 0x00, 'x', 0, 'd'), uint32(9), byte(9))
	f.Fuzz(func(t *testing.T, raw []byte, flipAt uint32, flipXor byte) {
		// Arbitrary bytes: an error wrapping ErrCorrupt or a record, never a panic.
		var v recordView
		if err := decodeRecord(raw, &v); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decodeRecord: %v does not wrap ErrCorrupt", err)
		}

		// The same bytes with valid checksums reach the field decoding.
		if len(raw) >= recordHeaderLen {
			fixed := append([]byte(nil), raw...)
			resum(fixed)
			err := decodeRecord(fixed, &v)
			if err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeRecord (checksums fixed): %v does not wrap ErrCorrupt", err)
			}
			if err == nil {
				// What decoded encodes again (minimal varints: never longer)
				// and decodes to the same fields.
				var got RecordedEvent
				v.materialize(&got, 1, "s")
				re := encodeRecord(nil, got.StreamID, got.Revision, &got.Event)
				stampRecord(re, got.Created)
				if len(re) > len(fixed) {
					t.Fatalf("re-encoded record of %d bytes from %d", len(re), len(fixed))
				}
				var v2 recordView
				if err := decodeRecord(re, &v2); err != nil {
					t.Fatalf("re-encoded record: %v", err)
				}
				var again RecordedEvent
				v2.materialize(&again, 1, "s")
				if diff := gocmp.Diff(got, again, exactBytes); diff != "" {
					t.Fatalf("decode, encode, decode (-first +second):\n%s", diff)
				}
			}
		}

		// A valid record with any one byte changed fails with ErrCorrupt.
		ev := Event{Type: "T", Data: raw, Metadata: raw[:len(raw)/2], Tags: []string{string(raw[:len(raw)/3])}}
		copy(ev.ID[:], raw)
		rec := encodeRecord(nil, uint64(flipAt), uint64(len(raw)), &ev)
		stampRecord(rec, int64(flipAt)*7)
		if flipXor == 0 {
			flipXor = 1
		}
		i := int(flipAt % uint32(len(rec)))
		rec[i] ^= flipXor
		err := decodeRecord(rec, &v)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record with byte %d ^ %#x: %v, want ErrCorrupt", i, flipXor, err)
		}
		want := "payload checksum"
		if i < 16 {
			want = "header checksum"
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("record with byte %d ^ %#x: %v, want a %s failure", i, flipXor, err, want)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	good := appendState(nil, &StreamState{ID: 16, Name: "product-1", Written: true, Head: 3, LastPosition: 9, Created: 1, Updated: 2})
	f.Add([]byte(nil), uint64(16), false, false, uint64(0), uint64(0), uint64(0), int64(0), int64(0), "")
	f.Add(good, uint64(16), true, false, uint64(3), uint64(0), uint64(9), int64(1), int64(2), "product-1")
	f.Add(good[:len(good)-1], uint64(17), true, true, uint64(3), uint64(4), uint64(9), int64(-1), int64(2), "a")
	f.Add(append([]byte{stateVersion, 0xff}, good[2:]...), uint64(math.MaxUint64), false, true, uint64(math.MaxUint64), uint64(math.MaxUint64), uint64(math.MaxUint64), int64(math.MinInt64), int64(math.MaxInt64), "\xff")
	f.Add([]byte{stateVersion, flagWritten}, uint64(1), true, false, uint64(0), uint64(1), uint64(1), int64(5), int64(5), deletedStreamName)
	f.Fuzz(func(t *testing.T, v []byte, sid uint64, written, tombstoned bool, head, tb, lastPos uint64, created, updated int64, name string) {
		s, err := decodeState(sid, v)
		switch {
		case err != nil && !errors.Is(err, ErrCorrupt):
			t.Fatalf("decodeState(%x): %v does not wrap ErrCorrupt", v, err)
		case err == nil:
			if s.ID != sid || s.Name == "" {
				t.Fatalf("decodeState(%x) = %+v", v, s)
			}
			if re := appendState(nil, &s); !bytes.Equal(re, v) {
				t.Fatalf("decodeState(%x) re-encodes as %x", v, re)
			}
		}

		want := StreamState{ID: sid, Name: name, Written: written, Head: head, TruncateBefore: tb,
			Tombstoned: tombstoned, LastPosition: lastPos, Created: created, Updated: updated}
		enc := appendState([]byte("prefix"), &want)
		got, err := decodeState(sid, enc[len("prefix"):])
		if name == "" { // stream names are never empty; an empty one is damage
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("state with no name: %+v, %v; want ErrCorrupt", got, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if diff := gocmp.Diff(want, got); diff != "" {
			t.Fatalf("state round trip (-want +got):\n%s", diff)
		}
	})
}

func FuzzIndexKeyOrder(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint64(0), uint64(0), []byte{kName, 'b', '-'}, []byte{kName, 'b', '-', '1'})
	f.Add(uint64(16), uint64(255), uint64(16), uint64(256), []byte{0xff}, []byte{0xff, 0x00})
	f.Add(uint64(17), uint64(0), uint64(16), uint64(math.MaxUint64), []byte{kIndex, 0, 0xff}, []byte{kIndex, 1})
	f.Add(uint64(math.MaxUint64-1), uint64(1), uint64(math.MaxUint64), uint64(0), []byte{}, []byte{0})
	f.Add(uint64(1<<56), uint64(1), uint64(1<<56-1), uint64(math.MaxUint64), []byte{'a', 0xff, 0xff}, []byte{'b'})
	f.Fuzz(func(t *testing.T, s1, r1, s2, r2 uint64, prefix, key []byte) {
		want := cmp.Or(cmp.Compare(s1, s2), cmp.Compare(r1, r2))
		if got := bytes.Compare(appendIndexKey(nil, s1, r1), appendIndexKey(nil, s2, r2)); got != want {
			t.Fatalf("index (%d,%d) vs (%d,%d): bytes.Compare %d, want %d", s1, r1, s2, r2, got, want)
		}
		for name, enc := range map[string]func(uint64) []byte{
			"event":   func(x uint64) []byte { return appendEventKey(nil, x) },
			"stream":  func(x uint64) []byte { return appendStreamKey(nil, x) },
			"deleted": func(x uint64) []byte { return appendDeletedKey(nil, x) },
		} {
			if got, want := bytes.Compare(enc(s1), enc(s2)), cmp.Compare(s1, s2); got != want {
				t.Fatalf("%s %d vs %d: bytes.Compare %d, want %d", name, s1, s2, got, want)
			}
		}
		if got, want := bytes.Compare(appendNameKey(nil, string(prefix)), appendNameKey(nil, string(key))), strings.Compare(string(prefix), string(key)); got != want {
			t.Fatalf("name %q vs %q: bytes.Compare %d, want %d", prefix, key, got, want)
		}

		// streamIndexBounds(s1) holds exactly the index keys of s1.
		if s1 != math.MaxUint64 { // never allocated
			lo, hi := streamIndexBounds(s1)
			k := appendIndexKey(nil, s2, r2)
			if in := bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0; in != (s1 == s2) {
				t.Fatalf("streamIndexBounds(%d) holds (%d,%d): %t", s1, s2, r2, in)
			}
			k = appendIndexKey(nil, s1, r2)
			if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
				t.Fatalf("streamIndexBounds(%d) misses revision %d", s1, r2)
			}
		}

		// [prefix, prefixEnd(prefix)) holds exactly the keys with the prefix.
		orig := append([]byte(nil), prefix...)
		end := prefixEnd(prefix)
		if !bytes.Equal(prefix, orig) {
			t.Fatalf("prefixEnd changed its argument %x to %x", orig, prefix)
		}
		in := bytes.Compare(key, prefix) >= 0 && (end == nil || bytes.Compare(key, end) < 0)
		if has := bytes.HasPrefix(key, prefix); in != has {
			t.Fatalf("key %x in [%x, %x) = %t, has prefix = %t", key, prefix, end, in, has)
		}
		if end != nil && (bytes.Compare(end, prefix) <= 0 || bytes.HasPrefix(end, prefix)) {
			t.Fatalf("prefixEnd(%x) = %x", prefix, end)
		}
	})
}

func FuzzDecodeKeys(f *testing.F) {
	for _, k := range [][]byte{
		nil, {}, {kEvent}, appendEventKey(nil, 1), appendIndexKey(nil, 16, 2), appendStreamKey(nil, 16),
		appendDeletedKey(nil, 17), appendNameKey(nil, "product-1"), appendIDKey(nil, testEvent(1).ID),
		appendIDValue(nil, idLoc{sid: 16, rev: 2, pos: 3, first: 1, last: 4}), appendStats(nil, stats{1, 2}), metaFormatKey, metaStatsKey,
		binary.BigEndian.AppendUint64(nil, 42), {kName, 0}, {kStream, 1, 2, 3, 4, 5, 6, 7, 8, 9},
	} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, k []byte) {
		check := func(what string, err error, re func() []byte) {
			t.Helper()
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s(%x): %v does not wrap ErrCorrupt", what, k, err)
				}
				return
			}
			if got := re(); !bytes.Equal(got, k) {
				t.Fatalf("%s(%x) re-encodes as %x", what, k, got)
			}
		}
		pos, err := decodeEventKey(k)
		check("decodeEventKey", err, func() []byte { return appendEventKey(nil, pos) })
		sid, rev, err := decodeIndexKey(k)
		check("decodeIndexKey", err, func() []byte { return appendIndexKey(nil, sid, rev) })
		ssid, err := decodeStreamKey(k)
		check("decodeStreamKey", err, func() []byte {
			if k[0] == kDeleted {
				return appendDeletedKey(nil, ssid)
			}
			return appendStreamKey(nil, ssid)
		})
		name, err := decodeNameKey(k)
		check("decodeNameKey", err, func() []byte { return appendNameKey(nil, name) })
		if err == nil && name == "" {
			t.Fatalf("decodeNameKey(%x) gave an empty name", k)
		}
		x, err := decodeU64(k)
		check("decodeU64", err, func() []byte { return binary.BigEndian.AppendUint64(nil, x) })
		loc, err := decodeIDValue(k)
		check("decodeIDValue", err, func() []byte { return appendIDValue(nil, loc) })
		st, err := decodeStats(k)
		check("decodeStats", err, func() []byte { return appendStats(nil, st) })
	})
}

// FuzzDecodeIndexValues: the value decoders of the stream, category and
// type indexes answer arbitrary bytes with an error wrapping ErrCorrupt
// or with a range that does not wrap and re-encodes as the same bytes; a
// category value is a copy exactly when it is as long as a record, and
// neither a range nor a record can pass for the other.
func FuzzDecodeIndexValues(f *testing.F) {
	f.Add(uint64(0), []byte(nil), "T", []byte("data"))
	f.Add(uint64(5), appendIndexValue(nil, 1, 100), "", []byte{})
	f.Add(uint64(9), appendCategoryRange(nil, 8), "Type", []byte{0xff})
	f.Add(uint64(9), binary.AppendUvarint(nil, 300), "x", bytes.Repeat([]byte{'r'}, 60))
	f.Add(uint64(math.MaxUint64), appendIndexValue(nil, math.MaxUint64, 1), "", []byte(nil))
	f.Add(uint64(1), append(binary.BigEndian.AppendUint64(nil, 1), 0x81, 0x00), "", []byte(nil))
	f.Add(uint64(1), []byte{catRangeTag, 0x80, 0x80, 0x01}, "", []byte(nil))
	f.Fuzz(func(t *testing.T, at uint64, v []byte, typ string, data []byte) {
		corrupt := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s(%d, %x): %v does not wrap ErrCorrupt", what, at, v, err)
			}
		}
		if r, err := decodeIndexValue(at, v); err != nil {
			corrupt("decodeIndexValue", err)
		} else {
			if r.firstRev != at || r.count == 0 || r.lastRev() < r.firstRev || r.pos(r.lastRev()) < r.firstPos || r.firstPos == 0 {
				t.Fatalf("decodeIndexValue(%d, %x) = %+v", at, v, r)
			}
			if re := appendIndexValue(nil, r.firstPos, r.count); !bytes.Equal(re, v) {
				t.Fatalf("decodeIndexValue(%d, %x) re-encodes as %x", at, v, re)
			}
		}
		if rec, count, err := decodeCategoryValue(at, v); err != nil {
			corrupt("decodeCategoryValue", err)
			if len(v) >= recordHeaderLen {
				t.Fatalf("decodeCategoryValue refused %d bytes, a record's length", len(v))
			}
		} else if rec != nil {
			if len(v) < recordHeaderLen || count != 1 || !bytes.Equal(rec, v) {
				t.Fatalf("decodeCategoryValue(%x) = a copy of %x, %d events", v, rec, count)
			}
		} else {
			if len(v) >= recordHeaderLen || count == 0 || at == 0 || at+count-1 < at {
				t.Fatalf("decodeCategoryValue(%d, %x) = a range of %d", at, v, count)
			}
			if re := appendCategoryRange(nil, count); !bytes.Equal(re, v) {
				t.Fatalf("decodeCategoryValue(%x) re-encodes as %x", v, re)
			}
		}
		if count, err := decodeRunCount(at, v); err != nil {
			corrupt("decodeRunCount", err)
		} else {
			if count == 0 || at == 0 || at+count-1 < at {
				t.Fatalf("decodeRunCount(%d, %x) = %d", at, v, count)
			}
			if re := binary.AppendUvarint(nil, count); !bytes.Equal(re, v) {
				t.Fatalf("decodeRunCount(%x) re-encodes as %x", v, re)
			}
		}

		// What the log writes is read back as what it is: a range as a
		// range, a record (however small) as a copy.
		if n := uint64(len(data)) << (len(typ) % 64); at > 0 && n > 0 && at+n-1 >= at {
			if rec, count, err := decodeCategoryValue(at, appendCategoryRange(nil, n)); err != nil || rec != nil || count != n {
				t.Fatalf("a range of %d at %d read as %x, %d, %v", n, at, rec, count, err)
			}
		}
		ev := Event{Type: typ, Data: data}
		rec := encodeRecord(nil, at, at, &ev)
		if got, count, err := decodeCategoryValue(at, rec); err != nil || count != 1 || !bytes.Equal(got, rec) {
			t.Fatalf("a record of %d bytes read as a category value: %d events, %v", len(rec), count, err)
		}
	})
}
