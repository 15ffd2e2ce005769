package log

import (
	"encoding/binary"
	"fmt"
)

// Key spaces, as doc.go lists them (TestDocListsKeySpaces). One prefix
// byte each; integers are fixed-width big-endian so that byte order
// equals numeric order. A prefix is never reused.
const (
	kMeta     byte = 0x00 // 0x00 name                  -> format version, stats
	kEvent    byte = 0x01 // 0x01 pos(8)                -> event record (see record.go)
	kIndex    byte = 0x02 // 0x02 sid(8) rev(8)         -> pos(8)
	kName     byte = 0x03 // 0x03 stream-name bytes     -> sid(8)
	kStream   byte = 0x04 // 0x04 sid(8)                -> stream state (see state.go)
	kID       byte = 0x05 // 0x05 event-id(16)          -> sid(8) rev(8) pos(8) first(8) last(8) (idLoc)
	kDeleted  byte = 0x06 // 0x06 sid(8)                -> empty: the stream has deleted events
	kCategory byte = 0x07 // 0x07 category 0x00 pos(8)  -> event record, a copy (index.go)
	kType     byte = 0x08 // 0x08 type 0x00 pos(8)      -> empty (index.go)
	kAux      byte = 0x09 // 0x09 namespace-prefix key  -> a namespace's value (auxspace.go, namespaces.go)
)

// Meta keys.
var (
	metaFormatKey = []byte{kMeta, 'f', 'o', 'r', 'm', 'a', 't'}
	metaStatsKey  = []byte{kMeta, 's', 't', 'a', 't', 's'}
)

// formatVersion is the on-disk format this code writes and reads. Open
// refuses a store of another version rather than misreading it.
const formatVersion uint32 = 2 // 2: category and type indexes

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

// decodeU64 decodes an 8-byte big-endian value (index and name values).
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
