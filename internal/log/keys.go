package log

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Key spaces, as doc.go lists them (TestDocListsKeySpaces). One prefix
// byte each; integers are fixed-width big-endian so that byte order
// equals numeric order. A prefix is never reused.
const (
	kMeta     byte = 0x00 // 0x00 name                  -> format version, stats
	kEvent    byte = 0x01 // 0x01 pos(8)                -> event record (see record.go)
	kIndex    byte = 0x02 // 0x02 sid(8) firstRev(8)    -> firstPos(8) count(uvarint): one append's revisions
	kName     byte = 0x03 // 0x03 stream-name bytes     -> sid(8)
	kStream   byte = 0x04 // 0x04 sid(8)                -> stream state (see state.go)
	kID       byte = 0x05 // 0x05 event-id(16)          -> sid(8) rev(8) pos(8) first(8) last(8) (idLoc)
	kDeleted  byte = 0x06 // 0x06 sid(8)                -> empty: the stream has deleted events
	kCategory byte = 0x07 // 0x07 category 0x00 pos(8)  -> event record (a copy), or 'r' count(uvarint) (index.go)
	kType     byte = 0x08 // 0x08 type 0x00 pos(8)      -> count(uvarint): a run of events of the type (index.go)
	kAux      byte = 0x09 // 0x09 namespace-prefix key  -> a namespace's value (auxspace.go, namespaces.go)
)

// Meta keys.
var (
	metaFormatKey = []byte{kMeta, 'f', 'o', 'r', 'm', 'a', 't'}
	metaStatsKey  = []byte{kMeta, 's', 't', 'a', 't', 's'}
)

// formatVersion is the on-disk format this code writes and reads. Open
// refuses a store of another version rather than misreading it; there is
// no migration between versions.
//
//	2: category and type indexes
//	3: one stream-index entry per append (a revision range), one
//	   category-index entry per append of categoryRangeMin events or more,
//	   one type-index entry per run of events of one type
const formatVersion uint32 = 3

func appendEventKey(dst []byte, pos uint64) []byte {
	dst = append(dst, kEvent)
	return binary.BigEndian.AppendUint64(dst, pos)
}

// appendIndexKey appends the index key to dst and returns it (no allocation
// if dst has room).
func appendIndexKey(dst []byte, sid, rev uint64) []byte {
	dst = append(dst, kIndex)
	dst = binary.BigEndian.AppendUint64(dst, sid)
	return binary.BigEndian.AppendUint64(dst, rev)
}

func appendNameKey(dst []byte, name string) []byte {
	dst = append(dst, kName)
	return append(dst, name...)
}

func appendStreamKey(dst []byte, sid uint64) []byte {
	dst = append(dst, kStream)
	return binary.BigEndian.AppendUint64(dst, sid)
}

func appendIDKey(dst []byte, id [16]byte) []byte {
	dst = append(dst, kID)
	return append(dst, id[:]...)
}

func appendDeletedKey(dst []byte, sid uint64) []byte {
	dst = append(dst, kDeleted)
	return binary.BigEndian.AppendUint64(dst, sid)
}

// prefixEnd returns the smallest key greater than every key starting with
// prefix, for an exclusive upper bound (nil: no bound).
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// streamIndexBounds gives [lo, hi) covering every revision of sid. sid
// math.MaxUint64 is never allocated, so sid+1 does not wrap.
func streamIndexBounds(sid uint64) (lo, hi []byte) {
	return appendIndexKey(nil, sid, 0), appendIndexKey(nil, sid+1, 0)
}

