package log

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// Table tests of the on-disk codecs (keys.go, record.go, state.go): every
// encoder round-trips through its decoder, byte order of keys is the order
// of the values they encode, and every decoder answers bad input with a
// wrapped ErrCorrupt.

func TestCodecKeysRoundTrip(t *testing.T) {
	u64s := []uint64{0, 1, 15, 16, 255, 256, 1 << 32, math.MaxUint64 - 1, math.MaxUint64}
	t.Run("event", func(t *testing.T) {
		for _, pos := range u64s {
			k := appendEventKey(nil, pos)
			if len(k) != 9 || k[0] != kEvent {
				t.Fatalf("event key %x", k)
			}
			got, err := decodeEventKey(k)
			if err != nil || got != pos {
				t.Fatalf("decodeEventKey(%x) = %d, %v; want %d", k, got, err, pos)
			}
		}
	})
	t.Run("index", func(t *testing.T) {
		for _, sid := range u64s {
			for _, rev := range u64s {
				k := appendIndexKey(nil, sid, rev)
				if len(k) != 17 || k[0] != kIndex {
					t.Fatalf("index key %x", k)
				}
				s, r, err := decodeIndexKey(k)
				if err != nil || s != sid || r != rev {
					t.Fatalf("decodeIndexKey(%x) = %d, %d, %v; want %d, %d", k, s, r, err, sid, rev)
				}
			}
		}
	})
	t.Run("stream and deleted", func(t *testing.T) {
		for _, sid := range u64s {
			for _, k := range [][]byte{appendStreamKey(nil, sid), appendDeletedKey(nil, sid)} {
				got, err := decodeStreamKey(k)
				if err != nil || got != sid {
					t.Fatalf("decodeStreamKey(%x) = %d, %v; want %d", k, got, err, sid)
				}
			}
			if k := appendStreamKey(nil, sid); k[0] != kStream {
				t.Fatalf("stream key %x", k)
			}
			if k := appendDeletedKey(nil, sid); k[0] != kDeleted {
				t.Fatalf("deleted key %x", k)
			}
		}
	})
	t.Run("name", func(t *testing.T) {
		for _, name := range []string{"a", "product-42", "$deleted", "ünïcödé-名前", strings.Repeat("x", 512), "a\x00b", "\xff\xff"} {
			k := appendNameKey(nil, name)
			if k[0] != kName || string(k[1:]) != name {
				t.Fatalf("name key %x", k)
			}
			got, err := decodeNameKey(k)
			if err != nil || got != name {
				t.Fatalf("decodeNameKey(%x) = %q, %v; want %q", k, got, err, name)
			}
		}
	})
	t.Run("id", func(t *testing.T) {
		for _, id := range [][16]byte{{}, {1}, {15: 1}, testEvent(7).ID, NewEventID()} {
			k := appendIDKey(nil, id)
			if len(k) != 17 || k[0] != kID || !bytes.Equal(k[1:], id[:]) {
				t.Fatalf("id key %x of %x", k, id)
			}
		}
	})
	t.Run("id value", func(t *testing.T) {
		for _, sid := range u64s {
			l := idLoc{sid: sid, rev: sid / 3, pos: math.MaxUint64 - sid, first: sid / 4, last: sid / 2}
			v := appendIDValue(nil, l)
			got, err := decodeIDValue(v)
			if err != nil || got != l {
				t.Fatalf("decodeIDValue(%x) = %+v, %v; want %+v", v, got, err, l)
			}
		}
	})
	t.Run("u64 value", func(t *testing.T) {
		for _, x := range u64s {
			got, err := decodeU64(binary.BigEndian.AppendUint64(nil, x))
			if err != nil || got != x {
				t.Fatalf("decodeU64 = %d, %v; want %d", got, err, x)
			}
		}
	})
	t.Run("appends to dst", func(t *testing.T) {
		dst := make([]byte, 0, 64)
		dst = append(dst, 'p')
		k := appendIndexKey(dst, 7, 9)
		if &k[0] != &dst[:1][0] || k[0] != 'p' || !bytes.Equal(k[1:], appendIndexKey(nil, 7, 9)) {
			t.Fatalf("appendIndexKey did not append in place: %x", k)
		}
		if n := testing.AllocsPerRun(100, func() { _ = appendIndexKey(dst[:0], 7, 9) }); n != 0 {
			t.Fatalf("appendIndexKey allocates %v times with room in dst", n)
		}
	})
}

