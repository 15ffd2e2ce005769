package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// Keys in eslog.NSSnapshots (prefix "snap/"); stream names and categories
// hold no 0x00, so 0x00 ends one:
//
//	s/<stream> 0x00 rev(8) schema(4) -> data record     a scan by stream: revision order
//	i/<stream>                        -> index           the stream's snapshots, oldest first
//	p/<category>                      -> policy          a category's own policy
//	r/load-rates                      -> load rates      the sketch, stored at shutdown
//
// The index is the truth of which snapshots a stream has, and its guard:
// every change of a stream's snapshots is one compare-and-swap of its
// index together with the data records it adds, replaces or removes, so
// a data record exists exactly when the index lists it (except after a
// tombstone's purge, which removes both at once).
const (
	dataPrefix   = "s/"
	indexPrefix  = "i/"
	policyPrefix = "p/"
	ratesKey     = "r/load-rates"
)

func indexKey(stream string) []byte { return []byte(indexPrefix + stream) }

// dataStreamPrefix is what every data key of stream starts with.
func dataStreamPrefix(stream string) []byte {
	return append([]byte(dataPrefix+stream), 0)
}

func dataKey(stream string, rev uint64, schema uint32) []byte {
	k := dataStreamPrefix(stream)
	k = binary.BigEndian.AppendUint64(k, rev)
	return binary.BigEndian.AppendUint32(k, schema)
}

func policyKey(category string) []byte { return []byte(policyPrefix + category) }

var (
	errCorrupt = errors.New("snapshot: corrupt record")
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

const (
	indexVersion  byte = 1
	dataVersion   byte = 1
	policyVersion byte = 1
)

// entry is one snapshot in a stream's index.
type entry struct {
	rev     uint64
	schema  uint32
	created int64 // unix nanoseconds
	size    uint64
	typ     string
}

func (e *entry) same(o *entry) bool { return e.rev == o.rev && e.schema == o.schema }

// compare orders entries by revision, then schema version.
func compareEntries(a, b entry) int {
	switch {
	case a.rev != b.rev:
		if a.rev < b.rev {
			return -1
		}
		return 1
	case a.schema != b.schema:
		if a.schema < b.schema {
			return -1
		}
		return 1
	}
	return 0
}

// encodeIndex: version(1) count(uvarint), then per entry rev(8) schema(4)
// created(8) size(uvarint) type(uvarint length, bytes); entries in
// compareEntries order.
func encodeIndex(es []entry) []byte {
	b := []byte{indexVersion}
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = binary.BigEndian.AppendUint64(b, e.rev)
		b = binary.BigEndian.AppendUint32(b, e.schema)
		b = binary.BigEndian.AppendUint64(b, uint64(e.created))
		b = binary.AppendUvarint(b, e.size)
		b = binary.AppendUvarint(b, uint64(len(e.typ)))
		b = append(b, e.typ...)
	}
	return b
}

func decodeIndex(v []byte) ([]entry, error) {
	if len(v) < 1 || v[0] != indexVersion {
		return nil, fmt.Errorf("%w: index version", errCorrupt)
	}
	d := v[1:]
	n, k := binary.Uvarint(d)
	if k <= 0 || n > uint64(len(d)) {
		return nil, fmt.Errorf("%w: index count", errCorrupt)
	}
	d = d[k:]
	es := make([]entry, 0, n)
	for range n {
		if len(d) < 20 {
			return nil, fmt.Errorf("%w: index entry", errCorrupt)
		}
		e := entry{rev: binary.BigEndian.Uint64(d), schema: binary.BigEndian.Uint32(d[8:]), created: int64(binary.BigEndian.Uint64(d[12:]))}
		d = d[20:]
		size, k := binary.Uvarint(d)
		if k <= 0 {
			return nil, fmt.Errorf("%w: index entry size", errCorrupt)
		}
		e.size, d = size, d[k:]
		tl, k := binary.Uvarint(d)
		if k <= 0 || tl > uint64(len(d)-k) {
			return nil, fmt.Errorf("%w: index entry type", errCorrupt)
		}
		e.typ, d = string(d[k:k+int(tl)]), d[k+int(tl):]
		es = append(es, e)
	}
	if len(d) != 0 || !slices.IsSortedFunc(es, compareEntries) {
		return nil, fmt.Errorf("%w: index of %d bytes", errCorrupt, len(v))
	}
	return es, nil
}

// encodeData: version(1) data crc32c(4) (the checksum of version and
// data). The rest of the snapshot is in its key and index entry.
func encodeData(data []byte) []byte {
	b := make([]byte, 0, 1+len(data)+4)
	b = append(append(b, dataVersion), data...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeData(v []byte) ([]byte, error) {
	if len(v) < 5 || v[0] != dataVersion {
		return nil, fmt.Errorf("%w: data version", errCorrupt)
	}
	body, sum := v[:len(v)-4], binary.BigEndian.Uint32(v[len(v)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: data checksum", errCorrupt)
	}
	return body[1:], nil
}

// encodePolicy: version(1) every(8) replay threshold(8).
func encodePolicy(p Policy) []byte {
	b := []byte{policyVersion}
	b = binary.BigEndian.AppendUint64(b, p.Every)
	return binary.BigEndian.AppendUint64(b, p.ReplayThreshold)
}

func decodePolicy(v []byte) (Policy, error) {
	if len(v) != 17 || v[0] != policyVersion {
		return Policy{}, fmt.Errorf("%w: policy of %d bytes", errCorrupt, len(v))
	}
	return Policy{Every: binary.BigEndian.Uint64(v[1:]), ReplayThreshold: binary.BigEndian.Uint64(v[9:])}, nil
}