func decodeEventKey(k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != kEvent {
		return 0, fmt.Errorf("%w: event key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

func decodeIndexKey(k []byte) (sid, rev uint64, err error) {
	if len(k) != 17 || k[0] != kIndex {
		return 0, 0, fmt.Errorf("%w: index key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:9]), binary.BigEndian.Uint64(k[9:]), nil
}

func decodeStreamKey(k []byte) (uint64, error) {
	if len(k) != 9 || (k[0] != kStream && k[0] != kDeleted) {
		return 0, fmt.Errorf("%w: stream key %x", ErrCorrupt, k)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

func decodeNameKey(k []byte) (string, error) {
	if len(k) < 2 || k[0] != kName {
		return "", fmt.Errorf("%w: name key %x", ErrCorrupt, k)
	}
	return string(k[1:]), nil
}

// A stream index entry (kIndex) is one append's events: count events of
// revisions firstRev.. at positions firstPos.., both contiguous (Commit
// gives an append's events contiguous positions, and a stream's
// revisions are contiguous). Its value is firstPos(8) then count as a
// uvarint (1 to 3 bytes for the appends a request may hold). Revision r
// is in the entry with the greatest firstRev <= r, at position
// firstPos + (r - firstRev).
type revRange struct {
	firstRev, firstPos, count uint64
}

func (r revRange) lastRev() uint64 { return r.firstRev + r.count - 1 }

// pos is the position of revision rev, which must be in r.
func (r revRange) pos(rev uint64) uint64 { return r.firstPos + (rev - r.firstRev) }

func appendIndexValue(dst []byte, firstPos, count uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, firstPos)
	return binary.AppendUvarint(dst, count)
}

// decodeIndexValue decodes the value of the entry whose key holds
// firstRev. Neither range may wrap past the largest uint64, and position
// 0 is never used.
func decodeIndexValue(firstRev uint64, v []byte) (revRange, error) {
	if len(v) < 9 {
		return revRange{}, fmt.Errorf("%w: index value of %d bytes", ErrCorrupt, len(v))
	}
	r := revRange{firstRev: firstRev, firstPos: binary.BigEndian.Uint64(v)}
	var err error
	if r.count, err = decodeCount(v[8:]); err != nil {
		return revRange{}, fmt.Errorf("index value: %w", err)
	}
	if r.firstPos == 0 || r.count-1 > math.MaxUint64-r.firstPos || r.count-1 > math.MaxUint64-r.firstRev {
		return revRange{}, fmt.Errorf("%w: index value: %d events at position %d, revision %d", ErrCorrupt, r.count, r.firstPos, firstRev)
	}
	return r, nil
}

// decodeIndexEntry decodes a stream index key and its value.
func decodeIndexEntry(k, v []byte) (sid uint64, r revRange, err error) {
	sid, rev, err := decodeIndexKey(k)
	if err != nil {
		return 0, revRange{}, err
	}
	r, err = decodeIndexValue(rev, v)
	return sid, r, err
}

// decodeCount decodes a count of events: a uvarint of at least 1 that
// takes all of b, in its shortest form (one encoding per count).
func decodeCount(b []byte) (uint64, error) {
	x, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) || (n > 1 && b[n-1] == 0) || x == 0 {
		return 0, fmt.Errorf("%w: count %x", ErrCorrupt, b)
	}
	return x, nil
}

// decodeU64 decodes an 8-byte big-endian value (name values).
func decodeU64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: want 8 bytes, have %d", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// idLoc is where an event id is stored, and which append stored it
// (revisions first..last of the stream): a retry must repeat a whole
// append to be one.
type idLoc struct {
	sid, rev, pos uint64
	first, last   uint64
}

// appendIDValue encodes l: sid(8) rev(8) pos(8) first(8) last(8).
func appendIDValue(dst []byte, l idLoc) []byte {
	dst = binary.BigEndian.AppendUint64(dst, l.sid)
	dst = binary.BigEndian.AppendUint64(dst, l.rev)
	dst = binary.BigEndian.AppendUint64(dst, l.pos)
	dst = binary.BigEndian.AppendUint64(dst, l.first)
	return binary.BigEndian.AppendUint64(dst, l.last)
}

func decodeIDValue(v []byte) (idLoc, error) {
	if len(v) != 40 {
		return idLoc{}, fmt.Errorf("%w: id value of %d bytes", ErrCorrupt, len(v))
	}
	l := idLoc{
		sid:   binary.BigEndian.Uint64(v[0:8]),
		rev:   binary.BigEndian.Uint64(v[8:16]),
		pos:   binary.BigEndian.Uint64(v[16:24]),
		first: binary.BigEndian.Uint64(v[24:32]),
		last:  binary.BigEndian.Uint64(v[32:40]),
	}
	if l.first > l.rev || l.rev > l.last {
		return idLoc{}, fmt.Errorf("%w: id value: revision %d outside its append %d..%d", ErrCorrupt, l.rev, l.first, l.last)
	}
	return l, nil
}