func TestCodecKeyDecodersRejectBadInput(t *testing.T) {
	good := map[string][]byte{
		"event": appendEventKey(nil, 5), "index": appendIndexKey(nil, 5, 6),
		"stream": appendStreamKey(nil, 5), "name": appendNameKey(nil, "n"),
	}
	tests := []struct {
		name   string
		decode func([]byte) error
		bad    [][]byte
	}{
		{"event", func(k []byte) error { _, err := decodeEventKey(k); return err }, [][]byte{
			nil, {}, {kEvent}, good["event"][:8], append(appendEventKey(nil, 5), 0), appendStreamKey(nil, 5), good["index"][:9],
		}},
		{"index", func(k []byte) error { _, _, err := decodeIndexKey(k); return err }, [][]byte{
			nil, {kIndex}, good["index"][:16], append(appendIndexKey(nil, 5, 6), 0), append([]byte{kEvent}, good["index"][1:]...),
		}},
		{"stream", func(k []byte) error { _, err := decodeStreamKey(k); return err }, [][]byte{
			nil, {kStream}, good["stream"][:8], append(appendStreamKey(nil, 5), 0), appendEventKey(nil, 5), append([]byte{kID}, good["stream"][1:]...),
		}},
		{"name", func(k []byte) error { _, err := decodeNameKey(k); return err }, [][]byte{
			nil, {kName}, {kStream, 'a'}, {kMeta, 'a'},
		}},
		{"u64", func(v []byte) error { _, err := decodeU64(v); return err }, [][]byte{
			nil, make([]byte, 7), make([]byte, 9), make([]byte, 16),
		}},
		{"id value", func(v []byte) error { _, err := decodeIDValue(v); return err }, [][]byte{
			nil, make([]byte, 16), make([]byte, 23), make([]byte, 25),
		}},
		{"stats", func(v []byte) error { _, err := decodeStats(v); return err }, [][]byte{
			nil, make([]byte, 8), make([]byte, 15), make([]byte, 17),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, b := range tc.bad {
				if err := tc.decode(b); !errors.Is(err, ErrCorrupt) {
					t.Errorf("decode(%x) = %v, want ErrCorrupt", b, err)
				}
			}
		})
	}
}

func TestCodecStatsRoundTrip(t *testing.T) {
	for _, s := range []stats{{}, {streams: 1, events: 2}, {streams: math.MaxUint64, events: math.MaxUint64 - 1}} {
		v := appendStats(nil, s)
		if len(v) != 16 {
			t.Fatalf("stats of %d bytes", len(v))
		}
		got, err := decodeStats(v)
		if err != nil || got != s {
			t.Fatalf("decodeStats(%x) = %+v, %v; want %+v", v, got, err, s)
		}
	}
}

