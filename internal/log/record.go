package log

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// An event record, the value of a kEvent key:
//
//	[0:4)   hcrc     crc32c of [4:16)
//	[4:12)  created  commit time, unix nanoseconds
//	[12:16) pcrc     crc32c of [16:)
//	[16:24) sid
//	[24:32) rev
//	[32:48) id
//	uvarint len + type, uvarint len + content type,
//	uvarint count + (uvarint len + tag)..., uvarint len + metadata,
//	data: the rest
//
// Two checksums because the commit time is stamped at commit, under the
// log's commit lock: the shard that prepared the record has already summed
// the (possibly large) payload, so stamping costs a 12-byte checksum, not a
// pass over the data.

const recordHeaderLen = 48

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Event is an event to append.
type Event struct {
	ID          [16]byte
	Type        string
	ContentType string // "" means application/octet-stream
	Tags        []string
	Metadata    []byte
	Data        []byte
}

// size is the record size of e, for batch byte limits.
func (e *Event) size() int {
	n := recordHeaderLen + 3*binary.MaxVarintLen32 + len(e.Type) + len(e.ContentType) + len(e.Metadata) + len(e.Data)
	for _, t := range e.Tags {
		n += binary.MaxVarintLen32 + len(t)
	}
	return n
}

// RecordedEvent is a stored event. Its byte slices and strings are owned by
// the caller (never aliased to Pebble's buffers).
type RecordedEvent struct {
	Event
	StreamID uint64
	Stream   string
	Revision uint64
	Position uint64
	Created  int64 // unix nanoseconds
}

// encodeRecord appends the record of e (sid, rev) to dst with its commit
// time left zero; stampRecord sets it.
func encodeRecord(dst []byte, sid, rev uint64, e *Event) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, 16)...)
	dst = binary.BigEndian.AppendUint64(dst, sid)
	dst = binary.BigEndian.AppendUint64(dst, rev)
	dst = append(dst, e.ID[:]...)
	dst = appendString(dst, e.Type)
	dst = appendString(dst, e.ContentType)
	dst = binary.AppendUvarint(dst, uint64(len(e.Tags)))
	for _, t := range e.Tags {
		dst = appendString(dst, t)
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Metadata)))
	dst = append(dst, e.Metadata...)
	dst = append(dst, e.Data...)
	rec := dst[start:]
	binary.BigEndian.PutUint32(rec[12:16], crc32.Checksum(rec[16:], castagnoli))
	return dst
}

// stampRecord sets the commit time of an encoded record.
func stampRecord(rec []byte, created int64) {
	binary.BigEndian.PutUint64(rec[4:12], uint64(created))
	binary.BigEndian.PutUint32(rec[0:4], crc32.Checksum(rec[4:16], castagnoli))
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// recordView is a decoded record whose slices alias the encoded bytes.
type recordView struct {
	sid, rev   uint64
	created    int64
	id         [16]byte
	typ, ctype []byte
	tags       [][]byte
	meta, data []byte
}

// decodeRecord parses rec into v, checking both checksums. Its slices alias
// rec. Bad input gives a wrapped ErrCorrupt, never a panic.
func decodeRecord(rec []byte, v *recordView) error {
	if len(rec) < recordHeaderLen {
		return fmt.Errorf("%w: record of %d bytes", ErrCorrupt, len(rec))
	}
	if binary.BigEndian.Uint32(rec[0:4]) != crc32.Checksum(rec[4:16], castagnoli) {
		return fmt.Errorf("%w: record header checksum", ErrCorrupt)
	}
	if binary.BigEndian.Uint32(rec[12:16]) != crc32.Checksum(rec[16:], castagnoli) {
		return fmt.Errorf("%w: record payload checksum", ErrCorrupt)
	}
	v.created = int64(binary.BigEndian.Uint64(rec[4:12]))
	v.sid = binary.BigEndian.Uint64(rec[16:24])
	v.rev = binary.BigEndian.Uint64(rec[24:32])
	copy(v.id[:], rec[32:48])
	d := decoder{b: rec[recordHeaderLen:]}
	v.typ = d.bytes()
	v.ctype = d.bytes()
	n := d.uvarint()
	v.tags = v.tags[:0]
	if n > uint64(len(d.b)) { // each tag takes at least one byte
		return fmt.Errorf("%w: record claims %d tags", ErrCorrupt, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		v.tags = append(v.tags, d.bytes())
	}
	v.meta = d.bytes()
	if d.err != nil {
		return d.err
	}
	v.data = d.b
	return nil
}

// materialize copies v into out, so that out owns its memory.
func (v *recordView) materialize(out *RecordedEvent, pos uint64, stream string) {
	*out = RecordedEvent{
		Event: Event{
			ID:          v.id,
			Type:        string(v.typ),
			ContentType: string(v.ctype),
			Metadata:    cloneBytes(v.meta),
			Data:        cloneBytes(v.data),
		},
		StreamID: v.sid,
		Stream:   stream,
		Revision: v.rev,
		Position: pos,
		Created:  v.created,
	}
	if len(v.tags) > 0 {
		out.Tags = make([]string, len(v.tags))
		for i, t := range v.tags {
			out.Tags[i] = string(t)
		}
	}
}

func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// decoder reads length-prefixed fields with a sticky error: read every
// field, check err once.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: field of %d bytes, %d left", ErrCorrupt, n, len(d.b))
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) u64() uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.err = fmt.Errorf("%w: short fixed field", ErrCorrupt)
		return 0
	}
	x := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return x
}