func TestCodecStateRoundTrip(t *testing.T) {
	tests := []StreamState{
		{ID: 16, Name: "n"},
		{ID: 17, Name: "product-42", Written: true, Head: 9, LastPosition: 120, Created: 1, Updated: 2},
		{ID: 18, Name: "deleted", Written: true, Head: 9, TruncateBefore: 10, LastPosition: 121, Created: 3, Updated: 4},
		{ID: 19, Name: "tombstoned-never-written", Tombstoned: true, LastPosition: 5, Updated: 7},
		{ID: 20, Name: "tombstoned", Written: true, Tombstoned: true, Head: 3, TruncateBefore: 4, LastPosition: 9, Created: 1, Updated: 9},
		{ID: 1, Name: deletedStreamName, Written: true, Head: 2, LastPosition: 8, Created: 5, Updated: 8},
		{ID: math.MaxUint64 - 1, Name: strings.Repeat("é", 256), Written: true, Head: math.MaxUint64 - 1, TruncateBefore: math.MaxUint64,
			LastPosition: math.MaxUint64, Created: math.MinInt64, Updated: math.MaxInt64},
		{ID: 21, Name: "negative times", Written: true, Created: -1, Updated: -2},
	}
	for _, s := range tests {
		t.Run(s.Name[:min(len(s.Name), 24)], func(t *testing.T) {
			v := appendState(nil, &s)
			got, err := decodeState(s.ID, v)
			if err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(s, got); diff != "" {
				t.Fatalf("state round trip (-want +got):\n%s", diff)
			}
			// The id lives in the key: decoding under another id gives that id.
			if got, err := decodeState(s.ID+1, v); err != nil || got.ID != s.ID+1 {
				t.Fatalf("decode under another id: %+v, %v", got, err)
			}
		})
	}
}

func TestCodecStateMethods(t *testing.T) {
	tests := []struct {
		name            string
		s               StreamState
		exists, deleted bool
		next, count     uint64
	}{
		{"never written", StreamState{}, false, false, 0, 0},
		{"one event", StreamState{Written: true}, true, false, 1, 1},
		{"ten events", StreamState{Written: true, Head: 9}, true, false, 10, 10},
		{"soft deleted", StreamState{Written: true, Head: 9, TruncateBefore: 10}, false, true, 10, 0},
		{"appended after delete", StreamState{Written: true, Head: 12, TruncateBefore: 10}, true, false, 13, 3},
		{"tombstoned", StreamState{Written: true, Head: 9, TruncateBefore: 10, Tombstoned: true}, false, false, 10, 0},
		{"tombstoned never written", StreamState{Tombstoned: true}, false, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			if s.Exists() != tc.exists || s.Deleted() != tc.deleted || s.NextRevision() != tc.next || s.EventCount() != tc.count {
				t.Fatalf("exists %t deleted %t next %d count %d; want %t %t %d %d",
					s.Exists(), s.Deleted(), s.NextRevision(), s.EventCount(), tc.exists, tc.deleted, tc.next, tc.count)
			}
		})
	}
}

func TestCodecStateDecodeRejectsBadInput(t *testing.T) {
	good := appendState(nil, &StreamState{ID: 16, Name: "n", Written: true})
	withFlags := func(f byte) []byte {
		v := append([]byte(nil), good...)
		v[1] = f
		return v
	}
	tests := []struct {
		name string
		v    []byte
	}{
		{"nil", nil},
		{"version only", []byte{stateVersion}},
		{"wrong version", append([]byte{stateVersion + 1}, good[1:]...)},
		{"version zero", append([]byte{0}, good[1:]...)},
		{"short fixed fields", good[:2+8*5-1]},
		{"no name", good[:2+8*5]},
		{"unknown flag", withFlags(flagWritten | 1<<2)},
		{"high flag", withFlags(0x80)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := decodeState(16, tc.v); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeState(%x) = %+v, %v; want ErrCorrupt", tc.v, s, err)
			}
		})
	}
}

// exactBytes compares byte slices fast (cmp's per-byte diff of a 1 MiB
// payload takes seconds) and tells nil from empty.
var exactBytes = gocmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) && (a == nil) == (b == nil) })

// recordCase is an event and where it is stored, for record tests.
type recordCase struct {
	name     string
	sid, rev uint64
	created  int64
	ev       Event
}

func recordCases() []recordCase {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	return []recordCase{
		{"empty fields", 16, 0, 1, Event{}},
		{"typical", 17, 3, 1_700_000_000_000_000_000, Event{ID: testEvent(1).ID, Type: "ProductRenamed",
			ContentType: "application/json", Tags: []string{"a", "bb"}, Metadata: []byte(`{"user":"u"}`), Data: []byte(`{"name":"x"}`)}},
		{"tags only", 18, 1, 2, Event{Type: "T", Tags: []string{"one", "", "three", strings.Repeat("t", 128)}}},
		{"32 tags", 18, 2, 3, Event{Type: "T", Tags: strings.Split(strings.Repeat("tag,", 31)+"tag", ",")}},
		{"metadata no data", 19, 0, 4, Event{Type: "T", Metadata: []byte{0, 1, 2}}},
		{"data no metadata", 19, 1, 5, Event{Type: "T", Data: []byte{0xff, 0, 0xfe}}},
		{"large data", 20, 1 << 40, math.MaxInt64, Event{ID: [16]byte{0xff, 15: 0xff}, Type: strings.Repeat("T", 256),
			ContentType: strings.Repeat("c", 256), Metadata: big[:64<<10], Data: big}},
		{"extreme numbers", math.MaxUint64 - 1, math.MaxUint64, math.MinInt64, Event{Type: "x"}},
		{"negative time", 1, 0, -1, Event{Type: "$stream-deleted", ContentType: "application/json", Data: []byte(`{}`)}},
		{"binary strings", 21, 0, 7, Event{Type: "\x00\xff", ContentType: "\x80", Tags: []string{"\x00"}, Data: []byte{}}},
	}
}

// wantRecorded is what materialize must give for a record of c (empty
// slices read back as nil).
func (c recordCase) wantRecorded(pos uint64, stream string) RecordedEvent {
	ev := c.ev
	ev.Data, ev.Metadata = cloneBytes(ev.Data), cloneBytes(ev.Metadata)
	if len(ev.Tags) == 0 {
		ev.Tags = nil
	}
	return RecordedEvent{Event: ev, StreamID: c.sid, Stream: stream, Revision: c.rev, Position: pos, Created: c.created}
}

func TestCodecRecordRoundTrip(t *testing.T) {
	for _, tc := range recordCases() {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("previous record")
			buf := encodeRecord(append([]byte(nil), prefix...), tc.sid, tc.rev, &tc.ev)
			if !bytes.Equal(buf[:len(prefix)], prefix) {
				t.Fatal("encodeRecord changed the bytes before dst's end")
			}
			rec := buf[len(prefix):]
			if len(rec) > tc.ev.size() {
				t.Fatalf("record of %d bytes, size() says %d", len(rec), tc.ev.size())
			}
			// Unstamped: the payload checksum holds, the header one not yet
			// (unless by chance), and the commit time is zero.
			if binary.BigEndian.Uint64(rec[4:12]) != 0 {
				t.Fatal("encodeRecord set a commit time")
			}
			stampRecord(rec, tc.created)
			var v recordView
			if err := decodeRecord(rec, &v); err != nil {
				t.Fatal(err)
			}
			var got RecordedEvent
			v.materialize(&got, 99, "s")
			if diff := gocmp.Diff(tc.wantRecorded(99, "s"), got, exactBytes); diff != "" {
				t.Fatalf("record round trip (-want +got):\n%s", diff)
			}
			// materialize copies: changing the record does not change the event.
			for i := range rec {
				rec[i] ^= 0xff
			}
			if diff := gocmp.Diff(tc.wantRecorded(99, "s"), got, exactBytes); diff != "" {
				t.Fatalf("materialized event aliases the record (-want +got):\n%s", diff)
			}
			// Stamping again (a retried commit) gives a valid record with the new time.
			for i := range rec {
				rec[i] ^= 0xff
			}
			stampRecord(rec, tc.created^1)
			if err := decodeRecord(rec, &v); err != nil || v.created != tc.created^1 {
				t.Fatalf("restamped: created %d, %v", v.created, err)
			}
		})
	}
}

// TestCodecRecordViewReuse decodes records of different shapes into one
// view, as the read loops do: nothing of an earlier record may leak.
func TestCodecRecordViewReuse(t *testing.T) {
	var v recordView
	cases := recordCases()
	for i := range 3 * len(cases) {
		tc := cases[(i*7)%len(cases)]
		rec := encodeRecord(nil, tc.sid, tc.rev, &tc.ev)
		stampRecord(rec, tc.created)
		if err := decodeRecord(rec, &v); err != nil {
			t.Fatal(err)
		}
		var got RecordedEvent
		v.materialize(&got, 1, "s")
		if diff := gocmp.Diff(tc.wantRecorded(1, "s"), got, exactBytes); diff != "" {
			t.Fatalf("%s after reuse (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestCodecRecordEveryByteFlipped flips each byte of records: both
// checksums together must catch every single-byte error, the header's for
// bytes [0:16) and the payload's for the rest.
func TestCodecRecordEveryByteFlipped(t *testing.T) {
	for _, tc := range recordCases() {
		if len(tc.ev.Data) > 4096 {
			continue // the small cases cover every field; a flip per byte of 1 MiB is slow
		}
		t.Run(tc.name, func(t *testing.T) {
			rec := encodeRecord(nil, tc.sid, tc.rev, &tc.ev)
			stampRecord(rec, tc.created)
			for i := range rec {
				for _, x := range []byte{0x01, 0x80, 0xff} {
					rec[i] ^= x
					var v recordView
					err := decodeRecord(rec, &v)
					rec[i] ^= x
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("byte %d ^ %#x: %v, want ErrCorrupt", i, x, err)
					}
					want := "payload checksum"
					if i < 16 {
						want = "header checksum"
					}
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("byte %d ^ %#x: %v, want a %s failure", i, x, err, want)
					}
				}
			}
			var v recordView
			if err := decodeRecord(rec, &v); err != nil {
				t.Fatalf("restored record: %v", err)
			}
		})
	}
}

// resum recomputes both checksums of rec (len >= recordHeaderLen), so that
// tests reach the field decoding behind them.
func resum(rec []byte) {
	binary.BigEndian.PutUint32(rec[12:16], crc32.Checksum(rec[16:], castagnoli))
	binary.BigEndian.PutUint32(rec[0:4], crc32.Checksum(rec[4:16], castagnoli))
}

func TestCodecRecordDecodeRejectsBadInput(t *testing.T) {
	hdr := func(body ...byte) []byte {
		rec := append(make([]byte, recordHeaderLen), body...)
		resum(rec)
		return rec
	}
	valid := encodeRecord(nil, 16, 0, &Event{Type: "T", Tags: []string{"a"}, Metadata: []byte("m")})
	stampRecord(valid, 1)
	tests := []struct {
		name string
		rec  []byte
	}{
		{"nil", nil},
		{"short header", valid[:recordHeaderLen-1]},
		{"header only", hdr()},
		{"truncated", valid[:len(valid)-1]},
		{"extended", append(append([]byte(nil), valid...), 0)},
		{"type longer than record", hdr(10, 'a')},
		{"overlong varint", hdr(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
		{"varint cut short", hdr(0x80)},
		{"no content type", hdr(1, 'T')},
		{"no tag count", hdr(1, 'T', 0)},
		{"too many tags", hdr(1, 'T', 0, 100, 0, 0)},
		{"huge tag count", hdr(1, 'T', 0, 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"tag longer than record", hdr(1, 'T', 0, 1, 5, 'a')},
		{"no metadata length", hdr(1, 'T', 0, 1, 1, 'a')},
		{"metadata longer than record", hdr(1, 'T', 0, 0, 3, 'm')},
		{"length 2^64-1", hdr(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v recordView
			if err := decodeRecord(tc.rec, &v); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeRecord(%x) = %v, want ErrCorrupt", tc.rec, err)
			}
		})
	}
	// The smallest valid body: every length zero, no data.
	var v recordView
	if err := decodeRecord(hdr(0, 0, 0, 0), &v); err != nil {
		t.Fatalf("empty fields: %v", err)
	}
}

// TestOrderIndexKeys: byte order of index keys is (sid, rev) order, and
// event keys are in position order.
func TestOrderIndexKeys(t *testing.T) {
	vals := []uint64{0, 1, 2, 255, 256, 257, 1 << 31, 1 << 32, 1<<56 - 1, 1 << 56, math.MaxUint64 - 1, math.MaxUint64}
	for _, s1 := range vals {
		for _, r1 := range vals {
			for _, s2 := range vals {
				for _, r2 := range vals {
					want := cmp.Or(cmp.Compare(s1, s2), cmp.Compare(r1, r2))
					if got := bytes.Compare(appendIndexKey(nil, s1, r1), appendIndexKey(nil, s2, r2)); got != want {
						t.Fatalf("index (%d,%d) vs (%d,%d): bytes.Compare %d, want %d", s1, r1, s2, r2, got, want)
					}
				}
			}
			if got, want := bytes.Compare(appendEventKey(nil, s1), appendEventKey(nil, r1)), cmp.Compare(s1, r1); got != want {
				t.Fatalf("event %d vs %d: bytes.Compare %d, want %d", s1, r1, got, want)
			}
		}
	}
}

// TestOrderKeySpacesDisjoint: the key spaces never interleave, so a scan
// bounded by prefixes sees one kind of key.
func TestOrderKeySpacesDisjoint(t *testing.T) {
	spaces := [][]byte{
		metaFormatKey, metaStatsKey,
		appendEventKey(nil, 0), appendEventKey(nil, math.MaxUint64),
		appendIndexKey(nil, 0, 0), appendIndexKey(nil, math.MaxUint64, math.MaxUint64),
		appendNameKey(nil, "\x00"), appendNameKey(nil, strings.Repeat("\xff", 512)),
		appendStreamKey(nil, 0), appendStreamKey(nil, math.MaxUint64),
		appendIDKey(nil, [16]byte{}), appendIDKey(nil, [16]byte{0: 0xff, 15: 0xff}),
		appendDeletedKey(nil, 0), appendDeletedKey(nil, math.MaxUint64),
	}
	for i := 1; i < len(spaces); i++ {
		if bytes.Compare(spaces[i-1], spaces[i]) >= 0 {
			t.Fatalf("key %x sorts before %x", spaces[i], spaces[i-1])
		}
		// spaces[i-1] is the greatest key of its space when i is even:
		// the next space starts at or after the end of its prefix.
		if last, first := spaces[i-1], spaces[i]; i%2 == 0 && bytes.Compare(first, prefixEnd(last[:1])) < 0 {
			t.Fatalf("key %x below the end of the space of %x", first, last)
		}
	}
}

func TestOrderPrefixEnd(t *testing.T) {
	tests := []struct {
		prefix, want []byte
	}{
		{nil, nil},
		{[]byte{}, nil},
		{[]byte{0x00}, []byte{0x01}},
		{[]byte{0x02, 0x05}, []byte{0x02, 0x06}},
		{[]byte{0x02, 0xff}, []byte{0x03}},
		{[]byte{0x02, 0xff, 0xff}, []byte{0x03}},
		{[]byte{0xff}, nil},
		{[]byte{0xff, 0xff}, nil},
		{[]byte{0x03, 'a', 0xfe}, []byte{0x03, 'a', 0xff}},
	}
	for _, tc := range tests {
		in := append([]byte(nil), tc.prefix...)
		got := prefixEnd(in)
		if !bytes.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("prefixEnd(%x) = %x, want %x", tc.prefix, got, tc.want)
		}
		if !bytes.Equal(in, tc.prefix) {
			t.Errorf("prefixEnd changed its argument to %x", in)
		}
	}
	// Exactly the keys starting with the prefix lie in [prefix, end).
	for _, p := range []string{"b-", "a", "\xff", "b\xff", ""} {
		prefix := appendNameKey(nil, p)
		end := prefixEnd(prefix)
		for _, name := range []string{"", "a", "a\x00", "a\xff", "b", "b-", "b-1", "b-\xff\xff", "b.", "b,", "b\xff", "b\xff\x00", "c", "\xff", "\xff\xff"} {
			k := appendNameKey(nil, name)
			in := bytes.Compare(k, prefix) >= 0 && (end == nil || bytes.Compare(k, end) < 0)
			if want := strings.HasPrefix(name, p); in != want {
				t.Errorf("name %q in [%x, %x) = %t, has prefix %q = %t", name, prefix, end, in, p, want)
			}
		}
	}
}

func TestOrderStreamIndexBounds(t *testing.T) {
	for _, sid := range []uint64{0, 1, 16, 255, 256, 1 << 40, math.MaxUint64 - 1} {
		lo, hi := streamIndexBounds(sid)
		for _, s := range []uint64{sid - 1, sid, sid + 1, 0, math.MaxUint64} {
			for _, r := range []uint64{0, 1, 1 << 20, math.MaxUint64} {
				k := appendIndexKey(nil, s, r)
				in := bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0
				if in != (s == sid) {
					t.Fatalf("streamIndexBounds(%d) holds (%d,%d): %t", sid, s, r, in)
				}
			}
		}
		// The bounds hold no key of another space.
		for _, k := range [][]byte{appendEventKey(nil, math.MaxUint64), appendStreamKey(nil, sid), appendNameKey(nil, "x")} {
			if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
				t.Fatalf("streamIndexBounds(%d) holds %x", sid, k)
			}
		}
	}
}

func TestCodecFormatID(t *testing.T) {
	id := [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10}
	if got, want := FormatID(id), "01234567-89ab-cdef-fedc-ba9876543210"; got != want {
		t.Fatalf("FormatID = %s, want %s", got, want)
	}
	// Server-made ids are UUIDv7 with the RFC 9562 variant, and distinct.
	seen := make(map[[16]byte]bool)
	for range 1000 {
		id := NewEventID()
		if id[6]>>4 != 7 || id[8]>>6 != 2 {
			t.Fatalf("NewEventID %s is not a UUIDv7", FormatID(id))
		}
		if seen[id] {
			t.Fatalf("NewEventID repeated %s", FormatID(id))
		}
		seen[id] = true
	}
}

// The values of the stream, category and type indexes: each encoder
// round-trips through its decoder, which checks the range against the
// key's revision or position.
func TestCodecIndexValuesRoundTrip(t *testing.T) {
	tests := []struct {
		name                      string
		firstRev, firstPos, count uint64
		size                      int // the stream index value's bytes
	}{
		{"one event", 0, 1, 1, 9},
		{"an append of 100", 7, 1000, 100, 9},
		{"127 events: one count byte", 0, 1, 127, 9},
		{"128 events: two count bytes", 0, 1, 128, 10},
		{"16384 events: three", 5, 1 << 40, 16384, 11},
		{"up to the last revision and position", math.MaxUint64 - 9, math.MaxUint64 - 9, 10, 9},
		{"a count as large as a uint64 allows", 0, 1, math.MaxUint64, 18},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := appendIndexValue(nil, tc.firstPos, tc.count)
			if len(v) != tc.size {
				t.Fatalf("index value %x: %d bytes, want %d", v, len(v), tc.size)
			}
			r, err := decodeIndexValue(tc.firstRev, v)
			want := revRange{firstRev: tc.firstRev, firstPos: tc.firstPos, count: tc.count}
			if err != nil || r != want {
				t.Fatalf("decodeIndexValue(%d, %x) = %+v, %v; want %+v", tc.firstRev, v, r, err, want)
			}
			if r.lastRev() != tc.firstRev+tc.count-1 || r.pos(r.lastRev()) != tc.firstPos+tc.count-1 || r.pos(tc.firstRev) != tc.firstPos {
				t.Fatalf("range %+v: last revision %d, its position %d", r, r.lastRev(), r.pos(r.lastRev()))
			}
			sid, r2, err := decodeIndexEntry(appendIndexKey(nil, 16, tc.firstRev), v)
			if err != nil || sid != 16 || r2 != want {
				t.Fatalf("decodeIndexEntry = %d, %+v, %v", sid, r2, err)
			}

			if tc.firstPos+tc.count-1 >= tc.firstPos { // a count the position allows
				cv := appendCategoryRange(nil, tc.count)
				rec, n, err := decodeCategoryValue(tc.firstPos, cv)
				if err != nil || rec != nil || n != tc.count || len(cv) >= recordHeaderLen {
					t.Fatalf("category range %x: %x, %d, %v", cv, rec, n, err)
				}
				n, err = decodeRunCount(tc.firstPos, binary.AppendUvarint(nil, tc.count))
				if err != nil || n != tc.count {
					t.Fatalf("decodeRunCount: %d, %v", n, err)
				}
			}
		})
	}
	t.Run("category copy", func(t *testing.T) {
		for _, c := range recordCases() {
			rec := encodeRecord(nil, c.sid, c.rev, &c.ev)
			got, n, err := decodeCategoryValue(3, rec)
			if err != nil || n != 1 || !bytes.Equal(got, rec) {
				t.Fatalf("%s: a record read as a category value: %d events, %v", c.name, n, err)
			}
		}
	})
}

func TestCodecIndexValueDecodersRejectBadInput(t *testing.T) {
	pos := func(p uint64, count ...byte) []byte { return append(binary.BigEndian.AppendUint64(nil, p), count...) }
	tests := []struct {
		name   string
		decode func([]byte) error
		bad    [][]byte
	}{
		{"stream index value at revision 5", func(v []byte) error { _, err := decodeIndexValue(5, v); return err }, [][]byte{
			nil, pos(1)[:7], pos(1), // no count
			pos(1, 0),          // count 0
			pos(1, 0x81, 0x00), // a count not in its shortest form
			pos(1, 0x80),       // a truncated count
			pos(1, 1, 1),       // a byte after the count
			pos(0, 1),          // position 0
			pos(math.MaxUint64, 2),
			pos(1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), // revisions 5.. wrap
			pos(1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), // not a uint64
		}},
		{"category value at position 9", func(v []byte) error { _, _, err := decodeCategoryValue(9, v); return err }, [][]byte{
			nil, {}, {catRangeTag}, {catRangeTag, 0}, {catRangeTag, 0x81, 0}, {catRangeTag, 1, 1}, {'x', 1}, {0, 1},
			make([]byte, recordHeaderLen-1), // neither a record nor a range
			append([]byte{catRangeTag}, binary.AppendUvarint(nil, math.MaxUint64)...),
		}},
		{"type value at position 9", func(v []byte) error { _, err := decodeRunCount(9, v); return err }, [][]byte{
			nil, {}, {0}, {0x80}, {0x81, 0}, {1, 1}, binary.AppendUvarint(nil, math.MaxUint64-7),
		}},
		{"type value at position 0", func(v []byte) error { _, err := decodeRunCount(0, v); return err }, [][]byte{{1}}},
		{"stream index entry", func(v []byte) error { _, _, err := decodeIndexEntry(v[:len(v)-9], v[len(v)-9:]); return err }, [][]byte{
			append(appendIndexKey(nil, 16, 0)[:16], pos(1, 1)...), // a short key
			append(appendStreamKey(nil, 16), pos(1, 1)...),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, b := range tc.bad {
				if err := tc.decode(b); !errors.Is(err, ErrCorrupt) {
					t.Errorf("decode(%x) = %v, want ErrCorrupt", b, err)
				}
			}
		})
	}
}
